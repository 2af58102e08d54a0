"""Escalations: a conversation or ticket handed to a person, created (by a member, or by the SLA
sweep for a breached urgent ticket), moved forward (PENDING -> ASSIGNED -> IN_PROGRESS ->
RESOLVED; RESOLVED is final), deleted; each change audited (`support.escalation.*`).

`assigned_at` is set when someone first takes it (an assignee given, or a move past PENDING),
`resolved_at` when it is resolved; `wait_time` is computed from them. Giving a PENDING
escalation an assignee makes it ASSIGNED. Escalations do not hold a representative's ticket
capacity: they are a queue of their own.
"""

from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import ApplicationError, Conflict
from config.services import UNSET, check_move, given, model_update, person
from tenants.models import Tenant

from ..models import ESCALATION_TRANSITIONS, Escalation, EscalationStatus, Ticket
from .common import customer_of, representative_of


def _payload(escalation: Escalation, **extra) -> dict:
    assignee = escalation.assignee if escalation.assignee_id else None
    return {
        "escalation_id": str(escalation.pk),
        "reason": escalation.reason,
        "priority": escalation.priority,
        "status": escalation.status,
        "ticket_id": str(escalation.ticket_id) if escalation.ticket_id else None,
        "customer_id": str(escalation.customer_id) if escalation.customer_id else None,
        "conversation_id": str(escalation.conversation_id) if escalation.conversation_id else None,
        "assignee_id": str(assignee.pk) if assignee else None,
        "assignee_user_id": str(assignee.user_id) if assignee else None,
        **extra,
    }


def _ticket(tenant: Tenant, ticket):
    if ticket is None:
        return None
    ticket_id = getattr(ticket, "pk", ticket)
    found = Ticket.objects.filter(tenant=tenant, pk=ticket_id).first()
    if found is None:
        raise ApplicationError(
            "Invalid ticket.", details={"ticket_id": ["No ticket of the organization has this id."]}
        )
    return found


@transaction.atomic
def escalation_create(
    *,
    tenant: Tenant,
    actor,
    reason: str,
    issue_description: str,
    priority: str = "NORMAL",
    conversation_id=None,
    customer=None,
    ticket=None,
    ai_summary: str = "",
    assignee=None,
) -> Escalation:
    """Open an escalation; with an assignee (an active representative) it starts ASSIGNED."""
    now = timezone.now()
    escalation = Escalation(
        tenant=tenant,
        reason=reason,
        issue_description=issue_description,
        priority=priority,
        conversation_id=conversation_id,
        customer=customer_of(tenant, customer),
        ticket=_ticket(tenant, ticket),
        ai_summary=ai_summary,
        created_by=person(actor),
    )
    if assignee is not None:
        escalation.assignee = representative_of(tenant, assignee, "assignee_id")
        escalation.status = EscalationStatus.ASSIGNED
        escalation.assigned_at = now
    escalation.save(force_insert=True)
    record(
        tenant=tenant,
        event_type="support.escalation.created",
        actor=actor,
        payload=_payload(escalation, created_at=escalation.created_at),
    )
    return escalation


def _status_fields(escalation: Escalation, status: str, now) -> dict:
    check_move(ESCALATION_TRANSITIONS, escalation.status, status, noun="An escalation")
    fields = {"status": status}
    if escalation.assigned_at is None:
        fields["assigned_at"] = now
    if status == EscalationStatus.RESOLVED:
        fields["resolved_at"] = now
    return fields


@transaction.atomic
def escalation_update(
    *,
    escalation: Escalation,
    actor,
    reason=UNSET,
    issue_description=UNSET,
    priority=UNSET,
    status=UNSET,
    conversation_id=UNSET,
    customer=UNSET,
    ticket=UNSET,
    ai_summary=UNSET,
    assignee=UNSET,
) -> Escalation:
    """Change the fields given; status moves forward only (409 otherwise) and a resolved
    escalation changes no more (409). ASSIGNED needs an assignee."""
    escalation = locked_or_404(
        Escalation.objects.select_related("tenant", "assignee"), pk=escalation.pk
    )
    if escalation.status == EscalationStatus.RESOLVED:
        raise Conflict("A resolved escalation changes no more.", details={"status": "RESOLVED"})
    tenant = escalation.tenant
    now = timezone.now()
    fields = given(
        reason=reason,
        issue_description=issue_description,
        priority=priority,
        conversation_id=conversation_id,
        ai_summary=ai_summary,
    )
    if customer is not UNSET:
        fields["customer"] = customer_of(tenant, customer)
    if ticket is not UNSET:
        fields["ticket"] = _ticket(tenant, ticket)
    unchanged = str(getattr(assignee, "pk", assignee)) == str(escalation.assignee_id)
    if assignee is not UNSET and not unchanged:
        # Looked up only when it changes: the shown document sent back keeps an assignee who
        # has since left.
        fields["assignee"] = (
            None if assignee is None else representative_of(tenant, assignee, "assignee_id")
        )
        taken = fields["assignee"] is not None and status in (UNSET, escalation.status)
        if taken and escalation.status == EscalationStatus.PENDING:
            status = EscalationStatus.ASSIGNED
    if status is not UNSET and status != escalation.status:
        fields.update(_status_fields(escalation, status, now))
    elif fields.get("assignee") is not None and escalation.assigned_at is None:
        fields["assigned_at"] = now
    final_status = fields.get("status", escalation.status)
    final_assignee = fields.get("assignee", escalation.assignee)
    moved = "status" in fields or "assignee" in fields
    if moved and final_status == EscalationStatus.ASSIGNED and final_assignee is None:
        raise ApplicationError(
            "An ASSIGNED escalation needs an assignee.",
            details={"assignee_id": ["Give the representative who takes it."]},
        )
    old_status = escalation.status
    changed = model_update(instance=escalation, data=fields)
    if not changed:
        return escalation
    event_type = (
        "support.escalation.resolved"
        if escalation.status == EscalationStatus.RESOLVED
        else "support.escalation.updated"
    )
    payload = _payload(escalation, changed=sorted(changed))
    if escalation.status != old_status:
        payload["previous_status"] = old_status
    record(tenant=tenant, event_type=event_type, actor=actor, payload=payload)
    return escalation


@transaction.atomic
def escalation_delete(*, escalation: Escalation, actor) -> None:
    escalation = locked_or_404(Escalation.objects.all(), pk=escalation.pk)
    record(
        tenant=escalation.tenant,
        event_type="support.escalation.deleted",
        actor=actor,
        payload=_payload(escalation),
    )
    escalation.delete()
