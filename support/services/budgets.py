"""Budgets: what the organization lets its support team give back in a period, and every
amount drawn from them.

- **Periods.** A budget covers [period_start, period_end): one, three or twelve months. A
  period starts on day 1 to 28 of a month, so each later period starts on the same day (no
  month lacks it). Without a `period_start` a budget covers the calendar month, quarter or
  year (UTC) it is created in. When a period ends the budget rolls into the next one: `spent`
  back to zero, alerts re-armed, the usage records of the past periods kept. The beat job
  (`budgets_roll`) rolls them; a draw rolls its budget first too, so a late beat never charges
  a past period.
- **Drawing** (`budget_draw`) is one step under the budget's row lock: the period rolled if
  due, the amount checked against what remains and, for a customer, against the budget's
  per-customer limit for the period (the sum of their usage records in it), then `spent` and
  a usage record written together. Refused draws are 409 naming what remains; concurrent
  draws are serialized by the lock, so `spent` never passes the limit.
- **Alerts.** After anything that changes `spent` or the limit, each enabled threshold that
  `spent` has reached (spent >= percentage % of the limit, something spent) and was not
  alerted in this period emits `budget.threshold_reached`, once per threshold and period.
"""

from datetime import UTC, datetime

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from audit.services import record
from config.db import create_or_conflict, locked_or_404
from config.exceptions import ApplicationError, Conflict
from config.services import UNSET, given, model_update, person
from tenants.models import Tenant

from ..models import PERIOD_MONTHS, Budget, BudgetType, BudgetUsageRecord
from .common import customer_of

# A period starts on one of these days of the month, so every month has it.
LAST_START_DAY = 28


def add_months(moment: datetime, months: int) -> datetime:
    """`moment` `months` later, the same day of the month (which is at most 28)."""
    index = moment.month - 1 + months
    return moment.replace(year=moment.year + index // 12, month=index % 12 + 1)


def calendar_period_start(period: str, now: datetime) -> datetime:
    """The start (UTC) of the calendar month, quarter or year holding `now`."""
    now = now.astimezone(UTC)
    months = PERIOD_MONTHS[period]
    first_month = (now.month - 1) // months * months + 1
    return now.replace(month=first_month, day=1, hour=0, minute=0, second=0, microsecond=0)


def _checked_period(period: str, period_start, period_end, *, now) -> tuple[datetime, datetime]:
    start = calendar_period_start(period, now) if period_start is None else period_start
    if start.day > LAST_START_DAY:
        raise ApplicationError(
            "Invalid period.",
            details={
                "period_start": [
                    f"A period starts on day 1 to {LAST_START_DAY} of a month, so that every "
                    "later period starts on the same day."
                ]
            },
        )
    end = add_months(start, PERIOD_MONTHS[period])
    if period_end is not None and period_end != end:
        raise ApplicationError(
            "Invalid period.",
            details={
                "period_end": [
                    f"A {period.lower()} period starting {start.isoformat()} ends "
                    f"{end.isoformat()} (the next period's start); omit it to have it computed."
                ]
            },
        )
    return start, end


def _payload(budget: Budget, **extra) -> dict:
    return {
        "budget_id": str(budget.pk),
        "type": budget.type,
        "period": budget.period,
        "currency": budget.currency,
        "limit_cents": budget.limit_cents,
        "spent_cents": budget.spent_cents,
        "remaining_cents": budget.remaining_cents,
        "period_start": budget.period_start.isoformat(),
        "period_end": budget.period_end.isoformat(),
        **extra,
    }


def _type_taken(type: str, currency: str) -> dict:
    return {
        "conflict_message": f"The organization already has a {type} budget in {currency}.",
        "conflict_details": {"type": [f"Taken for {currency}: change that budget instead."]},
    }


def _alert(budget: Budget, actor) -> list[int]:
    """Emit `budget.threshold_reached` for each enabled threshold newly reached in the period;
    the percentages alerted."""
    alerted = set(budget.alerted_percentages or [])
    reached = sorted(
        {
            threshold["percentage"]
            for threshold in budget.alert_thresholds or []
            if threshold.get("enabled", True)
            and budget.spent_cents > 0
            and budget.spent_cents * 100 >= threshold["percentage"] * budget.limit_cents
        }
        - alerted
    )
    if not reached:
        return []
    for percentage in reached:
        record(
            tenant=budget.tenant,
            event_type="budget.threshold_reached",
            actor=actor,
            payload=_payload(budget, percentage=percentage),
        )
    budget.alerted_percentages = sorted(alerted | set(reached))
    budget.save(update_fields=["alerted_percentages", "updated_at"])
    return reached


def _roll(budget: Budget, *, now, actor=None) -> bool:
    """Move a (locked) budget whose period has ended into the period holding `now`; whether
    it moved. Periods with no draw in between are skipped, recorded in the one event."""
    if budget.period_end > now:
        return False
    closed_start, closed_spent = budget.period_start, budget.spent_cents
    start = budget.period_end
    while add_months(start, PERIOD_MONTHS[budget.period]) <= now:
        start = add_months(start, PERIOD_MONTHS[budget.period])
    model_update(
        instance=budget,
        data={
            "period_start": start,
            "period_end": add_months(start, PERIOD_MONTHS[budget.period]),
            "spent_cents": 0,
            "alerted_percentages": [],
        },
    )
    record(
        tenant=budget.tenant,
        event_type="budget.period_rolled",
        actor=actor,
        payload=_payload(
            budget,
            closed_period_start=closed_start.isoformat(),
            closed_spent_cents=closed_spent,
        ),
    )
    return True


def _locked(budget) -> Budget:
    return locked_or_404(Budget.objects.select_related("tenant"), pk=getattr(budget, "pk", budget))


@transaction.atomic
def budget_create(
    *,
    tenant: Tenant,
    actor,
    type: str,
    period: str,
    limit_cents: int,
    currency: str = "USD",
    alert_thresholds: list | None = None,
    refund_limit_per_customer_cents: int | None = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
) -> Budget:
    now = timezone.now()
    start, end = _checked_period(period, period_start, period_end, now=now)
    budget = create_or_conflict(
        Budget,
        **_type_taken(type, currency),
        tenant=tenant,
        type=type,
        period=period,
        limit_cents=limit_cents,
        currency=currency,
        alert_thresholds=list(alert_thresholds or []),
        refund_limit_per_customer_cents=refund_limit_per_customer_cents,
        period_start=start,
        period_end=end,
        created_by=person(actor),
    )
    record(tenant=tenant, event_type="budget.created", actor=actor, payload=_payload(budget))
    # A start far enough in the past is brought to the period holding now.
    _roll(budget, now=now, actor=actor)
    return budget


@transaction.atomic
def budget_update(
    *,
    budget: Budget,
    actor,
    period=UNSET,
    limit_cents=UNSET,
    alert_thresholds=UNSET,
    refund_limit_per_customer_cents=UNSET,
) -> Budget:
    """Change the limits, thresholds or period length. A new period length keeps the current
    period's start (its end follows; 409 if that end has already passed, which would forget
    what the period drew); a threshold already alerted in the period stays alerted, and one
    newly reached (a lower limit, a new threshold) alerts now."""
    budget = _locked(budget)
    now = timezone.now()
    _roll(budget, now=now, actor=actor)
    changes = given(
        period=period,
        limit_cents=limit_cents,
        alert_thresholds=alert_thresholds,
        refund_limit_per_customer_cents=refund_limit_per_customer_cents,
    )
    if changes.get("period", budget.period) != budget.period:
        new_end = add_months(budget.period_start, PERIOD_MONTHS[changes["period"]])
        if new_end <= now:
            # Rolling at once would forget what this period has drawn, and give it again.
            raise Conflict(
                f"A {changes['period'].lower()} period starting "
                f"{budget.period_start.isoformat()} would have ended {new_end.isoformat()}: "
                f"change the period once this one ends ({budget.period_end.isoformat()}).",
                details={"period": [f"The current period ends {budget.period_end.isoformat()}."]},
            )
        changes["period_end"] = new_end
    changed = model_update(instance=budget, data=changes)
    if changed:
        record(
            tenant=budget.tenant,
            event_type="budget.updated",
            actor=actor,
            payload=_payload(budget, changed=sorted(changed)),
        )
        _alert(budget, actor)
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor) -> None:
    """Remove a budget and its usage records; refunds drawn from it keep their amounts."""
    budget = _locked(budget)
    record(tenant=budget.tenant, event_type="budget.deleted", actor=actor, payload=_payload(budget))
    budget.delete()


def customer_spent_cents(budget: Budget, customer) -> int:
    """What the customer drew from the budget in its current period."""
    total = BudgetUsageRecord.objects.filter(
        budget=budget, period_start=budget.period_start, customer=customer
    ).aggregate(total=Sum("amount_cents"))["total"]
    return total or 0


@transaction.atomic
def budget_draw(
    *,
    budget: Budget,
    actor,
    amount_cents: int,
    customer=None,
    refund=None,
    description: str = "",
) -> BudgetUsageRecord:
    """Draw `amount_cents` from the budget in its current period (see the module docstring):
    409 when it does not fit what remains or the customer's limit for the period."""
    budget = _locked(budget)
    now = timezone.now()
    _roll(budget, now=now)
    if budget.period_start > now:
        raise Conflict(
            f"The budget's first period starts at {budget.period_start.isoformat()}.",
            details={"budget_id": str(budget.pk), "period_start": budget.period_start},
        )
    if budget.spent_cents + amount_cents > budget.limit_cents:
        raise Conflict(
            f"The {budget.type} budget has {budget.remaining_cents} cents left in this period; "
            f"{amount_cents} asked.",
            details={
                "budget_id": str(budget.pk),
                "remaining_cents": budget.remaining_cents,
                "limit_cents": budget.limit_cents,
                "spent_cents": budget.spent_cents,
                "amount_cents": amount_cents,
                "period_end": budget.period_end,
            },
        )
    limit = budget.refund_limit_per_customer_cents
    if customer is not None and limit is not None:
        already = customer_spent_cents(budget, customer)
        if already + amount_cents > limit:
            raise Conflict(
                f"The customer may receive {max(limit - already, 0)} more cents from this "
                f"budget in this period; {amount_cents} asked.",
                details={
                    "budget_id": str(budget.pk),
                    "customer_id": str(customer.pk),
                    "customer_limit_cents": limit,
                    "customer_spent_cents": already,
                    "customer_remaining_cents": max(limit - already, 0),
                    "remaining_cents": budget.remaining_cents,
                    "amount_cents": amount_cents,
                },
            )
    Budget.objects.filter(pk=budget.pk).update(
        spent_cents=F("spent_cents") + amount_cents, updated_at=now
    )
    budget.spent_cents += amount_cents
    usage = BudgetUsageRecord.objects.create(
        tenant_id=budget.tenant_id,
        budget=budget,
        period_start=budget.period_start,
        amount_cents=amount_cents,
        customer=customer,
        refund=refund,
        description=description,
        created_by=person(actor),
    )
    record(
        tenant=budget.tenant,
        event_type="budget.usage_recorded",
        actor=actor,
        payload=_payload(
            budget,
            usage_record_id=str(usage.pk),
            amount_cents=amount_cents,
            customer_id=str(customer.pk) if customer is not None else None,
            refund_id=str(refund.pk) if refund is not None else None,
        ),
    )
    _alert(budget, actor)
    return usage


@transaction.atomic
def budget_usage_add(
    *, budget: Budget, actor, amount_cents: int, customer=None, description: str = ""
) -> BudgetUsageRecord:
    """Record a compensation, discount or credit given: drawn like a refund. A refund budget
    is drawn only by approving refunds."""
    if budget.type == BudgetType.REFUND:
        raise Conflict(
            "A refund budget is drawn by approving refunds (POST refunds/{id}/approve).",
            details={"budget_id": str(budget.pk), "type": budget.type},
        )
    return budget_draw(
        budget=budget,
        actor=actor,
        amount_cents=amount_cents,
        customer=customer_of(budget.tenant, customer),
        description=description,
    )


def budgets_roll(*, now: datetime | None = None) -> int:
    """Roll every budget whose period has ended (the beat job); how many rolled. Each in its
    own transaction under its row lock, so a doubled beat rolls each budget once."""
    now = now or timezone.now()
    rolled = 0
    due = Budget.objects.filter(period_end__lte=now).values_list("pk", flat=True)
    for pk in list(due.iterator()):
        with transaction.atomic():
            budget = Budget.objects.select_related("tenant").select_for_update(of=("self",))
            budget = budget.filter(pk=pk).first()
            if budget is not None and _roll(budget, now=now):
                rolled += 1
    return rolled
