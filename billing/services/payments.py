"""Payments: an invoice paid through the payment provider (by the tenant, or collected from the
subscription's payment method when the invoice is issued), or marked paid offline by staff.

One charge per invoice: the invoice row is locked from the check that it is unpaid to the
recorded outcome, so parallel attempts queue and the later ones find it paid (409). The
provider's charge carries an idempotency key, so a retried request never charges twice at
the provider either. A decline is recorded (a failed Payment and `billing.payment.failed`)
and answered 402 by the API; nothing is marked paid.

Paying the last overdue invoice ends dunning: the subscription is active again, and a tenant
that dunning suspended is restored (billing.services.dunning).
"""

import uuid

from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.exceptions import Conflict
from config.services import model_update

from ..models import UNPAID_STATUSES, Invoice, InvoiceStatus, Payment, PaymentStatus
from ..providers import provider as payment_provider
from ..providers.base import PaymentMethodInvalid
from .dunning import dunning_settle


def _locked_invoice(invoice: Invoice) -> Invoice:
    return (
        Invoice.objects.select_for_update(of=("self",))
        .select_related("tenant", "subscription")
        .get(pk=invoice.pk)
    )


def _check_payable(invoice: Invoice) -> None:
    if invoice.status not in UNPAID_STATUSES:
        raise Conflict(
            f"This invoice is {invoice.status}: there is nothing to pay.",
            details={"status": invoice.status},
        )


@transaction.atomic
def invoice_pay(
    *,
    invoice: Invoice,
    actor,
    payment_method: str,
    idempotency_key: str = "",
    provider_key: str = "",
) -> Payment:
    """Charge what the invoice still owes to `payment_method`; returns the Payment, which
    failed when the provider declined (nothing is paid then)."""
    invoice = _locked_invoice(invoice)
    _check_payable(invoice)
    amount = invoice.amount_due_cents
    provider = payment_provider()
    # The provider's key: the caller's (collection: the same for every attempt at the same
    # period's invoice), the request's own when it sent one (a retry is the same charge), else
    # one per attempt (the invoice's lock already makes attempts one at a time).
    key = provider_key or f"invoice:{invoice.pk}:{idempotency_key or uuid.uuid4()}"
    payment = payment_attempt(
        provider, invoice, payment_method=payment_method, key=key, actor=actor
    )
    payment.save(force_insert=True)
    if payment.status == PaymentStatus.SUCCEEDED:
        _mark_paid(invoice, amount=amount)
    _record_payment(invoice, payment, actor=actor)
    if payment.status == PaymentStatus.SUCCEEDED:
        dunning_settle(tenant=invoice.tenant, actor=actor)
    return payment


def payment_attempt(
    provider, invoice: Invoice, *, payment_method: str, key: str, actor=None
) -> Payment:
    """Charge what `invoice` owes through `provider`: the Payment recording the outcome,
    unsaved (one at a time, or in bulk by the invoice run). A decline is a failed Payment;
    an unknown method raises PaymentMethodInvalid."""
    result = provider.charge(
        amount_cents=invoice.amount_due_cents,
        currency=invoice.currency,
        payment_method=payment_method,
        idempotency_key=key,
        description=f"Invoice {invoice.number}",
    )
    return Payment(
        tenant=invoice.tenant,
        invoice=invoice,
        amount_cents=invoice.amount_due_cents,
        currency=invoice.currency,
        status=PaymentStatus.SUCCEEDED if result.succeeded else PaymentStatus.FAILED,
        provider=provider.name,
        provider_payment_id=result.payment_id,
        payment_method=result.method_label,
        failure_code=result.failure_code,
        failure_message=result.failure_message,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
    )


@transaction.atomic
def invoice_collect(*, invoice: Invoice) -> Payment | None:
    """Charge a just-issued invoice to its subscription's payment method, when it has one
    (a checkout gave it) and the invoice is unpaid; a decline leaves it pending, for dunning."""
    subscription = invoice.subscription
    if subscription is None or not subscription.default_payment_method:
        return None
    if invoice.status not in UNPAID_STATUSES or invoice.amount_due_cents <= 0:
        return None
    try:
        return invoice_pay(
            invoice=invoice,
            actor=None,
            payment_method=subscription.default_payment_method,
            provider_key=collection_key(invoice),
        )
    except PaymentMethodInvalid:
        # The kept method is gone at the provider: a failed attempt, like a decline, and the
        # invoice left to dunning (never a renewal blocked by it).
        payment = method_refused(payment_provider(), invoice)
        payment.save(force_insert=True)
        _record_payment(invoice, payment, actor=None)
        return payment


# What a failed collection says when the kept method is refused: never the method's id.
METHOD_GONE = "The saved payment method is no longer valid."


def collection_key(invoice: Invoice) -> str:
    """The provider's idempotency key for collecting `invoice` from the kept method: the same
    for every attempt at this subscription's invoice of this period (a renewal retried after
    a failure issues a new invoice row for the same period), so the card is charged once."""
    return f"collect:{invoice.subscription_id}:{invoice.reason}:{invoice.period_start.isoformat()}"


def method_refused(provider, invoice: Invoice) -> Payment:
    """The failed attempt of a collection whose kept method the provider no longer knows,
    unsaved (one at a time, or in bulk by the invoice run); its message never names the
    method."""
    return Payment(
        tenant=invoice.tenant,
        invoice=invoice,
        amount_cents=invoice.amount_due_cents,
        currency=invoice.currency,
        status=PaymentStatus.FAILED,
        provider=provider.name,
        failure_code="payment_method_invalid",
        failure_message=METHOD_GONE,
    )


@transaction.atomic
def invoice_mark_paid_offline(*, invoice: Invoice, actor, note: str) -> Payment:
    """Staff record a payment made outside the provider (a bank transfer), with a note."""
    invoice = _locked_invoice(invoice)
    _check_payable(invoice)
    amount = invoice.amount_due_cents
    payment = Payment.objects.create(
        tenant=invoice.tenant,
        invoice=invoice,
        amount_cents=amount,
        currency=invoice.currency,
        status=PaymentStatus.SUCCEEDED,
        provider="offline",
        payment_method="offline",
        actor=actor if getattr(actor, "is_authenticated", False) else None,
    )
    _mark_paid(invoice, amount=amount, paid_offline_note=note[:500])
    _record_payment(invoice, payment, actor=actor)
    dunning_settle(tenant=invoice.tenant, actor=actor)
    return payment


def _mark_paid(invoice: Invoice, *, amount: int, **extra) -> None:
    model_update(
        instance=invoice,
        data={
            "amount_paid_cents": invoice.amount_paid_cents + amount,
            "status": InvoiceStatus.PAID,
            "paid_at": timezone.now(),
            **extra,
        },
    )


def _record_payment(invoice: Invoice, payment: Payment, *, actor) -> None:
    succeeded = payment.status == PaymentStatus.SUCCEEDED
    record(
        tenant=invoice.tenant,
        event_type="billing.payment.succeeded" if succeeded else "billing.payment.failed",
        actor=actor,
        payload=payment_payload(invoice, payment),
    )


def payment_payload(invoice: Invoice, payment: Payment) -> dict:
    """`billing.payment.succeeded`'s (or `.failed`'s) payload: the method's description,
    never its id."""
    return {
        "payment_id": str(payment.pk),
        "invoice_id": str(invoice.pk),
        "invoice_number": invoice.number,
        "amount_cents": payment.amount_cents,
        "currency": payment.currency,
        "provider": payment.provider,
        "payment_method": payment.payment_method,
        "failure_code": payment.failure_code,
        "failure_message": payment.failure_message,
    }
