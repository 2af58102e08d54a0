"""Reads of the billing app that more than one caller needs (views,
services, tasks, the admin): the queryset with its joins and annotations, or one object, built
in one place.

A selector takes keyword arguments, changes nothing and records nothing; one over
tenant-owned rows takes the tenant and filters by it. A read only one view makes stays in that
view's `scope_queryset()`.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from playground.selectors import gateway_usage_in_periods
from tenants.models import UsageRecord
from tenants.plans import MIB
from tenants.services.quotas import quota_states

from .models import Plan, Subscription
from .periods import add_months, whole_seconds
from .services.renewals import Usage, storage_usage_lines, token_usage_lines


def plans_offered():
    """The active plans, in the catalogue's order."""
    return Plan.objects.filter(active=True)


def plan_by_reference(reference: str) -> Plan | None:
    """A plan by its id or its code (active or not: the caller decides what it accepts)."""
    try:
        return Plan.objects.filter(pk=uuid.UUID(str(reference))).first()
    except ValueError:
        return Plan.objects.filter(code=reference).first()


# Usage ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageCosts:
    """What usage costs at the plan's prices, in cents: tokens (beyond the included amount, or
    at cost) and storage (beyond the included amount)."""

    tokens: int
    storage: int

    @property
    def total(self) -> int:
        return self.tokens + self.storage


def usage_costs(plan: Plan, usage: Usage, start: datetime, end: datetime) -> UsageCosts:
    """The same arithmetic as an invoice's usage lines (billing.services.renewals)."""
    return UsageCosts(
        tokens=sum(line.amount_cents for line in token_usage_lines(plan, usage, start, end)),
        storage=sum(line.amount_cents for line in storage_usage_lines(plan, usage, start, end)),
    )


def usage_history(*, tenant, subscription: Subscription, months: int) -> list[dict]:
    """The tenant's ended quota periods that started within the last `months` months, newest
    first, with what their usage costs at the current plan's prices."""
    since = add_months(timezone.now(), -months)
    records = list(UsageRecord.objects.filter(tenant=tenant, period_start__gte=since))
    gateway = gateway_usage_in_periods(
        tenant=tenant, periods=[(r.period_start, r.period_end) for r in records]
    )
    history = []
    for record, (_, cost_micros) in zip(records, gateway, strict=True):
        usage = Usage(
            tokens=record.tokens, cost_micros=cost_micros, storage_bytes=record.storage_bytes
        )
        costs = usage_costs(subscription.plan, usage, record.period_start, record.period_end)
        history.append({"record": record, "usage": usage, "costs": costs})
    return history


def _severity(percentage: float) -> str | None:
    """critical at the limit, high past the warning threshold, medium past half of it."""
    threshold = settings.QUOTA_WARNING_THRESHOLD
    if percentage >= 100:
        return "critical"
    if percentage >= threshold:
        return "high"
    if percentage >= threshold / 2:
        return "medium"
    return None


def usage_current(*, tenant, subscription: Subscription, now: datetime | None = None) -> dict:
    """The current quota period so far: usage against the limits, what it costs at the plan's
    prices, a projection to the period's end and the warnings.

    The projection is linear for tokens (what was used so far, scaled by the period's length
    over its elapsed part) and flat for storage (a stock level: what is held now is what the
    period ends with)."""
    now = now or timezone.now()
    start, end = tenant.last_reset_at, tenant.quota_reset_at
    states = quota_states(tenant)
    [(_, cost_micros)] = gateway_usage_in_periods(tenant=tenant, periods=[(start, end)])
    usage = Usage(
        tokens=states["tokens"].current,
        cost_micros=cost_micros,
        storage_bytes=states["storage"].current,
    )
    costs = usage_costs(subscription.plan, usage, start, end)
    elapsed, length = max(whole_seconds(start, now), 1), max(whole_seconds(start, end), 1)
    projected_usage = Usage(
        tokens=usage.tokens * length // elapsed,
        cost_micros=usage.cost_micros * length // elapsed,
        storage_bytes=usage.storage_bytes,
    )
    projected = usage_costs(subscription.plan, projected_usage, start, end)
    warnings = []
    for resource in ("documents", "tokens", "storage", "api_calls", "users"):
        state = states[resource]
        severity = _severity(state.percentage)
        if severity:
            warnings.append(
                {
                    "type": "usage",
                    "resource": resource,
                    "severity": severity,
                    "message": (
                        f"{resource.replace('_', ' ').capitalize()} usage is at "
                        f"{state.percentage:.1f}% of limit"
                    ),
                }
            )
    return {
        "start": start,
        "end": end,
        "now": now,
        "states": states,
        "costs": costs,
        "projected": projected,
        "warnings": warnings,
        "mib": MIB,
    }
