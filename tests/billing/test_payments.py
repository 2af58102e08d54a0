"""Paying invoices: through the provider with a payment method (a decline is 402 and a recorded
failed attempt; nothing is paid), once however many attempts race, with Idempotency-Key's
replay rules; and offline, by staff."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from audit.models import AuditEvent
from billing import services
from billing.models import Invoice, InvoiceStatus, Payment, PaymentStatus
from config.exceptions import Conflict
from tests.conftest import assert_envelope
from tests.factories import UserFactory

from .factories import InvoiceFactory, InvoiceLineFactory

pytestmark = pytest.mark.django_db


def invoice_of(tenant, **fields) -> Invoice:
    invoice = InvoiceFactory(tenant=tenant, **fields)
    InvoiceLineFactory(invoice=invoice)
    return invoice


def pay_url(invoice) -> str:
    return f"/api/v1/billing/invoices/{invoice.pk}/pay"


def test_paying_marks_the_invoice_paid_and_answers_the_payment(owner):
    invoice = invoice_of(owner.tenant)
    response = owner.client.post(
        pay_url(invoice), {"payment_method_id": "pm_card_visa"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["payment"]["status"] == "succeeded"
    assert body["payment"]["amount_cents"] == 14_900
    assert body["payment"]["payment_method"] == "visa ending 4242"
    assert body["invoice"]["status"] == "paid"
    assert body["invoice"]["amount_due_cents"] == 0
    invoice.refresh_from_db()
    assert invoice.amount_paid_cents == 14_900 and invoice.paid_at is not None
    event = AuditEvent.objects.get(event_type="billing.payment.succeeded")
    assert event.payload["invoice_number"] == invoice.number
    assert "pm_card" not in json.dumps(event.payload)


def test_a_decline_is_402_with_the_providers_reason_and_nothing_is_paid(owner):
    invoice = invoice_of(owner.tenant)
    response = owner.client.post(
        pay_url(invoice), {"payment_method_id": "pm_card_chargeDeclined"}, format="json"
    )
    error = assert_envelope(response, 402, "PAYMENT_FAILED")
    assert error["message"] == "Your card was declined."
    assert error["details"]["code"] == "card_declined"
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PENDING and invoice.amount_paid_cents == 0
    failed = Payment.objects.get(invoice=invoice)
    assert (
        failed.status == PaymentStatus.FAILED and str(failed.pk) == error["details"]["payment_id"]
    )
    assert AuditEvent.objects.filter(event_type="billing.payment.failed").count() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "VALIDATION_ERROR"),
        ({"payment_method_id": ""}, 400, "VALIDATION_ERROR"),
        ({"payment_method_id": "pm_unknown"}, 400, "VALIDATION_ERROR"),
        ({"payment_method_id": ["pm_card_visa"]}, 400, "VALIDATION_ERROR"),
    ],
)
def test_bad_payment_methods_are_refused_and_change_nothing(owner, body, status, code):
    invoice = invoice_of(owner.tenant)
    assert_envelope(owner.client.post(pay_url(invoice), body, format="json"), status, code)
    assert not Payment.objects.exists()


@pytest.mark.parametrize("status", [InvoiceStatus.PAID, InvoiceStatus.VOID])
def test_there_is_nothing_to_pay_on_a_paid_or_void_invoice(owner, status):
    invoice = invoice_of(owner.tenant, status=status)
    response = owner.client.post(
        pay_url(invoice), {"payment_method_id": "pm_card_visa"}, format="json"
    )
    assert_envelope(response, 409, "CONFLICT")
    assert not Payment.objects.exists()


def test_an_overdue_invoice_can_be_paid(owner):
    invoice = invoice_of(owner.tenant, status=InvoiceStatus.OVERDUE)
    response = owner.client.post(
        pay_url(invoice), {"payment_method_id": "pm_card_mastercard"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["invoice"]["status"] == "paid"


def test_members_without_billing_write_cannot_pay(make_caller):
    caller = make_caller("viewer")
    invoice = invoice_of(caller.tenant)
    response = caller.client.post(
        pay_url(invoice), {"payment_method_id": "pm_card_visa"}, format="json"
    )
    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


# Idempotency-Key -------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_answer_and_charges_once(owner):
    invoice = invoice_of(owner.tenant)
    headers = {"HTTP_IDEMPOTENCY_KEY": "pay-inv-1"}
    body = {"payment_method_id": "pm_card_visa"}
    first = owner.client.post(pay_url(invoice), body, format="json", **headers)
    again = owner.client.post(pay_url(invoice), body, format="json", **headers)
    assert first.status_code == again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["payment"]["id"] == first.json()["payment"]["id"]
    assert Payment.objects.count() == 1


def test_a_decline_is_replayed_too(owner):
    invoice = invoice_of(owner.tenant)
    headers = {"HTTP_IDEMPOTENCY_KEY": "pay-declined"}
    body = {"payment_method_id": "pm_card_chargeDeclined"}
    first = owner.client.post(pay_url(invoice), body, format="json", **headers)
    again = owner.client.post(pay_url(invoice), body, format="json", **headers)
    assert first.status_code == again.status_code == 402
    assert again.json()["error"]["details"] == first.json()["error"]["details"]
    assert Payment.objects.count() == 1


def test_the_same_key_with_another_body_is_422(owner):
    invoice = invoice_of(owner.tenant)
    headers = {"HTTP_IDEMPOTENCY_KEY": "pay-inv-2"}
    owner.client.post(
        pay_url(invoice), {"payment_method_id": "pm_card_visa"}, format="json", **headers
    )
    response = owner.client.post(
        pay_url(invoice), {"payment_method_id": "pm_card_mastercard"}, format="json", **headers
    )
    assert_envelope(response, 422, "IDEMPOTENCY_KEY_REUSED")


def _parallel_pays(caller, invoice, *, key: str | None, attempts: int = 20) -> list:
    def pay(_):
        try:
            headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
            client = caller.client_for(caller.tenant.pk)
            response = client.post(
                pay_url(invoice), {"payment_method_id": "pm_card_visa"}, format="json", **headers
            )
            return response.status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=10) as pool:
        return list(pool.map(pay, range(attempts)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_twenty_parallel_pays_with_one_key_charge_once(make_caller):
    caller = make_caller("billing")
    invoice = invoice_of(caller.tenant)
    statuses = _parallel_pays(caller, invoice, key="one-key-for-all")
    assert Payment.objects.filter(status=PaymentStatus.SUCCEEDED).count() == 1
    assert Payment.objects.count() == 1
    # The first is answered, the others replay it or were told it is still running.
    assert statuses.count(200) >= 1
    assert set(statuses) <= {200, 409}
    invoice.refresh_from_db()
    assert invoice.amount_paid_cents == invoice.total_cents


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_twenty_parallel_pays_without_a_key_charge_once(make_caller):
    caller = make_caller("billing")
    invoice = invoice_of(caller.tenant)
    statuses = _parallel_pays(caller, invoice, key=None)
    assert statuses.count(200) == 1
    assert statuses.count(409) == 19
    assert Payment.objects.count() == 1
    invoice.refresh_from_db()
    assert invoice.amount_paid_cents == invoice.total_cents


# Offline payments (staff) ----------------------------------------------------------------------


def test_staff_mark_an_invoice_paid_offline_once(owner):
    invoice = invoice_of(owner.tenant)
    staff = UserFactory(is_staff=True)
    payment = services.invoice_mark_paid_offline(
        invoice=invoice, actor=staff, note="Bank transfer ref 4711"
    )
    assert (payment.provider, payment.status, payment.actor) == ("offline", "succeeded", staff)
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.paid_offline_note == "Bank transfer ref 4711"
    with pytest.raises(Conflict):
        services.invoice_mark_paid_offline(invoice=invoice, actor=staff, note="again")
