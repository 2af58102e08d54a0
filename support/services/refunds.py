"""Refunds to the organization's customers: requested, approved (drawn from the refund budget)
or rejected, then completed once paid out. Every move is audited (`refund.*`).

- **Moves.** PENDING -> APPROVED or REJECTED; APPROVED -> COMPLETED. REJECTED and COMPLETED
  are final; anything else is 409. `processed_at` is set by the approval or rejection,
  `completed_at` by the completion, which adds the amount to the customer's
  `lifetime_refunds_cents`. The order, amount, reason and ticket change only while PENDING.
- **Authority.** Approving or rejecting needs `billing.write`, or a representative of the
  organization whose role's refund authority covers the amount: the organization's
  `support_refund_authority_cents` setting, cents per representative role
  (`{"SENIOR_SUPPORT": 5000, "TEAM_LEAD": 50000}`); a role it does not name has none.
- **The budget.** Approval draws the amount from the organization's REFUND budget in the
  refund's currency (support.services.budgets.budget_draw), in the same transaction: refused
  with 409 (what remains, or the customer's remaining limit) when it does not fit. Without a
  refund budget in that currency, refunds are not capped.
- **Rules.** With the organization's `support_apply_rules` on, a refund just requested (or a
  pending one changed) is given to the enabled rules whose action concerns refunds
  (APPROVE_REFUND, REJECT_REFUND), in priority order: the first that holds approves it (within
  the budget and the customer's limit, no role authority needed: the rule is the
  organization's) or rejects it. Each application is recorded on the refund; a rule's
  approval that the budget refuses leaves the refund PENDING and is recorded as skipped.
"""

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import ApplicationError, Conflict, InsufficientPermissions
from config.services import UNSET, check_move, given, model_update, person
from tenants.models import Tenant

from ..models import (
    Budget,
    BudgetType,
    CustomerProfile,
    Refund,
    RefundStatus,
    Representative,
    RuleApplication,
    Ticket,
)
from ..rules import Action, evaluate
from ..selectors import refund_facts, rules_in_order
from .budgets import budget_draw
from .common import customer_of, serving
from .decision_rules import REFUND_ACTIONS, applies_rules, rule_application_record

REFUND_TRANSITIONS = {
    RefundStatus.PENDING: {RefundStatus.APPROVED, RefundStatus.REJECTED},
    RefundStatus.APPROVED: {RefundStatus.COMPLETED},
    RefundStatus.REJECTED: set(),
    RefundStatus.COMPLETED: set(),
}
# The organization setting giving each representative role its refund authority, in cents.
REFUND_AUTHORITY_SETTING = "support_refund_authority_cents"


def _payload(refund: Refund, **extra) -> dict:
    return {
        "refund_id": str(refund.pk),
        "order_id": refund.order_id,
        "customer_id": str(refund.customer_id),
        "amount_cents": refund.amount_cents,
        "currency": refund.currency,
        "reason": refund.reason,
        "status": refund.status,
        "ticket_id": str(refund.ticket_id) if refund.ticket_id else None,
        "requested_by_id": str(refund.created_by_id) if refund.created_by_id else None,
        **extra,
    }


def _ticket_of(tenant: Tenant, ticket, customer: CustomerProfile):
    if ticket is None:
        return None
    found = Ticket.objects.filter(tenant=tenant, pk=getattr(ticket, "pk", ticket)).first()
    if found is None:
        raise ApplicationError(
            "Invalid ticket.", details={"ticket_id": ["No ticket of the organization has this id."]}
        )
    if found.customer_id is not None and found.customer_id != customer.pk:
        raise ApplicationError(
            "Invalid ticket.", details={"ticket_id": ["The ticket is another customer's."]}
        )
    return found


def _locked(refund) -> Refund:
    return locked_or_404(
        Refund.objects.select_related("tenant", "customer"), pk=getattr(refund, "pk", refund)
    )


def refund_authority_cents(*, tenant: Tenant, user) -> int | None:
    """The most a user may approve as a representative of the organization (their role's
    authority), None when they are not one who serves it."""
    if user is None:
        return None
    representative = (
        Representative.objects.filter(tenant=tenant, user=user).filter(serving()).first()
    )
    if representative is None:
        return None
    authority = (tenant.settings or {}).get(REFUND_AUTHORITY_SETTING) or {}
    return int(authority.get(representative.role, 0))


def _check_authority(refund: Refund, actor, actor_permissions) -> None:
    if "billing.write" in (actor_permissions or ()):
        return
    authority = refund_authority_cents(tenant=refund.tenant, user=person(actor))
    if authority is not None and refund.amount_cents <= authority:
        return
    if authority is None:
        why = "you are not a representative of the organization"
    else:
        why = f"your role's refund authority is {authority} cents"
    raise InsufficientPermissions(
        f"Deciding a refund of {refund.amount_cents} cents needs billing.write or a "
        f"representative's refund authority covering it; {why}.",
        details={"amount_cents": refund.amount_cents, "authority_cents": authority},
    )


@transaction.atomic
def refund_create(
    *,
    tenant: Tenant,
    actor,
    order_id: str,
    customer,
    amount_cents: int,
    reason: str,
    currency: str | None = None,
    notes: str = "",
    ticket=None,
    apply_rules: bool = True,
) -> Refund:
    """Request a refund (PENDING) for one of the organization's customers; its currency is
    the customer's unless given."""
    customer = customer_of(tenant, customer)
    refund = Refund.objects.create(
        tenant=tenant,
        order_id=order_id,
        customer=customer,
        amount_cents=amount_cents,
        currency=currency or customer.currency,
        reason=reason,
        notes=notes,
        ticket=_ticket_of(tenant, ticket, customer),
        created_by=person(actor),
    )
    record(tenant=tenant, event_type="refund.requested", actor=actor, payload=_payload(refund))
    if apply_rules:
        refund_rules_apply(refund=refund, actor=actor)
    return refund


@transaction.atomic
def refund_update(
    *,
    refund: Refund,
    actor,
    actor_permissions=frozenset(),
    order_id=UNSET,
    amount_cents=UNSET,
    currency=UNSET,
    reason=UNSET,
    notes=UNSET,
    ticket=UNSET,
    status=UNSET,
    rejection_reason=UNSET,
) -> Refund:
    """Change a refund; a new `status` is the move's service (approve, reject, complete),
    with its rules."""
    refund = _locked(refund)
    changes = given(
        order_id=order_id, amount_cents=amount_cents, currency=currency, reason=reason, notes=notes
    )
    if ticket is not UNSET:
        changes["ticket"] = _ticket_of(refund.tenant, ticket, refund.customer)
    # Only the notes may change once the refund is decided.
    fixed = sorted(
        name
        for name, value in changes.items()
        if name != "notes" and getattr(refund, name) != value
    )
    if fixed and refund.status != RefundStatus.PENDING:
        raise Conflict(
            f"A {refund.status} refund keeps its {', '.join(fixed)}.",
            details={"status": refund.status, "fields": fixed},
        )
    changed = model_update(instance=refund, data=changes)
    if changed:
        record(
            tenant=refund.tenant,
            event_type="refund.updated",
            actor=actor,
            payload=_payload(refund, changed=sorted(changed)),
        )
    if status is not UNSET and status != refund.status:
        move = {
            RefundStatus.APPROVED: lambda: refund_approve(
                refund=refund, actor=actor, actor_permissions=actor_permissions
            ),
            RefundStatus.REJECTED: lambda: refund_reject(
                refund=refund,
                actor=actor,
                actor_permissions=actor_permissions,
                reason="" if rejection_reason is UNSET else rejection_reason,
            ),
            RefundStatus.COMPLETED: lambda: refund_complete(refund=refund, actor=actor),
        }
        check_move(REFUND_TRANSITIONS, refund.status, status, noun="A refund")
        return move[status]()
    if changed and refund.status == RefundStatus.PENDING:
        refund_rules_apply(refund=refund, actor=actor)
    return refund


def _draw(refund: Refund, actor):
    budget = Budget.objects.filter(
        tenant_id=refund.tenant_id, type=BudgetType.REFUND, currency=refund.currency
    ).first()
    if budget is None:
        return None
    budget_draw(
        budget=budget,
        actor=actor,
        amount_cents=refund.amount_cents,
        customer=refund.customer,
        refund=refund,
        description=f"Refund of order {refund.order_id}",
    )
    return budget


@transaction.atomic
def refund_approve(*, refund: Refund, actor, actor_permissions=frozenset(), rule=None) -> Refund:
    """Approve a pending refund: the authority checked (unless a decision rule approves),
    then the amount drawn from the refund budget, all or nothing."""
    refund = _locked(refund)
    check_move(REFUND_TRANSITIONS, refund.status, RefundStatus.APPROVED, noun="A refund")
    if rule is None:
        _check_authority(refund, actor, actor_permissions)
    budget = _draw(refund, actor)
    model_update(
        instance=refund,
        data={
            "status": RefundStatus.APPROVED,
            "processed_at": timezone.now(),
            # A rule's approval is the organization's, not the requester's.
            "approved_by": None if rule is not None else person(actor),
            "decided_by_rule": rule,
            "budget": budget,
        },
    )
    record(
        tenant=refund.tenant,
        event_type="refund.approved",
        actor=actor,
        payload=_payload(
            refund,
            budget_id=str(budget.pk) if budget is not None else None,
            decision_rule_id=str(rule.pk) if rule is not None else None,
        ),
    )
    return refund


@transaction.atomic
def refund_reject(
    *, refund: Refund, actor, reason: str, actor_permissions=frozenset(), rule=None
) -> Refund:
    """Reject a pending refund, saying why (required)."""
    refund = _locked(refund)
    check_move(REFUND_TRANSITIONS, refund.status, RefundStatus.REJECTED, noun="A refund")
    if not (reason or "").strip():
        raise ApplicationError(
            "Invalid rejection.", details={"rejection_reason": ["Say why it is rejected."]}
        )
    if rule is None:
        _check_authority(refund, actor, actor_permissions)
    model_update(
        instance=refund,
        data={
            "status": RefundStatus.REJECTED,
            "processed_at": timezone.now(),
            "rejection_reason": reason.strip()[:500],
            "decided_by_rule": rule,
        },
    )
    record(
        tenant=refund.tenant,
        event_type="refund.rejected",
        actor=actor,
        payload=_payload(
            refund,
            rejection_reason=refund.rejection_reason,
            decision_rule_id=str(rule.pk) if rule is not None else None,
        ),
    )
    return refund


@transaction.atomic
def refund_complete(*, refund: Refund, actor) -> Refund:
    """The approved refund was paid out: it counts in the customer's lifetime refunds."""
    refund = _locked(refund)
    check_move(REFUND_TRANSITIONS, refund.status, RefundStatus.COMPLETED, noun="A refund")
    model_update(
        instance=refund, data={"status": RefundStatus.COMPLETED, "completed_at": timezone.now()}
    )
    CustomerProfile.objects.filter(pk=refund.customer_id).update(
        lifetime_refunds_cents=F("lifetime_refunds_cents") + refund.amount_cents,
        updated_at=timezone.now(),
    )
    record(
        tenant=refund.tenant, event_type="refund.completed", actor=actor, payload=_payload(refund)
    )
    return refund


def refund_rules_apply(*, refund: Refund, actor) -> RuleApplication | None:
    """With the organization's `support_apply_rules` on: the first enabled refund rule that
    holds for the pending refund approves or rejects it, recorded on the refund and audited
    (decision_rules.rule_application_record). Runs in the caller's transaction."""
    tenant = refund.tenant
    if not applies_rules(tenant) or refund.status != RefundStatus.PENDING:
        return None
    rules = rules_in_order(tenant=tenant).filter(action__in=REFUND_ACTIONS)
    rule, _ = evaluate(rules, refund_facts(refund=refund))
    if rule is None:
        return None
    applied, skipped = RuleApplication.Outcome.APPLIED, RuleApplication.Outcome.SKIPPED
    if rule.action == Action.APPROVE_REFUND:
        try:
            with transaction.atomic():
                refund_approve(refund=refund, actor=actor, rule=rule)
            outcome, detail = applied, "Approved."
        except Conflict as refused:
            outcome, detail = skipped, f"Not approved: {refused.detail}"
    else:
        reason = rule.action_params.get("reason") or f"Rejected by the rule {rule.name!r}."
        refund_reject(refund=refund, actor=actor, reason=reason, rule=rule)
        outcome, detail = applied, "Rejected."
    return rule_application_record(
        rule=rule, actor=actor, outcome=outcome, detail=detail, refund=refund
    )
