"""Tenant lifecycle: create, update, activate, suspend, restore, delete."""

from collections.abc import Mapping
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import storages
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from audit.services import chain_purge, record
from config.db import create_or_conflict, locked_or_404, update_or_conflict
from config.exceptions import Conflict, InsufficientPermissions
from config.services import model_update

from ..models import (
    COUNTED_QUOTA_RESOURCES,
    Membership,
    MembershipStatus,
    PlanTier,
    QuotaCounter,
    Role,
    Tenant,
    TenantStatus,
    Theme,
)
from ..plans import LIMIT_SETTINGS, RATE_SETTING, plan_setting_ceiling, setting_limit
from .members import membership_add
from .themes import delete_file_after_commit, delete_folder_after_commit, theme_update

SLUG_TAKEN = "An organization with this slug already exists."


def slug_in_use(slug: str, *, excluding: Tenant | None = None) -> bool:
    """Whether another tenant (than `excluding`) has this slug; slugs are stored lowercase."""
    taken = Tenant.objects.filter(slug=slug)
    if excluding is not None and excluding.pk is not None:
        taken = taken.exclude(pk=excluding.pk)
    return taken.exists()


def unique_slug(name: str) -> str:
    """A free slug derived from the name: `acme`, `acme-2`, `acme-3`, ..."""
    base = (slugify(name) or "org")[:56].strip("-") or "org"
    candidate, n = base, 1
    while slug_in_use(candidate):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


@transaction.atomic
def tenant_create(
    *,
    actor,
    name: str,
    slug: str | None = None,
    plan: str = PlanTier.FREE,
    owner=None,
    add_owner: bool = True,
    **fields,
) -> Tenant:
    """Create a tenant in trial; `owner` (default: the actor) becomes its first owner, unless
    `add_owner` is false (staff creating a tenant in the admin, then inviting its owner).

    Anyone may create a free tenant, up to ORGANIZATIONS_PER_USER owned (see
    `_check_organizations_owned`); a higher plan tier, or limits above the tier, are what the
    platform sells, so they need staff (or the system: `actor` None, e.g. a command)."""
    if actor is not None and not _is_staff(actor):
        if plan != PlanTier.FREE:
            raise InsufficientPermissions(
                "Only platform staff can create an organization on a plan other than free.",
                details={"subscription_tier": [f"Must be {PlanTier.FREE} (or omitted)."]},
            )
        check_limit_settings(
            plan=plan, new_settings=fields.get("settings", {}), old_settings={}, actor=actor
        )
        if add_owner:
            _check_organizations_owned(owner or actor)
    tenant = _create_with_slug(
        slug=slug,
        name=name,
        plan=plan,
        status=TenantStatus.TRIAL,
        trial_ends_at=timezone.now() + timedelta(days=settings.TENANT_TRIAL_DAYS),
        **fields,
    )
    record(
        tenant=tenant,
        event_type="tenant.created",
        actor=actor,
        payload={"slug": tenant.slug, "name": tenant.name, "plan": tenant.plan},
    )
    QuotaCounter.objects.bulk_create(
        QuotaCounter(tenant=tenant, resource=resource) for resource in COUNTED_QUOTA_RESOURCES
    )
    owner = owner or actor
    if add_owner and owner is not None and owner.is_authenticated:
        membership_add(tenant=tenant, user=owner, role=Role.OWNER, actor=actor)
    return tenant


# Tries at a slug derived from the name, when parallel creations of the same name take the
# free one first: a try that collides waits for the other creation to commit, so the next sees
# its slug; of N creations at once, the last needs N tries.
DERIVED_SLUG_TRIES = 10


def _create_with_slug(*, slug: str | None, **fields) -> Tenant:
    """Create the tenant with `slug`, 409 when it is taken; with none given, a free slug
    derived from `name`, derived again when a parallel creation takes it first."""
    tries = 1 if slug else DERIVED_SLUG_TRIES
    for attempt in range(1, tries + 1):
        try:
            return create_or_conflict(
                Tenant,
                conflict_message=SLUG_TAKEN,
                slug=slug or unique_slug(fields["name"]),
                **fields,
            )
        except Conflict:
            if attempt == tries:
                raise


def _check_organizations_owned(user) -> None:
    """Refuse (409) a user who already owns ORGANIZATIONS_PER_USER organizations that are not
    cancelled another one made through self-service.

    Every new organization comes with its plan's free quotas (tokens for the gateway among
    them), so without a ceiling one account could multiply them by creating organizations.
    Suspended organizations count (they still exist and can be restored); cancelled ones and
    organizations the user is only a member of do not. 0 leaves creating organizations to
    staff. Parallel creations by one user wait for each other on the user's row, so the
    ceiling holds under concurrency (the caller's transaction holds the lock until it
    commits)."""
    limit = max(settings.ORGANIZATIONS_PER_USER, 0)
    # The user's row, locked until the transaction ends: parallel creations by one user wait
    # here for each other, so each counts what the others made.
    type(user).objects.select_for_update(no_key=True).values_list("pk").get(pk=user.pk)
    owned = (
        Membership.objects.filter(user=user, role=Role.OWNER, status=MembershipStatus.ACTIVE)
        .exclude(tenant__status=TenantStatus.CANCELLED)
        .count()
    )
    if owned >= limit:
        message = (
            f"You already own {owned} organization{'s' if owned != 1 else ''}; one user may "
            f"own at most {limit}. Cancel one, or ask the platform's staff to create this one."
            if limit
            else "Organizations are created by the platform's staff here."
        )
        raise Conflict(message, details={"organizations_owned": owned, "limit": limit})


def _is_staff(actor) -> bool:
    return bool(actor is not None and getattr(actor, "is_staff", False))


def check_limit_settings(
    *,
    plan: str,
    new_settings: Mapping,
    old_settings: Mapping,
    actor,
    features: Mapping | None = None,
):
    """Limits above the plan's (its billing plan's `features`, else its tier's) need staff;
    lowering them (or keeping a value staff set) is the tenant's choice."""
    if _is_staff(actor):
        return
    refused = {}
    for key in (*LIMIT_SETTINGS, RATE_SETTING):
        value, old = new_settings.get(key), setting_limit(old_settings, key)
        # Keeping or lowering the current value never gains the tenant anything, even when that
        # value (set by staff) is above the plan.
        if value is None or (old is not None and value <= old):
            continue
        ceiling = plan_setting_ceiling(plan, key, features)
        if value > ceiling:
            refused[key] = [f"The {plan} plan allows at most {ceiling}; higher limits need staff."]
    if refused:
        raise InsufficientPermissions("Limits above the plan need platform staff.", details=refused)


# Fields a tenant_update may change; lifecycle fields change only through the services below.
UPDATABLE_FIELDS = frozenset(
    {"name", "slug", "description", "domain", "plan", "contact_email", "contact_name",
     "contact_phone", "billing_email", "settings"}
)  # fmt: skip


def _merged_settings(current: Mapping, changes: Mapping) -> dict:
    """`current` with `changes` applied; a key whose value is None is removed."""
    merged = {**current, **changes}
    return {key: value for key, value in merged.items() if value is not None}


@transaction.atomic
def tenant_update(*, tenant: Tenant, actor, data: Mapping, merge_settings: bool = False) -> Tenant:
    """Change a tenant's profile, plan or settings; the plan and limits above it need staff.
    `data["settings"]` replaces the settings, or with `merge_settings` (a PATCH) is the keys
    to change (None removes one), applied to the settings as they are under the lock: two
    changes of different keys at once both stay."""
    unknown = set(data) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"not updatable through tenant_update: {sorted(unknown)}")
    tenant = Tenant.objects.locked(tenant.pk)
    if merge_settings and "settings" in data:
        data = {**data, "settings": _merged_settings(tenant.settings, data["settings"])}
    if "plan" in data and data["plan"] != tenant.plan and not _is_staff(actor):
        raise InsufficientPermissions(
            "Changing the plan needs platform staff.",
            details={"subscription_tier": [f"Stays {tenant.plan} unless staff change it."]},
        )
    if "settings" in data:
        check_limit_settings(
            plan=data.get("plan", tenant.plan),
            new_settings=data["settings"],
            old_settings=tenant.settings,
            actor=actor,
            features=tenant.plan_features if data.get("plan", tenant.plan) == tenant.plan else {},
        )
    new_slug = data.get("slug", tenant.slug)
    if new_slug != tenant.slug and slug_in_use(new_slug, excluding=tenant):
        raise Conflict(SLUG_TAKEN)
    # The check above cannot see a creation or a rename to the same slug that commits after it.
    changed = update_or_conflict(tenant, data, conflict_message=SLUG_TAKEN)
    if not changed:
        return tenant
    payload = {"changed": sorted(changed)}
    if "plan" in changed:
        payload["plan"] = {"old": changed["plan"]["from"], "new": tenant.plan}
    if "settings" in changed:
        payload["settings"] = tenant.settings
    record(tenant=tenant, event_type="tenant.updated", actor=actor, payload=payload)
    return tenant


def settings_keeping_staff_limits(*, tenant: Tenant, new_settings: Mapping, actor) -> dict:
    """`new_settings` as the tenant's full replacement, plus the limits it omits that only
    staff could have set (above the plan tier's ceiling, e.g. a negotiated rateLimitPerHour):
    a tenant's PUT replaces its own choices, not what staff granted. Removing such a limit
    stays possible, explicitly, with null in a PATCH."""
    if _is_staff(actor):
        return dict(new_settings)
    kept = {
        key: value
        for key in (*LIMIT_SETTINGS, RATE_SETTING)
        if key not in new_settings
        and (value := setting_limit(tenant.settings, key)) is not None
        and value > plan_setting_ceiling(tenant.plan, key, tenant.plan_features)
    }
    return {**new_settings, **kept}


@transaction.atomic
def organization_update(
    *,
    tenant: Tenant,
    actor,
    data: Mapping,
    branding: Mapping | None = None,
    replace_settings: bool = False,
) -> Tenant:
    """organizations/current: the tenant's profile and settings, and its branding on its theme,
    committed together. With `replace_settings` (a PUT), `data["settings"]` replaces the
    settings but keeps the limits only staff could set."""
    if replace_settings and "settings" in data:
        locked = Tenant.objects.locked(tenant.pk)
        data = {
            **data,
            "settings": settings_keeping_staff_limits(
                tenant=locked, new_settings=data["settings"], actor=actor
            ),
        }
    tenant = tenant_update(
        tenant=tenant, actor=actor, data=data, merge_settings=not replace_settings
    )
    if branding:
        theme_update(tenant=tenant, actor=actor, data=branding)
    return tenant


def tenant_plan_apply(*, tenant: Tenant, tier: str, features: Mapping) -> Tenant:
    """Billing's step of a plan change: the tenant's tier (its rate limits) and its plan's
    features (the limits that follow, tenants.plans), on the locked row. It records nothing:
    it runs inside the plan change's own transaction, which records that change
    (`billing.subscription.changed`), so the tier never differs from the plan, not even for a
    moment."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("tenant_plan_apply runs inside the plan change's transaction")
    if tier not in PlanTier.values:
        raise ValueError(f"unknown plan tier {tier!r}")
    locked = Tenant.objects.locked(tenant.pk)
    model_update(instance=locked, data={"plan": tier, "plan_features": dict(features)})
    return locked


# action -> (statuses it may start from, event type)
_TRANSITIONS = {
    "activate": ({TenantStatus.TRIAL}, "tenant.activated"),
    "suspend": ({TenantStatus.TRIAL, TenantStatus.ACTIVE}, "tenant.suspended"),
    "restore": ({TenantStatus.SUSPENDED, TenantStatus.CANCELLED}, "tenant.restored"),
    "cancel": (
        {TenantStatus.TRIAL, TenantStatus.ACTIVE, TenantStatus.SUSPENDED},
        "tenant.cancelled",
    ),
}


def _transition(tenant: Tenant, action: str, actor, **changes) -> Tenant:
    allowed_from, event_type = _TRANSITIONS[action]
    locked = Tenant.objects.locked(tenant.pk)
    if locked.status not in allowed_from:
        raise Conflict(
            f"An organization that is {locked.status} cannot be {event_type.split('.')[1]}.",
            details={"status": locked.status, "allowed_from": sorted(allowed_from)},
        )
    previous = locked.status
    for field, value in changes.items():
        # A callable value is computed from the locked row.
        setattr(locked, field, value(locked) if callable(value) else value)
    locked.save(update_fields=[*changes, "updated_at"])
    payload = {"from": previous, "to": locked.status}
    if action == "suspend":
        payload["reason"] = locked.suspension_reason
    record(tenant=locked, event_type=event_type, actor=actor, payload=payload)
    return locked


@transaction.atomic
def tenant_activate(*, tenant: Tenant, actor) -> Tenant:
    """trial -> active."""
    return _transition(
        tenant, "activate", actor, status=TenantStatus.ACTIVE, activated_at=timezone.now()
    )


@transaction.atomic
def tenant_suspend(*, tenant: Tenant, actor, reason: str) -> Tenant:
    """trial or active -> suspended: every tenant-scoped endpoint answers 403 TENANT_SUSPENDED
    from the next request on, except reading the organization (and later its billing)."""
    return _transition(
        tenant,
        "suspend",
        actor,
        status=TenantStatus.SUSPENDED,
        suspended_at=timezone.now(),
        suspension_reason=reason,
    )


@transaction.atomic
def tenant_restore(*, tenant: Tenant, actor) -> Tenant:
    """suspended or cancelled -> active (or back to trial if it was never activated)."""
    return _transition(
        tenant,
        "restore",
        actor,
        status=lambda locked: TenantStatus.ACTIVE if locked.activated_at else TenantStatus.TRIAL,
        suspended_at=None,
        suspension_reason="",
        cancelled_at=None,
    )


@transaction.atomic
def tenant_cancel(*, tenant: Tenant, actor) -> Tenant:
    """trial, active or suspended -> cancelled (blocked like a suspension; data kept)."""
    return _transition(
        tenant, "cancel", actor, status=TenantStatus.CANCELLED, cancelled_at=timezone.now()
    )


@transaction.atomic
def tenant_delete(*, tenant: Tenant, actor) -> None:
    """Delete a tenant and all its data, leaving `tenant.deleted` on the platform chain.

    The tenant row is locked first, so no request can record a new event for it meanwhile;
    its audit chain goes through the one purge door (audit.services.chain_purge), which also
    records the chain's final head on the platform chain.
    """
    # FOR UPDATE, not Tenant.objects.locked(): it also holds off inserts of rows that reference
    # the tenant (an event recorded by a request in flight) until the rows are gone.
    locked = locked_or_404(Tenant.objects, pk=tenant.pk)
    members = Membership.objects.filter(tenant=locked).count()
    logo = Theme.objects.filter(tenant=locked).values_list("logo", flat=True).first()
    chain_purge(tenant=locked, actor=actor)
    record(
        tenant=None,
        event_type="tenant.deleted",
        actor=actor,
        payload={
            "tenant_id": str(locked.pk),
            "slug": locked.slug,
            "name": locked.name,
            "status": locked.status,
            "plan": locked.plan,
            "members": members,
        },
    )
    folder = str(locked.pk)  # delete() clears the primary key
    locked.delete()
    if logo:
        delete_file_after_commit(logo)
    delete_folder_after_commit(storages["artifacts"], folder)
