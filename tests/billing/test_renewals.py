"""Renewals: at a period's end the next calendar period starts and its invoice is issued, the
plan's price in advance and the ended period's metered usage in arrears; a scheduled downgrade
applies, a cancellation ends the subscription, a trial's end starts the first paid period pro
rata; exactly one invoice per subscription and period however often (and however many at once)
the job runs; `manage.py generate_invoices` and the beat task."""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from audit.models import AuditEvent
from billing import services, tasks
from billing.models import (
    Invoice,
    InvoiceReason,
    InvoiceSequence,
    InvoiceStatus,
    LineType,
    Payment,
    PaymentStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing.periods import prorated_cents
from billing.services import renewals
from billing.services.renewals import Usage
from tenants.models import QuotaCounter, QuotaResource, Tenant
from tenants.plans import tenant_limits
from tests.factories import TenantFactory
from tests.playground.factories import GatewayCallFactory

from .factories import PlanFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

DEC_31_LAST_SECOND = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
JAN_12 = datetime(2026, 1, 12, 10, 30, tzinfo=UTC)
JAN_20 = datetime(2026, 1, 20, 8, tzinfo=UTC)
JAN_26 = datetime(2026, 1, 26, 10, 30, tzinfo=UTC)
JAN_31_LAST_SECOND = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
FEB_10 = datetime(2026, 2, 10, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)
MAR_10 = datetime(2026, 3, 10, tzinfo=UTC)
APR_1 = datetime(2026, 4, 1, tzinfo=UTC)
MAY_1 = datetime(2026, 5, 1, tzinfo=UTC)
# When the beat job runs: a few minutes after the period boundary.
FEB_1_RUN = FEB_1 + timedelta(minutes=5)
MAR_1_RUN = MAR_1 + timedelta(minutes=5)
APR_1_RUN = APR_1 + timedelta(minutes=5)

MIB = 1024**2
GIB = 1024**3


def plan(code: str) -> Plan:
    return Plan.objects.get(code=code)


def subscribed(code: str, tenant=None, **fields) -> Subscription:
    """A tenant subscribed to the catalogue plan `code` for January 2026, its tier and limits
    those of the plan (as a plan change leaves them)."""
    chosen = plan(code)
    tenant = tenant or TenantFactory(plan=chosen.tier, plan_features=chosen.features)
    return SubscriptionFactory(tenant=tenant, plan=chosen, **fields)


def gateway_call(tenant, at: datetime, *, tokens: int = 0, cost_micros: int = 0):
    """A metered gateway call made at `at` (created_at is auto_now_add: set it afterwards)."""
    call = GatewayCallFactory(tenant=tenant, total_tokens=tokens, cost_micros=cost_micros)
    type(call).objects.filter(pk=call.pk).update(created_at=at)
    return call


def storage_used(tenant, used_bytes: int) -> None:
    QuotaCounter.objects.update_or_create(
        tenant=tenant, resource=QuotaResource.STORAGE, defaults={"used": used_bytes}
    )


def events(tenant, event_type: str):
    return AuditEvent.objects.filter(tenant=tenant, event_type=event_type).order_by("created_at")


def invoices_of(subscription: Subscription):
    return Invoice.objects.filter(subscription=subscription).order_by("period_start")


def lines_of(invoice: Invoice) -> list[tuple]:
    return [
        (line.type, line.quantity, line.unit_amount_micros, line.amount_cents)
        for line in invoice.lines.order_by("position")
    ]


def renew(now: datetime) -> services.RenewalReport:
    with time_machine.travel(now, tick=False):
        return services.subscriptions_renew_due(now=now)


# A period ends: the next one, and its invoice -----------------------------------------------------


def test_a_monthly_subscription_renews_into_the_next_month_with_its_price_in_advance():
    subscription = subscribed("team")
    tenant = subscription.tenant

    report = renew(FEB_1_RUN)

    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert (subscription.current_period_start, subscription.current_period_end) == (FEB_1, MAR_1)
    assert subscription.plan.code == "team"
    [invoice] = invoices_of(subscription)
    assert report.renewed == 1
    assert [i.pk for i in report.invoices] == [invoice.pk]
    assert report.failed == []
    assert invoice.number == "INV-2026-0001"
    assert invoice.reason == InvoiceReason.PERIOD
    assert invoice.status == InvoiceStatus.PENDING
    assert invoice.plan.code == "team"
    assert invoice.currency == "USD"
    assert (invoice.period_start, invoice.period_end) == (FEB_1, MAR_1)
    assert (invoice.subtotal_cents, invoice.total_cents) == (14_900, 14_900)
    assert invoice.amount_due_cents == 14_900
    assert invoice.issued_at == FEB_1_RUN
    # BILLING_INVOICE_DUE_DAYS (14) after the issue.
    assert invoice.due_date == date(2026, 2, 15)
    [line] = invoice.lines.all()
    assert (line.type, line.quantity, line.amount_cents) == (LineType.SUBSCRIPTION, 1, 14_900)
    assert line.unit_amount_micros == 149_000_000
    assert (line.period_start, line.period_end) == (FEB_1, MAR_1)
    assert line.description == "Team plan, 2026-02-01 to 2026-03-01"

    [renewed] = events(tenant, "billing.subscription.renewed")
    assert renewed.payload["subscription_id"] == str(subscription.pk)
    assert (renewed.payload["old_plan"], renewed.payload["new_plan"]) == ("team", "team")
    assert renewed.payload["current_period_start"] == FEB_1.isoformat()
    assert renewed.payload["current_period_end"] == MAR_1.isoformat()
    assert renewed.payload["effective_at"] == FEB_1.isoformat()
    [created] = events(tenant, "billing.invoice.created")
    assert created.payload["number"] == "INV-2026-0001"
    assert created.payload["total_cents"] == 14_900
    assert created.payload["reason"] == "period"
    assert created.payload["due_date"] == "2026-02-15"
    assert created.payload["period_start"] == FEB_1.isoformat()
    assert not events(tenant, "billing.subscription.changed").exists()
    # Nobody's card to charge: the invoice waits to be paid.
    assert not Payment.objects.filter(invoice=invoice).exists()


def test_the_due_date_follows_the_setting(settings):
    settings.BILLING_INVOICE_DUE_DAYS = 30
    subscription = subscribed("starter")
    renew(FEB_1_RUN)
    [invoice] = invoices_of(subscription)
    assert invoice.due_date == date(2026, 3, 3)
    assert invoice.total_cents == 4_900


def test_a_period_that_has_not_ended_is_not_due_and_not_renewed():
    subscription = subscribed("team")
    with time_machine.travel(JAN_31_LAST_SECOND, tick=False):
        assert list(services.subscriptions_due(now=JAN_31_LAST_SECOND)) == []
        assert services.subscription_renew(subscription=subscription) is None
        report = services.subscriptions_renew_due(now=JAN_31_LAST_SECOND)
    assert (report.renewed, report.invoices, report.failed) == (0, [], [])
    subscription.refresh_from_db()
    assert subscription.current_period_end == FEB_1
    assert not Invoice.objects.exists()
    # The very moment it ends, it is due.
    assert list(services.subscriptions_due(now=FEB_1)) == [subscription]


def test_only_subscriptions_that_can_renew_are_due():
    due = [
        subscribed("team", status=status)
        for status in (
            SubscriptionStatus.ACTIVE,
            SubscriptionStatus.TRIALING,
            SubscriptionStatus.PAST_DUE,
        )
    ]
    ended = subscribed("team", status=SubscriptionStatus.CANCELED)
    later = subscribed("team", current_period_start=FEB_1, current_period_end=MAR_1)
    found = list(services.subscriptions_due(now=FEB_1_RUN))
    assert set(found) == set(due)
    assert ended not in found and later not in found
    assert services.subscription_renew(subscription=ended, now=FEB_1_RUN) is None
    ended.refresh_from_db()
    assert ended.current_period_end == FEB_1


def test_a_past_due_subscription_still_renews_and_stays_past_due():
    subscription = subscribed("team", status=SubscriptionStatus.PAST_DUE)
    renew(FEB_1_RUN)
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.PAST_DUE
    assert subscription.current_period_end == MAR_1
    assert [i.total_cents for i in invoices_of(subscription)] == [14_900]


def test_the_invoice_is_collected_from_the_payment_method_kept_at_checkout():
    subscription = subscribed("team", default_payment_method="pm_card_visa")
    renew(FEB_1_RUN)
    [invoice] = invoices_of(subscription)
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.paid_at == FEB_1_RUN
    assert invoice.amount_paid_cents == 14_900
    assert invoice.amount_due_cents == 0
    [payment] = invoice.payments.all()
    assert (payment.status, payment.amount_cents, payment.currency) == (
        PaymentStatus.SUCCEEDED,
        14_900,
        "USD",
    )
    assert payment.payment_method == "visa ending 4242"
    assert events(subscription.tenant, "billing.payment.succeeded").count() == 1


# Usage in arrears -------------------------------------------------------------------------------


def test_tokens_beyond_the_included_amount_are_billed_per_started_thousand_in_arrears():
    subscription = subscribed("team")  # 200,000 tokens included, 1,500 micros per 1,000 beyond
    tenant = subscription.tenant
    gateway_call(tenant, JAN_1, tokens=150_000)  # the period's first moment counts
    gateway_call(tenant, JAN_31_LAST_SECOND, tokens=59_001)
    # Outside the ended period: the one before, and the one that starts at its end.
    gateway_call(tenant, DEC_31_LAST_SECOND, tokens=100_000)
    gateway_call(tenant, FEB_1, tokens=100_000)
    # Another tenant's calls are its own.
    gateway_call(TenantFactory(), JAN_12, tokens=900_000)

    renew(FEB_1_RUN)

    [invoice] = invoices_of(subscription)
    # 9,001 tokens beyond: 10 started thousands x 1,500 micros = 15,000 micros = 1.5 cents,
    # rounded half-up once: 2 cents.
    assert lines_of(invoice) == [
        (LineType.SUBSCRIPTION, 1, 149_000_000, 14_900),
        (LineType.USAGE, 10, 1_500, 2),
    ]
    assert (invoice.subtotal_cents, invoice.total_cents) == (14_902, 14_902)
    usage = invoice.lines.get(type=LineType.USAGE)
    # Billed in arrears: the line is January's, the invoice February's.
    assert (usage.period_start, usage.period_end) == (JAN_1, FEB_1)
    assert (invoice.period_start, invoice.period_end) == (FEB_1, MAR_1)
    assert "beyond the 200,000 included" in usage.description
    assert "9,001 tokens" in usage.description
    assert events(tenant, "billing.invoice.created").get().payload["total_cents"] == 14_902


def test_the_usage_of_a_period_is_read_from_the_gateway_and_the_storage_counter():
    subscription = subscribed("team")
    tenant = subscription.tenant
    gateway_call(tenant, JAN_12, tokens=1_000, cost_micros=2_500)
    gateway_call(tenant, JAN_20, tokens=500, cost_micros=1_250)
    gateway_call(tenant, FEB_1, tokens=7_000, cost_micros=9_999)
    assert services.period_usage(subscription, JAN_1, FEB_1) == Usage(
        tokens=1_500, cost_micros=3_750, storage_bytes=0
    )
    storage_used(tenant, 3 * GIB)
    assert services.period_usage(subscription, JAN_1, FEB_1).storage_bytes == 3 * GIB
    assert services.period_usage(subscription, FEB_1, MAR_1) == Usage(
        tokens=7_000, cost_micros=9_999, storage_bytes=3 * GIB
    )


@pytest.mark.parametrize(
    ("tokens", "thousands", "cents"),
    [
        (200_000, None, None),  # exactly the included amount: nothing beyond
        (200_001, 1, 0),  # one token beyond is a started thousand: 0.15 cents -> 0
        (203_000, 3, 0),  # 4,500 micros: 0.45 cents -> 0
        (204_000, 4, 1),  # 6,000 micros: 0.6 cents -> 1
        (210_000, 10, 2),  # 15,000 micros: exactly half a cent over 1 -> 2
        (1_200_000, 1_000, 150),  # a million tokens beyond at 0.15 cents per 1,000
    ],
)
def test_token_overage_rounding(tokens, thousands, cents):
    team = plan("team")
    lines = services.usage_lines(team, Usage(tokens=tokens), JAN_1, FEB_1)
    if thousands is None:
        assert lines == []
        return
    [line] = lines
    assert (line.type, line.quantity, line.unit_amount_micros, line.amount_cents) == (
        LineType.USAGE,
        thousands,
        1_500,
        cents,
    )


def test_an_at_cost_plan_passes_the_summed_gateway_cost_through_rounded_once():
    subscription = subscribed("enterprise")
    tenant = subscription.tenant
    # Half a cent each: rounded per call they would make 3 cents; summed first, 1.5 -> 2.
    for at in (JAN_1, JAN_12, JAN_31_LAST_SECOND):
        gateway_call(tenant, at, tokens=1_000_000, cost_micros=5_000)
    gateway_call(tenant, FEB_1, tokens=1_000_000, cost_micros=990_000)

    renew(FEB_1_RUN)

    [invoice] = invoices_of(subscription)
    # 3,000,000 tokens, beyond the 2,000,000 of maxTokensPerMonth: at cost, no token overage.
    assert lines_of(invoice) == [
        (LineType.SUBSCRIPTION, 1, 999_000_000, 99_900),
        (LineType.USAGE, 1, 15_000, 2),
    ]
    usage = invoice.lines.get(type=LineType.USAGE)
    assert "at cost" in usage.description and "3,000,000 tokens" in usage.description
    assert (usage.period_start, usage.period_end) == (JAN_1, FEB_1)
    assert invoice.total_cents == 99_902


@pytest.mark.parametrize(
    ("cost_micros", "cents"),
    [(14_999, 1), (15_000, 2), (123_455_000, 12_346), (123_454_999, 12_345)],
)
def test_at_cost_usage_is_converted_to_cents_half_up(cost_micros, cents):
    [line] = services.usage_lines(
        plan("enterprise"), Usage(tokens=10, cost_micros=cost_micros), JAN_1, FEB_1
    )
    assert (line.quantity, line.unit_amount_micros, line.amount_cents) == (1, cost_micros, cents)


def test_an_at_cost_plan_with_no_recorded_cost_has_no_usage_line():
    assert services.usage_lines(plan("enterprise"), Usage(tokens=5_000_000), JAN_1, FEB_1) == []


def test_storage_beyond_the_included_amount_is_billed_per_started_gb():
    subscription = subscribed("team")  # 5,000 MB included, 40 cents per GB beyond
    # A GB and a byte beyond: two started GB.
    storage_used(subscription.tenant, 5_000 * MIB + GIB + 1)

    renew(FEB_1_RUN)

    [invoice] = invoices_of(subscription)
    assert lines_of(invoice) == [
        (LineType.SUBSCRIPTION, 1, 149_000_000, 14_900),
        (LineType.USAGE, 2, 400_000, 80),
    ]
    storage = invoice.lines.get(type=LineType.USAGE)
    assert "beyond the 5,000 MB included" in storage.description
    assert (storage.period_start, storage.period_end) == (JAN_1, FEB_1)
    assert invoice.total_cents == 14_980


def test_storage_within_the_included_amount_is_not_billed():
    team = plan("team")
    assert services.usage_lines(team, Usage(storage_bytes=5_000 * MIB), JAN_1, FEB_1) == []
    [line] = services.usage_lines(team, Usage(storage_bytes=5_000 * MIB + 1), JAN_1, FEB_1)
    assert (line.quantity, line.amount_cents) == (1, 40)


def test_tokens_and_storage_beyond_make_two_usage_lines_after_the_plan():
    subscription = subscribed("starter")  # 50,000 tokens and 1,000 MB included
    gateway_call(subscription.tenant, JAN_12, tokens=150_000)
    storage_used(subscription.tenant, 1_000 * MIB + 3 * GIB)
    renew(FEB_1_RUN)
    [invoice] = invoices_of(subscription)
    # 100 thousands x 2,000 micros = 20 cents; 3 GB x 50 cents.
    assert lines_of(invoice) == [
        (LineType.SUBSCRIPTION, 1, 49_000_000, 4_900),
        (LineType.USAGE, 100, 2_000, 20),
        (LineType.USAGE, 3, 500_000, 150),
    ]
    assert invoice.total_cents == 5_070


def test_a_yearly_plan_includes_twelve_months_and_bills_storage_per_gb_month():
    yearly = PlanFactory(billing_interval="yearly", price_cents=149_000)
    included = 12 * yearly.features["maxTokensPerMonth"]
    assert services.usage_lines(yearly, Usage(tokens=included), JAN_1, FEB_1) == []
    tokens, storage = services.usage_lines(
        yearly,
        Usage(tokens=included + 1_000, storage_bytes=5_000 * MIB + 1),
        JAN_1,
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert (tokens.quantity, tokens.amount_cents) == (1, 0)
    assert (storage.quantity, storage.unit_amount_micros, storage.amount_cents) == (
        12,
        400_000,
        480,
    )


def test_a_yearly_subscription_renews_for_twelve_months():
    yearly = PlanFactory(billing_interval="yearly", price_cents=149_000)
    tenant = TenantFactory(plan=yearly.tier, plan_features=yearly.features)
    subscription = SubscriptionFactory(
        tenant=tenant,
        plan=yearly,
        current_period_start=datetime(2025, 1, 1, tzinfo=UTC),
        current_period_end=JAN_1,
    )
    renew(JAN_1 + timedelta(minutes=5))
    subscription.refresh_from_db()
    next_year = datetime(2027, 1, 1, tzinfo=UTC)
    assert (subscription.current_period_start, subscription.current_period_end) == (
        JAN_1,
        next_year,
    )
    [invoice] = invoices_of(subscription)
    assert (invoice.period_start, invoice.period_end, invoice.total_cents) == (
        JAN_1,
        next_year,
        149_000,
    )


def test_no_usage_means_no_usage_line():
    subscription = subscribed("business")
    gateway_call(subscription.tenant, JAN_12, tokens=1_000_000)  # exactly the included amount
    storage_used(subscription.tenant, 20_000 * MIB)  # exactly the included amount
    renew(FEB_1_RUN)
    [invoice] = invoices_of(subscription)
    assert lines_of(invoice) == [(LineType.SUBSCRIPTION, 1, 399_000_000, 39_900)]


# A scheduled downgrade -------------------------------------------------------------------------


def test_a_pending_downgrade_applies_at_renewal_with_the_ended_periods_usage_at_the_old_prices():
    subscription = subscribed("business", pending_plan=plan("team"))
    tenant = subscription.tenant
    # Business includes 1,000,000 tokens at 1,000 micros per 1,000 beyond (Team: 200,000 and
    # 1,500): January was used on Business, so it is billed at Business's prices.
    gateway_call(tenant, JAN_12, tokens=1_010_000)

    renew(FEB_1_RUN)

    subscription.refresh_from_db()
    tenant.refresh_from_db()
    assert subscription.plan.code == "team"
    assert subscription.pending_plan is None
    assert (subscription.current_period_start, subscription.current_period_end) == (FEB_1, MAR_1)
    assert tenant.plan == "pro"
    assert tenant.plan_features == plan("team").features
    assert tenant_limits(tenant)["users"] == 10
    [invoice] = invoices_of(subscription)
    assert invoice.plan.code == "team"
    assert lines_of(invoice) == [
        (LineType.SUBSCRIPTION, 1, 149_000_000, 14_900),
        (LineType.USAGE, 10, 1_000, 1),
    ]
    assert invoice.lines.first().description == "Team plan, 2026-02-01 to 2026-03-01"
    [changed] = events(tenant, "billing.subscription.changed")
    assert changed.payload["change"] == "renewed_on_new_plan"
    assert (changed.payload["old_plan"], changed.payload["new_plan"]) == ("business", "team")
    assert changed.payload["effective_at"] == FEB_1.isoformat()
    assert not events(tenant, "billing.subscription.renewed").exists()


def test_a_pending_change_to_a_yearly_plan_starts_a_year_long_period():
    yearly = PlanFactory(billing_interval="yearly", price_cents=149_000, tier="pro")
    subscription = subscribed("team", pending_plan=yearly)
    renew(FEB_1_RUN)
    subscription.refresh_from_db()
    assert subscription.plan == yearly
    feb_2027 = datetime(2027, 2, 1, tzinfo=UTC)
    assert (subscription.current_period_start, subscription.current_period_end) == (
        FEB_1,
        feb_2027,
    )
    [invoice] = invoices_of(subscription)
    assert (invoice.period_end, invoice.total_cents) == (feb_2027, 149_000)


# Cancellation at the period end ----------------------------------------------------------------


def test_a_subscription_set_to_cancel_ends_and_the_tenant_falls_back_to_free():
    subscription = subscribed("team", cancel_at_period_end=True, canceled_at=JAN_12)
    tenant = subscription.tenant

    report = renew(FEB_1_RUN)

    subscription.refresh_from_db()
    tenant.refresh_from_db()
    assert subscription.status == SubscriptionStatus.CANCELED
    assert subscription.cancel_at_period_end is False
    assert subscription.canceled_at == JAN_12
    assert subscription.next_invoice_date is None
    assert tenant.plan == "free"
    assert tenant.plan_features == plan("free").features
    assert tenant_limits(tenant)["users"] == 3
    assert not Invoice.objects.filter(tenant=tenant).exists()
    assert (report.renewed, report.invoices) == (1, [])
    [changed] = events(tenant, "billing.subscription.changed")
    assert changed.payload["change"] == "ended"
    assert changed.payload["old_plan"] == "team"
    assert changed.payload["effective_at"] == FEB_1.isoformat()
    # Ended: never due again.
    assert services.subscription_renew(subscription=subscription, now=MAR_1_RUN) is None
    assert renew(MAR_1_RUN).renewed == 0
    assert not Invoice.objects.filter(tenant=tenant).exists()


def test_a_subscription_set_to_cancel_drops_its_pending_downgrade():
    subscription = subscribed(
        "business", cancel_at_period_end=True, canceled_at=JAN_12, pending_plan=plan("team")
    )
    renew(FEB_1_RUN)
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.CANCELED
    assert subscription.pending_plan is None
    assert Tenant.objects.get(pk=subscription.tenant_id).plan == "free"


def test_a_subscription_that_ends_owing_usage_gets_one_usage_only_invoice():
    subscription = subscribed(
        "team",
        cancel_at_period_end=True,
        canceled_at=JAN_12,
        default_payment_method="pm_card_visa",
    )
    gateway_call(subscription.tenant, JAN_20, tokens=260_000)  # 60 thousands beyond

    report = renew(FEB_1_RUN)

    [invoice] = invoices_of(subscription)
    assert [i.pk for i in report.invoices] == [invoice.pk]
    assert invoice.plan.code == "team"
    assert invoice.reason == InvoiceReason.PERIOD
    # Only the usage: no new period is billed. 60 x 1,500 micros = 9 cents.
    assert lines_of(invoice) == [(LineType.USAGE, 60, 1_500, 9)]
    line = invoice.lines.get()
    assert (line.period_start, line.period_end) == (JAN_1, FEB_1)
    assert invoice.total_cents == 9
    assert invoice.number == "INV-2026-0001"
    # Collected like any other invoice.
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.CANCELED
    # Running again issues nothing more.
    renew(FEB_1_RUN + timedelta(hours=1))
    assert invoices_of(subscription).count() == 1


def test_a_subscription_that_ends_owing_less_than_half_a_cent_gets_no_invoice():
    subscription = subscribed("team", cancel_at_period_end=True, canceled_at=JAN_12)
    # One token beyond the 200,000 included: one started thousand, 1,500 micros = 0.15 cents.
    gateway_call(subscription.tenant, JAN_20, tokens=200_001)
    renew(FEB_1_RUN)
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.CANCELED
    assert not Invoice.objects.filter(tenant=subscription.tenant).exists()


# A trial ends ----------------------------------------------------------------------------------


def trialing(code: str = "team", **fields) -> Subscription:
    """A trial started at checkout on 12 January 10:30, 14 days long."""
    return subscribed(
        code,
        status=SubscriptionStatus.TRIALING,
        current_period_start=JAN_12,
        current_period_end=JAN_26,
        trial_end=JAN_26,
        **fields,
    )


def test_a_trial_that_ends_starts_the_first_paid_period_pro_rata_and_collects_it():
    subscription = trialing(default_payment_method="pm_card_visa")
    tenant = subscription.tenant
    # The trial's usage is free, even beyond the included amount.
    gateway_call(tenant, JAN_20, tokens=5_000_000)

    report = renew(JAN_26 + timedelta(minutes=5))

    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert (subscription.current_period_start, subscription.current_period_end) == (JAN_26, FEB_1)
    [invoice] = invoices_of(subscription)
    assert [i.pk for i in report.invoices] == [invoice.pk]
    assert (invoice.period_start, invoice.period_end) == (JAN_26, FEB_1)
    # 5 days 13.5 hours of January's 31 days: 14,900 x 480,600 / 2,678,400 = 2,673.59 -> 2,674.
    expected = prorated_cents(14_900, seconds=480_600, full_seconds=2_678_400)
    assert expected == 2_674
    assert lines_of(invoice) == [(LineType.SUBSCRIPTION, 1, 26_740_000, 2_674)]
    assert "480600 of 2678400 seconds" in invoice.lines.get().description
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.amount_paid_cents == 2_674
    [payment] = Payment.objects.filter(invoice=invoice)
    assert (payment.status, payment.amount_cents) == (PaymentStatus.SUCCEEDED, 2_674)
    [changed] = events(tenant, "billing.subscription.changed")
    assert changed.payload["change"] == "trial_ended"
    assert changed.payload["effective_at"] == JAN_26.isoformat()
    assert changed.payload["current_period_end"] == FEB_1.isoformat()
    assert events(tenant, "billing.invoice.created").count() == 1

    # At the month's end it renews like any subscription, billing February in advance and the
    # paid part of January's usage in arrears (none here).
    renew(FEB_1_RUN)
    subscription.refresh_from_db()
    assert (subscription.current_period_start, subscription.current_period_end) == (FEB_1, MAR_1)
    first, second = invoices_of(subscription)
    assert first.pk == invoice.pk
    assert lines_of(second) == [(LineType.SUBSCRIPTION, 1, 149_000_000, 14_900)]
    assert second.number == "INV-2026-0002"


def test_a_trial_whose_card_is_declined_leaves_the_first_invoice_pending():
    subscription = trialing(default_payment_method="pm_card_chargeDeclined")
    renew(JAN_26 + timedelta(minutes=5))
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    [invoice] = invoices_of(subscription)
    assert invoice.status == InvoiceStatus.PENDING
    assert invoice.amount_due_cents == 2_674
    [payment] = Payment.objects.filter(invoice=invoice)
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_code == "card_declined"
    assert events(subscription.tenant, "billing.payment.failed").count() == 1


def test_a_trial_without_a_payment_method_leaves_the_first_invoice_pending():
    subscription = trialing()
    renew(JAN_26 + timedelta(minutes=5))
    [invoice] = invoices_of(subscription)
    assert invoice.status == InvoiceStatus.PENDING
    assert invoice.total_cents == 2_674
    assert not Payment.objects.exists()


def test_a_trial_set_to_cancel_ends_without_an_invoice():
    subscription = trialing(cancel_at_period_end=True, canceled_at=JAN_20)
    gateway_call(subscription.tenant, JAN_20, tokens=5_000_000)
    renew(JAN_26 + timedelta(minutes=5))
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.CANCELED
    assert not Invoice.objects.exists()
    assert Tenant.objects.get(pk=subscription.tenant_id).plan == "free"


# The Free plan ---------------------------------------------------------------------------------


def test_the_free_plan_renews_silently_but_its_period_advances():
    subscription = subscribed("free")
    # Beyond the Free plan's tokens and storage: it has no overage prices.
    gateway_call(subscription.tenant, JAN_12, tokens=900_000)
    storage_used(subscription.tenant, 50 * GIB)

    report = renew(FEB_1_RUN)

    subscription.refresh_from_db()
    assert (subscription.current_period_start, subscription.current_period_end) == (FEB_1, MAR_1)
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert not Invoice.objects.exists()
    assert not InvoiceSequence.objects.filter(tenant=subscription.tenant).exists()
    assert (report.renewed, report.invoices) == (1, [])
    assert events(subscription.tenant, "billing.subscription.renewed").count() == 1


# Catching up -----------------------------------------------------------------------------------


def test_a_subscription_months_behind_catches_up_one_period_at_a_time():
    subscription = subscribed("team")
    tenant = subscription.tenant
    # February's usage goes on the invoice of March, issued at February's end.
    gateway_call(tenant, FEB_10, tokens=210_000)

    report = renew(APR_1_RUN)

    subscription.refresh_from_db()
    assert (subscription.current_period_start, subscription.current_period_end) == (APR_1, MAY_1)
    invoices = list(invoices_of(subscription))
    assert [(i.period_start, i.period_end) for i in invoices] == [
        (FEB_1, MAR_1),
        (MAR_1, APR_1),
        (APR_1, MAY_1),
    ]
    assert [i.number for i in invoices] == ["INV-2026-0001", "INV-2026-0002", "INV-2026-0003"]
    assert [i.total_cents for i in invoices] == [14_900, 14_902, 14_900]
    assert lines_of(invoices[1])[1] == (LineType.USAGE, 10, 1_500, 2)
    assert invoices[1].lines.get(type=LineType.USAGE).period_start == FEB_1
    # Issued in period order.
    assert [i.pk for i in report.invoices] == [i.pk for i in invoices]
    assert report.renewed == 3
    periods = [
        e.payload["current_period_start"] for e in events(tenant, "billing.subscription.renewed")
    ]
    assert sorted(periods) == [FEB_1.isoformat(), MAR_1.isoformat(), APR_1.isoformat()]
    assert InvoiceSequence.objects.get(tenant=tenant).last_number == 3


def test_catching_up_a_trial_that_ended_long_ago():
    subscription = trialing()
    renew(MAR_1_RUN)
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert (subscription.current_period_start, subscription.current_period_end) == (MAR_1, APR_1)
    assert [(i.period_start, i.total_cents) for i in invoices_of(subscription)] == [
        (JAN_26, 2_674),
        (FEB_1, 14_900),
        (MAR_1, 14_900),
    ]


# One invoice per subscription and period ---------------------------------------------------------


def test_running_the_job_twice_issues_nothing_the_second_time():
    subscriptions = [subscribed("team"), subscribed("starter"), subscribed("free")]
    first = renew(FEB_1_RUN)
    second = renew(FEB_1_RUN + timedelta(minutes=1))
    assert (first.renewed, len(first.invoices)) == (3, 2)
    assert (second.renewed, second.invoices, second.failed) == (0, [], [])
    for subscription in subscriptions:
        # Asking for one directly finds it renewed: nothing to do.
        assert services.subscription_renew(subscription=subscription, now=FEB_1_RUN) is None
        subscription.refresh_from_db()
        assert subscription.current_period_end == MAR_1
    assert Invoice.objects.count() == 2
    assert AuditEvent.objects.filter(event_type="billing.invoice.created").count() == 2


def test_the_database_refuses_a_second_invoice_for_the_same_period():
    subscription = subscribed("team")
    renew(FEB_1_RUN)
    subscription.refresh_from_db()
    line = services.LineSpec(type=LineType.SUBSCRIPTION, description="again", amount_cents=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        services.invoice_issue(
            subscription=subscription,
            plan=subscription.plan,
            reason=InvoiceReason.PERIOD,
            period_start=FEB_1,
            period_end=MAR_1,
            lines=[line],
            actor=None,
        )
    assert invoices_of(subscription).count() == 1
    # The refused issue took no number.
    assert InvoiceSequence.objects.get(tenant=subscription.tenant).last_number == 1


def _renew_in_thread(now: datetime, start: threading.Barrier) -> services.RenewalReport:
    try:
        start.wait(timeout=30)
        return services.subscriptions_renew_due(now=now)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_runs_at_once_issue_exactly_one_invoice_per_subscription_and_period():
    runs = 4
    subscriptions = [
        subscribed(
            "team" if n % 3 else "starter",
            # Half of them collect their invoices, so payments run under the race too.
            default_payment_method="pm_card_visa" if n % 2 else "",
        )
        for n in range(30)
    ]
    start = threading.Barrier(runs)
    with (
        time_machine.travel(MAR_1_RUN, tick=False),
        ThreadPoolExecutor(max_workers=runs) as pool,
    ):
        futures = [pool.submit(_renew_in_thread, MAR_1_RUN, start) for _ in range(runs)]
        reports = [future.result(timeout=300) for future in futures]

    assert [report.failed for report in reports] == [[]] * runs
    # Each is two periods behind (February, March): two invoices each, whoever issued them.
    assert sum(len(report.invoices) for report in reports) == 60
    periods = Counter(
        Invoice.objects.filter(reason=InvoiceReason.PERIOD).values_list(
            "subscription_id", "period_start"
        )
    )
    assert len(periods) == 60
    assert set(periods.values()) == {1}
    for subscription in subscriptions:
        subscription.refresh_from_db()
        assert (subscription.current_period_start, subscription.current_period_end) == (
            MAR_1,
            APR_1,
        )
        invoices = list(invoices_of(subscription))
        assert [(i.period_start, i.number) for i in invoices] == [
            (FEB_1, "INV-2026-0001"),
            (MAR_1, "INV-2026-0002"),
        ]
        assert InvoiceSequence.objects.get(tenant=subscription.tenant).last_number == 2
        paid = {i.status for i in invoices}
        collected = bool(subscription.default_payment_method)
        assert paid == ({InvoiceStatus.PAID} if collected else {InvoiceStatus.PENDING})
        assert Payment.objects.filter(invoice__in=invoices).count() == (2 if collected else 0)
        assert (
            AuditEvent.objects.filter(
                tenant=subscription.tenant, event_type="billing.invoice.created"
            ).count()
            == 2
        )


# A failure is isolated -------------------------------------------------------------------------


@pytest.fixture
def usage_unreadable_for(monkeypatch):
    """usage_unreadable_for(tenant): reading that tenant's usage fails (as a lost database
    connection would); the others' is read as usual."""
    broken = set()
    real, real_batch = renewals.period_usage, renewals._batch_usage

    def period_usage(subscription, start, end):
        if subscription.tenant_id in broken:
            raise RuntimeError("usage could not be read")
        return real(subscription, start, end)

    def batch_usage(subs):
        # A batch holding the tenant fails whole (and is retried one by one).
        if any(sub.tenant_id in broken for sub in subs):
            raise RuntimeError("usage could not be read")
        return real_batch(subs)

    monkeypatch.setattr(renewals, "period_usage", period_usage)
    monkeypatch.setattr(renewals, "_batch_usage", batch_usage)
    return lambda tenant: broken.add(tenant.pk)


def test_a_subscription_that_fails_is_reported_and_the_others_still_renew(usage_unreadable_for):
    before, broken, after = (subscribed("team") for _ in range(3))
    usage_unreadable_for(broken.tenant)

    report = renew(FEB_1_RUN)

    assert report.failed == [broken.pk]
    assert report.renewed == 2
    assert {i.subscription_id for i in report.invoices} == {before.pk, after.pk}
    broken.refresh_from_db()
    # Rolled back whole: not renewed, nothing issued, no event, no number taken.
    assert broken.current_period_end == FEB_1
    assert not Invoice.objects.filter(tenant=broken.tenant).exists()
    assert not events(broken.tenant, "billing.subscription.renewed").exists()
    assert not InvoiceSequence.objects.filter(tenant=broken.tenant, last_number__gt=0).exists()
    # The next run retries it (and only it).
    again = renew(FEB_1_RUN + timedelta(hours=1))
    assert (again.failed, again.renewed) == ([broken.pk], 0)


def test_a_payment_method_the_provider_refuses_leaves_the_invoice_pending_for_dunning():
    subscription = subscribed("team", default_payment_method="pm_card_removed_since")
    report = renew(FEB_1_RUN)
    assert report.failed == []
    subscription.refresh_from_db()
    assert subscription.current_period_end == MAR_1
    [invoice] = invoices_of(subscription)
    assert (invoice.status, invoice.amount_due_cents) == (InvoiceStatus.PENDING, 14_900)


def test_a_subscription_another_run_renewed_meanwhile_is_not_counted_again(monkeypatch):
    # Ending subscriptions are renewed one by one (plain ones in batches, which skip the rows
    # another run holds).
    first = subscribed("team", cancel_at_period_end=True)
    second = subscribed("team", cancel_at_period_end=True)
    real = renewals.period_usage
    raced = []

    def period_usage(subscription, start, end):
        if not raced:
            # While this run holds the first subscription, "another run" renews the other one.
            other = second if subscription.pk == first.pk else first
            raced.append(other.pk)
            services.subscription_renew(subscription=other, now=FEB_1_RUN)
        return real(subscription, start, end)

    monkeypatch.setattr(renewals, "period_usage", period_usage)
    report = renew(FEB_1_RUN)
    assert len(raced) == 1
    assert Subscription.objects.filter(status=SubscriptionStatus.CANCELED).count() == 2
    assert report.renewed == 1


# manage.py generate_invoices and the beat task --------------------------------------------------


def command(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("generate_invoices", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_dry_run_lists_what_is_due_and_changes_nothing():
    team = subscribed("team")
    free = subscribed("free")
    later = subscribed("team", current_period_start=FEB_1, current_period_end=MAR_1)
    with time_machine.travel(FEB_1_RUN, tick=False):
        out, _ = command("--dry-run")
    assert f"Would renew {team.tenant.slug} (team, period ended 2026-02-01 00:00Z)." in out
    assert f"Would renew {free.tenant.slug} (free, period ended 2026-02-01 00:00Z)." in out
    assert later.tenant.slug not in out
    assert out.strip().endswith("2 subscription(s) due.")
    assert not Invoice.objects.exists()
    assert not AuditEvent.objects.filter(event_type__startswith="billing.subscription").exists()
    for subscription in (team, free):
        subscription.refresh_from_db()
        assert subscription.current_period_end == FEB_1

    with time_machine.travel(FEB_1_RUN, tick=False):
        out, _ = command("--dry-run", "--tenant", team.tenant.slug)
    assert team.tenant.slug in out and free.tenant.slug not in out
    assert out.strip().endswith("1 subscription(s) due.")


def test_the_command_issues_and_prints_the_invoices():
    team = subscribed("team")
    free = subscribed("free")
    with time_machine.travel(FEB_1_RUN, tick=False):
        out, err = command()
    assert f"Issued INV-2026-0001 to {team.tenant.slug}: 149.00 USD." in out
    assert "2 subscription(s) renewed, 1 invoice(s) issued." in out
    assert err == ""
    assert invoices_of(team).count() == 1
    free.refresh_from_db()
    assert free.current_period_end == MAR_1


def test_the_command_limited_to_one_tenant_renews_only_that_one():
    team = subscribed("team")
    other = subscribed("starter")
    with time_machine.travel(FEB_1_RUN, tick=False):
        # Slugs are stored lowercase; the option is not case-sensitive.
        out, _ = command("--tenant", team.tenant.slug.upper())
    assert "1 subscription(s) renewed, 1 invoice(s) issued." in out
    assert invoices_of(team).count() == 1
    assert not invoices_of(other).exists()
    other.refresh_from_db()
    assert other.current_period_end == FEB_1


def test_the_command_refuses_an_unknown_tenant():
    subscribed("team")
    with pytest.raises(CommandError, match="No tenant with slug 'nobody'"):
        command("--tenant", "nobody")
    with pytest.raises(CommandError, match="No tenant with slug 'nobody'"):
        command("--dry-run", "--tenant", "nobody")
    assert not Invoice.objects.exists()


def test_the_command_reports_a_failure_and_exits_with_an_error(usage_unreadable_for):
    good, broken = subscribed("team"), subscribed("team")
    usage_unreadable_for(broken.tenant)
    out, err = StringIO(), StringIO()
    with (
        time_machine.travel(FEB_1_RUN, tick=False),
        pytest.raises(CommandError, match="1 subscription\\(s\\) failed"),
    ):
        call_command("generate_invoices", stdout=out, stderr=err)
    assert f"Subscription {broken.pk} failed" in err.getvalue()
    assert f"to {good.tenant.slug}: 149.00 USD." in out.getvalue()
    assert "1 subscription(s) renewed, 1 invoice(s) issued." in out.getvalue()


def test_the_beat_task_returns_how_many_invoices_it_issued():
    subscribed("team")
    subscribed("business")
    subscribed("free")
    with time_machine.travel(FEB_1_RUN, tick=False):
        assert tasks.generate_invoices() == 2
        assert tasks.generate_invoices() == 0
    assert Invoice.objects.count() == 2


# The invoice run in batches ---------------------------------------------------------------------


def _queries_to_renew(count: int, now) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.notifications.factories import WebhookEndpointFactory

    for _ in range(count):
        subscription = subscribed("team", default_payment_method="pm_card_visa")
        WebhookEndpointFactory(tenant=subscription.tenant, events=["*"])
    with CaptureQueriesContext(connection) as captured:
        report = services.subscriptions_renew_due(now=now)
    assert report.renewed == count and len(report.invoices) == count
    return len(captured)


def test_a_batch_costs_the_same_queries_whatever_its_size():
    # The second group's periods end when the first's did; the first's next end is later.
    assert _queries_to_renew(3, FEB_1_RUN) == _queries_to_renew(12, FEB_1_RUN)


def test_a_batch_writes_what_one_by_one_would():
    from notifications.models import Notification, WebhookDelivery, WebhookEvent
    from tests.factories import MembershipFactory
    from tests.notifications.factories import WebhookEndpointFactory

    plain = subscribed("team", default_payment_method="pm_card_visa")
    WebhookEndpointFactory(tenant=plain.tenant, events=["*"])
    MembershipFactory(tenant=plain.tenant, role="billing")
    report = renew(FEB_1_RUN)
    [invoice] = report.invoices
    invoice.refresh_from_db()
    assert (invoice.number, invoice.status, invoice.total_cents) == (
        "INV-2026-0001",
        "paid",
        14_900,
    )
    assert invoice.lines.get().type == "subscription"
    tenant = plain.tenant
    assert events(tenant, "billing.subscription.renewed").count() == 1
    assert events(tenant, "billing.invoice.created").count() == 1
    assert events(tenant, "billing.payment.succeeded").count() == 1
    public = set(WebhookEvent.objects.filter(tenant=tenant).values_list("event_type", flat=True))
    assert public == {"billing.invoice.created", "billing.payment.succeeded"}
    assert WebhookDelivery.objects.filter(tenant=tenant).count() == 2
    assert Notification.objects.filter(tenant=tenant, event_type="billing.invoice.created").exists()
