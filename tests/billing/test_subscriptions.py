"""Subscriptions: every tenant has one (created on the plan of its tier), plan changes with
proration to the second (an upgrade now, on an invoice issued now; a downgrade at the period
end), the tenant's limits following its plan, cancellation and resumption."""

import threading
from datetime import UTC, date, datetime

import pytest
import time_machine
from django.db import connections, transaction

from audit import tasks as audit_tasks
from audit.models import AuditEvent
from billing import services
from billing.models import (
    Invoice,
    InvoiceReason,
    InvoiceStatus,
    LineType,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing.services import subscriptions
from config.exceptions import Conflict, InsufficientPermissions
from tenants.models import Tenant
from tenants.plans import tenant_limits
from tests.factories import TenantFactory, UserFactory

from .factories import PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

# The worked example of docs/billing.md: Team -> Business on 12 January 2026 at 10:30 UTC.
JAN_12 = datetime(2026, 1, 12, 10, 30, tzinfo=UTC)
JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)


def plan(code: str) -> Plan:
    return Plan.objects.get(code=code)


def subscribed(code: str, **fields) -> Subscription:
    """A tenant subscribed to the catalogue plan `code` for January 2026, its tier and limits
    those of the plan (as a plan change leaves them)."""
    chosen = plan(code)
    tenant = TenantFactory(plan=chosen.tier, plan_features=chosen.features)
    return SubscriptionFactory(tenant=tenant, plan=chosen, **fields)


def events(tenant, event_type: str):
    return AuditEvent.objects.filter(tenant=tenant, event_type=event_type)


# The seeded catalogue ---------------------------------------------------------------------------


def test_the_catalogue_is_seeded_with_free_and_the_published_plans():
    plans = {p.code: p for p in Plan.objects.all()}
    assert {"free", "starter", "team", "business", "enterprise"} <= set(plans)
    assert plans["free"].price_cents == 0 and plans["free"].tier == "free"
    assert plans["starter"].price_cents == 4_900
    assert plans["team"].price_cents == 14_900
    assert plans["team"].features["maxUsers"] == 10
    assert plans["team"].features["advancedAnalytics"] is True
    assert plans["starter"].features["apiAccess"] is False
    assert list(Plan.objects.filter(code__in=plans).values_list("code", flat=True))[:2] == [
        "free",
        "starter",
    ]


# Every tenant has a subscription ----------------------------------------------------------------


@time_machine.travel(JAN_12, tick=False)
def test_a_new_tenant_starts_on_the_free_plan_active_in_the_current_month():
    tenant = TenantFactory()
    subscription = services.subscription_ensure(tenant=tenant)
    assert subscription.plan.code == "free"
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert (subscription.current_period_start, subscription.current_period_end) == (JAN_1, FEB_1)
    assert subscription.next_invoice_date == FEB_1
    tenant.refresh_from_db()
    assert tenant.plan_features == plan("free").features
    assert events(tenant, "billing.subscription.created").count() == 1
    # Asking again changes nothing.
    assert services.subscription_ensure(tenant=tenant).pk == subscription.pk
    assert events(tenant, "billing.subscription.created").count() == 1


def test_a_tenant_of_a_higher_tier_starts_on_the_plan_of_its_tier():
    tenant = TenantFactory(plan="pro")
    assert services.subscription_ensure(tenant=tenant).plan.code == "team"
    tenant = TenantFactory(plan="custom")
    subscription = services.subscription_ensure(tenant=tenant)
    assert subscription.plan.code == "enterprise"
    tenant.refresh_from_db()
    # The negotiated tier stays; the limits become the plan's.
    assert tenant.plan == "custom"


def test_the_free_plan_is_put_back_if_the_catalogue_lost_it():
    Plan.objects.filter(code="free").delete()
    subscription = services.subscription_ensure(tenant=TenantFactory())
    assert subscription.plan.code == "free"


# Plan changes: the quote ------------------------------------------------------------------------


@time_machine.travel(JAN_12, tick=False)
def test_an_upgrade_is_charged_pro_rata_to_the_second_rounded_half_up_once():
    subscription = subscribed("team")
    change = services.plan_change_quote(subscription=subscription, plan=plan("business"), at=JAN_12)
    assert change.kind == "upgrade" and change.applies_now
    # 19 days 13.5 hours of the 31 days of January.
    assert change.remaining_seconds == 1_690_200
    assert change.period_seconds == 2_678_400
    # (39,900 - 14,900) x 1,690,200 / 2,678,400 = 15,776.16... -> 15,776 cents.
    assert change.proration_amount_cents == 15_776
    assert change.effective_at == JAN_12


def test_half_a_cent_rounds_up():
    subscription = subscribed("team")
    cheap = PlanFactory(price_cents=14_901)
    # One cent more for half the month: half a cent, rounded up to one.
    middle = datetime(2026, 1, 16, 12, tzinfo=UTC)
    change = services.plan_change_quote(subscription=subscription, plan=cheap, at=middle)
    assert change.remaining_seconds * 2 == change.period_seconds
    assert change.proration_amount_cents == 1


def test_a_downgrade_and_a_change_of_interval_wait_for_the_period_end():
    subscription = subscribed("business")
    downgrade = services.plan_change_quote(subscription=subscription, plan=plan("team"), at=JAN_12)
    assert (downgrade.kind, downgrade.applies_now) == ("downgrade", False)
    assert downgrade.effective_at == FEB_1
    assert downgrade.proration_amount_cents == 0
    yearly = PlanFactory(price_cents=999_900, billing_interval="yearly")
    change = services.plan_change_quote(subscription=subscription, plan=yearly, at=JAN_12)
    assert (change.kind, change.effective_at) == ("interval_change", FEB_1)


def test_a_plan_of_the_same_price_applies_now_for_nothing():
    subscription = subscribed("team")
    same = PlanFactory(price_cents=14_900)
    change = services.plan_change_quote(subscription=subscription, plan=same, at=JAN_12)
    assert (change.kind, change.applies_now, change.proration_amount_cents) == (
        "same_price",
        True,
        0,
    )


def test_a_trialing_subscription_changes_plan_at_once_for_nothing():
    subscription = subscribed("team", status=SubscriptionStatus.TRIALING)
    change = services.plan_change_quote(subscription=subscription, plan=plan("business"), at=JAN_12)
    assert (change.kind, change.applies_now, change.proration_amount_cents) == (
        "during_trial",
        True,
        0,
    )


@pytest.mark.parametrize(
    ("fields", "target", "message"),
    [
        ({}, "team", "already on that plan"),
        ({"status": SubscriptionStatus.PAST_DUE}, "business", "past due"),
        ({"status": SubscriptionStatus.CANCELED}, "business", "has ended"),
    ],
)
def test_changes_that_are_refused(fields, target, message):
    subscription = subscribed("team", **fields)
    with pytest.raises(Conflict, match=message):
        services.plan_change_quote(subscription=subscription, plan=plan(target), at=JAN_12)


def test_an_inactive_plan_or_another_currency_is_refused():
    subscription = subscribed("team")
    retired = PlanFactory(price_cents=50_000, active=False)
    with pytest.raises(Conflict, match="no longer offered"):
        services.plan_change_quote(subscription=subscription, plan=retired, at=JAN_12)
    euros = PlanFactory(price_cents=50_000, currency="EUR")
    with pytest.raises(Conflict, match="EUR"):
        services.plan_change_quote(subscription=subscription, plan=euros, at=JAN_12)


# Plan changes: applied --------------------------------------------------------------------------


@time_machine.travel(JAN_12, tick=False)
def test_an_upgrade_applies_the_plan_its_limits_and_issues_the_proration_invoice():
    subscription = subscribed("team")
    tenant = subscription.tenant
    actor = UserFactory()
    result = services.subscription_change_plan(tenant=tenant, actor=actor, plan=plan("business"))

    subscription.refresh_from_db()
    tenant.refresh_from_db()
    assert subscription.plan.code == "business"
    assert tenant.plan == "enterprise"
    assert tenant_limits(tenant)["users"] == 25
    invoice = result.invoice
    assert invoice.number == "INV-2026-0001"
    assert invoice.reason == InvoiceReason.PLAN_CHANGE
    assert invoice.status == InvoiceStatus.PENDING
    assert (invoice.subtotal_cents, invoice.total_cents) == (15_776, 15_776)
    assert (invoice.period_start, invoice.period_end) == (JAN_12, FEB_1)
    assert invoice.issued_at == JAN_12
    assert invoice.due_date == date(2026, 1, 26)
    [line] = invoice.lines.all()
    assert (line.type, line.amount_cents, line.quantity) == (LineType.PRORATION, 15_776, 1)
    assert "Business plan instead of Team" in line.description
    [changed] = events(tenant, "billing.subscription.changed")
    assert changed.payload["change"] == "upgrade"
    assert changed.payload["proration_amount_cents"] == 15_776
    assert changed.payload["invoice_id"] == str(invoice.pk)
    assert changed.actor == actor
    assert events(tenant, "billing.invoice.created").get().payload["number"] == invoice.number


@time_machine.travel(JAN_12, tick=False)
def test_a_downgrade_is_scheduled_and_can_be_dropped_by_choosing_the_current_plan():
    subscription = subscribed("business")
    tenant = subscription.tenant
    result = services.subscription_change_plan(tenant=tenant, actor=None, plan=plan("team"))
    assert result.invoice is None
    subscription.refresh_from_db()
    tenant.refresh_from_db()
    assert subscription.plan.code == "business"
    assert subscription.pending_plan.code == "team"
    # Until the period ends, the tenant keeps what it paid for.
    assert tenant.plan == "enterprise"
    assert tenant_limits(tenant)["users"] == 25

    services.subscription_change_plan(tenant=tenant, actor=None, plan=plan("business"))
    subscription.refresh_from_db()
    assert subscription.pending_plan is None
    kinds = [e.payload["change"] for e in events(tenant, "billing.subscription.changed")]
    assert sorted(kinds) == ["downgrade", "keep_current"]
    assert not Invoice.objects.filter(tenant=tenant).exists()


@time_machine.travel(JAN_12, tick=False)
def test_an_upgrade_drops_a_scheduled_downgrade():
    subscription = subscribed("business", pending_plan=plan("team"))
    services.subscription_change_plan(
        tenant=subscription.tenant, actor=None, plan=plan("enterprise")
    )
    subscription.refresh_from_db()
    assert (subscription.plan.code, subscription.pending_plan) == ("enterprise", None)


@time_machine.travel(JAN_12, tick=False)
def test_invoice_numbers_follow_each_other_and_a_rolled_back_issue_takes_none():
    subscription = subscribed("starter")
    tenant = subscription.tenant
    first = services.subscription_change_plan(tenant=tenant, actor=None, plan=plan("team"))
    with pytest.raises(RuntimeError), transaction.atomic():
        services.subscription_change_plan(tenant=tenant, actor=None, plan=plan("business"))
        raise RuntimeError("the caller's transaction fails after the issue")
    second = services.subscription_change_plan(tenant=tenant, actor=None, plan=plan("business"))
    assert (first.invoice.number, second.invoice.number) == ("INV-2026-0001", "INV-2026-0002")
    # Another tenant's numbers are its own.
    other = subscribed("starter")
    third = services.subscription_change_plan(tenant=other.tenant, actor=None, plan=plan("team"))
    assert third.invoice.number == "INV-2026-0001"


# Cancel and resume ------------------------------------------------------------------------------


@time_machine.travel(JAN_12, tick=False)
def test_cancel_at_the_period_end_then_resume():
    subscription = subscribed("team")
    tenant = subscription.tenant
    cancelled = services.subscription_cancel(subscription=subscription, actor=None)
    assert cancelled.cancel_at_period_end and cancelled.canceled_at == JAN_12
    assert cancelled.status == SubscriptionStatus.ACTIVE
    assert cancelled.next_invoice_date is None
    # Asking twice is no second event.
    services.subscription_cancel(subscription=subscription, actor=None)
    [event] = events(tenant, "billing.subscription.canceled")
    assert event.payload["at_period_end"] is True
    assert event.payload["effective_at"] == FEB_1.isoformat()

    resumed = services.subscription_resume(subscription=subscription, actor=None)
    assert not resumed.cancel_at_period_end and resumed.canceled_at is None
    assert resumed.next_invoice_date == FEB_1
    assert events(tenant, "billing.subscription.resumed").count() == 1
    with pytest.raises(Conflict, match="not set to cancel"):
        services.subscription_resume(subscription=subscription, actor=None)


@time_machine.travel(JAN_12, tick=False)
def test_only_staff_end_a_subscription_now_and_the_limits_fall_back_to_free():
    subscription = subscribed("business")
    with pytest.raises(InsufficientPermissions):
        services.subscription_cancel(
            subscription=subscription, actor=UserFactory(), immediately=True
        )
    staff = UserFactory(is_staff=True)
    ended = services.subscription_cancel(subscription=subscription, actor=staff, immediately=True)
    assert ended.status == SubscriptionStatus.CANCELED
    tenant = Tenant.objects.get(pk=subscription.tenant_id)
    assert tenant.plan == "free"
    assert tenant_limits(tenant)["users"] == plan("free").features["maxUsers"]
    with pytest.raises(Conflict, match="already ended"):
        services.subscription_cancel(subscription=subscription, actor=staff)
    with pytest.raises(Conflict, match="has ended"):
        services.subscription_resume(subscription=subscription, actor=staff)


def test_the_free_plan_has_nothing_to_cancel():
    subscription = subscribed("free")
    with pytest.raises(Conflict, match="nothing to cancel"):
        services.subscription_cancel(subscription=subscription, actor=None)


# Voiding ----------------------------------------------------------------------------------------


@time_machine.travel(JAN_12, tick=False)
def test_an_unpaid_invoice_can_be_voided_once():
    subscription = subscribed("team")
    invoice = services.subscription_change_plan(
        tenant=subscription.tenant, actor=None, plan=plan("business")
    ).invoice
    voided = services.invoice_void(invoice=invoice, actor=None, reason="issued by mistake")
    assert voided.status == InvoiceStatus.VOID and voided.voided_at == JAN_12
    assert voided.amount_due_cents == 0
    with pytest.raises(Conflict, match="unpaid"):
        services.invoice_void(invoice=invoice, actor=None, reason="again")


@pytest.mark.postgres
def test_a_plan_change_racing_an_edit_of_the_new_plan_ends_with_the_edited_features(
    transactional_db, monkeypatch
):
    """A tenant moves to plan Q while staff edit Q's features. The edit updates the limits of
    Q's subscribers as they are when it runs; the change applies Q's features as it read them.
    The change now locks Q first and reads it under the lock, so whichever commits second sees
    the other: the tenant ends with the edited features. (Held between its read of Q and its
    write, the change used to apply the features Q had before the edit.)"""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    cheap = PlanFactory(code="race-cheap", price_cents=1_000)
    dear = PlanFactory(code="race-dear", price_cents=2_000, features={"maxUsers": 7})
    tenant = TenantFactory(plan=cheap.tier, plan_features=cheap.features)
    SubscriptionFactory(tenant=tenant, plan=cheap)
    change_read_the_plan = threading.Event()
    edit_done = threading.Event()
    apply = subscriptions.tenant_plan_apply

    def apply_after_the_edit_had_its_chance(**kwargs):
        change_read_the_plan.set()
        # Long enough for the edit to commit, had it not waited for the change's lock.
        edit_done.wait(timeout=2)
        return apply(**kwargs)

    monkeypatch.setattr(subscriptions, "tenant_plan_apply", apply_after_the_edit_had_its_chance)

    failures = []

    def change():
        try:
            services.subscription_change_plan(
                tenant=Tenant.objects.get(pk=tenant.pk), actor=None, plan=dear
            )
        except Exception as error:  # reported by the assertion below
            failures.append(error)
            change_read_the_plan.set()
        finally:
            connections.close_all()

    def edit():
        try:
            change_read_the_plan.wait(timeout=30)
            services.plan_update(plan=dear, actor=None, features={"maxUsers": 9})
            edit_done.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=change), threading.Thread(target=edit)]
    with time_machine.travel(JAN_12, tick=False):  # within the subscription's period
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert not failures, failures
    tenant.refresh_from_db()
    assert Subscription.objects.get(tenant=tenant).plan_id == dear.pk
    assert tenant.plan_features == {"maxUsers": 9}
