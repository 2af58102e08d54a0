"""Invoices: written with their lines and issued in one step (a number, a due date, the
event), and voided.

A number is allocated when the invoice is issued, under the lock of the tenant's sequence row,
in the issuing transaction: numbers are gapless per tenant and never restart (a rolled-back
issue gives its number back), `<PREFIX>-<year of issue>-<sequence>`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import Conflict
from config.services import model_update
from tenants.models import Tenant

from ..catalogue import MICROS_PER_CENT
from ..models import (
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceSequence,
    InvoiceStatus,
    LineType,
    Plan,
    Subscription,
)
from .dunning import dunning_settle


@dataclass(frozen=True)
class LineSpec:
    """An invoice line to write: `amount_cents` is already rounded (once, half-up)."""

    type: str
    description: str
    amount_cents: int
    quantity: int = 1
    unit_amount_micros: int | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    credit_note_id: object = None


@transaction.atomic
def invoice_issue(
    *,
    subscription: Subscription,
    plan: Plan,
    reason: str,
    period_start: datetime,
    period_end: datetime,
    lines: Sequence[LineSpec],
    actor,
) -> Invoice:
    """Write an invoice with its lines and issue it: the tenant's unused credit (credit notes)
    taken off, a number, a due date, the event. Runs in the caller's transaction, which holds
    the subscription's lock."""
    tenant = subscription.tenant
    notes = list(
        CreditNote.objects.select_for_update()
        .filter(tenant=tenant, currency=plan.currency, remaining_cents__gt=0)
        .order_by("created_at", "pk")
    )
    credits = use_credit(notes, sum(line.amount_cents for line in lines))
    for note in notes:
        CreditNote.objects.filter(pk=note.pk).update(
            remaining_cents=note.remaining_cents, updated_at=timezone.now()
        )
    now = timezone.now()
    invoice, rows = invoice_rows(
        subscription=subscription,
        plan=plan,
        reason=reason,
        period_start=period_start,
        period_end=period_end,
        lines=lines,
        credits=credits,
        number=_next_number(tenant, now),
        issued_at=now,
    )
    invoice.save(force_insert=True)
    InvoiceLine.objects.bulk_create(rows)
    record(
        tenant=tenant,
        event_type="billing.invoice.created",
        actor=actor,
        payload=invoice_payload(invoice),
    )
    return invoice


def use_credit(notes: Sequence[CreditNote], subtotal: int) -> list[LineSpec]:
    """Negative lines using up unused credit (the notes in order, oldest first), never more
    than the charges; each note's `remaining_cents` is lowered in memory, for the caller to
    save in its transaction, which holds the notes' locks."""
    lines = []
    left = subtotal
    for note in notes:
        if left <= 0:
            break
        used = min(note.remaining_cents, left)
        if not used:
            continue
        note.remaining_cents -= used
        left -= used
        lines.append(
            LineSpec(
                type=LineType.CREDIT,
                description=f"Credit note {note.number}",
                amount_cents=-used,
                credit_note_id=note.pk,
            )
        )
    return lines


def invoice_rows(
    *,
    subscription: Subscription,
    plan: Plan,
    reason: str,
    period_start: datetime,
    period_end: datetime,
    lines: Sequence[LineSpec],
    credits: Sequence[LineSpec],
    number: str,
    issued_at: datetime,
) -> tuple[Invoice, list[InvoiceLine]]:
    """An issued invoice and its lines, unsaved (one at a time, or in bulk by the invoice
    run): charges add up to the subtotal, credit lines to minus the credit applied, all to the
    total; nothing owed is paid as it is issued."""
    tenant = subscription.tenant
    subtotal = sum(line.amount_cents for line in lines)
    credit_applied = -sum(line.amount_cents for line in credits)
    total = subtotal - credit_applied
    invoice = Invoice(
        tenant=tenant,
        subscription=subscription,
        plan=plan,
        number=number,
        reason=reason,
        status=InvoiceStatus.PENDING if total > 0 else InvoiceStatus.PAID,
        currency=plan.currency,
        period_start=period_start,
        period_end=period_end,
        subtotal_cents=subtotal,
        credit_applied_cents=credit_applied,
        total_cents=total,
        issued_at=issued_at,
        due_date=(issued_at + timedelta(days=settings.BILLING_INVOICE_DUE_DAYS)).date(),
        paid_at=None if total > 0 else issued_at,
        billed_to=_billed_to(tenant),
    )
    rows = [
        InvoiceLine(
            tenant=tenant,
            invoice=invoice,
            type=line.type,
            description=line.description[:300],
            quantity=line.quantity,
            unit_amount_micros=(
                line.unit_amount_micros
                if line.unit_amount_micros is not None
                else line.amount_cents * MICROS_PER_CENT // max(line.quantity, 1)
            ),
            amount_cents=line.amount_cents,
            period_start=line.period_start,
            period_end=line.period_end,
            position=position,
            credit_note_id=line.credit_note_id,
        )
        for position, line in enumerate([*lines, *credits])
    ]
    return invoice, rows


def invoice_payload(invoice: Invoice) -> dict:
    """`billing.invoice.created`'s payload (the public event reads its fields off it)."""
    return {
        "invoice_id": str(invoice.pk),
        "number": invoice.number,
        "reason": invoice.reason,
        "status": invoice.status,
        "total_cents": invoice.total_cents,
        "currency": invoice.currency,
        "due_date": invoice.due_date.isoformat(),
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
    }


def _billed_to(tenant: Tenant) -> dict:
    return {
        "name": tenant.name,
        "slug": tenant.slug,
        "email": tenant.billing_email or tenant.contact_email,
        "domain": tenant.domain,
    }


def _next_number(tenant: Tenant, issued_at: datetime, *, credit_note: bool = False) -> str:
    """The tenant's next invoice (or credit note) number, allocated under its sequence row's
    lock (gapless: a rollback gives the number back)."""
    field = "last_credit_note_number" if credit_note else "last_number"
    sequence, _ = InvoiceSequence.objects.select_for_update().get_or_create(tenant=tenant)
    InvoiceSequence.objects.filter(pk=sequence.pk).update(
        **{field: F(field) + 1}, updated_at=timezone.now()
    )
    return format_number(getattr(sequence, field) + 1, issued_at, credit_note=credit_note)


def format_number(number: int, issued_at: datetime, *, credit_note: bool = False) -> str:
    prefix = "CN" if credit_note else settings.BILLING_INVOICE_PREFIX
    return f"{prefix}-{issued_at:%Y}-{number:04d}"


@transaction.atomic
def invoice_void(*, invoice: Invoice, actor, reason: str) -> Invoice:
    """Void an unpaid invoice (issued by mistake): it stays, numbered, owing nothing."""
    invoice = locked_or_404(Invoice.objects.select_related("tenant"), of=(), pk=invoice.pk)
    if invoice.status not in (InvoiceStatus.PENDING, InvoiceStatus.OVERDUE):
        raise Conflict("Only an unpaid invoice can be voided.", details={"status": invoice.status})
    model_update(instance=invoice, data={"status": InvoiceStatus.VOID, "voided_at": timezone.now()})
    # The credit it used goes back to its notes, for the next invoices.
    for line in invoice.lines.filter(credit_note__isnull=False):
        CreditNote.objects.filter(pk=line.credit_note_id).update(
            remaining_cents=F("remaining_cents") - line.amount_cents, updated_at=timezone.now()
        )
    record(
        tenant=invoice.tenant,
        event_type="billing.invoice.voided",
        actor=actor,
        payload={"invoice_id": str(invoice.pk), "number": invoice.number, "reason": reason},
    )
    # Voiding the last overdue invoice ends dunning, as paying it would.
    dunning_settle(tenant=invoice.tenant, actor=actor)
    return invoice


@transaction.atomic
def invoice_resend(*, invoice: Invoice, actor) -> Invoice:
    """Send an issued invoice again to the billing contacts (`billing.invoice.sent`: the
    notification of the owners and billing members, and the webhook)."""
    invoice = Invoice.objects.select_related("tenant").get(pk=invoice.pk)
    if invoice.status == InvoiceStatus.DRAFT:
        raise Conflict("A draft has not been issued.", details={"status": invoice.status})
    record(
        tenant=invoice.tenant,
        event_type="billing.invoice.resent",
        actor=actor,
        payload={
            "invoice_id": str(invoice.pk),
            "number": invoice.number,
            "status": invoice.status,
            "amount_due_cents": invoice.amount_due_cents,
            "currency": invoice.currency,
            "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
        },
    )
    return invoice
