"""Credit notes (refunds and credit) against paid invoices, never more than is left to give
back, even when issued at once; credit used up by the next invoices; and invoices whose
totals always add up."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from billing import services
from billing.models import CreditNote, Invoice, InvoiceStatus, LineType, Plan
from config.exceptions import ApplicationError, Conflict
from tests.conftest import assert_envelope
from tests.factories import TenantFactory

from .factories import InvoiceFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/billing/credit-notes/"


def paid_invoice(tenant, *, method="pm_card_visa", total=14_900) -> Invoice:
    invoice = InvoiceFactory(tenant=tenant, subtotal_cents=total, total_cents=total)
    services.invoice_pay(invoice=invoice, actor=None, payment_method=method)
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    return invoice


def test_a_refund_goes_through_the_provider_and_is_numbered(owner):
    invoice = paid_invoice(owner.tenant)
    response = owner.client.post(
        URL,
        {
            "invoice_id": str(invoice.pk),
            "amount_cents": 2_500,
            "kind": "refund",
            "reason": "Outage",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["number"] == f"CN-{datetime.now(UTC).year}-0001"
    assert body["kind"] == "refund" and body["remaining_cents"] == 0
    assert body["provider_refund_id"].startswith("re_local_")
    invoice.refresh_from_db()
    assert invoice.amount_credited_cents == 2_500
    assert invoice.creditable_cents == 12_400
    event = AuditEvent.objects.get(event_type="billing.credit_note.created")
    assert event.payload["reason"] == "Outage"
    assert owner.client.get(URL).json()["count"] == 1


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"amount_cents": 14_901}, 409, "CONFLICT"),
        ({"amount_cents": 0}, 400, "VALIDATION_ERROR"),
        ({"reason": ""}, 400, "VALIDATION_ERROR"),
        ({"kind": "gift"}, 400, "VALIDATION_ERROR"),
    ],
)
def test_bad_credit_notes_are_refused_and_change_nothing(owner, overrides, status, code):
    invoice = paid_invoice(owner.tenant)
    body = {"invoice_id": str(invoice.pk), "amount_cents": 100, "kind": "credit", "reason": "x"}
    assert_envelope(owner.client.post(URL, {**body, **overrides}, format="json"), status, code)
    assert not CreditNote.objects.exists()


def test_an_unpaid_or_foreign_invoice_cannot_be_credited(owner):
    unpaid = InvoiceFactory(tenant=owner.tenant)
    body = {"amount_cents": 100, "kind": "credit", "reason": "x"}
    assert_envelope(
        owner.client.post(URL, {**body, "invoice_id": str(unpaid.pk)}, format="json"),
        409,
        "CONFLICT",
    )
    foreign = paid_invoice(TenantFactory())
    assert_envelope(
        owner.client.post(URL, {**body, "invoice_id": str(foreign.pk)}, format="json"),
        400,
        "VALIDATION_ERROR",
    )


def test_an_invoice_paid_offline_is_credited_not_refunded(owner):
    invoice = InvoiceFactory(tenant=owner.tenant)
    services.invoice_mark_paid_offline(invoice=invoice, actor=None, note="bank transfer")
    with pytest.raises(Conflict, match="issue a credit"):
        services.credit_note_issue(
            invoice=invoice, actor=None, amount_cents=100, kind="refund", reason="x"
        )
    note = services.credit_note_issue(
        invoice=invoice, actor=None, amount_cents=100, kind="credit", reason="x"
    )
    assert note.remaining_cents == 100


def test_credit_is_used_up_by_the_next_invoices_oldest_first():
    team = Plan.objects.get(code="team")
    subscription = SubscriptionFactory(plan=team)
    tenant = subscription.tenant
    invoice = paid_invoice(tenant)
    first = services.credit_note_issue(
        invoice=invoice, actor=None, amount_cents=10_000, kind="credit", reason="goodwill"
    )
    second = services.credit_note_issue(
        invoice=invoice, actor=None, amount_cents=4_900, kind="credit", reason="outage"
    )
    line = services.LineSpec(type=LineType.SUBSCRIPTION, description="Team", amount_cents=12_000)
    start, end = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    next_invoice = services.invoice_issue(
        subscription=subscription,
        plan=team,
        reason="plan_change",
        period_start=start,
        period_end=end,
        lines=[line],
        actor=None,
    )
    assert (next_invoice.subtotal_cents, next_invoice.credit_applied_cents) == (12_000, 12_000)
    assert next_invoice.total_cents == 0
    # Fully credited: settled as it is issued.
    assert next_invoice.status == InvoiceStatus.PAID
    credits = [line for line in next_invoice.lines.all() if line.type == LineType.CREDIT]
    assert [c.amount_cents for c in credits] == [-10_000, -2_000]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.remaining_cents, second.remaining_cents) == (0, 2_900)


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_notes_issued_at_once_never_give_back_more_than_was_paid():
    invoice = paid_invoice(TenantFactory())

    def credit(_):
        try:
            services.credit_note_issue(
                invoice=invoice, actor=None, amount_cents=4_000, kind="credit", reason="race"
            )
            return "issued"
        except ApplicationError:
            return "refused"
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(credit, range(8)))
    # 14,900 cents paid: three notes of 4,000 fit, the fourth would not.
    assert outcomes.count("issued") == 3
    invoice.refresh_from_db()
    assert invoice.amount_credited_cents == 12_000
    numbers = sorted(CreditNote.objects.values_list("number", flat=True))
    assert [n.rsplit("-", 1)[1] for n in numbers] == ["0001", "0002", "0003"]


# Totals add up -----------------------------------------------------------------------------------

_amounts = st.integers(min_value=0, max_value=10_000_000)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(charges=st.lists(_amounts, min_size=1, max_size=6), credit=st.lists(_amounts, max_size=3))
def test_an_invoice_always_adds_up(charges, credit):
    team = Plan.objects.get(code="team")
    subscription = SubscriptionFactory(plan=team)
    tenant = subscription.tenant
    if any(credit):
        source = paid_invoice(tenant, total=sum(credit) + 1)
        for amount in filter(None, credit):
            services.credit_note_issue(
                invoice=source, actor=None, amount_cents=amount, kind="credit", reason="p"
            )
    lines = [
        services.LineSpec(type=LineType.USAGE, description=f"line {i}", amount_cents=amount)
        for i, amount in enumerate(charges)
    ]
    invoice = services.invoice_issue(
        subscription=subscription,
        plan=team,
        reason="plan_change",
        period_start=datetime(2026, 1, 1, tzinfo=UTC),
        period_end=datetime(2026, 2, 1, tzinfo=UTC),
        lines=lines,
        actor=None,
    )
    stored = list(invoice.lines.all())
    assert sum(line.amount_cents for line in stored) == invoice.total_cents
    charged = sum(line.amount_cents for line in stored if line.type != LineType.CREDIT)
    assert charged == invoice.subtotal_cents == sum(charges)
    assert invoice.subtotal_cents - invoice.credit_applied_cents == invoice.total_cents
    assert 0 <= invoice.credit_applied_cents <= min(sum(credit), sum(charges))
    assert invoice.total_cents >= 0
