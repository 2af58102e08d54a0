"""The plan catalogue, changed by platform staff (the admin): each change is a platform audit
event, so a price change is on the record. A plan in use can only be deactivated."""

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import record
from config.db import create_or_conflict, locked_or_404, update_or_conflict
from config.exceptions import ApplicationError, Conflict
from tenants.models import Tenant

from ..catalogue import features_errors
from ..models import Invoice, Plan, Subscription, SubscriptionStatus, TokenPricing

PLAN_CODE_TAKEN = "A plan with this code already exists."
PLAN_FIELDS = (
    "code",
    "name",
    "description",
    "price_cents",
    "currency",
    "billing_interval",
    "trial_days",
    "features",
    "tier",
    "token_pricing",
    "token_overage_micros_per_1k",
    "storage_overage_cents_per_gb",
    "position",
    "active",
)


def _check_plan(fields: dict) -> None:
    errors = {}
    if "features" in fields:
        problems = features_errors(fields["features"])
        if problems:
            errors["features"] = problems
    if (
        fields.get("token_pricing") == TokenPricing.AT_COST
        and fields.get("currency") != settings.GATEWAY_CURRENCY
    ):
        errors["token_pricing"] = [
            f"Billing the gateway's cost needs the plan in {settings.GATEWAY_CURRENCY}, the "
            "currency the gateway records costs in."
        ]
    if errors:
        raise ApplicationError("The plan is invalid.", details=errors)


def _plain(value):
    return value.isoformat() if isinstance(value, datetime) else value


@transaction.atomic
def plan_create(*, actor, **fields) -> Plan:
    """Add a plan to the catalogue (a platform audit event)."""
    unknown = set(fields) - set(PLAN_FIELDS)
    if unknown:
        raise ValueError(f"not plan fields: {sorted(unknown)}")
    _check_plan({"currency": settings.BILLING_CURRENCY, **fields})
    plan = create_or_conflict(Plan, conflict_message=PLAN_CODE_TAKEN, **fields)
    record(
        tenant=None,
        event_type="billing.plan.created",
        actor=actor,
        payload={name: _plain(getattr(plan, name)) for name in PLAN_FIELDS},
    )
    return plan


@transaction.atomic
def plan_update(*, plan: Plan, actor, **fields) -> Plan:
    """Change a plan. Its subscribers' limits and tier follow at once (the same transaction);
    a new price applies from their next period."""
    unknown = set(fields) - set(PLAN_FIELDS)
    if unknown:
        raise ValueError(f"not plan fields: {sorted(unknown)}")
    plan = locked_or_404(Plan.objects, pk=plan.pk)
    current = {name: getattr(plan, name) for name in PLAN_FIELDS}
    _check_plan({**current, **fields})
    if "code" in fields and Plan.objects.filter(code=fields["code"]).exclude(pk=plan.pk).exists():
        raise Conflict(PLAN_CODE_TAKEN)
    # The check cannot see a plan given the same code that commits after it.
    changed = update_or_conflict(plan, fields, conflict_message=PLAN_CODE_TAKEN)
    if not changed:
        return plan
    if {"features", "tier"} & set(changed):
        Tenant.objects.filter(subscription__plan=plan).exclude(
            subscription__status=SubscriptionStatus.CANCELED
        ).update(plan=plan.tier, plan_features=plan.features, updated_at=timezone.now())
    record(
        tenant=None,
        event_type="billing.plan.updated",
        actor=actor,
        payload={
            "plan": plan.code,
            "changed": {
                name: {"from": _plain(c["from"]), "to": _plain(c["to"])}
                for name, c in changed.items()
            },
        },
    )
    return plan


@transaction.atomic
def plan_delete(*, plan: Plan, actor) -> None:
    """Remove a plan nobody uses; a plan in use (subscribed, scheduled or invoiced) can only
    be deactivated."""
    plan = locked_or_404(Plan.objects, pk=plan.pk)
    in_use = (
        Subscription.objects.filter(Q(plan=plan) | Q(pending_plan=plan)).exists()
        or Invoice.objects.filter(plan=plan).exists()
    )
    if in_use:
        raise Conflict(
            "This plan is in use: deactivate it instead (its subscribers keep it).",
            details={"plan": plan.code},
        )
    record(tenant=None, event_type="billing.plan.deleted", actor=actor, payload={"plan": plan.code})
    plan.delete()
