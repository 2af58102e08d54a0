"""Tickets' SLA clocks: due times, pauses, breaches, and the escalation of a breached urgent
ticket.

A ticket is held to the SLA policy of its priority when it is created (or re-prioritised): the
first public reply of a representative is due `first_response_minutes` after its creation,
the resolution `resolution_minutes` after it, counted in the policy's business hours
(support.clock) and not counting the time the clocks were paused:

- while the ticket is WAITING on the customer (a pause from the move to WAITING to the move
  out of it), and
- between a resolution and a reopening (the resolved stretch is recorded as a pause when the
  ticket is reopened).

Each pause is a TicketSlaPause row; the due times are recomputed from the creation time and
the pauses whenever a pause ends or the priority changes, so they are never shifted twice.

A target is breached when its due time passes while it is running. The ticket records the
first breach once (`sla_breached_at`, the due time that was missed, and `sla_breach`, which
target): at once when the reply or the resolution comes late or a pause starts late, else by
the beat job `support.tasks.mark_sla_breaches`. A breach records `support.sla.breached`
(the assignee is notified), and a breached URGENT or HIGH ticket is escalated (reason
SLA_BREACH) in the same transaction.
"""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import record

from ..clock import add_working_time, working_seconds
from ..models import (
    AT_RISK_FRACTION,
    EscalationPriority,
    EscalationReason,
    SlaPauseReason,
    SlaPolicy,
    SlaTarget,
    Ticket,
    TicketPriority,
    TicketSlaPause,
    TicketStatus,
)
from .escalations import escalation_create

# A breached ticket of these priorities is escalated at this priority.
ESCALATE_BREACHED = {
    TicketPriority.URGENT: EscalationPriority.CRITICAL,
    TicketPriority.HIGH: EscalationPriority.URGENT,
}
# The sweep handles this many tickets per transaction.
SWEEP_BATCH = 200


def terms_of(policy: SlaPolicy | None) -> dict | None:
    if policy is None:
        return None
    return {
        "policy_name": policy.name,
        "first_response_minutes": policy.first_response_minutes,
        "resolution_minutes": policy.resolution_minutes,
        "business_hours": policy.business_hours,
    }


def _due(created_at: datetime, minutes: int, hours, pauses: list[TicketSlaPause]) -> datetime:
    """`minutes` of working time after `created_at`, not counting the ended pauses that began
    before the target fell due (one after it cannot save it)."""
    target = minutes * 60
    due = add_working_time(created_at, target, hours)
    extra = 0.0
    for pause in pauses:
        if pause.ended_at is None or pause.started_at >= due:
            continue
        extra += working_seconds(pause.started_at, pause.ended_at, hours)
        due = add_working_time(created_at, target + extra, hours)
    return due


def due_fields(ticket: Ticket, *, terms=None, pauses: list[TicketSlaPause] | None = None) -> dict:
    """The ticket's due times under `terms` (default: its own) and its pauses; a first
    response already given keeps the due time it had."""
    terms = ticket.sla_terms if terms is None else terms
    if not terms:
        return dict.fromkeys(
            (
                "first_response_due_at",
                "first_response_risk_at",
                "resolution_due_at",
                "resolution_risk_at",
            )
        )
    if pauses is None:
        pauses = list(ticket.sla_pauses.order_by("started_at")) if ticket.pk else []
    hours = terms["business_hours"]
    fields = {}
    targets = [SlaTarget.RESOLUTION]
    if ticket.first_responded_at is None:
        targets.append(SlaTarget.FIRST_RESPONSE)
    for target in targets:
        minutes = terms[f"{target}_minutes"]
        due = _due(ticket.created_at, minutes, hours, pauses)
        fields[f"{target}_due_at"] = due
        fields[f"{target}_risk_at"] = due - timedelta(minutes=minutes * AT_RISK_FRACTION)
    return fields


def sla_start(ticket: Ticket, *, now: datetime) -> None:
    """Give a new (unsaved) ticket its policy, terms and due times."""
    policy = SlaPolicy.objects.filter(tenant=ticket.tenant, priority=ticket.priority).first()
    ticket.created_at = now
    ticket.sla_policy = policy
    ticket.sla_terms = terms_of(policy)
    for name, value in due_fields(ticket, pauses=[]).items():
        setattr(ticket, name, value)


def sla_retarget(ticket: Ticket, priority: str, now: datetime) -> dict:
    """The fields that hold a ticket to the policy of its new `priority` (counted from its
    creation, pauses excluded); a priority without a policy clears them. A WAITING ticket that
    gains a clock starts it paused."""
    policy = SlaPolicy.objects.filter(tenant=ticket.tenant, priority=priority).first()
    terms = terms_of(policy)
    fields = {"sla_policy": policy, "sla_terms": terms, **due_fields(ticket, terms=terms or {})}
    waiting = ticket.status == TicketStatus.WAITING
    if terms and waiting and not ticket.sla_pauses.filter(ended_at__isnull=True).exists():
        TicketSlaPause.objects.create(
            tenant_id=ticket.tenant_id,
            ticket=ticket,
            reason=SlaPauseReason.WAITING,
            started_at=now,
        )
        fields["sla_paused_at"] = now
    return fields


def late_target(
    ticket: Ticket, now: datetime, changes: dict | None = None
) -> tuple[str, datetime] | None:
    """The earliest target still to be met whose due time has passed, with it; None when none
    or when the ticket is already marked. `changes` are field values about to be saved. The
    caller knows the clocks were running."""
    values = {
        name: (changes or {}).get(name, getattr(ticket, name))
        for name in (
            "sla_breached_at",
            "first_responded_at",
            "first_response_due_at",
            "resolution_due_at",
        )
    }
    if values["sla_breached_at"] is not None:
        return None
    late = []
    if values["first_responded_at"] is None and values["first_response_due_at"] is not None:
        late.append((values["first_response_due_at"], SlaTarget.FIRST_RESPONSE))
    if values["resolution_due_at"] is not None:
        late.append((values["resolution_due_at"], SlaTarget.RESOLUTION))
    late = [(due, target) for due, target in late if due <= now]
    if not late:
        return None
    due, target = min(late)
    return target, due


def sla_status_move(
    ticket: Ticket, old_status: str, new_status: str, now: datetime, changes: dict
) -> dict:
    """The SLA side of a status move of a locked ticket (ticket_update), given the `changes`
    already decided (a new priority's terms): a breach that has happened is marked first,
    then a pause starts or ends, and the due times follow."""
    fields: dict = {}
    leaves_waiting = old_status == TicketStatus.WAITING and new_status != TicketStatus.WAITING
    if leaves_waiting:
        # Closed even when the ticket lost its clock meanwhile, so no pause is left running.
        TicketSlaPause.objects.filter(ticket=ticket, ended_at__isnull=True).update(
            ended_at=now, updated_at=now
        )
        fields["sla_paused_at"] = None
    terms = changes.get("sla_terms", ticket.sla_terms)
    if not terms:
        return fields
    if new_status == TicketStatus.WAITING:
        sla_mark_breach_if_late(ticket, now, changes)
        TicketSlaPause.objects.create(
            tenant_id=ticket.tenant_id,
            ticket=ticket,
            reason=SlaPauseReason.WAITING,
            started_at=now,
        )
        fields["sla_paused_at"] = now
    elif leaves_waiting:
        fields.update(due_fields(ticket, terms=terms))
    elif old_status == TicketStatus.RESOLVED and new_status != TicketStatus.CLOSED:
        TicketSlaPause.objects.create(
            tenant_id=ticket.tenant_id,
            ticket=ticket,
            reason=SlaPauseReason.RESOLVED,
            started_at=ticket.resolved_at or now,
            ended_at=now,
        )
        fields.update(due_fields(ticket, terms=terms))
    if new_status == TicketStatus.RESOLVED:
        sla_mark_breach_if_late(ticket, now, {**changes, **fields})
    return fields


def sla_first_response(ticket: Ticket, now: datetime) -> None:
    """A representative's first public reply on a locked ticket: it stops the first-response
    clock (a late one is marked breached)."""
    if ticket.first_responded_at is not None:
        return
    # Its clock runs only while the ticket is open and not waiting on the customer.
    if ticket.status in (TicketStatus.OPEN, TicketStatus.IN_PROGRESS):
        sla_mark_breach_if_late(ticket, now)
    Ticket.objects.filter(pk=ticket.pk).update(first_responded_at=now, updated_at=now)
    ticket.first_responded_at = now


def sla_mark_breach_if_late(ticket: Ticket, now: datetime, changes: dict | None = None) -> bool:
    """Mark the ticket's breach if a target it was running has fallen due."""
    late = late_target(ticket, now, changes)
    if late is None:
        return False
    return _breach(ticket, target=late[0], due=late[1], now=now)


def _breach(ticket: Ticket, *, target: str, due: datetime, now: datetime) -> bool:
    """Mark the ticket breached once (a conditional UPDATE), record it and escalate an urgent
    one; False when it already was."""
    marked = Ticket.objects.filter(pk=ticket.pk, sla_breached_at__isnull=True).update(
        sla_breached_at=due, sla_breach=target, updated_at=now
    )
    if not marked:
        return False
    ticket.sla_breached_at, ticket.sla_breach = due, target
    assignee = ticket.assignee if ticket.assignee_id else None
    record(
        tenant=ticket.tenant,
        event_type="support.sla.breached",
        actor=None,
        payload={
            "ticket_id": str(ticket.pk),
            "ticket_number": ticket.ticket_number,
            "subject": ticket.subject,
            "priority": ticket.priority,
            "status": ticket.status,
            "target": target,
            "due_at": due,
            "assignee_id": str(assignee.pk) if assignee else None,
            "assignee_user_id": str(assignee.user_id) if assignee else None,
        },
    )
    escalate_at = ESCALATE_BREACHED.get(ticket.priority)
    if escalate_at is not None:
        escalation_create(
            tenant=ticket.tenant,
            actor=None,
            reason=EscalationReason.SLA_BREACH,
            priority=escalate_at,
            ticket=ticket,
            customer=ticket.customer_id,
            conversation_id=ticket.conversation_id,
            issue_description=(
                f"{ticket.ticket_number} ({ticket.priority}) missed its "
                f"{SlaTarget(target).label.lower()} target, due {due.isoformat()}."
            ),
        )
    return True


def _due_now(now: datetime) -> Q:
    return Q(first_responded_at__isnull=True, first_response_due_at__lte=now) | Q(
        resolution_due_at__lte=now
    )


def sla_breaches_mark(*, now: datetime | None = None) -> int:
    """Mark every running ticket whose target has fallen due (the beat job); returns how many
    were marked. Each batch is its own transaction; a ticket another transaction holds is
    taken by the next run."""
    now = now or timezone.now()
    running = Ticket.objects.filter(
        _due_now(now),
        sla_breached_at__isnull=True,
        status__in=(TicketStatus.OPEN, TicketStatus.IN_PROGRESS),
    )
    marked = 0
    seen: set = set()
    while True:
        with transaction.atomic():
            batch = list(
                running.exclude(pk__in=seen)
                .select_for_update(of=("self",), skip_locked=True)
                .select_related("tenant", "assignee")
                .order_by("resolution_due_at", "id")[:SWEEP_BATCH]
            )
            for ticket in batch:
                seen.add(ticket.pk)
                marked += sla_mark_breach_if_late(ticket, now)
        if len(batch) < SWEEP_BATCH:
            return marked
