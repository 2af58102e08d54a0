"""Billing under hostile or unlucky conditions: malformed signatures, a saved card the provider
no longer knows, an organization cancelled, a plan change at the period boundary, a void that
gives credit back, a batch that fails after charging, and the order of a batch's events."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from rest_framework.test import APIClient

from audit.models import AuditEvent
from billing import services
from billing.models import CreditNote, Invoice, InvoiceStatus, Plan, SubscriptionStatus
from billing.services import renewals
from config.exceptions import Conflict
from notifications.models import WebhookEvent
from tenants.models import Tenant, TenantStatus
from tests.conftest import assert_envelope
from tests.factories import TenantFactory

from .factories import InvoiceFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

JAN_1, FEB_1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
FEB_1_RUN = FEB_1 + timedelta(minutes=5)


def subscribed(code="team", **fields):
    plan = Plan.objects.get(code=code)
    tenant = TenantFactory(plan=plan.tier, plan_features=plan.features, status="active")
    return SubscriptionFactory(tenant=tenant, plan=plan, **fields)


@pytest.mark.parametrize(
    "header",
    ["t=\u00b2,v1=abc", "t=1" + "0" * 400 + ",v1=abc", "t={now},v1=\u00e9\u00e9"],
)
def test_a_malformed_signature_is_400_never_500(header):
    header = header.format(now=int(datetime.now(UTC).timestamp()))
    response = APIClient().post(
        "/api/v1/billing/webhooks/local",
        b'{"id": "evt_1", "type": "x", "data": {}}',
        content_type="application/json",
        HTTP_LOCAL_SIGNATURE=header,
    )
    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_a_saved_method_the_provider_refuses_never_shows_its_id():
    subscription = subscribed(default_payment_method="pm_card_removed_since")
    with time_machine.travel(FEB_1_RUN, tick=False):
        services.subscriptions_renew_due(now=FEB_1_RUN)
    invoice = Invoice.objects.get(tenant=subscription.tenant)
    assert invoice.status == InvoiceStatus.PENDING
    event = AuditEvent.objects.get(tenant=subscription.tenant, event_type="billing.payment.failed")
    assert "pm_card_removed_since" not in json.dumps(event.payload)
    public = WebhookEvent.objects.get(
        tenant=subscription.tenant, event_type="billing.payment.failed"
    )
    assert "pm_card_removed_since" not in public.body


def test_an_offline_payments_note_stays_off_the_public_event():
    invoice = InvoiceFactory(tenant=subscribed().tenant)
    services.invoice_mark_paid_offline(invoice=invoice, actor=None, note="Seen by Alice, ref 42")
    event = AuditEvent.objects.get(event_type="billing.payment.succeeded")
    assert "Alice" not in json.dumps(event.payload)


def test_a_cancelled_organization_is_billed_no_more():
    subscription = subscribed(default_payment_method="pm_card_visa")
    Tenant.objects.filter(pk=subscription.tenant_id).update(status=TenantStatus.CANCELLED)
    report = services.subscriptions_renew_due(now=FEB_1_RUN)
    assert report.renewed == 0
    assert not Invoice.objects.filter(tenant=subscription.tenant).exists()
    assert not services.subscriptions_due(now=FEB_1_RUN).filter(pk=subscription.pk).exists()


def test_a_plan_change_waits_while_the_ended_period_is_renewed():
    subscription = subscribed()
    with pytest.raises(Conflict, match="being renewed"):
        services.plan_change_quote(
            subscription=subscription, plan=Plan.objects.get(code="business"), at=FEB_1_RUN
        )


def test_a_trial_switched_to_free_ends_without_an_invoice():
    subscription = subscribed(
        "free", status=SubscriptionStatus.TRIALING, trial_end=FEB_1, current_period_end=FEB_1
    )
    services.subscriptions_renew_due(now=FEB_1_RUN)
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert not Invoice.objects.filter(tenant=subscription.tenant).exists()


def test_voiding_an_invoice_gives_its_credit_back():
    subscription = subscribed()
    paid = InvoiceFactory(tenant=subscription.tenant, number="INV-2026-0100")
    services.invoice_pay(invoice=paid, actor=None, payment_method="pm_card_visa")
    note = services.credit_note_issue(
        invoice=paid, actor=None, amount_cents=5_000, kind="credit", reason="goodwill"
    )
    with time_machine.travel(FEB_1_RUN, tick=False):
        [invoice] = services.subscriptions_renew_due(now=FEB_1_RUN).invoices
    assert invoice.credit_applied_cents == 5_000
    note.refresh_from_db()
    assert note.remaining_cents == 0
    Invoice.objects.filter(pk=invoice.pk).update(status=InvoiceStatus.PENDING)
    services.invoice_void(invoice=invoice, actor=None, reason="issued by mistake")
    assert CreditNote.objects.get(pk=note.pk).remaining_cents == 5_000


def test_a_batch_that_fails_after_charging_is_charged_again_under_the_same_key(monkeypatch):
    from billing.providers.local import LocalProvider

    subscription = subscribed(default_payment_method="pm_card_visa")
    keys = []
    real_charge, real_advance = LocalProvider.charge, renewals._advance_periods

    def charge(self, **kwargs):
        keys.append(kwargs["idempotency_key"])
        return real_charge(self, **kwargs)

    def advance_once(built, now):
        if len(keys) == 1:
            raise RuntimeError("the batch fails after its charges")
        return real_advance(built, now)

    monkeypatch.setattr(LocalProvider, "charge", charge)
    monkeypatch.setattr(renewals, "_advance_periods", advance_once)
    report = services.subscriptions_renew_due(now=FEB_1_RUN)
    # The batch rolled back; its subscription was renewed one by one, charged with the key the
    # batch used: the provider sees one charge, retried.
    assert report.renewed == 1 and report.failed == []
    assert len(keys) == 2 and keys[0] == keys[1]
    assert Invoice.objects.get(tenant=subscription.tenant).status == InvoiceStatus.PAID


def test_a_batchs_events_keep_their_order():
    subscription = subscribed(default_payment_method="pm_card_visa")
    services.subscriptions_renew_due(now=FEB_1_RUN)
    types = list(
        AuditEvent.objects.filter(tenant=subscription.tenant)
        .order_by("created_at", "id")
        .values_list("event_type", flat=True)
    )
    assert types.index("billing.invoice.created") < types.index("billing.payment.succeeded")


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_dunning_never_suspends_an_organization_whose_payment_is_committing(monkeypatch):
    import threading
    import time
    from datetime import date

    from django.db import connection

    from billing.services import payments

    subscription = subscribed(status=SubscriptionStatus.PAST_DUE)
    tenant = subscription.tenant
    invoice = InvoiceFactory(
        tenant=tenant,
        subscription=subscription,
        status=InvoiceStatus.OVERDUE,
        due_date=date(2026, 1, 1),
    )
    real_settle = payments.dunning_settle
    result = {}

    def dunning_run_meanwhile():
        try:
            result["suspended"] = services.dunning_suspend(tenant=tenant)
        finally:
            connection.close()

    def settle(**kwargs):
        settled = real_settle(**kwargs)
        # The payment has not committed yet: a dunning run starts now.
        thread = threading.Thread(target=dunning_run_meanwhile)
        thread.start()
        result["thread"] = thread
        time.sleep(0.5)
        return settled

    monkeypatch.setattr(payments, "dunning_settle", settle)
    payments.invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")
    result["thread"].join(10)
    tenant.refresh_from_db()
    # It waited for the payment, then found nothing overdue.
    assert result["suspended"] is False
    assert tenant.status == TenantStatus.ACTIVE
