"""Tickets: numbered on creation, moved along their legal statuses, assigned within their
representatives' capacity, deleted; each change audited (`support.ticket.*`).

Capacity is one counter per representative (`active_chats`), moved only here, in the
transaction that changes a ticket: taking a slot is one conditional UPDATE
(`active_chats < max_chats`), so however many assignments race, nobody is given more tickets
than `max_chats`. An open ticket (OPEN, IN_PROGRESS, WAITING) holds its assignee's slot; resolving
or closing it, unassigning it, or deleting it gives the slot back; reopening takes it again, or
leaves the ticket unassigned when the assignee has no room.
"""

from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from audit.services import record
from config.exceptions import ApplicationError, Conflict
from config.services import UNSET, check_move, given, model_update, person
from tenants.models import Tenant

from ..models import (
    OPEN_TICKET_STATUSES,
    TICKET_TRANSITIONS,
    EscalationStatus,
    Representative,
    RepresentativeStatus,
    RuleApplication,
    Ticket,
    TicketAttachment,
    TicketSequence,
    TicketStatus,
)
from ..rules import Action, evaluate
from ..selectors import rules_in_order, ticket_facts
from .common import customer_of, locked_ticket, representative_of, serving
from .conversation import attachments_release, ticket_comment_add
from .decision_rules import REFUND_ACTIONS, applies_rules, rule_application_record
from .escalations import escalation_create
from .sla_clock import sla_retarget, sla_start, sla_status_move

# The organization setting that gives every new ticket without an assignee to the online
# representative with the most free capacity (nobody free: it stays in the queue).
AUTO_ASSIGN_SETTING = "support_auto_assign"

# The value of `representative` that picks one (ticket_assign).
AUTO = "auto"


def _payload(ticket: Ticket, **extra) -> dict:
    return {
        "ticket_id": str(ticket.pk),
        "ticket_number": ticket.ticket_number,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "category": ticket.category,
        "customer_id": str(ticket.customer_id) if ticket.customer_id else None,
        "assignee_id": str(ticket.assignee_id) if ticket.assignee_id else None,
        **extra,
    }


def _next_number(tenant: Tenant) -> int:
    """The organization's next ticket number, under its sequence row's lock."""
    if not TicketSequence.objects.filter(tenant=tenant).exists():
        try:
            with transaction.atomic():
                TicketSequence.objects.create(tenant=tenant)
        except IntegrityError:
            pass  # created by a concurrent first ticket: locked below like any other time
    sequence = TicketSequence.objects.select_for_update().get(tenant=tenant)
    sequence.last_number += 1
    TicketSequence.objects.filter(pk=sequence.pk).update(
        last_number=F("last_number") + 1, updated_at=timezone.now()
    )
    return sequence.last_number


def _take_slot(representative: Representative) -> bool:
    """One of the representative's slots, if one is free and they still serve the organization:
    one conditional UPDATE."""
    # Only someone still serving the organization: a ticket reopened for a representative who
    # left comes back unassigned (_capacity_follows).
    return bool(
        Representative.objects.filter(pk=representative.pk, active_chats__lt=F("max_chats"))
        .filter(serving())
        .update(active_chats=F("active_chats") + 1, updated_at=timezone.now())
    )


def _release_slot(representative_id) -> None:
    Representative.objects.filter(pk=representative_id, active_chats__gt=0).update(
        active_chats=F("active_chats") - 1, updated_at=timezone.now()
    )


def _pick(tenant: Tenant, *, exclude=None, role: str | None = None) -> Representative | None:
    """The ONLINE representative with the most free capacity, ties going to the longest idle
    (the oldest last_active_at), whose slot could be taken; None when nobody has room."""
    candidates = (
        Representative.objects.filter(
            tenant=tenant, status=RepresentativeStatus.ONLINE, active_chats__lt=F("max_chats")
        )
        .filter(serving())
        .annotate(free=F("max_chats") - F("active_chats"))
        .order_by("-free", F("last_active_at").asc(nulls_first=True), "created_at", "id")
    )
    if exclude is not None:
        candidates = candidates.exclude(pk=exclude)
    if role is not None:
        candidates = candidates.filter(role=role)
    tried: list = []
    while True:
        # Twenty at a time: a racing assignment may fill one between the read and the update,
        # and the next twenty are read only when all of these filled up.
        batch = list(candidates.exclude(pk__in=tried)[:20])
        if not batch:
            return None
        for candidate in batch:
            if _take_slot(candidate):
                return candidate
            tried.append(candidate.pk)


def _assign(
    ticket: Ticket, representative, now: datetime, field: str = "representative"
) -> Representative:
    """Take a slot of `representative` (or of the one `_pick` finds for AUTO) for `ticket`;
    409 when there is no room."""
    if representative == AUTO:
        chosen = _pick(ticket.tenant, exclude=ticket.assignee_id)
        if chosen is None:
            raise Conflict(
                "No online representative has free capacity.",
                details={"representative": AUTO},
            )
        return chosen
    chosen = representative_of(ticket.tenant, representative, field)
    if not _take_slot(chosen):
        raise Conflict(
            "The representative is at capacity (max_chats).",
            details={"representative": str(chosen.pk), "max_chats": chosen.max_chats},
        )
    return chosen


@transaction.atomic
def ticket_create(
    *,
    tenant: Tenant,
    actor,
    subject: str,
    description: str = "",
    priority: str = "NORMAL",
    category: str = "OTHER",
    customer=None,
    assignee=UNSET,
    conversation_id=None,
    ai_handled: bool = False,
    sentiment=None,
    apply_rules: bool = True,
) -> Ticket:
    """Open a ticket with the organization's next number and the SLA due times of its
    priority's policy; `assignee` (a representative's id or "auto") takes a slot of their
    capacity, else 409 and nothing is created; null leaves it queued. Not given, the
    organization's `support_auto_assign` setting picks as "auto" does, leaving it queued when
    nobody is free."""
    now = timezone.now()
    ticket = Ticket(
        tenant=tenant,
        number=_next_number(tenant),
        subject=subject,
        description=description,
        priority=priority,
        category=category,
        customer=customer_of(tenant, customer),
        conversation_id=conversation_id,
        ai_handled=ai_handled,
        sentiment=sentiment,
        created_by=person(actor),
    )
    sla_start(ticket, now=now)
    if assignee is UNSET:
        if (tenant.settings or {}).get(AUTO_ASSIGN_SETTING) is True:
            ticket.assignee = _pick(tenant)
            ticket.assigned_at = now if ticket.assignee is not None else None
    elif assignee is not None:
        ticket.assignee = _assign(ticket, assignee, now, field="assignee")
        ticket.assigned_at = now
    ticket.save(force_insert=True)
    # created_at is stamped on insert; the due times count from `now`, so it must be `now`.
    Ticket.objects.filter(pk=ticket.pk).update(created_at=now)
    ticket.created_at = now
    record(
        tenant=tenant,
        event_type="support.ticket.created",
        actor=actor,
        payload=_payload(ticket, created_at=ticket.created_at),
    )
    if ticket.assignee_id:
        _record_assignment(ticket, actor, previous=None)
    if apply_rules:
        rules_apply(ticket=ticket, actor=actor)
    return ticket


def _record_assignment(ticket: Ticket, actor, *, previous) -> None:
    record(
        tenant=ticket.tenant,
        event_type="support.ticket.assigned",
        actor=actor,
        payload=_payload(
            ticket,
            assignee_user_id=str(ticket.assignee.user_id),
            previous_assignee_id=str(previous) if previous else None,
        ),
    )


@transaction.atomic
def ticket_assign(*, ticket: Ticket, actor, representative) -> Ticket:
    """Give the ticket to `representative` (an id, or "auto": the ONLINE representative with
    the most free capacity, ties by longest idle), or take it from its assignee (None). Only an
    open ticket is assigned (409 otherwise); a representative at max_chats is never given
    another (409)."""
    ticket = locked_ticket(ticket)
    if not ticket.is_open:
        raise Conflict(
            f"A {ticket.status} ticket is not assigned.", details={"status": ticket.status}
        )
    previous = ticket.assignee_id
    now = timezone.now()
    if representative is None:
        if previous is None:
            return ticket
        _release_slot(previous)
        model_update(instance=ticket, data={"assignee": None, "assigned_at": None})
        record(
            tenant=ticket.tenant,
            event_type="support.ticket.unassigned",
            actor=actor,
            payload=_payload(ticket, previous_assignee_id=str(previous)),
        )
        return ticket
    if representative != AUTO and str(getattr(representative, "pk", representative)) == str(
        previous
    ):
        return ticket
    chosen = _assign(ticket, representative, now)
    if previous is not None:
        _release_slot(previous)
    model_update(instance=ticket, data={"assignee": chosen, "assigned_at": now})
    _record_assignment(ticket, actor, previous=previous)
    return ticket


def _status_fields(ticket: Ticket, status: str, now: datetime) -> dict:
    check_move(TICKET_TRANSITIONS, ticket.status, status, noun="A ticket")
    fields = {"status": status}
    if status == TicketStatus.RESOLVED:
        fields["resolved_at"] = now
    elif status == TicketStatus.CLOSED:
        fields["closed_at"] = now
    elif ticket.status == TicketStatus.RESOLVED:
        fields["resolved_at"] = None
        fields["reopened_count"] = ticket.reopened_count + 1
        # Satisfaction is given on a resolution: a reopened ticket waits for its next one.
        fields["customer_satisfaction_score"] = None
    return fields


def _capacity_follows(ticket: Ticket, old_status: str, fields: dict) -> dict:
    """An assignee's slot follows the ticket: given back when it leaves the open statuses,
    taken again when it comes back (or the ticket comes back unassigned when they have no
    room)."""
    was_open = old_status in OPEN_TICKET_STATUSES
    is_open = fields.get("status", old_status) in OPEN_TICKET_STATUSES
    if ticket.assignee_id is None or was_open == is_open:
        return fields
    if was_open:
        _release_slot(ticket.assignee_id)
        return fields
    if _take_slot(ticket.assignee):
        return fields
    return {**fields, "assignee": None, "assigned_at": None}


@transaction.atomic
def ticket_update(
    *,
    ticket: Ticket,
    actor,
    subject=UNSET,
    description=UNSET,
    status=UNSET,
    priority=UNSET,
    category=UNSET,
    customer=UNSET,
    conversation_id=UNSET,
    ai_handled=UNSET,
    sentiment=UNSET,
    customer_satisfaction_score=UNSET,
    apply_rules: bool = True,
) -> Ticket:
    """Change the fields given. A status move must be legal (TICKET_TRANSITIONS, else 409) and
    sets resolved_at / closed_at; reopening a resolved ticket clears resolved_at and counts.
    The satisfaction score is given once the ticket is resolved (or closed)."""
    ticket = locked_ticket(ticket)
    fields = given(
        subject=subject,
        description=description,
        priority=priority,
        category=category,
        conversation_id=conversation_id,
        ai_handled=ai_handled,
        sentiment=sentiment,
        customer_satisfaction_score=customer_satisfaction_score,
    )
    if customer is not UNSET:
        fields["customer"] = customer_of(ticket.tenant, customer)
    old_status = ticket.status
    now = timezone.now()
    if priority is not UNSET and priority != ticket.priority and old_status != TicketStatus.CLOSED:
        fields.update(sla_retarget(ticket, priority, now))
    if status is not UNSET and status != old_status:
        fields.update(_status_fields(ticket, status, now))
        fields.update(sla_status_move(ticket, old_status, status, now, fields))
    settled = fields.get("status", old_status) in (TicketStatus.RESOLVED, TicketStatus.CLOSED)
    if customer_satisfaction_score not in (UNSET, None) and not settled:
        raise ApplicationError(
            "A satisfaction score is given once the ticket is resolved.",
            details={"customer_satisfaction_score": ["Only on a RESOLVED or CLOSED ticket."]},
        )
    fields = _capacity_follows(ticket, old_status, fields)
    changed = model_update(instance=ticket, data=fields)
    if not changed:
        return ticket
    event_type = {
        TicketStatus.RESOLVED: "support.ticket.resolved",
        TicketStatus.CLOSED: "support.ticket.closed",
    }.get(ticket.status if ticket.status != old_status else "", "support.ticket.updated")
    if ticket.status != old_status and old_status == TicketStatus.RESOLVED and ticket.is_open:
        event_type = "support.ticket.reopened"
    payload = _payload(ticket, changed=sorted(changed))
    if ticket.status != old_status:
        payload.update(previous_status=old_status, resolved_at=ticket.resolved_at)
    record(tenant=ticket.tenant, event_type=event_type, actor=actor, payload=payload)
    if apply_rules and ticket.status != TicketStatus.CLOSED:
        rules_apply(ticket=ticket, actor=actor)
    return ticket


@transaction.atomic
def ticket_delete(*, ticket: Ticket, actor) -> None:
    """Delete a ticket (audited); an open ticket's assignee gets their slot back, and its
    attachments' storage is freed."""
    ticket = locked_ticket(ticket)
    if ticket.is_open and ticket.assignee_id:
        _release_slot(ticket.assignee_id)
    attachments_release(
        tenant=ticket.tenant, attachments=TicketAttachment.objects.filter(ticket=ticket)
    )
    record(
        tenant=ticket.tenant,
        event_type="support.ticket.deleted",
        actor=actor,
        payload=_payload(ticket),
    )
    ticket.delete()


# Decision rules applied to tickets -----------------------------------------------------------


def rules_apply(*, ticket: Ticket, actor) -> RuleApplication | None:
    """With the organization's `support_apply_rules` on: the first enabled ticket rule (one
    whose action concerns tickets) that holds for the ticket takes its action, recorded on the
    ticket and audited (decision_rules.rule_application_record). The action's own changes
    apply no rules again."""
    tenant = ticket.tenant
    if not applies_rules(tenant):
        return None
    ticket = locked_ticket(ticket)
    rules = rules_in_order(tenant=tenant).exclude(action__in=REFUND_ACTIONS)
    rule, _ = evaluate(rules, ticket_facts(ticket=ticket))
    if rule is None:
        return None
    outcome, detail = _take_action(ticket, rule, actor)
    return rule_application_record(
        rule=rule, actor=actor, outcome=outcome, detail=detail, ticket=ticket
    )


def _take_action(ticket: Ticket, rule, actor) -> tuple[str, str]:
    """Do what the rule says to the ticket; (outcome, what happened)."""
    params = rule.action_params or {}
    applied, skipped = RuleApplication.Outcome.APPLIED, RuleApplication.Outcome.SKIPPED
    if rule.action == Action.AUTO_RESOLVE:
        if TicketStatus.RESOLVED not in TICKET_TRANSITIONS[ticket.status]:
            return skipped, f"A {ticket.status} ticket is not resolved."
        if params.get("comment"):
            ticket_comment_add(ticket=ticket, actor=None, comment=params["comment"])
        ticket_update(ticket=ticket, actor=actor, status=TicketStatus.RESOLVED, apply_rules=False)
        return applied, "Resolved."
    if rule.action == Action.SET_PRIORITY:
        if ticket.priority == params["priority"]:
            return skipped, f"Already {ticket.priority}."
        ticket_update(ticket=ticket, actor=actor, priority=params["priority"], apply_rules=False)
        return applied, f"Priority set to {params['priority']}."
    if rule.action == Action.ASSIGN_TO_TEAM:
        if ticket.assignee_id is not None or not ticket.is_open:
            return skipped, "Already assigned." if ticket.assignee_id else "Not open."
        chosen = _pick(ticket.tenant, role=params["role"])
        if chosen is None:
            return skipped, f"No online {params['role']} has free capacity."
        model_update(instance=ticket, data={"assignee": chosen, "assigned_at": timezone.now()})
        _record_assignment(ticket, actor, previous=None)
        return applied, f"Assigned to representative {chosen.pk}."
    if rule.action == Action.ESCALATE_TO_HUMAN:
        if ticket.escalations.exclude(status=EscalationStatus.RESOLVED).exists():
            return skipped, "An escalation of this ticket is already open."
        escalation = escalation_create(
            tenant=ticket.tenant,
            actor=actor,
            reason=params.get("reason", "OTHER"),
            priority=params.get("priority", "HIGH"),
            ticket=ticket,
            customer=ticket.customer_id,
            conversation_id=ticket.conversation_id,
            issue_description=f"{ticket.ticket_number}: escalated by the rule {rule.name!r}.",
        )
        return applied, f"Escalation {escalation.pk} opened."
    return applied, "The organization's admins were notified."  # NOTIFY
