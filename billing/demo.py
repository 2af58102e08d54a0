"""The quick start's billing (called by `manage.py load_demo_data` after the tenants):

- `acme` has been on the Starter plan for three months, paid by card (the local provider's
  `pm_card_visa`): three period invoices issued by the renewal job and collected; a credit
  note on the first; then an upgrade to Team today, charged pro rata (less the credit) and
  collected from the card; and the usage records of its three ended quota periods;
- `globex` is on the Enterprise plan (its tier's), this month's invoice overdue (due three
  days ago: dunning would suspend it eleven days from now), so the dunning schedule and the
  pay endpoint have something to show.

Everything goes through the real services; only timestamps are moved into the past (the
periods, when the invoices were issued and paid), as the renewal job would have run then.
Runs once: an organization that already has invoices is left as it is.
"""

from datetime import timedelta

from django.utils import timezone

from tenants.models import Tenant, UsageRecord

from .models import Invoice, InvoiceStatus, Payment, Plan, Subscription
from .periods import add_months, month_start
from .services import (
    credit_note_issue,
    invoice_mark_overdue,
    subscription_change_plan,
    subscription_ensure,
    subscriptions_renew_due,
)

MIB = 1024 * 1024


def _backdate_invoices(tenant) -> None:
    """Each period invoice as if issued (and collected) when its period started."""
    for invoice in Invoice.objects.filter(tenant=tenant, reason="period"):
        issued = invoice.period_start
        Invoice.objects.filter(pk=invoice.pk).update(
            issued_at=issued,
            due_date=(issued + timedelta(days=14)).date(),
            paid_at=issued if invoice.status == InvoiceStatus.PAID else None,
            created_at=issued,
        )
        Payment.objects.filter(invoice=invoice).update(created_at=issued)


def _acme(staff) -> str:
    tenant = Tenant.objects.get(slug="acme")
    subscription = subscription_ensure(tenant=tenant)
    start = add_months(timezone.now(), -3)
    Subscription.objects.filter(pk=subscription.pk).update(
        plan=Plan.objects.get(code="starter"),
        current_period_start=start,
        current_period_end=add_months(start, 1),
        default_payment_method="pm_card_visa",
        payment_provider="local",
    )
    issued = len(subscriptions_renew_due(tenant=tenant).invoices)
    _backdate_invoices(tenant)
    for months_ago, tokens, calls in (
        (3, 143_000, 8_200),
        (2, 231_500, 9_750),
        (1, 188_200, 9_100),
    ):
        period_start = add_months(timezone.now(), -months_ago)
        UsageRecord.objects.get_or_create(
            tenant=tenant,
            period_start=period_start,
            defaults={
                "period_end": add_months(period_start, 1),
                "tokens": tokens,
                "api_calls": calls,
                "documents": 120 + 40 * (3 - months_ago),
                "storage_bytes": (2_000 + 900 * (3 - months_ago)) * MIB,
            },
        )
    first = Invoice.objects.filter(tenant=tenant, status=InvoiceStatus.PAID).order_by("number")
    if first.exists():
        credit_note_issue(
            invoice=first.first(),
            actor=staff,
            amount_cents=2_500,
            kind="credit",
            reason="Goodwill credit for the gateway outage of the first month",
        )
    subscription_change_plan(tenant=tenant, actor=staff, plan=Plan.objects.get(code="team"))
    return f"acme: Starter for three months ({issued} invoices, paid), upgraded to Team today"


def _globex() -> str:
    tenant = Tenant.objects.get(slug="globex")
    subscription = subscription_ensure(tenant=tenant)
    start = month_start(timezone.now())
    Subscription.objects.filter(pk=subscription.pk).update(
        current_period_start=add_months(start, -1), current_period_end=start
    )
    invoice = subscriptions_renew_due(tenant=tenant).invoices[0]
    # Issued with its period, due three days ago: overdue, well before dunning would suspend.
    Invoice.objects.filter(pk=invoice.pk).update(
        issued_at=start, created_at=start, due_date=(timezone.now() - timedelta(days=3)).date()
    )
    invoice_mark_overdue(invoice=invoice)
    return f"globex: Enterprise, invoice {invoice.number} overdue"


def load(*, stdout, staff) -> None:
    tenants = Tenant.objects.filter(slug__in=("acme", "globex"))
    if len(tenants) < 2 or Invoice.objects.filter(tenant__in=tenants).exists():
        return
    for summary in (_acme(staff), _globex()):
        stdout.write(f"  billing {summary}")
