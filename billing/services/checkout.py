"""Checkout: signing up for a paid plan through the payment provider's hosted page.

`checkout_create` opens a session and answers the page's URL. The payer gives a payment
method there; the provider then sends `checkout.session.completed`, which billing verifies
and acts on like any provider event (provider_events.py), calling `checkout_complete`:
- a plan with trial days, for a subscription that never had a trial: `trialing` until the
  trial ends, nothing charged; the first invoice is issued when the trial ends;
- otherwise `active` at once: the first period runs to the end of the calendar month and is
  charged pro rata, on an invoice issued now and collected from the payment method given.
Either way the tenant's tier and limits become the plan's in the same transaction, and the
payment method is kept for the invoices to come.
"""

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import Conflict
from config.services import model_update
from tenants.models import Tenant
from tenants.services.lifecycle import tenant_plan_apply

from ..models import (
    CheckoutSession,
    CheckoutStatus,
    InvoiceReason,
    LineType,
    Plan,
    SubscriptionStatus,
)
from ..periods import period_from, prorated_cents
from ..providers import provider as payment_provider
from .invoices import LineSpec, invoice_issue
from .payments import invoice_collect
from .subscriptions import _locked_subscription, subscription_ensure


def _check_checkout(subscription, plan: Plan) -> None:
    if not plan.active:
        raise Conflict("That plan is no longer offered.", details={"plan": plan.code})
    if plan.is_free:
        raise Conflict(
            "The Free plan needs no checkout: change to it with change-plan.",
            details={"plan": plan.code},
        )
    paid_and_running = not subscription.plan.is_free and subscription.status != "canceled"
    if paid_and_running:
        raise Conflict(
            "The organization already has a paid subscription: use change-plan.",
            details={"plan": subscription.plan.code, "status": subscription.status},
        )


@transaction.atomic
def checkout_create(
    *, tenant: Tenant, actor, plan: Plan, success_url: str, cancel_url: str
) -> CheckoutSession:
    """Open a checkout session for `plan`; it expires after BILLING_CHECKOUT_EXPIRY_HOURS."""
    subscription = subscription_ensure(tenant=tenant)
    _check_checkout(subscription, plan)
    provider = payment_provider()
    session = CheckoutSession.objects.create(
        tenant=tenant,
        session_id=f"cs_{provider.name}_{secrets.token_urlsafe(24)}",
        provider=provider.name,
        plan=plan,
        success_url=success_url,
        cancel_url=cancel_url,
        expires_at=timezone.now() + timedelta(hours=settings.BILLING_CHECKOUT_EXPIRY_HOURS),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    record(
        tenant=tenant,
        event_type="billing.checkout.created",
        actor=actor,
        payload={
            "checkout_session_id": str(session.pk),
            "plan": plan.code,
            "provider": provider.name,
            "expires_at": session.expires_at.isoformat(),
        },
    )
    return session


def checkout_is_open(session: CheckoutSession, *, now=None) -> bool:
    now = now or timezone.now()
    return session.status == CheckoutStatus.OPEN and session.expires_at > now


@transaction.atomic
def checkout_complete(*, session: CheckoutSession, payment_method: str) -> CheckoutSession:
    """Subscribe the session's tenant to its plan (a trial, or the first period charged now).
    Completing a completed session again changes nothing."""
    session = locked_or_404(
        CheckoutSession.objects.select_related("plan", "tenant"), of=(), pk=session.pk
    )
    if session.status == CheckoutStatus.COMPLETE:
        return session
    now = timezone.now()
    if not checkout_is_open(session, now=now):
        raise Conflict("This checkout session has expired.", details={"status": "expired"})
    subscription = _locked_subscription(session.tenant)
    plan = session.plan
    _check_checkout(subscription, plan)
    old_plan = subscription.plan
    trial = plan.trial_days > 0 and subscription.trial_end is None
    if trial:
        trial_end = now + timedelta(days=plan.trial_days)
        changes = {
            "status": SubscriptionStatus.TRIALING,
            "current_period_start": now,
            "current_period_end": trial_end,
            "trial_end": trial_end,
        }
    else:
        period = period_from(now, plan.billing_interval)
        changes = {
            "status": SubscriptionStatus.ACTIVE,
            "current_period_start": period.start,
            "current_period_end": period.end,
        }
    model_update(
        instance=subscription,
        data={
            **changes,
            "plan": plan,
            "pending_plan": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "default_payment_method": payment_method,
            "payment_provider": session.provider,
        },
    )
    tenant_plan_apply(tenant=session.tenant, tier=plan.tier, features=plan.features)
    model_update(
        instance=session,
        data={
            "status": CheckoutStatus.COMPLETE,
            "completed_at": now,
            "payment_method": payment_method,
        },
    )
    record(
        tenant=session.tenant,
        event_type="billing.subscription.changed",
        payload={
            "subscription_id": str(subscription.pk),
            "old_plan": old_plan.code,
            "new_plan": plan.code,
            "change": "trial_started" if trial else "subscribed",
            "effective_at": now.isoformat(),
            "proration_amount_cents": 0,
            "currency": plan.currency,
            "invoice_id": None,
            "checkout_session_id": str(session.pk),
        },
    )
    if not trial:
        invoice = invoice_issue_first_period(subscription=subscription)
        invoice_collect(invoice=invoice)
    return session


def invoice_issue_first_period(*, subscription):
    """The invoice of a subscription's first paid period (at checkout, or at the end of a
    trial): the plan's price for the part of the calendar period it covers, pro rata."""
    plan = subscription.plan
    period = period_from(subscription.current_period_start, plan.billing_interval)
    amount = prorated_cents(
        plan.price_cents, seconds=period.seconds, full_seconds=period.full_seconds
    )
    description = f"{plan.name} plan, {period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}"
    if period.is_partial:
        description += f" ({period.seconds} of {period.full_seconds} seconds)"
    return invoice_issue(
        subscription=subscription,
        plan=plan,
        reason=InvoiceReason.PERIOD,
        period_start=period.start,
        period_end=period.end,
        lines=[
            LineSpec(
                type=LineType.SUBSCRIPTION,
                description=description,
                amount_cents=amount,
                period_start=period.start,
                period_end=period.end,
            )
        ],
        actor=None,
    )
