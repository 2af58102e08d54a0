"""Memberships and invitations: who belongs to a tenant, with which role and permissions.

Rules, enforced here for every caller (API, admin, commands):

- only an owner grants `owner`, and only an owner changes or removes an owner;
- nobody raises their own role or grants themselves permissions, and nobody grants
  permissions they do not hold themselves (reactivating a member grants its permissions again);
- the last active owner cannot be removed, demoted or suspended (409 CONFLICT);
- seats (`tenant_limits(tenant)["users"]`, maxUsers): an invitation, or adding a member
  directly, needs a free seat among the active members and the live (pending, unexpired)
  invitations; accepting and reactivating need one among the active members (429
  QUOTA_EXCEEDED).

Every service here locks the tenant row first (`SELECT ... FOR UPDATE`), so the checks above
and the change they allow happen as one step per tenant: two concurrent accepts cannot both
take the last seat, and two owners demoting each other cannot leave the tenant without one.

Platform staff, and a call with no actor (system), act with an owner's authority.
"""

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from rest_framework.exceptions import NotFound

from accounts.models import APIKey, User, hash_secret
from accounts.services import api_key_revoke, user_create
from audit.services import record
from config.db import create_or_conflict
from config.exceptions import (
    ApplicationError,
    Conflict,
    InsufficientPermissions,
    QuotaExceeded,
    RateLimitExceeded,
    TenantSuspended,
)
from config.services import person

from .. import emails
from ..models import (
    Invitation,
    InvitationStatus,
    Membership,
    MembershipStatus,
    Role,
    Tenant,
)
from ..permissions import ALL_PERMISSIONS, effective_permissions, unknown_overrides
from ..plans import tenant_limits


class MemberChangeForbidden(InsufficientPermissions):
    """The actor may manage members, but not make this change (owner and self rules)."""

    default_detail = "You cannot make this change to the organization's members."


class InvitationNotAcceptable(ApplicationError):
    """An unknown, expired, used or revoked invitation token. The message names the reason,
    never the organization."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str):
        super().__init__(message, details={"token": [message]})


@dataclass(frozen=True)
class InvitationAcceptance:
    """What accepting an invitation did."""

    membership: Membership
    account_created: bool


_INVALID = "This invitation link is not valid."
_EXPIRED = "This invitation has expired; ask for a new one."
_USED = "This invitation has already been accepted."
_REVOKED = "This invitation was revoked or replaced by a newer one."


@transaction.atomic
def membership_add(
    *,
    tenant: Tenant,
    user,
    role: str,
    actor,
    permissions: dict | None = None,
) -> Membership:
    """Make `user` an active member of `tenant` with `role` (tenant creation, commands): a seat
    is needed among the active members and live invitations, as for an invitation."""
    tenant = Tenant.objects.locked(tenant.pk)
    _check_seat(tenant, counting_invitations=True, now=timezone.now())
    membership = create_or_conflict(
        Membership,
        conflict_message="This user is already a member of the organization.",
        tenant=tenant,
        user=user,
        role=role,
        status=MembershipStatus.ACTIVE,
        permissions=permissions or {},
        invited_by=person(actor),
        joined_at=timezone.now(),
    )
    record(
        tenant=tenant,
        event_type="member.added",
        actor=actor,
        payload={**_member_payload(membership), "role": role},
    )
    return membership


@transaction.atomic
def member_invite(
    *,
    tenant: Tenant,
    actor: User | None,
    email: str,
    role: str = Role.MEMBER,
    custom_permissions: dict | None = None,
    send_email: bool = True,
    actor_permissions: frozenset[str] | None = None,
    link_base: str | None = None,
) -> Invitation:
    """Invite `email` to `tenant`: an `invited` membership (bound to the address's account when
    there is one) and a pending invitation whose token is emailed after commit when
    `send_email`. An address whose earlier invitation expired is invited again on the same
    membership. The token is returned to nobody: it exists only in the email. `link_base` is
    the scheme and host the request came in on (see emails.accept_url)."""
    tenant = Tenant.objects.locked(tenant.pk)
    authority = _authority(tenant, actor, actor_permissions)
    email = _normalize_email(email)
    _check_choice("role", role, Role)
    overrides = _checked_overrides(custom_permissions, field="custom_permissions")
    _check_grant(authority, role=role, granted=effective_permissions(role, overrides))

    now = timezone.now()
    user = User.objects.filter(email__iexact=email).first()
    joined = Membership.objects.filter(tenant=tenant, user=user).exclude(
        status=MembershipStatus.INVITED
    )
    if user is not None and joined.exists():
        raise Conflict("This address already belongs to a member of the organization.")
    existing = _pending_membership(tenant, user=user, email=email)
    if existing is not None and _live_invitation(existing, now=now) is not None:
        raise Conflict(
            "This address already has a pending invitation; resend it or remove it first."
        )
    _check_seat(tenant, counting_invitations=True, now=now)

    if existing is None:
        membership = create_or_conflict(
            Membership,
            conflict_message="This address already has a pending invitation.",
            tenant=tenant,
            user=user,
            invited_email=email,
            role=role,
            status=MembershipStatus.INVITED,
            permissions=overrides,
            invited_by=person(actor),
            invited_at=now,
        )
    else:
        membership = existing
        _supersede_pending(membership)
        membership.role = role
        membership.permissions = overrides
        membership.invited_by = person(actor)
        membership.invited_at = now
        membership.save(
            update_fields=["role", "permissions", "invited_by", "invited_at", "updated_at"]
        )

    invitation, token = _new_invitation(membership, actor=actor, now=now)
    invitation.mailing = None  # the InvitationEmail, when one is sent
    if send_email:
        message = emails.invitation_message(
            invitation=invitation, token=token, inviter=actor, link_base=link_base
        )
        invitation.mailing = emails.send_after_commit(invitation=invitation, message=message)
    record(
        tenant=tenant,
        event_type="member.invited",
        actor=actor,
        payload={
            **_member_payload(membership),
            "role": role,
            "custom_permissions": overrides,
            "invitation_id": str(invitation.pk),
            "expires_at": invitation.expires_at.isoformat(),
            "email_sent": send_email,
            "renewed": existing is not None,
        },
    )
    return invitation


@transaction.atomic
def invitation_resend(
    *,
    membership: Membership,
    actor: User | None,
    actor_permissions: frozenset[str] | None = None,
    link_base: str | None = None,
) -> Invitation:
    """Email a pending member a fresh invitation: a new token and expiry; the previous link
    stops working. The actor must be able to grant what the invitation grants."""
    tenant, membership, invitation, token = _reissue(membership, actor, actor_permissions)
    message = emails.invitation_message(
        invitation=invitation, token=token, inviter=actor, link_base=link_base
    )
    invitation.mailing = emails.send_after_commit(invitation=invitation, message=message)
    record(
        tenant=tenant,
        event_type="invitation.resent",
        actor=actor,
        payload=_invitation_payload(invitation),
    )
    return invitation


@transaction.atomic
def invitation_link_issue(
    *,
    membership: Membership,
    actor: User | None,
    actor_permissions: frozenset[str] | None = None,
    link_base: str | None = None,
) -> tuple[Invitation, str]:
    """A fresh invitation link for a pending member, returned instead of emailed (staff pass
    it on where there is no email); as a resend, the previous link stops working."""
    tenant, membership, invitation, token = _reissue(membership, actor, actor_permissions)
    record(
        tenant=tenant,
        event_type="invitation.link_issued",
        actor=actor,
        payload=_invitation_payload(invitation),
    )
    return invitation, emails.accept_url(token, link_base=link_base)


@transaction.atomic
def invitation_accept(
    *, token: str, name: str = "", password: str | None = None
) -> InvitationAcceptance:
    """Turn the invitation behind `token` into an active membership, once.

    The token proves the invitee controls the invited address. The address's account joins;
    when it has none, one is created with `name` and `password` (Django's validators). The
    invitation moves pending -> accepted in one conditional UPDATE, so of two concurrent
    accepts exactly one succeeds.
    """
    now = timezone.now()
    found = (
        Invitation.objects.filter(token_digest=hash_secret(token))
        .only("id", "tenant_id", "status", "expires_at")
        .first()
    )
    if found is None:
        raise InvitationNotAcceptable(_INVALID)
    tenant = Tenant.objects.locked(found.tenant_id)
    invitation = (
        Invitation.objects.select_related("membership", "membership__user")
        .filter(pk=found.pk)
        .first()
    )
    _check_acceptable(invitation, now=now)
    if tenant.is_blocked:
        raise TenantSuspended()
    membership = invitation.membership
    _check_seat(tenant, counting_invitations=False, now=now)

    claimed = Invitation.objects.filter(
        pk=invitation.pk, status=InvitationStatus.PENDING, expires_at__gt=now
    ).update(status=InvitationStatus.ACCEPTED, accepted_at=now, updated_at=now)
    if not claimed:
        raise InvitationNotAcceptable(_USED)

    user = membership.user or User.objects.filter(email__iexact=invitation.email).first()
    account_created = user is None
    if account_created:
        user = _create_account(email=invitation.email, name=name, password=password)
    elif Membership.objects.filter(tenant=tenant, user=user).exclude(pk=membership.pk).exists():
        raise Conflict("This account is already a member of the organization.")

    membership.user = user
    membership.status = MembershipStatus.ACTIVE
    membership.joined_at = now
    membership.save(update_fields=["user", "status", "joined_at", "updated_at"])
    record(
        tenant=tenant,
        event_type="member.joined",
        actor=user,
        payload={
            **_member_payload(membership),
            "role": membership.role,
            "invitation_id": str(invitation.pk),
            "account_created": account_created,
        },
    )
    return InvitationAcceptance(membership=membership, account_created=account_created)


@transaction.atomic
def member_update(
    *,
    membership: Membership,
    actor: User | None,
    role: str | None = None,
    status: str | None = None,
    custom_permissions: dict | None = None,
    actor_permissions: frozenset[str] | None = None,
) -> Membership:
    """Change a member's role, status (active/suspended) or permission overrides
    (`custom_permissions`); None leaves a field as it is. Records `member.role_changed` when
    the role changes, else `member.updated`; nothing when nothing changes."""
    tenant, membership, authority = _lock_for_change(membership, actor, actor_permissions)

    new_role = membership.role if role is None else _check_choice("role", role, Role)
    new_status = (
        membership.status if status is None else _check_choice("status", status, MembershipStatus)
    )
    new_overrides = (
        membership.permissions
        if custom_permissions is None
        else _checked_overrides(custom_permissions, field="custom_permissions")
    )
    if (membership.status == MembershipStatus.INVITED) != (new_status == MembershipStatus.INVITED):
        raise Conflict(
            "An invited member becomes active by accepting the invitation; a member who "
            "joined cannot be set back to invited."
        )
    changes = {
        field: {"from": old, "to": new}
        for field, old, new in (
            ("role", membership.role, new_role),
            ("status", membership.status, new_status),
            ("custom_permissions", membership.permissions, new_overrides),
        )
        if old != new
    }
    if not changes:
        return membership

    if Role.OWNER in (membership.role, new_role) and not authority.is_owner:
        raise MemberChangeForbidden("Only an owner can grant the owner role or change an owner.")
    before = _held(membership.role, membership.status, membership.permissions)
    after = _held(new_role, new_status, new_overrides)
    if _is_self(authority, membership) and after - before:
        raise MemberChangeForbidden("You cannot raise your own role or grant yourself permissions.")
    _check_granted_held(authority, after - before)
    if _is_active_owner(membership) and not (
        new_role == Role.OWNER and new_status == MembershipStatus.ACTIVE
    ):
        _ensure_another_active_owner(tenant, membership)
    if membership.status == MembershipStatus.SUSPENDED and new_status == MembershipStatus.ACTIVE:
        _check_seat(tenant, counting_invitations=False, now=timezone.now())

    old_role = membership.role
    membership.role, membership.status, membership.permissions = new_role, new_status, new_overrides
    membership.save(update_fields=["role", "status", "permissions", "updated_at"])
    payload = {**_member_payload(membership), "changes": changes}
    if "role" in changes:
        record(
            tenant=tenant,
            event_type="member.role_changed",
            actor=actor,
            payload={**payload, "old_role": old_role, "new_role": new_role},
        )
    else:
        record(tenant=tenant, event_type="member.updated", actor=actor, payload=payload)
    return membership


@transaction.atomic
def member_remove(
    *,
    membership: Membership,
    actor: User | None,
    actor_permissions: frozenset[str] | None = None,
) -> None:
    """Remove a member (`member.removed`); for an invited one, revoke the invitation instead
    (`invitation.revoked`): its link stops working and the pending membership goes."""
    tenant, membership, authority = _lock_for_change(membership, actor, actor_permissions)
    if membership.role == Role.OWNER and not authority.is_owner:
        raise MemberChangeForbidden("Only an owner can remove an owner.")
    if membership.status == MembershipStatus.INVITED:
        _revoke(tenant, membership, actor=actor)
        return
    if _is_active_owner(membership):
        _ensure_another_active_owner(tenant, membership)
    payload = {**_member_payload(membership), "role": membership.role, "status": membership.status}
    membership.delete()
    record(tenant=tenant, event_type="member.removed", actor=actor, payload=payload)


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: User | None) -> None:
    """Revoke a pending invitation (the admin's action): as removing its invited member."""
    tenant = Tenant.objects.locked(invitation.tenant_id)
    invitation = Invitation.objects.filter(pk=invitation.pk).first()
    if invitation is None or invitation.status != InvitationStatus.PENDING:
        raise Conflict("Only a pending invitation can be revoked.")
    membership = _locked_membership(tenant, invitation.membership_id)
    authority = _authority(tenant, actor, None)
    if membership.role == Role.OWNER and not authority.is_owner:
        raise MemberChangeForbidden("Only an owner can revoke an invitation to an owner.")
    if membership.status != MembershipStatus.INVITED:
        raise Conflict("This invitation's member has already joined.")
    _revoke(tenant, membership, actor=actor)


class LastOwner(Conflict):
    """The user is the last active owner of one or more organizations."""


@transaction.atomic
def user_delete(*, user: User, actor) -> None:
    """Delete a user account: each membership through member_remove (its rules and audit
    events), the user's API keys revoked, then the account (`user.deleted`, platform chain).
    Refused (409 CONFLICT) while the user is an organization's last active owner: deleting the
    account must not leave a tenant without one, as removing that one membership would not."""
    memberships = list(
        Membership.objects.filter(user=user).select_related("tenant").order_by("tenant_id")
    )
    # Every tenant row first, in one order: the owner check and the removals are one step per
    # tenant, and two deletions sharing tenants cannot deadlock.
    for tenant_id in sorted({membership.tenant_id for membership in memberships}):
        Tenant.objects.locked(tenant_id)
    last_owned = [
        membership.tenant
        for membership in memberships
        if _is_active_owner(membership) and not _another_active_owner(membership)
    ]
    if last_owned:
        names = ", ".join(f"{tenant.name} ({tenant.slug})" for tenant in last_owned)
        raise LastOwner(
            f"{user.email} is the last active owner of {names}; make another member owner "
            "first, or delete the organization.",
            details={"tenants": [tenant.slug for tenant in last_owned]},
        )
    for membership in memberships:
        member_remove(membership=membership, actor=actor)
    # Keys stop working without their creator anyway; revoking says so in the audit log.
    keys = APIKey.objects.filter(created_by=user, revoked_at__isnull=True).order_by("pk")
    revoked = [api_key_revoke(api_key=api_key, actor=actor) for api_key in keys]
    record(
        tenant=None,
        event_type="user.deleted",
        actor=actor,
        payload={
            "user_id": str(user.pk),
            "is_staff": user.is_staff,
            "memberships_removed": len(memberships),
            "api_keys_revoked": len(revoked),
        },
    )
    User.objects.filter(pk=user.pk).delete()


# Helpers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Authority:
    """What the actor may do to memberships in one tenant."""

    user_id: object  # None for the system
    is_owner: bool
    permissions: frozenset[str]


def _authority(tenant: Tenant, actor, actor_permissions: frozenset[str] | None) -> _Authority:
    if actor is None or not getattr(actor, "is_authenticated", False):
        return _Authority(None, True, ALL_PERMISSIONS)
    if actor.is_staff:
        permissions = ALL_PERMISSIONS if actor_permissions is None else actor_permissions
        return _Authority(actor.pk, True, permissions)
    membership = Membership.objects.filter(
        tenant=tenant, user=actor, status=MembershipStatus.ACTIVE
    ).first()
    if membership is None:
        raise MemberChangeForbidden("Only an active member of the organization can do this.")
    if actor_permissions is None:
        actor_permissions = effective_permissions(membership.role, membership.permissions)
    return _Authority(actor.pk, membership.role == Role.OWNER, frozenset(actor_permissions))


def _check_grant(authority: _Authority, *, role: str, granted: frozenset[str]) -> None:
    if role == Role.OWNER and not authority.is_owner:
        raise MemberChangeForbidden("Only an owner can grant the owner role.")
    _check_granted_held(authority, granted)


def _check_granted_held(authority: _Authority, granted: frozenset[str]) -> None:
    missing = sorted(granted - authority.permissions)
    if missing:
        raise MemberChangeForbidden(
            f"You cannot grant permissions you do not hold: {', '.join(missing)}.",
            details={"custom_permissions": [f"You do not hold: {', '.join(missing)}."]},
        )


def _held(role: str, status: str, overrides: dict) -> frozenset[str]:
    """What a membership lets its user do, now or (invited) once they accept; nothing while
    suspended, so reactivating grants its permissions again."""
    if status == MembershipStatus.SUSPENDED:
        return frozenset()
    return effective_permissions(role, overrides)


def _is_self(authority: _Authority, membership: Membership) -> bool:
    return authority.user_id is not None and membership.user_id == authority.user_id


def _is_active_owner(membership: Membership) -> bool:
    return membership.role == Role.OWNER and membership.status == MembershipStatus.ACTIVE


def _another_active_owner(membership: Membership) -> bool:
    return (
        Membership.objects.filter(
            tenant_id=membership.tenant_id, role=Role.OWNER, status=MembershipStatus.ACTIVE
        )
        .exclude(pk=membership.pk)
        .exists()
    )


def _ensure_another_active_owner(tenant: Tenant, membership: Membership) -> None:
    if not _another_active_owner(membership):
        raise Conflict(
            "The organization's last active owner cannot be removed, demoted or suspended; "
            "make another member owner first."
        )


def _check_seat(tenant: Tenant, *, counting_invitations: bool, now) -> None:
    """A free seat under maxUsers, or 429 QUOTA_EXCEEDED. Runs under the tenant's row lock."""
    limit = tenant_limits(tenant)["users"]
    members = Membership.objects.filter(tenant=tenant)
    if counting_invitations:
        current = members.holding_seats(now=now).count()
    else:
        current = members.filter(status=MembershipStatus.ACTIVE).count()
    if current >= limit:
        what = "members and pending invitations" if counting_invitations else "active members"
        raise QuotaExceeded(
            f"The organization has reached its limit of {limit} users ({what}).",
            details={"resource": "users", "limit": limit, "current": current},
        )


def _checked_overrides(value: dict | None, *, field: str) -> dict:
    value = value or {}
    unknown = unknown_overrides(value)
    if unknown:
        raise ApplicationError(
            f"Unknown permission(s): {', '.join(unknown)}.",
            details={field: [f"Unknown area, action or non-boolean value: {', '.join(unknown)}."]},
        )
    return {area: dict(actions) for area, actions in value.items()}


def _check_choice(field: str, value: str, choices) -> str:
    if value not in choices.values:
        raise ApplicationError(
            f"Unknown {field}: {value}.", details={field: [f"Choose one of {choices.values}."]}
        )
    return value


def _normalize_email(email: str) -> str:
    return User.objects.normalize_email(email.strip()).lower()


def _locked_membership(tenant: Tenant, membership_id) -> Membership:
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("user")
        .filter(tenant=tenant, pk=membership_id)
        .first()
    )
    if membership is None:
        raise NotFound()
    return membership


def _lock_for_change(
    membership: Membership, actor, actor_permissions: frozenset[str] | None
) -> tuple[Tenant, Membership, _Authority]:
    """Lock the tenant, then the membership (always in that order), and the actor's authority
    there: the start of every change to one membership."""
    tenant = Tenant.objects.locked(membership.tenant_id)
    locked = _locked_membership(tenant, membership.pk)
    return tenant, locked, _authority(tenant, actor, actor_permissions)


def _pending_membership(tenant: Tenant, *, user, email: str) -> Membership | None:
    """The invited membership for this address (or its account), if any."""
    match = Q(invited_email=email)
    if user is not None:
        match |= Q(user=user)
    return (
        Membership.objects.select_for_update(of=("self",))
        .select_related("user")
        .filter(tenant=tenant, status=MembershipStatus.INVITED)
        .filter(match)
        .first()
    )


def _live_invitation(membership: Membership, *, now) -> Invitation | None:
    return membership.invitations.filter(
        status=InvitationStatus.PENDING, expires_at__gt=now
    ).first()


def _supersede_pending(membership: Membership) -> None:
    """Earlier links of this membership stop working."""
    # A queryset update skips auto_now: updated_at is set here.
    membership.invitations.filter(status=InvitationStatus.PENDING).update(
        status=InvitationStatus.REVOKED, updated_at=timezone.now()
    )


def _check_invitations_allowed(tenant_id, email: str, *, now) -> None:
    """429 RATE_LIMIT_EXCEEDED when the organization issued INVITATIONS_PER_ADDRESS_PER_DAY
    invitations to `email`, or INVITATIONS_PER_TENANT_PER_DAY in all, in the last 24 hours.
    Each invitation may email a link: without these, inviting, removing and inviting again, or
    resending, would send mail from the platform to any address as fast as the API answers.
    Counted under the organization's lock, which every invitation takes first."""
    since = now - timedelta(days=1)
    to_address = Q(email__iexact=email)
    issued = Invitation.objects.filter(tenant_id=tenant_id, created_at__gt=since).aggregate(
        total=Count("pk"),
        first=Min("created_at"),
        to_address=Count("pk", filter=to_address),
        first_to_address=Min("created_at", filter=to_address),
    )
    limits = [
        (
            "invitations_to_address",
            issued["to_address"],
            issued["first_to_address"],
            settings.INVITATIONS_PER_ADDRESS_PER_DAY,
            "This address was sent {n} invitations in the last 24 hours; an organization may "
            "send one address at most {limit} a day.",
        ),
        (
            "invitations",
            issued["total"],
            issued["first"],
            settings.INVITATIONS_PER_TENANT_PER_DAY,
            "The organization issued {n} invitations in the last 24 hours; it may issue at "
            "most {limit} a day.",
        ),
    ]
    for counted, n, first, limit, message in limits:
        if n >= limit:
            raise RateLimitExceeded(
                message.format(n=n, limit=limit),
                # When the oldest counted invitation leaves the 24 hours.
                wait=(first + timedelta(days=1) - now).total_seconds(),
                details={counted: n, "limit": limit},
            )


def _new_invitation(membership: Membership, *, actor, now) -> tuple[Invitation, str]:
    email = membership.invited_email or membership.user.email
    _check_invitations_allowed(membership.tenant_id, email, now=now)
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        tenant=membership.tenant,
        membership=membership,
        email=email,
        token_digest=hash_secret(token),
        invited_by=person(actor),
        expires_at=now + timedelta(days=settings.INVITATION_TTL_DAYS),
    )
    return invitation, token


def _reissue(
    membership: Membership, actor, actor_permissions: frozenset[str] | None
) -> tuple[Tenant, Membership, Invitation, str]:
    """A new token and expiry for a pending member, retiring the previous link (resend, link
    issue): the actor must be able to grant what the invitation grants, and an expired
    invitation needs a free seat again."""
    tenant, membership, authority = _lock_for_change(membership, actor, actor_permissions)
    if membership.status != MembershipStatus.INVITED:
        raise Conflict("This member has already joined; there is no invitation to resend.")
    _check_grant(
        authority,
        role=membership.role,
        granted=effective_permissions(membership.role, membership.permissions),
    )
    now = timezone.now()
    if _live_invitation(membership, now=now) is None:
        # An expired invitation held no seat; sending it again takes one.
        _check_seat(tenant, counting_invitations=True, now=now)
    _supersede_pending(membership)
    invitation, token = _new_invitation(membership, actor=actor, now=now)
    return tenant, membership, invitation, token


def _check_acceptable(invitation: Invitation | None, *, now) -> None:
    if invitation is None:
        raise InvitationNotAcceptable(_INVALID)
    if invitation.status == InvitationStatus.ACCEPTED:
        raise InvitationNotAcceptable(_USED)
    if invitation.status == InvitationStatus.REVOKED:
        raise InvitationNotAcceptable(_REVOKED)
    if invitation.expires_at <= now:
        raise InvitationNotAcceptable(_EXPIRED)
    if invitation.membership.status != MembershipStatus.INVITED:
        raise InvitationNotAcceptable(_USED)


def _create_account(*, email: str, name: str, password: str | None) -> User:
    name = (name or "").strip()
    errors = {}
    if not name:
        errors["name"] = ["This address has no account yet: give your name."]
    if not password:
        errors["password"] = ["This address has no account yet: choose a password."]
    else:
        try:
            validate_password(password, user=User(email=email, name=name))
        except DjangoValidationError as exc:
            errors["password"] = list(exc.messages)
    if errors:
        raise ApplicationError("Complete your account to accept the invitation.", details=errors)
    try:
        with transaction.atomic():
            return user_create(email=email, password=password, name=name)
    except IntegrityError:
        raise Conflict(
            "An account with this address was created meanwhile; try accepting again."
        ) from None


def _revoke(tenant: Tenant, membership: Membership, *, actor) -> None:
    invitation_ids = [
        str(pk)
        for pk in membership.invitations.filter(status=InvitationStatus.PENDING).values_list(
            "pk", flat=True
        )
    ]
    payload = {**_member_payload(membership), "role": membership.role}
    # The invitations go with the membership (CASCADE); the audit event is the record.
    membership.delete()
    record(
        tenant=tenant,
        event_type="invitation.revoked",
        actor=actor,
        payload={**payload, "invitation_ids": invitation_ids},
    )


def _invitation_payload(invitation: Invitation) -> dict:
    """A (re)issued invitation in an audit event: never its token."""
    return {
        **_member_payload(invitation.membership),
        "invitation_id": str(invitation.pk),
        "expires_at": invitation.expires_at.isoformat(),
    }


def _member_payload(membership: Membership) -> dict:
    return {
        "membership_id": str(membership.pk),
        "user_id": str(membership.user_id) if membership.user_id else None,
        "email": membership.email,
    }
