"""The period's invoice run on PostgreSQL, against a bare loop measured in the same run.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/invoice_run.py \
        [--tenants 10000] [--rounds 3] [--batch 500]

`--tenants` organizations (10,000), each with an owner and on the Team plan, paid by card
(the local provider's `pm_card_visa`), one in ten with a webhook endpoint, all of them with a
period that has just ended. Each round:

- the invoice run: billing.services.subscriptions_renew_due, what beat runs (every
  subscription renewed, its invoice numbered and issued with its line, the audit events, the
  public events with their webhook deliveries and the owners' notifications, and the invoice
  collected: a payment and its events);
- the bare loop: the same rows (every row the run wrote, in every table: fresh ids, no
  invoice number or charge id, which are unique), built from plain values and written with
  `bulk_create`, in as many transactions as the run had batches, and nothing else.

Each round bills the next month, then the bare loop writes the rows that round wrote. Prints
invoices per second of each, the ratio (target >= 0.3x the bare loop), the rows written per
invoice, and the queries per batch of the run at two batch sizes (target: the same, whatever
the batch's size).
"""

import argparse
import statistics
import time
from datetime import UTC, datetime

from common import describe_environment, setup_django


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    teardown = setup_django()
    try:
        from django.db import connection

        if connection.vendor != "postgresql":
            raise SystemExit("bench/invoice_run.py needs PostgreSQL: set DATABASE_URL")
        print(f"invoice_run: {describe_environment()}")
        run(args.tenants, args.rounds, args.batch)
    finally:
        teardown()


def populate(count: int, start: datetime, prefix: str = "bench") -> list:
    """`count` organizations on Team, each with an owner, their period ending at `start`."""
    from django.db import transaction

    from accounts.models import User
    from billing.models import Plan, Subscription
    from billing.periods import add_months
    from notifications.models import WebhookEndpoint
    from tenants.models import Membership, Role, Tenant

    team = Plan.objects.get(code="team")
    with transaction.atomic():
        tenants = Tenant.objects.bulk_create(
            Tenant(
                name=f"Bench {prefix} {n}",
                slug=f"{prefix}-{n}",
                status="active",
                plan=team.tier,
                plan_features=team.features,
            )
            for n in range(count)
        )
        users = User.objects.bulk_create(
            User(email=f"owner{n}@{prefix}.example.com", name=f"Owner {n}") for n in range(count)
        )
        Membership.objects.bulk_create(
            Membership(tenant=tenant, user=user, role=Role.OWNER, status="active")
            for tenant, user in zip(tenants, users, strict=True)
        )
        WebhookEndpoint.objects.bulk_create(
            WebhookEndpoint(
                tenant=tenant,
                name="Bench",
                url="https://hooks.example.com/bench",
                secret_encrypted="bench",
                events=["*"],
            )
            for tenant in tenants[::10]
        )
        Subscription.objects.bulk_create(
            Subscription(
                tenant=tenant,
                plan=team,
                status="active",
                current_period_start=add_months(start, -1),
                current_period_end=start,
                default_payment_method="pm_card_visa",
                payment_provider="local",
            )
            for tenant in tenants
        )
    return tenants


def _models():
    from django.apps import apps

    return [
        apps.get_model(label)
        for label in (
            "billing.Invoice",
            "billing.InvoiceLine",
            "billing.Payment",
            "audit.AuditEvent",
            "notifications.WebhookEvent",
            "notifications.WebhookDelivery",
            "notifications.Notification",
        )
    ]


def rows_written() -> int:
    """Rows in the tables an invoice run writes to."""
    return sum(model.objects.count() for model in _models())


def written_since(moment: datetime) -> dict:
    """What an invoice run wrote from `moment` on, as plain values per model, in an order
    where every row comes after the rows it references (invoices before their lines)."""
    values = {}
    for model in _models():
        fields = [field.attname for field in model._meta.concrete_fields]
        values[model] = list(model.objects.filter(created_at__gte=moment).values(*fields))
    return values


def bare_loop(written: dict, batches: int) -> float:
    """Seconds to insert the same rows as an invoice run (fresh ids, and no number or charge
    id, which are unique), built from plain values and written with bulk_create, in as many
    transactions as the run's batches: nothing else."""
    import uuid

    from django.db import transaction

    from billing.models import Invoice, Payment

    chunks = _chunks(written, batches)
    started = time.perf_counter()
    new_ids: dict = {}
    for index in range(batches):
        with transaction.atomic():
            for model, model_chunks in chunks.items():
                objs = []
                for row in model_chunks[index]:
                    row = dict(row, id=new_ids.setdefault(row["id"], uuid.uuid4()))
                    for key in ("invoice_id", "event_id"):
                        if key in row:
                            row[key] = new_ids.setdefault(row[key], uuid.uuid4())
                    if model is Invoice:
                        row.update(number="", subscription_id=None)
                    if model is Payment:
                        row["provider_payment_id"] = ""
                    objs.append(model(**row))
                model.objects.bulk_create(objs)
    return time.perf_counter() - started


def _chunks(written: dict, batches: int) -> dict:
    """Each model's rows in `batches` parts, a row referencing an invoice or a public event in
    the part of that row (the same transaction, as in the run)."""
    chunks, part_of = {}, {}
    for model, rows in written.items():
        parts = [[] for _ in range(batches)]
        for position, row in enumerate(rows):
            parent = row.get("invoice_id") or row.get("event_id")
            index = part_of.get(parent, position * batches // max(len(rows), 1))
            parts[index].append(row)
            part_of[row["id"]] = index
        chunks[model] = parts
    return chunks


def invoice_run(now: datetime, batch: int) -> tuple[float, int, int]:
    from billing.services import subscriptions_renew_due

    before = rows_written()
    started = time.perf_counter()
    report = subscriptions_renew_due(now=now, batch_size=batch)
    seconds = time.perf_counter() - started
    assert not report.failed, report.failed
    return seconds, len(report.invoices), rows_written() - before


def queries_per_batch(start: datetime, sizes=(50, 400)) -> dict:
    """Queries of the invoice run over one batch, for organizations of its own."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.services import subscriptions_renew_due

    counts = {}
    for size in sizes:
        populate(size, start, prefix=f"batch{size}")
        with CaptureQueriesContext(connection) as captured:
            report = subscriptions_renew_due(now=start, batch_size=size)
        assert report.renewed == size, report.renewed
        counts[size] = len(captured)
    return counts


def run(count: int, rounds: int, batch: int) -> None:
    from billing.periods import add_months

    start = datetime(2026, 1, 1, tzinfo=UTC)
    populate(count, start)
    batches = -(-count // batch)
    print(f"  {count} organizations on Team, paid by card, one in ten with a webhook endpoint")
    run_rates, bare_rates, narrow_rates, rows_per_invoice = [], [], [], []
    for round_number in range(rounds):
        now = add_months(start, round_number)
        began = datetime.now(UTC)
        seconds, issued, rows = invoice_run(now, batch)
        assert issued == count, issued
        run_rates.append(count / seconds)
        rows_per_invoice.append(rows / count)
        written = written_since(began)
        bare_rates.append(count / bare_loop(written, batches))
        only = {model: rows for model, rows in written.items() if model in _models()[:2]}
        narrow_rates.append(count / bare_loop(only, batches))
        print(
            f"  round {round_number + 1}: invoice run {run_rates[-1]:8.0f} invoices/s, "
            f"bare loop (the same {rows} rows) {bare_rates[-1]:8.0f} invoices/s, "
            f"(the invoices and lines alone) {narrow_rates[-1]:8.0f} invoices/s"
        )
    ratios = [r / b for r, b in zip(run_rates, bare_rates, strict=True)]
    print(
        f"  median: invoice run {statistics.median(run_rates):.0f} invoices/s, bare loop "
        f"{statistics.median(bare_rates):.0f} invoices/s, ratio {statistics.median(ratios):.2f} "
        "(target >= 0.3)"
    )
    narrow = [r / b for r, b in zip(run_rates, narrow_rates, strict=True)]
    print(
        "  for comparison, against a loop writing the invoices and their lines alone (not the "
        f"events, payments and notifications): ratio {statistics.median(narrow):.2f}"
    )
    print(
        f"  rows written per invoice: {statistics.median(rows_per_invoice):.1f} (the invoice, "
        "its line and payment, the audit events, the public events with their deliveries, the "
        "owners' notifications)"
    )
    # Organizations of their own, billed for a month before the others' periods end.
    counts = queries_per_batch(add_months(start, -12))
    print(
        "  queries per batch: "
        + ", ".join(f"{queries} for {size} subscriptions" for size, queries in counts.items())
        + (" (constant)" if len(set(counts.values())) == 1 else " (NOT constant)")
    )


if __name__ == "__main__":
    main()
