"""Period boundaries: a subscription's period ends, the next one starts, and its invoice is
issued (the beat job `billing.tasks.generate_invoices`, also `manage.py generate_invoices`).

At the end of a period:
- a trial that ends starts the first paid period (to the end of the calendar month, pro
  rata) and issues its invoice;
- a subscription set to cancel ends: `canceled`, the tenant's limits back to the Free plan's,
  and a last invoice only for usage owed;
- otherwise the next period starts on the plan scheduled for it (a downgrade) or the same one,
  and its invoice holds the plan's price for the new period (in advance) and the ended
  period's metered usage (in arrears): tokens beyond the included amount at the plan's price
  per 1,000 (`per_token`), or the gateway's recorded cost (`at_cost`), and storage beyond the
  included amount per GB-month.
A Free plan's period with no usage owed renews without an invoice. Each issued invoice is
collected from the subscription's payment method when it has one.

Exactly one invoice per subscription and period, however often the job runs and even when two
run at once: each subscription is claimed under its row lock and renewed only while its period
has ended (a second run finds it renewed), and `invoice_one_per_period` backs that up in the
database. A job that was down for months catches up one period at a time.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.services import Entry, record, record_many
from config.db import bulk_insert
from config.services import model_update
from playground.selectors import gateway_usage
from tenants.models import QuotaCounter, QuotaResource, TenantStatus
from tenants.services.lifecycle import tenant_plan_apply

from ..catalogue import MICROS_PER_CENT
from ..models import (
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceReason,
    InvoiceSequence,
    InvoiceStatus,
    LineType,
    Payment,
    PaymentStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
    TokenPricing,
)
from ..periods import INTERVAL_MONTHS, following_period, micros_to_cents, period_from
from ..providers import provider as payment_provider
from ..providers.base import PaymentMethodInvalid
from .checkout import invoice_issue_first_period
from .dunning import dunning_settle
from .invoices import (
    LineSpec,
    format_number,
    invoice_issue,
    invoice_payload,
    invoice_rows,
    use_credit,
)
from .payments import (
    collection_key,
    invoice_collect,
    method_refused,
    payment_attempt,
    payment_payload,
)
from .subscriptions import _plan_of_tier

logger = logging.getLogger("billing.renewals")

RENEWABLE = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE)
GB = 1024**3
MB = 1024**2


def subscriptions_due(*, now: datetime | None = None):
    """Subscriptions whose current period has ended, of organizations not cancelled (a
    cancelled organization is billed no more; restored, it renews and catches up)."""
    return (
        Subscription.objects.filter(
            current_period_end__lte=now or timezone.now(), status__in=RENEWABLE
        )
        .exclude(tenant__status=TenantStatus.CANCELLED)
        .order_by("current_period_end", "pk")
    )


@dataclass(frozen=True)
class Usage:
    tokens: int = 0
    cost_micros: int = 0
    storage_bytes: int = 0


def period_usage(subscription: Subscription, start: datetime, end: datetime) -> Usage:
    """What the tenant used in [start, end): the gateway's metered tokens and cost, and the
    storage held now (a stock level, read at the period's end)."""
    tokens, cost = gateway_usage(tenant_ids=[subscription.tenant_id], start=start, end=end).get(
        subscription.tenant_id, (0, 0)
    )
    storage = (
        QuotaCounter.objects.filter(
            tenant_id=subscription.tenant_id, resource=QuotaResource.STORAGE
        )
        .values_list("used", flat=True)
        .first()
    )
    return Usage(tokens=tokens, cost_micros=cost, storage_bytes=storage or 0)


def usage_lines(plan: Plan, usage: Usage, start: datetime, end: datetime) -> list[LineSpec]:
    """The ended period's metered usage at `plan`'s prices (in arrears)."""
    return [
        *token_usage_lines(plan, usage, start, end),
        *storage_usage_lines(plan, usage, start, end),
    ]


def token_usage_lines(plan: Plan, usage: Usage, start: datetime, end: datetime) -> list[LineSpec]:
    """The gateway's tokens: at cost, or those beyond the included amount per started 1,000."""
    if plan.token_pricing == TokenPricing.AT_COST:
        if not usage.cost_micros:
            return []
        return [
            LineSpec(
                type=LineType.USAGE,
                description=f"AI gateway usage at cost, {usage.tokens:,} tokens",
                quantity=1,
                unit_amount_micros=usage.cost_micros,
                amount_cents=micros_to_cents(usage.cost_micros),
                period_start=start,
                period_end=end,
            )
        ]
    # The included amounts are monthly; a yearly period includes twelve months of them.
    included = (
        int(plan.features.get("maxTokensPerMonth", 0)) * INTERVAL_MONTHS[plan.billing_interval]
    )
    beyond = max(usage.tokens - included, 0)
    if not beyond or not plan.token_overage_micros_per_1k:
        return []
    thousands = -(-beyond // 1000)  # started thousands count
    return [
        LineSpec(
            type=LineType.USAGE,
            description=f"AI tokens beyond the {included:,} included: {beyond:,} tokens, per 1,000",
            quantity=thousands,
            unit_amount_micros=plan.token_overage_micros_per_1k,
            amount_cents=micros_to_cents(thousands * plan.token_overage_micros_per_1k),
            period_start=start,
            period_end=end,
        )
    ]


def storage_usage_lines(plan: Plan, usage: Usage, start: datetime, end: datetime) -> list[LineSpec]:
    """Storage held beyond the included amount, per started GB and month of the period."""
    months = INTERVAL_MONTHS[plan.billing_interval]
    included_bytes = int(plan.features.get("maxStorageMB", 0)) * MB
    beyond_bytes = max(usage.storage_bytes - included_bytes, 0)
    if not beyond_bytes or not plan.storage_overage_cents_per_gb:
        return []
    gigabytes = -(-beyond_bytes // GB)
    return [
        LineSpec(
            type=LineType.USAGE,
            description=f"Storage beyond the {included_bytes // MB:,} MB included, per GB-month",
            quantity=gigabytes * months,
            unit_amount_micros=plan.storage_overage_cents_per_gb * MICROS_PER_CENT,
            amount_cents=gigabytes * months * plan.storage_overage_cents_per_gb,
            period_start=start,
            period_end=end,
        )
    ]


@transaction.atomic
def subscription_renew(*, subscription: Subscription, now: datetime | None = None):
    """Close the subscription's ended period and open the next one, with its invoice. Returns
    the invoice issued, or None (nothing owed, or nothing to do: not ended, or renewed by
    another run meanwhile)."""
    return _renew(subscription, now or timezone.now())[1]


def _renew(subscription: Subscription, now: datetime) -> tuple[bool, Invoice | None]:
    """(whether this call renewed it, the invoice it issued); in the caller's transaction."""
    sub = (
        Subscription.objects.select_for_update(of=("self",))
        .select_related("plan", "pending_plan", "tenant")
        .get(pk=subscription.pk)
    )
    if (
        sub.current_period_end > now
        or sub.status not in RENEWABLE
        or sub.tenant.status == TenantStatus.CANCELLED
    ):
        return False, None
    ended_start, ended_end, ended_plan = sub.current_period_start, sub.current_period_end, sub.plan
    trial = sub.status == SubscriptionStatus.TRIALING
    # Usage is billed in arrears for paid periods; a trial's is free. Storage is a stock level
    # read now: a run catching up several periods bills each at today's.
    arrears = (
        []
        if trial
        else usage_lines(
            ended_plan, period_usage(sub, ended_start, ended_end), ended_start, ended_end
        )
    )
    # A line that rounds to no cent owes nothing.
    arrears = [line for line in arrears if line.amount_cents]
    if sub.cancel_at_period_end:
        free = _plan_of_tier("free")
        model_update(
            instance=sub,
            data={
                "status": SubscriptionStatus.CANCELED,
                "cancel_at_period_end": False,
                "pending_plan": None,
            },
        )
        tenant_plan_apply(tenant=sub.tenant, tier=free.tier, features=free.features)
        invoice = _issue(sub, ended_plan, ended_end, ended_end, arrears) if arrears else None
        _record_renewal(sub, ended_plan, free, ended_end, invoice, change="ended")
        return True, invoice

    if trial:
        period = period_from(ended_end, ended_plan.billing_interval)
        model_update(
            instance=sub,
            data={
                "status": SubscriptionStatus.ACTIVE,
                "current_period_start": period.start,
                "current_period_end": period.end,
            },
        )
        # A trial switched to a free plan meanwhile owes nothing: no invoice.
        invoice = (
            _collect(invoice_issue_first_period(subscription=sub)) if sub.plan.price_cents else None
        )
        _record_renewal(sub, ended_plan, ended_plan, ended_end, invoice, change="trial_ended")
        return True, invoice

    plan = sub.pending_plan or ended_plan
    period = following_period(ended_end, plan.billing_interval)
    model_update(
        instance=sub,
        data={
            "plan": plan,
            "pending_plan": None,
            "current_period_start": period.start,
            "current_period_end": period.end,
        },
    )
    changed = plan.pk != ended_plan.pk
    if changed:
        tenant_plan_apply(tenant=sub.tenant, tier=plan.tier, features=plan.features)
    lines = [_fee_line(plan, period), *arrears] if plan.price_cents else list(arrears)
    invoice = _issue(sub, plan, period.start, period.end, lines) if lines else None
    _record_renewal(
        sub,
        ended_plan,
        plan,
        period.start,
        invoice,
        change="renewed_on_new_plan" if changed else None,
    )
    return True, invoice


def _issue(sub: Subscription, plan: Plan, start, end, lines) -> Invoice:
    invoice = invoice_issue(
        subscription=sub,
        plan=plan,
        reason=InvoiceReason.PERIOD,
        period_start=start,
        period_end=end,
        lines=lines,
        actor=None,
    )
    return _collect(invoice)


def _collect(invoice: Invoice) -> Invoice:
    """Collect from the kept payment method; the invoice as it stands after."""
    invoice_collect(invoice=invoice)
    invoice.refresh_from_db()
    return invoice


def _record_renewal(
    sub: Subscription, ended_plan: Plan, plan: Plan, at: datetime, invoice, *, change
) -> None:
    """A period boundary: `billing.subscription.renewed`, or, when the plan changed or the
    subscription ended, `billing.subscription.changed` (a public event) with `change`."""
    record(**_renewal_event(sub, ended_plan, plan, at, invoice, change=change))


def _renewal_event(sub, ended_plan: Plan, plan: Plan, at: datetime, invoice, *, change) -> dict:
    payload = {
        "subscription_id": str(sub.pk),
        "old_plan": ended_plan.code,
        "new_plan": plan.code,
        "effective_at": at.isoformat(),
        "proration_amount_cents": 0,
        "invoice_id": str(invoice.pk) if invoice is not None else None,
        "current_period_start": sub.current_period_start.isoformat(),
        "current_period_end": sub.current_period_end.isoformat(),
    }
    if change is None:
        return {
            "tenant": sub.tenant,
            "event_type": "billing.subscription.renewed",
            "payload": payload,
        }
    return {
        "tenant": sub.tenant,
        "event_type": "billing.subscription.changed",
        "payload": {**payload, "change": change},
    }


# The invoice run in batches ------------------------------------------------------------------


def _renew_batch(pks: list, now: datetime) -> tuple[set, list[Invoice]]:
    """Renew the plain subscriptions among `pks` (active or past due, nothing scheduled for
    the period end) as `_renew` would, in one transaction and a constant number of queries
    whatever their number: the claim (locked rows; those another run holds are skipped, it
    renews them), the period's usage, unused credit, numbers, invoices and lines, the
    periods, the events (audit.services.record_many), and collection from the kept payment
    methods. Returns (the ones it renewed, the invoices issued)."""
    subs = list(
        Subscription.objects.select_for_update(of=("self",), skip_locked=True)
        .filter(
            pk__in=pks,
            current_period_end__lte=now,
            status__in=(SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE),
            cancel_at_period_end=False,
            pending_plan__isnull=True,
        )
        .exclude(tenant__status=TenantStatus.CANCELLED)
        .select_related("plan", "tenant")
        .order_by("pk")
    )
    if not subs:
        return set(), []
    tenant_ids = [sub.tenant_id for sub in subs]
    usage = _batch_usage(subs)
    built = []  # (sub, ended start/end, new period, lines)
    for sub in subs:
        plan, start, end = sub.plan, sub.current_period_start, sub.current_period_end
        tokens, cost, storage = usage.get(sub.tenant_id, (0, 0, 0))
        ended_usage = Usage(tokens=tokens, cost_micros=cost, storage_bytes=storage)
        lines = [line for line in usage_lines(plan, ended_usage, start, end) if line.amount_cents]
        period = following_period(end, plan.billing_interval)
        if plan.price_cents:
            lines.insert(0, _fee_line(plan, period))
        built.append((sub, period, lines))

    notes_by_tenant: dict = {}
    for note in (
        CreditNote.objects.select_for_update()
        .filter(tenant_id__in=tenant_ids, remaining_cents__gt=0)
        .order_by("created_at", "pk")
    ):
        notes_by_tenant.setdefault(note.tenant_id, []).append(note)
    owing = [sub.tenant_id for sub, _, lines in built if lines]
    numbers = _allocate_numbers(owing)

    invoices, rows, events, used_notes = [], [], [], []
    for sub, period, lines in built:
        invoice = None
        if lines:
            notes = [
                n for n in notes_by_tenant.get(sub.tenant_id, ()) if n.currency == sub.plan.currency
            ]
            credits = use_credit(notes, sum(line.amount_cents for line in lines))
            used_notes.extend(notes)
            invoice, invoice_lines = invoice_rows(
                subscription=sub,
                plan=sub.plan,
                reason=InvoiceReason.PERIOD,
                period_start=period.start,
                period_end=period.end,
                lines=lines,
                credits=credits,
                number=format_number(numbers[sub.tenant_id], now),
                issued_at=now,
            )
            invoices.append(invoice)
            rows.extend(invoice_lines)
        sub.current_period_start, sub.current_period_end = period.start, period.end
        sub.updated_at = now
        events.append(_renewal_event(sub, sub.plan, sub.plan, period.start, invoice, change=None))
        if invoice is not None:
            events.append(
                {
                    "tenant": sub.tenant,
                    "event_type": "billing.invoice.created",
                    "payload": invoice_payload(invoice),
                }
            )
    payments, settled = _charge_batch(invoices, now)
    if used_notes:
        CreditNote.objects.bulk_update(used_notes, ["remaining_cents"])
    bulk_insert(Invoice, invoices)
    bulk_insert(InvoiceLine, rows)
    bulk_insert(Payment, payments)
    _advance_periods(built, now)
    events.extend(
        {
            "tenant": payment.tenant,
            "event_type": (
                "billing.payment.succeeded"
                if payment.status == PaymentStatus.SUCCEEDED
                else "billing.payment.failed"
            ),
            "payload": payment_payload(payment.invoice, payment),
        }
        for payment in payments
    )
    record_many([Entry(**event) for event in events])
    for tenant in settled:
        dunning_settle(tenant=tenant, actor=None)
    return {sub.pk for sub in subs}, invoices


def _advance_periods(built: list, now: datetime) -> None:
    """The subscriptions' new periods: one UPDATE per distinct new period (normally one)."""
    by_period: dict = {}
    for sub, period, _ in built:
        by_period.setdefault((period.start, period.end), []).append(sub.pk)
    for (start, end), pks in by_period.items():
        Subscription.objects.filter(pk__in=pks).update(
            current_period_start=start, current_period_end=end, updated_at=now
        )


def _fee_line(plan: Plan, period) -> LineSpec:
    return LineSpec(
        type=LineType.SUBSCRIPTION,
        description=f"{plan.name} plan, {period.start:%Y-%m-%d} to {period.end:%Y-%m-%d}",
        amount_cents=plan.price_cents,
        period_start=period.start,
        period_end=period.end,
    )


def _batch_usage(subs: list[Subscription]) -> dict:
    """{tenant_id: (tokens, cost_micros, storage_bytes)} of each subscription's ended period:
    one gateway query per distinct period (a calendar month: normally one), one for storage."""
    periods: dict = {}
    for sub in subs:
        periods.setdefault((sub.current_period_start, sub.current_period_end), []).append(
            sub.tenant_id
        )
    gateway = {}
    for (start, end), tenant_ids in periods.items():
        gateway.update(gateway_usage(tenant_ids=tenant_ids, start=start, end=end))
    storage = dict(
        QuotaCounter.objects.filter(
            tenant_id__in=[sub.tenant_id for sub in subs], resource=QuotaResource.STORAGE
        ).values_list("tenant_id", "used")
    )
    return {
        sub.tenant_id: (*gateway.get(sub.tenant_id, (0, 0)), storage.get(sub.tenant_id, 0))
        for sub in subs
    }


def _allocate_numbers(tenant_ids: list) -> dict:
    """The next invoice number of each tenant (one invoice each), under their sequence rows'
    locks, in three queries: the missing rows, one UPDATE (which locks them), their values."""
    if not tenant_ids:
        return {}
    InvoiceSequence.objects.bulk_create(
        [InvoiceSequence(tenant_id=tenant_id) for tenant_id in tenant_ids], ignore_conflicts=True
    )
    InvoiceSequence.objects.filter(tenant_id__in=tenant_ids).update(
        last_number=F("last_number") + 1, updated_at=timezone.now()
    )
    return dict(
        InvoiceSequence.objects.filter(tenant_id__in=tenant_ids).values_list(
            "tenant_id", "last_number"
        )
    )


def _charge_batch(invoices: list[Invoice], now: datetime) -> tuple[list[Payment], list]:
    """invoice_collect for the batch's invoices, before they are written: each charged to its
    subscription's kept method through the provider (a refused method is a failed attempt,
    like a decline), a paid one written paid. Returns the payments to write, and the tenants
    whose past-due subscription this pays up (their dunning ends: dunning_settle, one by one,
    they are few)."""
    provider = payment_provider()
    payments, settled = [], []
    for invoice in invoices:
        sub = invoice.subscription
        if not sub.default_payment_method or invoice.amount_due_cents <= 0:
            continue
        try:
            payment = payment_attempt(
                provider,
                invoice,
                payment_method=sub.default_payment_method,
                key=collection_key(invoice),
            )
        except PaymentMethodInvalid:
            payment = method_refused(provider, invoice)
        payments.append(payment)
        if payment.status == PaymentStatus.SUCCEEDED:
            invoice.amount_paid_cents += payment.amount_cents
            invoice.status, invoice.paid_at = InvoiceStatus.PAID, now
            if sub.status == SubscriptionStatus.PAST_DUE:
                settled.append(invoice.tenant)
    return payments, settled


def _plain(sub_status: str, cancel_at_period_end: bool, pending_plan_id) -> bool:
    """Renewed in batches: active or past due, nothing scheduled for the period end."""
    return (
        sub_status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE)
        and not cancel_at_period_end
        and pending_plan_id is None
    )


@dataclass
class RenewalReport:
    renewed: int = 0
    invoices: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def subscriptions_renew_due(
    *, now: datetime | None = None, tenant=None, batch_size: int = 500
) -> RenewalReport:
    """The beat job: renew every subscription whose period has ended, catching up one period
    at a time. Plain renewals (most of them) go in batches of `batch_size`, each batch one
    transaction with a constant number of queries (_renew_batch); trials ending, downgrades
    and cancellations one by one (_renew). A batch that fails is retried one by one, so a
    subscription that fails is logged and left for the next run, and the others go on."""
    now = now or timezone.now()
    report = RenewalReport()
    # Failed ones wait for the next run; skipped ones are held by another run, which renews
    # them: neither is asked for again in this run (no spinning on a held row).
    failed: set = set()
    skipped: set = set()
    while True:
        due = subscriptions_due(now=now).exclude(pk__in=failed | skipped)
        if tenant is not None:
            due = due.filter(tenant=tenant)
        batch = list(
            due.values_list("pk", "status", "cancel_at_period_end", "pending_plan_id")[:batch_size]
        )
        if not batch:
            return report
        plain = [row[0] for row in batch if _plain(*row[1:])]
        one_by_one = [row[0] for row in batch if not _plain(*row[1:])]
        if plain:
            try:
                with transaction.atomic():
                    renewed, invoices = _renew_batch(plain, now)
                report.renewed += len(renewed)
                report.invoices.extend(invoices)
                skipped.update(set(plain) - renewed)
            except Exception:
                logger.exception("renewing a batch failed: renewing its subscriptions one by one")
                one_by_one.extend(plain)
        for pk in one_by_one:
            try:
                with transaction.atomic():
                    renewed, invoice = _renew(Subscription(pk=pk), now)
            except Exception:
                logger.exception("renewing subscription %s failed", pk)
                failed.add(pk)
                report.failed.append(pk)
                continue
            if not renewed:
                skipped.add(pk)  # another run renewed it meanwhile
                continue
            report.renewed += 1
            if invoice is not None:
                report.invoices.append(invoice)
