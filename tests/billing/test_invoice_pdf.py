"""Invoice PDFs (billing.pdf): what they show, read back with pypdf; any invoice renders."""

import io
from datetime import UTC, datetime

import pytest
from django.test import override_settings
from pypdf import PdfReader

from billing.models import Invoice, InvoiceStatus, LineType
from billing.pdf import (
    DAYS_BETWEEN,
    format_money,
    format_period,
    format_unit_price,
    invoice_pdf,
    pdf_text,
)
from tests.billing.factories import (
    InvoiceFactory,
    InvoiceLineFactory,
    PlanFactory,
    SubscriptionFactory,
)
from tests.tenants.factories import TenantFactory

pytestmark = pytest.mark.django_db


def loaded(invoice: Invoice) -> Invoice:
    """The invoice as a view loads it, fresh from the database."""
    return Invoice.objects.select_related("tenant", "plan").get(pk=invoice.pk)


def page_texts(invoice: Invoice) -> list[str]:
    reader = PdfReader(io.BytesIO(invoice_pdf(loaded(invoice))))
    return [page.extract_text() for page in reader.pages]


def text_of(invoice: Invoice) -> str:
    return "\n".join(page_texts(invoice))


def invoice_with_lines(*, tenant=None, status=InvoiceStatus.PENDING, paid=False, **fields):
    """A January invoice of a plan fee, usage below a cent per unit and a credit line."""
    tenant = tenant or TenantFactory(
        name="Acme Robotics", billing_email="ap@acme.example", domain="acme.example"
    )
    subscription = SubscriptionFactory(tenant=tenant, plan=PlanFactory(name="Team"))
    invoice = InvoiceFactory(
        tenant=tenant,
        subscription=subscription,
        plan=subscription.plan,
        status=status,
        subtotal_cents=14_900 + 300 - 1_250,
        total_cents=14_900 + 300 - 1_250,
        amount_paid_cents=14_900 + 300 - 1_250 if paid else 0,
        paid_at=datetime(2026, 1, 3, tzinfo=UTC) if paid else None,
        **fields,
    )
    InvoiceLineFactory(invoice=invoice, position=0, description="Team plan, January 2026")
    InvoiceLineFactory(
        invoice=invoice,
        position=1,
        type=LineType.USAGE,
        description="AI tokens beyond the included amount",
        quantity=2_000,
        unit_amount_micros=1_500,
        amount_cents=300,
        period_start=datetime(2025, 12, 1, tzinfo=UTC),
        period_end=datetime(2026, 1, 1, tzinfo=UTC),
    )
    InvoiceLineFactory(
        invoice=invoice,
        position=2,
        type=LineType.CREDIT,
        description="Goodwill credit",
        quantity=1,
        unit_amount_micros=-12_500_000,
        amount_cents=-1_250,
    )
    return invoice


# What it shows ---------------------------------------------------------------------------------


def test_pdf_shows_the_invoice_its_organization_lines_and_totals():
    invoice = invoice_with_lines()

    pdf = invoice_pdf(loaded(invoice))
    text = text_of(invoice)

    assert pdf.startswith(b"%PDF-")
    assert "Control Plane" in text
    assert f"Invoice {invoice.number}" in text
    assert "Acme Robotics" in text
    assert "ap@acme.example" in text
    assert "acme.example" in text
    assert "Team plan, January 2026" in text
    assert "AI tokens beyond the included amount" in text
    assert "Goodwill credit" in text
    # The usage line's own period (in arrears), its sub-cent unit price and quantity.
    assert f"1 Dec 2025{DAYS_BETWEEN}31 Dec 2025" in text
    assert "USD 0.0015" in text
    assert "2,000" in text
    assert "-USD 12.50" in text
    # Issued, due, and the period, whose exclusive end shows as the day before.
    assert "1 Jan 2026" in text
    assert "15 Jan 2026" in text
    assert f"1 Jan 2026{DAYS_BETWEEN}31 Jan 2026" in text
    assert "1 Feb 2026" not in text
    assert "Subtotal" in text
    assert "Total USD 139.50" in text
    assert "Amount due USD 139.50" in text
    assert "PAID" not in text


def test_the_contact_email_stands_in_for_a_missing_billing_email():
    tenant = TenantFactory(billing_email="", contact_email="ops@beta.example")

    assert "ops@beta.example" in text_of(invoice_with_lines(tenant=tenant))


def test_credit_applied_is_deducted_before_the_total():
    invoice = InvoiceFactory(subtotal_cents=14_900, credit_applied_cents=2_000, total_cents=12_900)
    InvoiceLineFactory(invoice=invoice)

    text = text_of(invoice)

    assert "Credit applied -USD 20.00" in text
    assert "Total USD 129.00" in text
    assert "Amount due USD 129.00" in text


def test_a_paid_invoice_is_stamped_paid_and_owes_nothing():
    invoice = invoice_with_lines(status=InvoiceStatus.PAID, paid=True)

    text = text_of(invoice)

    assert "PAID" in text
    assert "Paid on 3 Jan 2026" in text
    assert "Amount paid USD 139.50" in text
    assert "Amount due USD 0.00" in text


def test_a_void_invoice_is_stamped_void():
    invoice = invoice_with_lines(
        status=InvoiceStatus.VOID, voided_at=datetime(2026, 1, 5, tzinfo=UTC)
    )

    text = text_of(invoice)

    assert "VOID" in text
    assert "Voided on 5 Jan 2026" in text
    assert "Amount due USD 0.00" in text


@override_settings(PLATFORM_NAME="Acme Cloud")
def test_the_header_names_the_platform_setting():
    assert "Acme Cloud" in text_of(invoice_with_lines())


# Any invoice renders ---------------------------------------------------------------------------


def test_a_render_is_deterministic_and_dated_by_the_issue_date():
    invoice = invoice_with_lines()

    first = invoice_pdf(loaded(invoice))
    second = invoice_pdf(loaded(invoice))

    assert first == second
    assert PdfReader(io.BytesIO(first)).metadata.creation_date == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_draft_without_number_or_issue_date_renders_deterministically():
    invoice = InvoiceFactory(status=InvoiceStatus.DRAFT, number="", issued_at=None, due_date=None)
    InvoiceLineFactory(invoice=invoice)

    first = invoice_pdf(loaded(invoice))

    assert first == invoice_pdf(loaded(invoice))
    assert "DRAFT" in text_of(invoice)


@pytest.mark.parametrize(
    "name",
    [
        "🚀 Rocket Labs 👨‍👩‍👧",
        "Rocket שלום עולם",
        "Rocket شركة الاختبار\u200f",
        "Rocket 株式会社テスト 테스트",
        "Rocket {nb} \x07\ue000 Zalgo z̷̢a̵l̴g̸o̶",
    ],
)
def test_a_tenant_name_in_any_script_renders(name):
    tenant = TenantFactory(name=name, slug="rocket")
    invoice = invoice_with_lines(tenant=tenant)
    InvoiceLineFactory(invoice=invoice, position=3, description=name, amount_cents=0)

    text = text_of(invoice)

    assert "Rocket" in text
    assert "Account: rocket" in text


def test_any_text_becomes_drawable_by_the_documented_rule():
    # Windows-1252 is kept: accents, the euro sign, typographic quotes and dashes.
    kept = "Zoë Müller, café €5 “quoted” \N{EN DASH} ok"
    assert pdf_text(kept) == kept
    assert pdf_text("Łódź Gdańsk Ostrava Dvořák") == "Lódz Gdansk Ostrava Dvorák"
    assert pdf_text("ﬁne Ｆｕｌｌ①") == "fine Full1"
    # Decomposed accents are composed first, not dropped.
    assert pdf_text("Cafe\u0301") == "Café"
    assert pdf_text("a\nb\tc\u2028d") == "a b c d"
    assert pdf_text("x\u200fy\u200d\x00z") == "xyz"
    assert pdf_text("日本 🚀") == "?? ?"
    # Neither can be stored in PostgreSQL, but the function takes any str.
    assert pdf_text("lone \ud800 surrogate\x00") == "lone ? surrogate"
    assert pdf_text("x\N{MINUS SIGN}y") == "x-y"


def test_a_long_description_wraps_within_its_column():
    invoice = InvoiceFactory()
    words = " ".join(f"word{i:03d}" for i in range(36))
    InvoiceLineFactory(invoice=invoice, description=words[:300])
    InvoiceLineFactory(invoice=invoice, position=1, description="x" * 300)

    text = text_of(invoice)

    assert "word000" in text
    assert "word035" in text


def test_many_lines_flow_onto_more_pages_with_the_header_repeated():
    invoice = InvoiceFactory(subtotal_cents=60 * 100, total_cents=60 * 100)
    for position in range(60):
        InvoiceLineFactory(
            invoice=invoice,
            position=position,
            description=f"Seat item {position + 1:03d}",
            unit_amount_micros=1_000_000,
            amount_cents=100,
        )

    pages = page_texts(invoice)

    assert len(pages) > 1
    assert "Seat item 060" in pages[-1]
    assert "Total USD 60.00" in pages[-1]
    for number, page in enumerate(pages, start=1):
        assert "Unit price" in page
        assert f"Page {number} of {len(pages)}" in page
    assert sum(page.count("Seat item") for page in pages) == 60


def test_an_invoice_without_lines_renders():
    invoice = InvoiceFactory(subtotal_cents=0, total_cents=0)

    pdf = invoice_pdf(loaded(invoice))
    text = text_of(invoice)

    assert pdf.startswith(b"%PDF-")
    assert "No charges." in text
    assert "Total USD 0.00" in text


# Formatting ------------------------------------------------------------------------------------


def test_money_is_cents_with_the_currency_and_two_decimals():
    assert format_money(14_900, "USD") == "USD 149.00"
    assert format_money(-1_250, "USD") == "-USD 12.50"
    assert format_money(123_456_789, "EUR") == "EUR 1,234,567.89"
    assert format_money(0, "USD") == "USD 0.00"


def test_a_unit_price_shows_up_to_six_decimals():
    assert format_unit_price(149_000_000, "USD") == "USD 149.00"
    assert format_unit_price(1_500, "USD") == "USD 0.0015"
    assert format_unit_price(1, "USD") == "USD 0.000001"
    assert format_unit_price(12_345_600, "USD") == "USD 12.3456"
    assert format_unit_price(-12_500_000, "USD") == "-USD 12.50"


def test_a_period_shows_its_last_day_as_the_end_is_exclusive():
    start = datetime(2026, 1, 15, 13, 45, tzinfo=UTC)

    assert (
        format_period(start, datetime(2026, 2, 1, tzinfo=UTC))
        == f"15 Jan 2026{DAYS_BETWEEN}31 Jan 2026"
    )
    assert (
        format_period(start, datetime(2026, 1, 16, 9, tzinfo=UTC))
        == f"15 Jan 2026{DAYS_BETWEEN}16 Jan 2026"
    )
    assert format_period(start, start) == "15 Jan 2026"
