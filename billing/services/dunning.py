"""Dunning: what happens when invoices are not paid.

The schedule (a beat job, `billing.tasks.run_dunning`, also `manage.py run_dunning`):
- the day after its due date, an unpaid invoice is `overdue` (`billing.invoice.overdue`) and
  its subscription `past_due` (plan changes wait until it is paid);
- BILLING_SUSPEND_AFTER_DAYS (default 14) days after the due date of an invoice still overdue,
  the tenant is suspended through the lifecycle service with the reason "Payment overdue"
  (every tenant-scoped endpoint answers 403 TENANT_SUSPENDED, except reading the
  subscription and invoices and paying);
- paying the last overdue invoice makes the subscription active again and restores a tenant
  that dunning suspended; a tenant suspended by staff (for any reason) stays suspended.

Each step claims its rows with a conditional UPDATE in its own transaction, so two runs at
once do each thing once and one tenant's failure does not undo the others.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record
from tenants.models import Tenant, TenantStatus
from tenants.services.lifecycle import tenant_restore, tenant_suspend

from ..models import Invoice, InvoiceStatus, Subscription, SubscriptionStatus

SUSPENSION_REASON = "Payment overdue"


@dataclass
class DunningReport:
    overdue: list[str] = field(default_factory=list)  # invoice numbers marked overdue
    suspended: list[str] = field(default_factory=list)  # tenant slugs suspended


def _today(now: datetime) -> date:
    return now.astimezone(timezone.get_current_timezone()).date()


@transaction.atomic
def invoice_mark_overdue(*, invoice: Invoice, now: datetime | None = None) -> bool:
    """Mark one pending invoice past its due date overdue (and its subscription past due);
    False when another run already did, or it was paid meanwhile."""
    now = now or timezone.now()
    claimed = Invoice.objects.filter(
        pk=invoice.pk, status=InvoiceStatus.PENDING, due_date__lt=_today(now)
    ).update(status=InvoiceStatus.OVERDUE, overdue_at=now, updated_at=now)
    if not claimed:
        return False
    invoice.refresh_from_db()
    if invoice.subscription_id is not None:
        Subscription.objects.filter(
            pk=invoice.subscription_id,
            status__in=(SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING),
        ).update(status=SubscriptionStatus.PAST_DUE, updated_at=now)
    record(
        tenant=invoice.tenant,
        event_type="billing.invoice.overdue",
        payload={
            "invoice_id": str(invoice.pk),
            "number": invoice.number,
            "amount_due_cents": invoice.amount_due_cents,
            "currency": invoice.currency,
            "due_date": invoice.due_date.isoformat(),
        },
    )
    return True


@transaction.atomic
def dunning_suspend(*, tenant: Tenant, now: datetime | None = None) -> bool:
    """Suspend `tenant` for an invoice unpaid BILLING_SUSPEND_AFTER_DAYS days after its due
    date; False when it has none, or is not active (already suspended or cancelled)."""
    now = now or timezone.now()
    limit = _today(now) - timedelta(days=settings.BILLING_SUSPEND_AFTER_DAYS)
    # Locks in the order payments take them (invoice, subscription, tenant). Locking the
    # overdue invoices waits for a payment in flight; PostgreSQL then re-reads them, so an
    # invoice paid meanwhile is no reason to suspend (and the payment's dunning_settle has
    # already run: nothing would restore the organization).
    overdue = list(
        Invoice.objects.select_for_update()
        .filter(tenant_id=tenant.pk, status=InvoiceStatus.OVERDUE, due_date__lte=limit)
        .values_list("pk", flat=True)
    )
    if not overdue:
        return False
    list(Subscription.objects.select_for_update().filter(tenant_id=tenant.pk))
    locked = Tenant.objects.locked(tenant.pk)
    if locked.status not in (TenantStatus.TRIAL, TenantStatus.ACTIVE):
        return False
    tenant_suspend(tenant=locked, actor=None, reason=SUSPENSION_REASON)
    Subscription.objects.filter(tenant=locked).update(dunning_suspended_at=now, updated_at=now)
    return True


def dunning_run(*, now: datetime | None = None) -> DunningReport:
    """The beat job: overdue invoices, then suspensions; each row in its own transaction."""
    now = now or timezone.now()
    report = DunningReport()
    due = Invoice.objects.filter(status=InvoiceStatus.PENDING, due_date__lt=_today(now))
    for invoice in due.select_related("tenant").order_by("due_date", "pk").iterator():
        if invoice_mark_overdue(invoice=invoice, now=now):
            report.overdue.append(invoice.number)
    limit = _today(now) - timedelta(days=settings.BILLING_SUSPEND_AFTER_DAYS)
    late = (
        Tenant.objects.filter(
            status__in=(TenantStatus.TRIAL, TenantStatus.ACTIVE),
            invoices__status=InvoiceStatus.OVERDUE,
            invoices__due_date__lte=limit,
        )
        .distinct()
        .order_by("slug")
    )
    for tenant in late.iterator():
        if dunning_suspend(tenant=tenant, now=now):
            report.suspended.append(tenant.slug)
    return report


@transaction.atomic
def dunning_settle(*, tenant: Tenant, actor) -> bool:
    """After a payment: with no overdue invoice left, the subscription is active again and a
    tenant dunning suspended is restored. True when it restored the tenant."""
    if Invoice.objects.filter(tenant=tenant, status=InvoiceStatus.OVERDUE).exists():
        return False
    now = timezone.now()
    Subscription.objects.filter(tenant=tenant, status=SubscriptionStatus.PAST_DUE).update(
        status=SubscriptionStatus.ACTIVE, updated_at=now
    )
    subscription = Subscription.objects.select_for_update().filter(tenant=tenant).first()
    if subscription is None or subscription.dunning_suspended_at is None:
        return False
    locked = Tenant.objects.locked(tenant.pk)
    subscription.dunning_suspended_at = None
    subscription.save(update_fields=["dunning_suspended_at", "updated_at"])
    # Only the suspension dunning made: staff may have suspended it since, for another reason.
    if locked.status == TenantStatus.SUSPENDED and locked.suspension_reason == SUSPENSION_REASON:
        tenant_restore(tenant=locked, actor=actor)
        return True
    return False
