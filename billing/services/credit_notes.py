"""Credit notes: money given back against a paid invoice, as a refund through the payment
provider or as credit the tenant's next invoices use up (a `credit` line on each, oldest note
first, billing.services.invoices).

Never more than the invoice still has to give back (what was paid, less what earlier notes
gave): the invoice row is locked from that check to the note, so two notes at once cannot
together exceed it. Platform staff issue them in the admin; a member holding `billing.write`
may too, through the API, always with a reason (it is on the record, and on the audit event).
A refund needs a payment made through the provider: an invoice paid offline is credited.
"""

from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import ApplicationError, Conflict
from config.services import model_update

from ..models import CreditNote, CreditNoteKind, Invoice, InvoiceStatus, Payment, PaymentStatus
from ..providers import provider as payment_provider
from .invoices import _next_number


@transaction.atomic
def credit_note_issue(
    *,
    invoice: Invoice,
    actor,
    amount_cents: int,
    kind: str,
    reason: str,
    idempotency_key: str = "",
) -> CreditNote:
    """Give `amount_cents` of a paid invoice back, as a refund or as credit."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("A credit note needs a reason.", details={"reason": ["Required."]})
    if kind not in CreditNoteKind.values:
        raise ApplicationError("Unknown kind.", details={"kind": list(CreditNoteKind.values)})
    if amount_cents <= 0:
        raise ApplicationError(
            "The amount must be positive.", details={"amount_cents": ["At least 1."]}
        )
    invoice = locked_or_404(Invoice.objects.select_related("tenant"), pk=invoice.pk)
    if invoice.status != InvoiceStatus.PAID:
        raise Conflict("Only a paid invoice can be credited.", details={"status": invoice.status})
    if amount_cents > invoice.creditable_cents:
        raise Conflict(
            f"At most {invoice.creditable_cents} cents of this invoice can still be given back.",
            details={"amount_cents": amount_cents, "creditable_cents": invoice.creditable_cents},
        )
    refund_id = ""
    if kind == CreditNoteKind.REFUND:
        refund_id = _refund(invoice, amount_cents, idempotency_key)
    now = timezone.now()
    note = CreditNote.objects.create(
        tenant=invoice.tenant,
        invoice=invoice,
        number=_next_number(invoice.tenant, now, credit_note=True),
        kind=kind,
        amount_cents=amount_cents,
        currency=invoice.currency,
        remaining_cents=amount_cents if kind == CreditNoteKind.CREDIT else 0,
        reason=reason[:500],
        provider_refund_id=refund_id,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
    )
    model_update(
        instance=invoice,
        data={"amount_credited_cents": invoice.amount_credited_cents + amount_cents},
    )
    record(
        tenant=invoice.tenant,
        event_type="billing.credit_note.created",
        actor=actor,
        payload={
            "credit_note_id": str(note.pk),
            "number": note.number,
            "invoice_id": str(invoice.pk),
            "invoice_number": invoice.number,
            "kind": note.kind,
            "amount_cents": note.amount_cents,
            "currency": note.currency,
            "reason": note.reason,
        },
    )
    return note


def _refund(invoice: Invoice, amount_cents: int, idempotency_key: str) -> str:
    payment = (
        Payment.objects.filter(invoice=invoice, status=PaymentStatus.SUCCEEDED)
        .exclude(provider="offline")
        .order_by("-created_at")
        .first()
    )
    if payment is None or amount_cents > payment.amount_cents:
        raise Conflict(
            "This invoice was not paid through the payment provider (or not for this much): "
            "issue a credit instead of a refund.",
            details={"kind": ["credit"]},
        )
    key = f"refund:{invoice.pk}:{idempotency_key or invoice.amount_credited_cents}"
    result = payment_provider(payment.provider).refund(
        payment_id=payment.provider_payment_id, amount_cents=amount_cents, idempotency_key=key
    )
    return result.refund_id
