"""Dunning: an invoice unpaid the day after its due date is overdue and its subscription past
due; BILLING_SUSPEND_AFTER_DAYS after the due date the organization is suspended ("Payment
overdue"); paying the last overdue invoice makes the subscription active again and restores an
organization that dunning suspended, never one staff suspended for another reason. A suspended
organization can still read its subscription and invoices, and pay. `manage.py run_dunning` and
the beat task."""

from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from billing import services, tasks
from billing.models import (
    Invoice,
    InvoiceReason,
    InvoiceSequence,
    InvoiceStatus,
    PaymentStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from tenants.models import Role, Tenant, TenantStatus
from tenants.services.lifecycle import tenant_cancel, tenant_restore, tenant_suspend
from tests.conftest import assert_envelope
from tests.factories import TenantFactory, UserFactory

from .factories import InvoiceFactory, InvoiceLineFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)
FEB_1 = datetime(2026, 2, 1, tzinfo=UTC)
MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)
# An invoice issued on 1 February, due 14 days later.
DUE = date(2026, 2, 15)
DUE_DAY_LAST_SECOND = datetime(2026, 2, 15, 23, 59, 59, tzinfo=UTC)
DAY_AFTER_DUE = datetime(2026, 2, 16, tzinfo=UTC)
# BILLING_SUSPEND_AFTER_DAYS (14) after the due date, and the days either side of it.
DUE_PLUS_13 = datetime(2026, 2, 28, 12, tzinfo=UTC)
DUE_PLUS_14 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DUE_PLUS_15 = datetime(2026, 3, 2, 12, tzinfo=UTC)

SUBSCRIPTION = "/api/v1/billing/subscription"
INVOICES = "/api/v1/billing/invoices/"
API_KEYS = "/api/v1/api-keys/"


def plan(code: str) -> Plan:
    return Plan.objects.get(code=code)


def subscribed(code: str = "team", *, tenant_status=TenantStatus.ACTIVE, **fields):
    """An active organization (activated in January) on the catalogue plan `code`."""
    chosen = plan(code)
    tenant = TenantFactory(
        plan=chosen.tier, plan_features=chosen.features, status=tenant_status, activated_at=JAN_1
    )
    return SubscriptionFactory(tenant=tenant, plan=chosen, **fields)


def issued(subscription: Subscription, *, due: date = DUE, **fields) -> Invoice:
    """A pending period invoice of `subscription`, issued on 1 February, due on `due`."""
    number = Invoice.objects.filter(tenant=subscription.tenant).count() + 1
    invoice = InvoiceFactory(
        tenant=subscription.tenant,
        subscription=subscription,
        plan=subscription.plan,
        number=f"INV-2026-{number:04d}",
        period_start=FEB_1 + timedelta(days=number - 1),
        period_end=MAR_1,
        issued_at=FEB_1,
        due_date=due,
        **fields,
    )
    InvoiceLineFactory(invoice=invoice, amount_cents=invoice.total_cents)
    return invoice


def owing(code: str = "team", **fields) -> Invoice:
    return issued(subscribed(code, **fields))


def events(tenant, event_type: str):
    return AuditEvent.objects.filter(tenant=tenant, event_type=event_type)


def run(now: datetime) -> services.DunningReport:
    with time_machine.travel(now, tick=False):
        return services.dunning_run(now=now)


def refreshed(*objects):
    for instance in objects:
        instance.refresh_from_db()
    return objects


# Overdue ----------------------------------------------------------------------------------------


def test_an_unpaid_invoice_is_still_pending_on_its_due_date():
    invoice = owing()
    report = run(DUE_DAY_LAST_SECOND)
    assert (report.overdue, report.suspended) == ([], [])
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PENDING
    assert invoice.overdue_at is None
    assert invoice.subscription.status == SubscriptionStatus.ACTIVE
    assert not events(invoice.tenant, "billing.invoice.overdue").exists()


def test_an_unpaid_invoice_is_overdue_the_day_after_its_due_date():
    invoice = owing()
    tenant = invoice.tenant

    report = run(DAY_AFTER_DUE)

    assert report.overdue == [invoice.number]
    assert report.suspended == []
    invoice, subscription = refreshed(invoice, invoice.subscription)
    assert invoice.status == InvoiceStatus.OVERDUE
    assert invoice.overdue_at == DAY_AFTER_DUE
    assert invoice.amount_due_cents == 14_900
    assert subscription.status == SubscriptionStatus.PAST_DUE
    [event] = events(tenant, "billing.invoice.overdue")
    assert event.payload == {
        "invoice_id": str(invoice.pk),
        "number": invoice.number,
        "amount_due_cents": 14_900,
        "currency": "USD",
        "due_date": "2026-02-15",
    }
    # Overdue is not suspended (yet).
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.ACTIVE
    assert subscription.dunning_suspended_at is None


def test_what_is_still_owed_is_what_the_event_says():
    invoice = owing()
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid_cents=4_900)
    run(DAY_AFTER_DUE)
    [event] = events(invoice.tenant, "billing.invoice.overdue")
    assert event.payload["amount_due_cents"] == 10_000


def test_paid_void_and_draft_invoices_are_left_alone():
    subscription = subscribed()
    paid = issued(subscription, status=InvoiceStatus.PAID, paid_at=FEB_1, amount_paid_cents=14_900)
    void = issued(subscription, status=InvoiceStatus.VOID, voided_at=FEB_1)
    draft = issued(subscription, status=InvoiceStatus.DRAFT)
    report = run(DUE_PLUS_15)
    assert (report.overdue, report.suspended) == ([], [])
    paid, void, draft, subscription = refreshed(paid, void, draft, subscription)
    assert (paid.status, void.status, draft.status) == ("paid", "void", "draft")
    assert paid.overdue_at is void.overdue_at is draft.overdue_at is None
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert not events(subscription.tenant, "billing.invoice.overdue").exists()
    assert Tenant.objects.get(pk=subscription.tenant_id).status == TenantStatus.ACTIVE


def test_running_twice_marks_an_invoice_overdue_once():
    invoice = owing()
    first = run(DAY_AFTER_DUE)
    second = run(DAY_AFTER_DUE + timedelta(hours=1))
    assert first.overdue == [invoice.number]
    assert second.overdue == []
    with time_machine.travel(DAY_AFTER_DUE, tick=False):
        assert services.invoice_mark_overdue(invoice=invoice, now=DAY_AFTER_DUE) is False
    invoice.refresh_from_db()
    assert invoice.overdue_at == DAY_AFTER_DUE
    assert events(invoice.tenant, "billing.invoice.overdue").count() == 1


def test_an_invoice_paid_meanwhile_is_not_marked_overdue():
    invoice = owing()
    stale = Invoice.objects.get(pk=invoice.pk)
    services.invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")
    with time_machine.travel(DAY_AFTER_DUE, tick=False):
        assert services.invoice_mark_overdue(invoice=stale, now=DAY_AFTER_DUE) is False
    stale.refresh_from_db()
    assert stale.status == InvoiceStatus.PAID
    assert not events(invoice.tenant, "billing.invoice.overdue").exists()


def test_only_an_active_or_trialing_subscription_becomes_past_due():
    canceled = owing(status=SubscriptionStatus.CANCELED)
    trialing = owing(status=SubscriptionStatus.TRIALING)
    report = run(DAY_AFTER_DUE)
    assert sorted(report.overdue) == sorted([canceled.number, trialing.number])
    assert Subscription.objects.get(pk=canceled.subscription_id).status == "canceled"
    assert Subscription.objects.get(pk=trialing.subscription_id).status == "past_due"


def test_invoices_are_marked_overdue_oldest_due_first():
    subscription = subscribed()
    later = issued(subscription, due=date(2026, 2, 20))
    earlier = issued(subscription, due=date(2026, 2, 10))
    other = owing()
    report = run(DUE_PLUS_13)
    assert report.overdue == [earlier.number, other.number, later.number]
    assert events(subscription.tenant, "billing.invoice.overdue").count() == 2


# Suspension -------------------------------------------------------------------------------------


def test_the_organization_is_not_suspended_13_days_after_the_due_date():
    invoice = owing()
    run(DAY_AFTER_DUE)
    report = run(DUE_PLUS_13)
    assert report.suspended == []
    tenant, subscription = refreshed(invoice.tenant, invoice.subscription)
    assert tenant.status == TenantStatus.ACTIVE
    assert subscription.dunning_suspended_at is None
    assert not events(tenant, "tenant.suspended").exists()


def test_the_organization_is_suspended_14_days_after_the_due_date():
    invoice = owing()
    run(DAY_AFTER_DUE)
    report = run(DUE_PLUS_14)
    assert report.suspended == [invoice.tenant.slug]
    tenant, subscription = refreshed(invoice.tenant, invoice.subscription)
    assert tenant.status == TenantStatus.SUSPENDED
    assert subscription.dunning_suspended_at == DUE_PLUS_14


def test_dunning_suspend_suspends_14_days_after_the_due_date():
    invoice = owing()
    run(DAY_AFTER_DUE)
    with time_machine.travel(DUE_PLUS_14, tick=False):
        assert services.dunning_suspend(tenant=invoice.tenant, now=DUE_PLUS_14) is True


def test_an_organization_still_overdue_after_the_grace_days_is_suspended():
    invoice = owing()
    tenant = invoice.tenant
    run(DAY_AFTER_DUE)

    report = run(DUE_PLUS_15)

    assert report.overdue == []
    assert report.suspended == [tenant.slug]
    tenant, subscription = refreshed(tenant, invoice.subscription)
    assert tenant.status == TenantStatus.SUSPENDED
    assert tenant.suspension_reason == "Payment overdue"
    assert tenant.suspended_at == DUE_PLUS_15
    assert subscription.dunning_suspended_at == DUE_PLUS_15
    assert subscription.status == SubscriptionStatus.PAST_DUE
    [event] = events(tenant, "tenant.suspended")
    assert event.payload == {"from": "active", "to": "suspended", "reason": "Payment overdue"}
    assert event.actor is None
    # Running again changes nothing more.
    assert run(DUE_PLUS_15 + timedelta(days=1)).suspended == []
    assert events(tenant, "tenant.suspended").count() == 1
    tenant.refresh_from_db()
    assert tenant.suspended_at == DUE_PLUS_15


def test_an_invoice_unpaid_long_past_its_due_date_is_overdue_and_suspended_in_one_run():
    invoice = owing()
    report = run(DUE_PLUS_15)
    assert report.overdue == [invoice.number]
    assert report.suspended == [invoice.tenant.slug]
    (tenant,) = refreshed(invoice.tenant)
    assert tenant.status == TenantStatus.SUSPENDED


def test_the_grace_days_follow_the_setting(settings):
    settings.BILLING_SUSPEND_AFTER_DAYS = 3
    invoice = owing()
    assert run(datetime(2026, 2, 17, 12, tzinfo=UTC)).suspended == []
    assert run(datetime(2026, 2, 19, 12, tzinfo=UTC)).suspended == [invoice.tenant.slug]


def test_a_pending_invoice_alone_suspends_nothing():
    subscription = subscribed()
    issued(subscription, due=date(2026, 3, 20))
    with time_machine.travel(DUE_PLUS_15, tick=False):
        assert services.dunning_suspend(tenant=subscription.tenant, now=DUE_PLUS_15) is False
    assert Tenant.objects.get(pk=subscription.tenant_id).status == TenantStatus.ACTIVE


def test_an_organization_in_trial_is_suspended_and_restored_to_trial():
    invoice = owing(tenant_status=TenantStatus.TRIAL)
    Tenant.objects.filter(pk=invoice.tenant_id).update(activated_at=None)
    assert run(DUE_PLUS_15).suspended == [invoice.tenant.slug]
    with time_machine.travel(DUE_PLUS_15 + timedelta(hours=1), tick=False):
        services.invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")
    assert Tenant.objects.get(pk=invoice.tenant_id).status == TenantStatus.TRIAL


def test_an_organization_already_suspended_or_cancelled_is_left_alone():
    abuse = owing()
    tenant_suspend(tenant=abuse.tenant, actor=None, reason="Abuse")
    gone = owing()
    tenant_cancel(tenant=gone.tenant, actor=None)

    report = run(DUE_PLUS_15)

    assert sorted(report.overdue) == sorted([abuse.number, gone.number])
    assert report.suspended == []
    with time_machine.travel(DUE_PLUS_15, tick=False):
        assert services.dunning_suspend(tenant=abuse.tenant, now=DUE_PLUS_15) is False
        assert services.dunning_suspend(tenant=gone.tenant, now=DUE_PLUS_15) is False
    abused = Tenant.objects.get(pk=abuse.tenant_id)
    assert (abused.status, abused.suspension_reason) == (TenantStatus.SUSPENDED, "Abuse")
    assert Tenant.objects.get(pk=gone.tenant_id).status == TenantStatus.CANCELLED
    for invoice in (abuse, gone):
        assert events(invoice.tenant, "tenant.suspended").count() == (invoice is abuse)
        assert Subscription.objects.get(pk=invoice.subscription_id).dunning_suspended_at is None


# Paying ends dunning ----------------------------------------------------------------------------


def suspended_for(invoice: Invoice) -> Tenant:
    report = run(DUE_PLUS_15)
    assert invoice.tenant.slug in report.suspended
    return Tenant.objects.get(pk=invoice.tenant_id)


def test_paying_the_only_overdue_invoice_restores_the_organization():
    invoice = owing()
    suspended_for(invoice)
    payer = UserFactory()
    paid_at = DUE_PLUS_15 + timedelta(hours=2)

    with time_machine.travel(paid_at, tick=False):
        payment = services.invoice_pay(invoice=invoice, actor=payer, payment_method="pm_card_visa")

    assert (payment.status, payment.amount_cents) == (PaymentStatus.SUCCEEDED, 14_900)
    invoice, subscription, tenant = refreshed(invoice, invoice.subscription, invoice.tenant)
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.amount_due_cents == 0
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert subscription.dunning_suspended_at is None
    assert tenant.status == TenantStatus.ACTIVE
    assert (tenant.suspended_at, tenant.suspension_reason) == (None, "")
    [restored] = events(tenant, "tenant.restored")
    assert restored.payload == {"from": "suspended", "to": "active"}
    assert restored.actor == payer
    # Nothing left for dunning to do.
    assert run(paid_at + timedelta(days=1)).suspended == []


def test_voiding_the_last_overdue_invoice_ends_dunning_too():
    invoice = owing()
    suspended_for(invoice)
    staff = UserFactory(is_staff=True)
    services.invoice_void(invoice=invoice, actor=staff, reason="issued by mistake")
    invoice, subscription, tenant = refreshed(invoice, invoice.subscription, invoice.tenant)
    assert invoice.status == InvoiceStatus.VOID
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert tenant.status == TenantStatus.ACTIVE


def test_paying_offline_restores_the_organization_too():
    invoice = owing()
    suspended_for(invoice)
    staff = UserFactory(is_staff=True)
    with time_machine.travel(DUE_PLUS_15 + timedelta(hours=2), tick=False):
        payment = services.invoice_mark_paid_offline(
            invoice=invoice, actor=staff, note="Bank transfer 2026-03-02"
        )
    assert (payment.provider, payment.status) == ("offline", PaymentStatus.SUCCEEDED)
    invoice, subscription, tenant = refreshed(invoice, invoice.subscription, invoice.tenant)
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.paid_offline_note == "Bank transfer 2026-03-02"
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert subscription.dunning_suspended_at is None
    assert tenant.status == TenantStatus.ACTIVE
    assert events(tenant, "tenant.restored").get().actor == staff


def test_paying_an_overdue_invoice_before_suspension_makes_the_subscription_active():
    invoice = owing()
    run(DAY_AFTER_DUE)
    services.invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")
    subscription, tenant = refreshed(invoice.subscription, invoice.tenant)
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert tenant.status == TenantStatus.ACTIVE
    assert not events(tenant, "tenant.restored").exists()
    # And plan changes are allowed again (in a period not yet ended).
    Subscription.objects.filter(pk=subscription.pk).update(
        current_period_end=timezone.now() + timedelta(days=10)
    )
    # The invoice above was made by a factory, numbered by hand: the sequence follows it.
    InvoiceSequence.objects.update_or_create(tenant=tenant, defaults={"last_number": 1})
    result = services.subscription_change_plan(tenant=tenant, actor=None, plan=plan("business"))
    assert result.subscription.plan.code == "business"


def test_a_declined_payment_restores_nothing():
    invoice = owing()
    suspended_for(invoice)
    payment = services.invoice_pay(
        invoice=invoice, actor=None, payment_method="pm_card_chargeDeclined"
    )
    assert payment.status == PaymentStatus.FAILED
    invoice, subscription, tenant = refreshed(invoice, invoice.subscription, invoice.tenant)
    assert invoice.status == InvoiceStatus.OVERDUE
    assert subscription.status == SubscriptionStatus.PAST_DUE
    assert subscription.dunning_suspended_at is not None
    assert tenant.status == TenantStatus.SUSPENDED


def test_with_two_overdue_invoices_paying_one_restores_nothing_yet():
    subscription = subscribed()
    first = issued(subscription)
    second = issued(subscription, due=date(2026, 2, 16))
    suspended_for(first)

    services.invoice_pay(invoice=first, actor=None, payment_method="pm_card_visa")

    subscription, tenant = refreshed(subscription, subscription.tenant)
    assert subscription.status == SubscriptionStatus.PAST_DUE
    assert subscription.dunning_suspended_at is not None
    assert tenant.status == TenantStatus.SUSPENDED
    assert not events(tenant, "tenant.restored").exists()

    services.invoice_pay(invoice=second, actor=None, payment_method="pm_card_visa")

    subscription, tenant = refreshed(subscription, tenant)
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert subscription.dunning_suspended_at is None
    assert tenant.status == TenantStatus.ACTIVE
    assert events(tenant, "tenant.restored").count() == 1


def test_an_organization_staff_suspended_for_another_reason_stays_suspended_after_paying():
    invoice = owing()
    tenant_suspend(tenant=invoice.tenant, actor=None, reason="Abuse")
    run(DUE_PLUS_15)

    services.invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")

    invoice, subscription, tenant = refreshed(invoice, invoice.subscription, invoice.tenant)
    assert invoice.status == InvoiceStatus.PAID
    # The debt is settled...
    assert subscription.status == SubscriptionStatus.ACTIVE
    # ...but the suspension is staff's, not dunning's.
    assert (tenant.status, tenant.suspension_reason) == (TenantStatus.SUSPENDED, "Abuse")
    assert not events(tenant, "tenant.restored").exists()


def test_staff_resuspending_for_another_reason_after_dunning_is_not_undone_by_paying():
    invoice = owing()
    suspended_for(invoice)
    # Staff restore it, then suspend it themselves for another reason.
    tenant_restore(tenant=invoice.tenant, actor=None)
    tenant_suspend(tenant=invoice.tenant, actor=None, reason="Abuse")

    services.invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")

    subscription, tenant = refreshed(invoice.subscription, invoice.tenant)
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert subscription.dunning_suspended_at is None
    assert (tenant.status, tenant.suspension_reason) == (TenantStatus.SUSPENDED, "Abuse")


def test_settling_reports_whether_it_restored_the_organization():
    invoice = owing()
    suspended_for(invoice)
    assert services.dunning_settle(tenant=invoice.tenant, actor=None) is False  # still overdue
    Invoice.objects.filter(pk=invoice.pk).update(status=InvoiceStatus.PAID)
    assert services.dunning_settle(tenant=invoice.tenant, actor=None) is True
    assert services.dunning_settle(tenant=invoice.tenant, actor=None) is False  # nothing left
    assert Tenant.objects.get(pk=invoice.tenant_id).status == TenantStatus.ACTIVE


# From renewal to suspension and back -----------------------------------------------------------


def test_a_renewal_declined_by_the_card_ends_in_suspension_until_it_is_paid():
    subscription = subscribed("team", default_payment_method="pm_card_chargeDeclined")
    with time_machine.travel(FEB_1 + timedelta(minutes=5), tick=False):
        services.subscriptions_renew_due()
    [invoice] = Invoice.objects.filter(subscription=subscription, reason=InvoiceReason.PERIOD)
    assert (invoice.status, invoice.due_date) == (InvoiceStatus.PENDING, DUE)

    assert run(DUE_DAY_LAST_SECOND).overdue == []
    assert run(DAY_AFTER_DUE).overdue == [invoice.number]
    assert run(DUE_PLUS_15).suspended == [subscription.tenant.slug]

    with time_machine.travel(DUE_PLUS_15 + timedelta(hours=1), tick=False):
        services.invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")
    subscription, tenant = refreshed(subscription, subscription.tenant)
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert tenant.status == TenantStatus.ACTIVE


# The API of a suspended organization ------------------------------------------------------------


def test_a_suspended_organization_reads_its_billing_and_pays_and_is_restored(make_caller):
    invoice = owing()
    tenant = suspended_for(invoice)
    with time_machine.travel(DUE_PLUS_15 + timedelta(hours=1), tick=False):
        billing = make_caller(Role.BILLING, tenant=tenant)
        owner = make_caller(Role.OWNER, tenant=tenant)

        subscription = billing.client.get(SUBSCRIPTION)
        assert subscription.status_code == 200, subscription.content
        assert subscription.json()["status"] == "past_due"
        assert subscription.json()["plan"]["code"] == "team"
        listed = billing.client.get(INVOICES)
        assert listed.status_code == 200, listed.content
        assert [(row["invoice_number"], row["status"]) for row in listed.json()["results"]] == [
            (invoice.number, "overdue")
        ]
        assert billing.client.get(f"{INVOICES}{invoice.pk}").json()["amount_due_cents"] == 14_900
        # Everything else is refused, whoever asks.
        assert_envelope(owner.client.get(API_KEYS), 403, "TENANT_SUSPENDED")
        assert_envelope(billing.client.get(API_KEYS), 403, "TENANT_SUSPENDED")

        paid = billing.client.post(
            f"{INVOICES}{invoice.pk}/pay", {"payment_method_id": "pm_card_visa"}, format="json"
        )
        assert paid.status_code == 200, paid.content
        body = paid.json()
        assert body["invoice"]["status"] == "paid"
        assert body["invoice"]["amount_due_cents"] == 0
        assert body["payment"]["status"] == "succeeded"
        assert body["payment"]["amount_cents"] == 14_900

        tenant.refresh_from_db()
        assert tenant.status == TenantStatus.ACTIVE
        assert billing.client.get(SUBSCRIPTION).json()["status"] == "active"
        keys = owner.client.get(API_KEYS)
        assert keys.status_code == 200, keys.content
        assert keys.json()["count"] == 0
    restored = events(tenant, "tenant.restored").get()
    assert restored.actor == billing.user


def test_a_declined_payment_through_the_api_keeps_the_organization_suspended(make_caller):
    invoice = owing()
    tenant = suspended_for(invoice)
    with time_machine.travel(DUE_PLUS_15 + timedelta(hours=1), tick=False):
        billing = make_caller(Role.BILLING, tenant=tenant)
        declined = billing.client.post(
            f"{INVOICES}{invoice.pk}/pay",
            {"payment_method_id": "pm_card_chargeDeclined"},
            format="json",
        )
        assert_envelope(declined, 402, "PAYMENT_FAILED")
        assert_envelope(billing.client.get(API_KEYS), 403, "TENANT_SUSPENDED")
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.SUSPENDED
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OVERDUE


# manage.py run_dunning and the beat task -------------------------------------------------------


def test_the_command_prints_what_it_did():
    late = owing()
    recent = owing()
    Invoice.objects.filter(pk=recent.pk).update(due_date=date(2026, 3, 1))
    out = StringIO()
    with time_machine.travel(DUE_PLUS_15, tick=False):
        call_command("run_dunning", stdout=out)
    output = out.getvalue()
    assert f"Overdue: {late.number}." in output
    assert f"Overdue: {recent.number}." in output
    assert f"Suspended: {late.tenant.slug} (payment overdue)." in output
    assert recent.tenant.slug not in output
    assert "2 invoice(s) overdue, 1 organization(s) suspended." in output
    assert Tenant.objects.get(pk=late.tenant_id).status == TenantStatus.SUSPENDED
    assert Tenant.objects.get(pk=recent.tenant_id).status == TenantStatus.ACTIVE

    again = StringIO()
    with time_machine.travel(DUE_PLUS_15, tick=False):
        call_command("run_dunning", stdout=again)
    assert "0 invoice(s) overdue, 0 organization(s) suspended." in again.getvalue()


def test_the_beat_task_returns_the_report():
    invoice = owing()
    with time_machine.travel(DAY_AFTER_DUE, tick=False):
        assert tasks.run_dunning() == {"overdue": [invoice.number], "suspended": []}
    with time_machine.travel(DUE_PLUS_15, tick=False):
        assert tasks.run_dunning() == {"overdue": [], "suspended": [invoice.tenant.slug]}
        assert tasks.run_dunning() == {"overdue": [], "suspended": []}
