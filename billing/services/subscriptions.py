"""The tenant's subscription: created on the plan of its tier, plan changes with proration
(an upgrade now, a downgrade at the period end), cancellation and resumption.

Every tenant has one. A tenant that has none yet (created after the catalogue's migration)
gets one the first time billing touches it (`subscription_ensure`): the plan of its tier (Free
for a new tenant), active, in the current calendar month. A plan change applies the new plan's
tier and features to the tenant in the same transaction
(`tenants.services.lifecycle.tenant_plan_apply`), so limits follow the plan.
"""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import Conflict, InsufficientPermissions
from config.services import model_update
from tenants.models import Tenant
from tenants.services.lifecycle import tenant_plan_apply

from ..catalogue import PLAN_OF_TIER, seed_plans
from ..models import (
    Invoice,
    InvoiceReason,
    LineType,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from ..periods import (
    INTERVAL_MONTHS,
    add_months,
    annual_price_cents,
    period_from,
    prorated_cents,
    whole_seconds,
)
from .invoices import LineSpec, invoice_issue
from .payments import invoice_collect


def _plan_of_tier(tier: str) -> Plan:
    """The catalogue plan a tenant of `tier` is on when it has no subscription yet."""
    code = PLAN_OF_TIER.get(tier, "free")
    plan = Plan.objects.filter(code=code).first()
    if plan is None:
        # The seeded catalogue was edited away: put the missing seeded plans back (idempotent).
        seed_plans(Plan, settings.BILLING_CURRENCY)
        plan = Plan.objects.get(code=code)
    return plan


@transaction.atomic
def subscription_ensure(*, tenant: Tenant) -> Subscription:
    """The tenant's subscription, created on the plan of its tier (Free for a new tenant),
    active in the current calendar month, if it has none yet."""
    existing = Subscription.objects.filter(tenant=tenant).select_related("plan").first()
    if existing is not None:
        return existing
    locked = Tenant.objects.locked(tenant.pk)
    existing = Subscription.objects.filter(tenant=locked).select_related("plan").first()
    if existing is not None:
        return existing
    plan = _plan_of_tier(locked.plan)
    period = period_from(timezone.now(), plan.billing_interval)
    subscription = Subscription.objects.create(
        tenant=locked,
        plan=plan,
        status=SubscriptionStatus.ACTIVE,
        current_period_start=period.full_start,
        current_period_end=period.end,
    )
    # The tier stays what it is (staff may have set a custom one); the limits become the plan's.
    tenant_plan_apply(tenant=locked, tier=locked.plan, features=plan.features)
    record(
        tenant=locked,
        event_type="billing.subscription.created",
        payload={"subscription_id": str(subscription.pk), "plan": plan.code, "status": "active"},
    )
    return subscription


def _locked_subscription(tenant: Tenant) -> Subscription:
    return _relock(subscription_ensure(tenant=tenant))


class PlanChangeKind:
    UPGRADE = "upgrade"  # applies now, the difference charged pro rata
    DOWNGRADE = "downgrade"  # applies at the period end
    INTERVAL_CHANGE = "interval_change"  # applies at the period end
    SAME_PRICE = "same_price"  # applies now, nothing to charge
    DURING_TRIAL = "during_trial"  # applies now: nothing has been charged yet
    KEEP_CURRENT = "keep_current"  # back to the current plan: a scheduled change is dropped


_APPLY_NOW = frozenset(
    {
        PlanChangeKind.UPGRADE,
        PlanChangeKind.SAME_PRICE,
        PlanChangeKind.DURING_TRIAL,
        PlanChangeKind.KEEP_CURRENT,
    }
)


@dataclass(frozen=True)
class PlanChange:
    """What changing `subscription` to `new_plan` at `at` does: when, and what it costs."""

    old_plan: Plan
    new_plan: Plan
    kind: str
    at: datetime
    effective_at: datetime
    proration_amount_cents: int
    currency: str
    period_start: datetime
    period_end: datetime
    remaining_seconds: int
    period_seconds: int

    @property
    def applies_now(self) -> bool:
        return self.kind in _APPLY_NOW


def plan_change_quote(
    *, subscription: Subscription, plan: Plan, at: datetime, by_staff: bool = False
) -> PlanChange:
    """The exact effect of changing `subscription` to `plan` at `at`, or the Conflict refusing
    it. Changes nothing: the preview answers it, the change applies it."""
    current = subscription.plan
    if subscription.status == SubscriptionStatus.CANCELED:
        raise Conflict(
            "The subscription has ended; subscribe again through checkout.",
            details={"status": subscription.status},
        )
    if subscription.status == SubscriptionStatus.PAST_DUE:
        raise Conflict(
            "The subscription is past due: pay the overdue invoices before changing the plan.",
            details={"status": subscription.status},
        )
    if subscription.current_period_end <= at:
        raise Conflict(
            "The period has just ended and is being renewed; try again in a few minutes.",
            details={"current_period_end": subscription.current_period_end.isoformat()},
        )
    if (
        current.is_free
        and not plan.is_free
        and not subscription.default_payment_method
        and not by_staff
    ):
        raise Conflict(
            "Subscribe to a paid plan through checkout (POST billing/checkout): it takes the "
            "payment method.",
            details={"plan": plan.code},
        )
    if not plan.active and plan.pk != current.pk:
        raise Conflict("That plan is no longer offered.", details={"plan": plan.code})
    if plan.currency != current.currency:
        raise Conflict(
            f"That plan is billed in {plan.currency}, the subscription in {current.currency}.",
            details={"currency": [current.currency, plan.currency]},
        )
    end = subscription.current_period_end
    full_start = add_months(end, -INTERVAL_MONTHS[current.billing_interval])
    remaining = whole_seconds(at, end)
    full = whole_seconds(full_start, end)
    amount = 0
    if plan.pk == current.pk:
        if subscription.pending_plan_id is None:
            raise Conflict("The subscription is already on that plan.", details={"plan": plan.code})
        kind = PlanChangeKind.KEEP_CURRENT
    elif subscription.status == SubscriptionStatus.TRIALING:
        kind = PlanChangeKind.DURING_TRIAL
    elif plan.billing_interval != current.billing_interval:
        kind = PlanChangeKind.INTERVAL_CHANGE
    else:
        old_yearly = annual_price_cents(current.price_cents, current.billing_interval)
        new_yearly = annual_price_cents(plan.price_cents, plan.billing_interval)
        if new_yearly > old_yearly:
            kind = PlanChangeKind.UPGRADE
            amount = prorated_cents(
                plan.price_cents - current.price_cents, seconds=remaining, full_seconds=full
            )
        elif new_yearly < old_yearly:
            kind = PlanChangeKind.DOWNGRADE
        else:
            kind = PlanChangeKind.SAME_PRICE
    return PlanChange(
        old_plan=current,
        new_plan=plan,
        kind=kind,
        at=at,
        effective_at=at if kind in _APPLY_NOW else end,
        proration_amount_cents=amount,
        currency=current.currency,
        period_start=subscription.current_period_start,
        period_end=end,
        remaining_seconds=remaining,
        period_seconds=full,
    )


@dataclass(frozen=True)
class PlanChangeResult:
    change: PlanChange
    subscription: Subscription
    invoice: Invoice | None


@transaction.atomic
def subscription_change_plan(*, tenant: Tenant, actor, plan: Plan) -> PlanChangeResult:
    """Change the tenant's plan: an upgrade now, charged pro rata on an invoice issued now; a
    downgrade or a change of interval scheduled for the period end (`pending_plan`)."""
    # The new plan's row first, read again under the lock: an edit of the plan (plan_update,
    # which locks it and then updates its subscribers' limits) either waits for this change
    # and then counts this tenant among them, or is waited for and its features applied here.
    # Read before the edit committed, they were applied after it, and stayed the old ones.
    plan = locked_or_404(Plan.objects, no_key=True, pk=plan.pk)
    subscription = _locked_subscription(tenant)
    change = plan_change_quote(
        subscription=subscription,
        plan=plan,
        at=timezone.now(),
        by_staff=bool(getattr(actor, "is_staff", False)),
    )
    invoice = None
    if change.applies_now:
        model_update(instance=subscription, data={"plan": plan, "pending_plan": None})
        tenant_plan_apply(tenant=subscription.tenant, tier=plan.tier, features=plan.features)
        if change.proration_amount_cents > 0:
            invoice = invoice_issue(
                subscription=subscription,
                plan=plan,
                reason=InvoiceReason.PLAN_CHANGE,
                period_start=change.at,
                period_end=change.period_end,
                lines=[_proration_line(change)],
                actor=actor,
            )
            # Collected from the kept method, like every invoice (a decline leaves it pending).
            invoice_collect(invoice=invoice)
            invoice.refresh_from_db()
    else:
        model_update(instance=subscription, data={"pending_plan": plan})
    record(
        tenant=subscription.tenant,
        event_type="billing.subscription.changed",
        actor=actor,
        payload={
            "subscription_id": str(subscription.pk),
            "old_plan": change.old_plan.code,
            "new_plan": plan.code,
            "change": change.kind,
            "effective_at": change.effective_at.isoformat(),
            "proration_amount_cents": change.proration_amount_cents,
            "currency": change.currency,
            "invoice_id": str(invoice.pk) if invoice else None,
        },
    )
    return PlanChangeResult(change=change, subscription=subscription, invoice=invoice)


def _proration_line(change: PlanChange) -> LineSpec:
    return LineSpec(
        type=LineType.PRORATION,
        description=(
            f"{change.new_plan.name} plan instead of {change.old_plan.name}, "
            f"{change.at:%Y-%m-%d %H:%M:%S} UTC to {change.period_end:%Y-%m-%d} "
            f"({change.remaining_seconds} of {change.period_seconds} seconds)"
        ),
        quantity=1,
        amount_cents=change.proration_amount_cents,
        period_start=change.at,
        period_end=change.period_end,
    )


@transaction.atomic
def subscription_cancel(*, subscription: Subscription, actor, immediately: bool = False):
    """Cancel at the period end (the tenant keeps its plan until then and may resume), or, for
    staff, now: the tenant's limits fall back to the Free plan's at once."""
    subscription = _relock(subscription)
    if subscription.status == SubscriptionStatus.CANCELED:
        raise Conflict("The subscription has already ended.", details={"status": "canceled"})
    if subscription.plan.is_free:
        raise Conflict("The Free plan has nothing to cancel.", details={"plan": "free"})
    if immediately and not getattr(actor, "is_staff", False):
        raise InsufficientPermissions(
            "Only platform staff can end a subscription before its period ends.",
            details={"immediately": ["Leave it out to cancel at the period end."]},
        )
    now = timezone.now()
    if immediately:
        model_update(
            instance=subscription,
            data={
                "status": SubscriptionStatus.CANCELED,
                "canceled_at": now,
                "cancel_at_period_end": False,
                "pending_plan": None,
            },
        )
        free = _plan_of_tier("free")
        tenant_plan_apply(tenant=subscription.tenant, tier=free.tier, features=free.features)
        ends_at = now
    else:
        if subscription.cancel_at_period_end:
            return subscription
        model_update(instance=subscription, data={"cancel_at_period_end": True, "canceled_at": now})
        ends_at = subscription.current_period_end
    record(
        tenant=subscription.tenant,
        event_type="billing.subscription.canceled",
        actor=actor,
        payload={
            "subscription_id": str(subscription.pk),
            "plan": subscription.plan.code,
            "at_period_end": not immediately,
            "effective_at": ends_at.isoformat(),
        },
    )
    return subscription


@transaction.atomic
def subscription_resume(*, subscription: Subscription, actor) -> Subscription:
    """Undo a cancellation at the period end, before the period ends."""
    subscription = _relock(subscription)
    if subscription.status == SubscriptionStatus.CANCELED:
        raise Conflict(
            "The subscription has ended; subscribe again through checkout.",
            details={"status": "canceled"},
        )
    if not subscription.cancel_at_period_end:
        raise Conflict("The subscription is not set to cancel.", details={"status": "active"})
    model_update(instance=subscription, data={"cancel_at_period_end": False, "canceled_at": None})
    record(
        tenant=subscription.tenant,
        event_type="billing.subscription.resumed",
        actor=actor,
        payload={
            "subscription_id": str(subscription.pk),
            "plan": subscription.plan.code,
            "effective_at": timezone.now().isoformat(),
        },
    )
    return subscription


def _relock(subscription: Subscription) -> Subscription:
    return locked_or_404(
        Subscription.objects.select_related("plan", "tenant"), of=(), pk=subscription.pk
    )
