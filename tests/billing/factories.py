"""Factories of the billing app's models (registered with tests.factories.factory_for)."""

from datetime import UTC, datetime

import factory

from billing.catalogue import PLANS
from billing.models import (
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceReason,
    InvoiceStatus,
    LineType,
    Plan,
    Subscription,
    SubscriptionStatus,
)

_TEAM = next(spec for spec in PLANS if spec["code"] == "team")


class PlanFactory(factory.django.DjangoModelFactory):
    """A monthly plan shaped like the catalogue's Team plan, under a code of its own."""

    class Meta:
        model = Plan
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.Sequence(lambda n: f"Plan {n}")
    description = "A plan made by a test"
    price_cents = 14_900
    currency = "USD"
    tier = "pro"
    features = factory.LazyFunction(lambda: dict(_TEAM["features"]))
    token_overage_micros_per_1k = 1_500
    storage_overage_cents_per_gb = 40
    position = 50


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """An active subscription in January 2026 (a whole calendar period)."""

    class Meta:
        model = Subscription
        django_get_or_create = ("tenant",)

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    plan = factory.SubFactory(PlanFactory)
    status = SubscriptionStatus.ACTIVE
    current_period_start = datetime(2026, 1, 1, tzinfo=UTC)
    current_period_end = datetime(2026, 2, 1, tzinfo=UTC)


class InvoiceFactory(factory.django.DjangoModelFactory):
    """An issued, pending invoice of one subscription line (lines: InvoiceLineFactory)."""

    class Meta:
        model = Invoice

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    subscription = None
    plan = None
    number = factory.Sequence(lambda n: f"INV-2026-{n + 1:04d}")
    reason = InvoiceReason.PERIOD
    status = InvoiceStatus.PENDING
    currency = "USD"
    period_start = datetime(2026, 1, 1, tzinfo=UTC)
    period_end = datetime(2026, 2, 1, tzinfo=UTC)
    subtotal_cents = 14_900
    total_cents = 14_900
    issued_at = datetime(2026, 1, 1, tzinfo=UTC)
    due_date = datetime(2026, 1, 15, tzinfo=UTC).date()


class InvoiceLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InvoiceLine

    invoice = factory.SubFactory(InvoiceFactory)
    tenant = factory.SelfAttribute("invoice.tenant")
    type = LineType.SUBSCRIPTION
    description = "Team plan, January 2026"
    quantity = 1
    unit_amount_micros = 149_000_000
    amount_cents = 14_900


class CreditNoteFactory(factory.django.DjangoModelFactory):
    """Credit kept for the next invoices, against a paid invoice."""

    class Meta:
        model = CreditNote

    invoice = factory.SubFactory(
        InvoiceFactory, status=InvoiceStatus.PAID, amount_paid_cents=14_900
    )
    tenant = factory.SelfAttribute("invoice.tenant")
    number = factory.Sequence(lambda n: f"CN-2026-{n + 1:04d}")
    kind = "credit"
    amount_cents = 1_000
    remaining_cents = 1_000
    currency = "USD"
    reason = "Goodwill"
