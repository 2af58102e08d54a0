"""Representatives: members of the organization who answer its customers. Created, changed and
deleted, each audited (`representative.*`).

A representative is an active member, once per organization. Setting their status to ONLINE or
AWAY, at creation too, stamps `last_active_at` (a heartbeat: even when the status was already
that). `active_chats` is the ticket services' to keep; lowering `max_chats` below it is allowed
and only stops new assignments until the load falls under it.
"""

from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.db import create_or_conflict, locked_or_404
from config.exceptions import ApplicationError
from config.services import UNSET, given, model_update
from tenants.models import Membership, MembershipStatus, Tenant

from ..models import ACTIVE_STATUSES, Escalation, EscalationStatus, Representative, Ticket


def _record(event_type: str, actor, representative: Representative, **payload) -> None:
    record(
        tenant=representative.tenant,
        event_type=event_type,
        actor=actor,
        payload={
            "representative_id": str(representative.pk),
            "user_id": str(representative.user_id),
            **payload,
        },
    )


def _member(tenant: Tenant, user):
    """The active member with this user id; another tenant's member or a random id is the same
    "no such member"."""
    user_id = getattr(user, "pk", user)
    membership = (
        Membership.objects.filter(
            tenant=tenant, user_id=user_id, status=MembershipStatus.ACTIVE, user__is_active=True
        )
        .select_related("user")
        .first()
    )
    if membership is None:
        raise ApplicationError(
            "Invalid user.",
            details={"user_id": ["No active member of the organization has this id."]},
        )
    return membership.user


@transaction.atomic
def representative_create(
    *,
    tenant: Tenant,
    actor,
    user,
    role: str = "JUNIOR_SUPPORT",
    status: str = "OFFLINE",
    max_chats: int = 10,
) -> Representative:
    """Make a member a representative (409 when they already are one)."""
    member = _member(tenant, user)
    representative = create_or_conflict(
        Representative,
        conflict_message="This member is already a representative.",
        conflict_details={"user_id": ["Already a representative."]},
        tenant=tenant,
        user=member,
        role=role,
        status=status,
        max_chats=max_chats,
        last_active_at=timezone.now() if status in ACTIVE_STATUSES else None,
    )
    _record("representative.created", actor, representative, role=role, status=status)
    return representative


@transaction.atomic
def representative_update(
    *, representative: Representative, actor, role=UNSET, status=UNSET, max_chats=UNSET
) -> Representative:
    """Change the fields given; ONLINE or AWAY stamps last_active_at."""
    representative = locked_or_404(Representative.objects, pk=representative.pk)
    changes = given(role=role, status=status, max_chats=max_chats)
    if changes.get("status") in ACTIVE_STATUSES:
        changes["last_active_at"] = timezone.now()
    changed = model_update(instance=representative, data=changes)
    described = sorted(set(changed) - {"last_active_at"})
    if described:
        _record("representative.updated", actor, representative, changed=described)
    return representative


@transaction.atomic
def representative_delete(*, representative: Representative, actor) -> None:
    # Their tickets first, then the representative: the order the ticket services lock them
    # in (a ticket, then its assignee's slot), so a concurrent ticket change never deadlocks.
    tickets = list(
        Ticket.objects.select_for_update()
        .filter(assignee_id=representative.pk)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    representative = locked_or_404(Representative.objects.all(), pk=representative.pk)
    now = timezone.now()
    # Their tickets go back to the queue, unassigned (the slots go with the representative),
    # and the escalations they had taken wait for someone again.
    released = Ticket.objects.filter(pk__in=tickets, assignee=representative).update(
        assignee=None, assigned_at=None, updated_at=now
    )
    requeued = Escalation.objects.filter(
        assignee=representative, status=EscalationStatus.ASSIGNED
    ).update(status=EscalationStatus.PENDING, assigned_at=None, updated_at=now)
    _record(
        "representative.deleted",
        actor,
        representative,
        released_tickets=released,
        requeued_escalations=requeued,
    )
    representative.delete()
