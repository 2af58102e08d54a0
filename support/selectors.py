"""Reads of the support app that more than one caller needs (views,
services, tasks, the admin): the queryset with its joins and annotations, or one object, built
in one place.

A selector takes keyword arguments, changes nothing and records nothing; one over
tenant-owned rows takes the tenant and filters by it. A read only one view makes stays in that
view's `scope_queryset()`.
"""

from datetime import datetime, timedelta

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, OuterRef, Q, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import (
    OPEN_TICKET_STATUSES,
    DecisionRule,
    Representative,
    SlaStatus,
    Ticket,
    TicketStatus,
)
from .rules import clean_facts, evaluate, shown

# A trend is UP or DOWN when the second half of the window resolved this share more or fewer
# tickets than the first half; else STABLE.
TREND_THRESHOLD = 0.10
SETTLED = (TicketStatus.RESOLVED, TicketStatus.CLOSED)


def representative_rating():
    """The representative's rating: the average satisfaction score (1-5) of their tickets, null
    before the first score (a subquery to annotate representatives with)."""
    return Subquery(
        Ticket.objects.filter(assignee=OuterRef("pk"), customer_satisfaction_score__isnull=False)
        .values("assignee")
        .annotate(rating=Avg("customer_satisfaction_score"))
        .values("rating")[:1]
    )


def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def _trend(first: int, second: int) -> str:
    if first == second or (first and abs(second - first) / first <= TREND_THRESHOLD):
        return "STABLE"
    return "UP" if second > first else "DOWN"


def representative_performance(
    *, representative: Representative, days: int = 30, now: datetime | None = None
) -> dict:
    """A representative's performance over the last `days` days, from the facts of the tickets
    they hold (assigned in the window): handled, resolved and the resolution rate, the average
    first response time, CSAT, the SLA kept, and the daily series with its trend. Two queries
    whatever the volume."""
    now = now or timezone.now()
    since = now - timedelta(days=days)
    tickets = Ticket.objects.filter(
        tenant_id=representative.tenant_id, assignee=representative, assigned_at__gte=since
    )
    first_response = ExpressionWrapper(
        F("first_responded_at") - F("created_at"), output_field=DurationField()
    )
    totals = tickets.aggregate(
        handled=Count("pk"),
        resolved=Count("pk", filter=Q(status__in=SETTLED)),
        open=Count("pk", filter=~Q(status__in=SETTLED)),
        avg_first_response=Avg(first_response, filter=Q(first_responded_at__isnull=False)),
        csat=Avg("customer_satisfaction_score"),
        rated=Count("customer_satisfaction_score"),
        breached=Count("pk", filter=Q(sla_breached_at__isnull=False)),
        with_sla=Count("pk", filter=Q(sla_terms__isnull=False)),
    )
    daily_rows = (
        tickets.annotate(day=TruncDate("assigned_at"))
        .values("day")
        .annotate(
            handled=Count("pk"),
            resolved=Count("pk", filter=Q(status__in=SETTLED)),
            csat=Avg("customer_satisfaction_score"),
        )
        .order_by("day")
    )
    by_day = {row["day"]: row for row in daily_rows}
    series = []
    for offset in range(days, -1, -1):
        day = (now - timedelta(days=offset)).date()
        row = by_day.get(day, {})
        csat = row.get("csat")
        series.append(
            {
                "date": day,
                "handled": row.get("handled", 0),
                "resolved": row.get("resolved", 0),
                "customer_satisfaction": round(float(csat), 2) if csat is not None else None,
            }
        )
    half = len(series) // 2
    first_half = sum(point["resolved"] for point in series[:half])
    second_half = sum(point["resolved"] for point in series[half:])
    average = totals["avg_first_response"]
    return {
        "representative_id": representative.pk,
        "period_days": days,
        "period_start": since,
        "period_end": now,
        "tickets_handled": totals["handled"],
        "tickets_resolved": totals["resolved"],
        "tickets_open": totals["open"],
        "resolution_rate": _rate(totals["resolved"], totals["handled"]),
        "avg_first_response_seconds": (
            round(average.total_seconds()) if average is not None else None
        ),
        "customer_satisfaction": (
            round(float(totals["csat"]), 2) if totals["csat"] is not None else None
        ),
        "ratings": totals["rated"],
        "sla_met_rate": _rate(totals["with_sla"] - totals["breached"], totals["with_sla"]),
        "trend": _trend(first_half, second_half),
        "daily": series,
    }


def sla_status_q(value: str, now: datetime) -> Q:
    """The tickets whose sla_status is `value` at `now` (Ticket.sla_status_at, in SQL)."""
    has_terms = Q(sla_terms__isnull=False) & ~Q(sla_terms={})
    running = Q(status__in=(TicketStatus.OPEN, TicketStatus.IN_PROGRESS))
    response_pending = Q(first_responded_at__isnull=True, first_response_due_at__isnull=False)
    overdue = running & (
        (response_pending & Q(first_response_due_at__lte=now)) | Q(resolution_due_at__lte=now)
    )
    at_risk = running & (
        (response_pending & Q(first_response_risk_at__lte=now)) | Q(resolution_risk_at__lte=now)
    )
    marked = Q(sla_breached_at__isnull=False)
    breached = marked | overdue
    conditions = {
        SlaStatus.BREACHED: breached,
        SlaStatus.MET: ~marked & Q(status__in=SETTLED),
        SlaStatus.PAUSED: ~marked & Q(status=TicketStatus.WAITING),
        SlaStatus.AT_RISK: ~breached & at_risk,
        SlaStatus.OK: ~breached & running & ~at_risk,
    }
    return has_terms & conditions[value]


def ticket_facts(*, ticket: Ticket, now: datetime | None = None) -> dict:
    """What the rule language knows of a ticket (support.rules.FIELDS): its own fields, its
    customer's tier and standing, its age."""
    now = now or timezone.now()
    customer = ticket.customer
    return {
        "sentiment": float(ticket.sentiment) if ticket.sentiment is not None else None,
        "priority": ticket.priority,
        "category": ticket.category,
        "status": ticket.status,
        "customer_tier": customer.tier if customer else None,
        "customer_standing": customer.standing if customer else None,
        "ticket_age_minutes": max(int((now - ticket.created_at).total_seconds() // 60), 0),
        "ai_handled": ticket.ai_handled,
        "subject": ticket.subject,
    }


def refund_facts(*, refund, now: datetime | None = None) -> dict:
    """What the rule language knows of a refund: its amount and customer, and the facts of
    its ticket when it has one."""
    facts = ticket_facts(ticket=refund.ticket, now=now) if refund.ticket_id else {}
    customer = refund.customer
    return {
        **facts,
        "customer_tier": customer.tier,
        "customer_standing": customer.standing,
        "refund_amount_cents": refund.amount_cents,
    }


def rules_in_order(*, tenant, include_disabled: bool = False, rule_ids=None):
    """The organization's decision rules in the order they are tried."""
    rules = DecisionRule.objects.filter(tenant=tenant)
    if not include_disabled:
        rules = rules.filter(enabled=True)
    if rule_ids is not None:
        rules = rules.filter(pk__in=list(rule_ids))
    return rules.order_by("priority", "created_at", "id")


def rules_evaluate(*, tenant, facts: dict, include_disabled: bool = False, rule_ids=None) -> dict:
    """The first rule whose conditions hold for `facts`, its action, and the trace of every
    rule tried (support.rules.evaluate). Changes nothing."""
    facts = clean_facts(facts)
    rule, trace = evaluate(
        rules_in_order(tenant=tenant, include_disabled=include_disabled, rule_ids=rule_ids),
        facts,
    )
    for step in trace:
        for condition in step.conditions:
            condition["actual"] = shown(condition.get("actual"))
    return {
        "matched": rule is not None,
        "rule": rule,
        "action": rule.action if rule else None,
        "action_params": rule.action_params if rule else None,
        "facts": {name: shown(value) for name, value in facts.items()},
        "trace": trace,
    }


# The open tickets a customer's detail shows, newest first: the rest are a page of
# `support/tickets?customer=<id>&status=OPEN,IN_PROGRESS,WAITING` away.
OPEN_TICKETS_SHOWN = 20


def customer_open_tickets(*, customer):
    """The customer's open tickets, newest first."""
    return Ticket.objects.filter(
        tenant_id=customer.tenant_id, customer=customer, status__in=OPEN_TICKET_STATUSES
    ).order_by("-created_at", "-id")


# The usage records a budget's detail shows: its current period's, newest first.
USAGE_RECORDS_SHOWN = 100


def budget_usage_records(*, budget):
    """The usage records of the budget's current period, newest first (at most
    USAGE_RECORDS_SHOWN)."""
    return budget.usage_records.filter(period_start=budget.period_start).select_related(
        "customer", "created_by"
    )[:USAGE_RECORDS_SHOWN]
