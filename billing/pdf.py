"""Invoice PDFs: `invoice_pdf(invoice)` draws one invoice as the bytes of an A4 PDF.

A pure function over a loaded invoice (its tenant, lines and plan; no writes): the header with
the platform's name (the `PLATFORM_NAME` setting when there is one, else "Control Plane"),
"Invoice" and the number, and a stamp for a paid, void, overdue or draft invoice; who is billed
(the organization's name, billing or contact email, domain and slug) beside the invoice's
dates (issued, due, the period billed with its last day, as the period end is exclusive), status
and plan; the lines (description with the line's own period, quantity, unit price, amount),
which wrap and flow onto further pages with the table header repeated; then the subtotal, the
credit applied, the total, the amount paid and the amount due, and "Page i of n" on every page.
Dates are UTC calendar days. Money is integer cents as "USD 1,490.00", a negative amount as
"-USD 12.50"; a unit price is micro-units shown with two to six decimals ("USD 0.0015").

Fonts: Helvetica, one of the PDF's standard fonts, which every reader has, so nothing is
embedded and nothing depends on the machine: TrueType fonts such as DejaVu are a system
package that a clean CI machine or a slim container lacks, and no font covers every script
(DejaVu has no CJK) anyway. The standard fonts draw only the Windows-1252 characters (Latin-1
plus the euro sign, typographic quotes and dashes), so every text goes through `pdf_text`:
NFC-composed; line breaks, tabs and other spaces become a space; control and format characters
(bidi marks, zero-width joiners) and stray combining marks are dropped; a character the font
lacks becomes its compatibility decomposition without accents (NFKD: "ő" -> "o", "ﬁ" -> "fi",
full-width letters -> ASCII) or a few look-alikes ("ł" -> "l", a minus sign -> "-"), else "?". So a
name in Hebrew, Chinese or emoji prints as question marks, never raises; the slug beside it
still names the organization.

The same invoice always gives the same bytes: the creation date is the invoice's issue date
(its period start for a draft), the file identifier is fpdf2's hash of the content, and the
page-count alias is off (a name containing "{nb}" would otherwise be rewritten).
"""

import unicodedata
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from django.conf import settings
from fpdf import FPDF, FontFace

from .catalogue import MICROS
from .models import Invoice, InvoiceLine, InvoiceStatus

DEFAULT_PLATFORM_NAME = "Control Plane"

# What Helvetica's /WinAnsiEncoding draws.
FONT_ENCODING = "cp1252"
FONT = "Helvetica"

# Characters without a compatibility decomposition, and their nearest drawable look-alike.
LOOK_ALIKES = str.maketrans(
    {
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Ħ": "H",
        "ħ": "h",
        "\N{LATIN SMALL LETTER DOTLESS I}": "i",
        "Ŧ": "T",
        "ŧ": "t",
        "\N{HYPHEN}": "-",
        "\N{NON-BREAKING HYPHEN}": "-",
        "\N{FIGURE DASH}": "-",
        "\N{HORIZONTAL BAR}": "-",
        "\N{MINUS SIGN}": "-",
    }
)
LINE_BREAKS = frozenset("\n\r\t\v\f\x1c\x1d\x1e\x85\u2028\u2029")

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NO_DATE = "\N{EM DASH}"
# Between the first and the last day of a period.
DAYS_BETWEEN = " \N{EN DASH} "

# The stamp beside the header: its word and colour (RGB) by status; a pending invoice has none.
STAMPS = {
    InvoiceStatus.PAID: ("PAID", (22, 128, 61)),
    InvoiceStatus.VOID: ("VOID", (185, 28, 28)),
    InvoiceStatus.OVERDUE: ("OVERDUE", (185, 28, 28)),
    InvoiceStatus.DRAFT: ("DRAFT", (107, 114, 128)),
}

# Layout, in millimetres on A4 portrait.
MARGIN = 18
BOTTOM_MARGIN = 22
CONTENT_WIDTH = 210 - 2 * MARGIN
COLUMNS = (
    ("Description", 84, "LEFT"),
    ("Quantity", 24, "RIGHT"),
    ("Unit price", 33, "RIGHT"),
    ("Amount", 33, "RIGHT"),
)
TOTALS_LABEL_WIDTH = 50
TOTALS_VALUE_WIDTH = 33
MUTED = (107, 114, 128)
RULE = (209, 213, 219)
HEADINGS = FontFace(emphasis="BOLD", fill_color=(243, 244, 246))


# Text ------------------------------------------------------------------------------------------


def pdf_text(value: object) -> str:
    """`value` as text the standard fonts can draw (the replacement rule: module docstring)."""
    text = unicodedata.normalize("NFC", str(value))
    return "".join(_drawable(char) for char in text)


@lru_cache(maxsize=4096)
def _drawable(char: str) -> str:
    if char in LINE_BREAKS:
        return " "
    category = unicodedata.category(char)
    if category.startswith("Z"):
        return " "
    if category in ("Cc", "Cf", "Mn", "Me"):
        return ""
    if _encodable(char):
        return char
    folded = "".join(
        part
        for part in unicodedata.normalize("NFKD", char.translate(LOOK_ALIKES))
        if _encodable(part) and unicodedata.category(part)[0] not in "CMZ"
    )
    return folded or "?"


def _encodable(char: str) -> bool:
    try:
        char.encode(FONT_ENCODING)
    except UnicodeEncodeError:
        return False
    return True


# Money and dates -------------------------------------------------------------------------------


def format_money(cents: int, currency: str) -> str:
    """Integer cents as "USD 1,490.00"; a negative amount as "-USD 12.50"."""
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(cents), 100)
    return f"{sign}{currency} {units:,}.{rest:02d}"


def format_unit_price(micros: int, currency: str) -> str:
    """Micro-units with two to six decimals: "USD 149.00", "USD 0.0015", "-USD 12.50"."""
    sign = "-" if micros < 0 else ""
    units, rest = divmod(abs(micros), MICROS)
    decimals = f"{rest:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{currency} {units:,}.{decimals}"


def format_day(value: date | datetime | None) -> str:
    """A calendar day, "1 Jan 2026" (UTC for a moment); the month names are fixed, not the
    locale's."""
    if value is None:
        return NO_DATE
    day = _utc_day(value) if isinstance(value, datetime) else value
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def format_period(start: datetime | None, end: datetime | None) -> str:
    """The days of [start, end), "1 Jan 2026" to "31 Jan 2026" with an en dash between; the end
    is exclusive, so its last day is the one before a midnight end."""
    if start is None or end is None:
        return NO_DATE
    first = _utc_day(start)
    last = _utc_day(end - timedelta(microseconds=1)) if end > start else first
    if last == first:
        return format_day(first)
    return f"{format_day(first)}{DAYS_BETWEEN}{format_day(last)}"


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()


# The document ----------------------------------------------------------------------------------


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as PDF bytes: the same invoice always gives the same bytes."""
    platform = getattr(settings, "PLATFORM_NAME", "") or DEFAULT_PLATFORM_NAME
    number = invoice.number or "(draft)"
    lines = sorted(invoice.lines.all(), key=lambda line: (line.position, line.created_at, line.pk))

    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.core_fonts_encoding = FONT_ENCODING
    # No page-count alias: any "{nb}" in a name or description would be replaced.
    pdf.alias_nb_pages(None)
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(auto=True, margin=BOTTOM_MARGIN)
    pdf.set_creation_date(invoice.issued_at or invoice.period_start)
    pdf.set_title(pdf_text(f"Invoice {number}"))
    pdf.set_author(pdf_text(platform))
    pdf.set_subject(pdf_text(f"Invoice {number} to {invoice.tenant.name}"))
    pdf.set_lang("en")
    pdf.add_page()

    _header(pdf, invoice, platform=platform, number=number)
    _parties(pdf, invoice)
    _lines_table(pdf, invoice, lines)
    _totals(pdf, invoice)
    _page_footers(pdf, platform=platform, number=number)
    return bytes(pdf.output())


def _header(pdf: FPDF, invoice: Invoice, *, platform: str, number: str) -> None:
    top = pdf.get_y()
    pdf.set_font(FONT, "B", 18)
    pdf.multi_cell(CONTENT_WIDTH - 50, 9, pdf_text(platform), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "B", 13)
    pdf.multi_cell(
        CONTENT_WIDTH - 50, 7, pdf_text(f"Invoice {number}"), new_x="LMARGIN", new_y="NEXT"
    )
    bottom = pdf.get_y()
    stamp = STAMPS.get(invoice.status)
    if stamp:
        word, colour = stamp
        pdf.set_xy(MARGIN + CONTENT_WIDTH - 46, top + 1)
        pdf.set_draw_color(*colour)
        pdf.set_text_color(*colour)
        pdf.set_line_width(0.8)
        pdf.set_font(FONT, "B", 18)
        pdf.cell(46, 13, word, border=1, align="C")
        pdf.set_line_width(0.2)
        pdf.set_text_color(0)
        pdf.set_draw_color(0)
        bottom = max(bottom, top + 14)
    pdf.set_xy(MARGIN, bottom + 2)
    pdf.set_draw_color(*RULE)
    pdf.line(MARGIN, pdf.get_y(), MARGIN + CONTENT_WIDTH, pdf.get_y())
    pdf.set_draw_color(0)
    pdf.ln(5)


def _parties(pdf: FPDF, invoice: Invoice) -> None:
    """Who is billed, on the left; the invoice's facts, on the right."""
    tenant = invoice.tenant
    top = pdf.get_y()
    left_width = 92
    pdf.set_font(FONT, "B", 9)
    pdf.set_text_color(*MUTED)
    pdf.cell(left_width, 5, "BILLED TO", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.set_font(FONT, "B", 11)
    pdf.multi_cell(left_width, 5.5, pdf_text(tenant.name), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9.5)
    for text in (tenant.billing_email or tenant.contact_email, tenant.domain):
        if text:
            pdf.multi_cell(left_width, 5, pdf_text(text), new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(
        left_width, 5, pdf_text(f"Account: {tenant.slug}"), new_x="LMARGIN", new_y="NEXT"
    )
    left_bottom = pdf.get_y()

    facts = [
        ("Invoice number", invoice.number or "(draft)"),
        ("Issued", format_day(invoice.issued_at)),
        ("Due", format_day(invoice.due_date)),
        ("Status", invoice.get_status_display()),
        ("Period", format_period(invoice.period_start, invoice.period_end)),
        ("Reason", invoice.get_reason_display()),
    ]
    if invoice.plan is not None:
        facts.append(("Plan", invoice.plan.name))
    if invoice.status == InvoiceStatus.PAID and invoice.paid_at:
        facts.append(("Paid on", format_day(invoice.paid_at)))
    if invoice.status == InvoiceStatus.VOID and invoice.voided_at:
        facts.append(("Voided on", format_day(invoice.voided_at)))
    label_x = MARGIN + left_width + 4
    label_width = 26
    value_width = CONTENT_WIDTH - left_width - 4 - label_width
    pdf.set_y(top)
    for label, value in facts:
        pdf.set_x(label_x)
        pdf.set_font(FONT, "", 9.5)
        pdf.set_text_color(*MUTED)
        pdf.cell(label_width, 5, label)
        pdf.set_text_color(0)
        pdf.multi_cell(value_width, 5, pdf_text(value), new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(max(left_bottom, pdf.get_y()) + 6)


def _lines_table(pdf: FPDF, invoice: Invoice, lines: Iterable[InvoiceLine]) -> None:
    currency = invoice.currency
    pdf.set_font(FONT, "", 9)
    pdf.set_draw_color(*RULE)
    with pdf.table(
        col_widths=tuple(width for _, width, _ in COLUMNS),
        width=CONTENT_WIDTH,
        text_align=tuple(align for _, _, align in COLUMNS),
        headings_style=HEADINGS,
        borders_layout="HORIZONTAL_LINES",
        line_height=4.6,
        padding=(1.4, 1.5),
        v_align="TOP",
        repeat_headings="ON_TOP_OF_EVERY_PAGE",
    ) as table:
        heading = table.row()
        for title, _, _ in COLUMNS:
            heading.cell(title)
        empty = True
        for line in lines:
            empty = False
            description = pdf_text(line.description)
            if line.period_start and line.period_end:
                description += "\n" + format_period(line.period_start, line.period_end)
            row = table.row()
            row.cell(description)
            row.cell(f"{line.quantity:,}")
            row.cell(pdf_text(format_unit_price(line.unit_amount_micros, currency)))
            row.cell(pdf_text(format_money(line.amount_cents, currency)))
        if empty:
            table.row().cell("No charges.", colspan=len(COLUMNS))
    pdf.set_draw_color(0)
    pdf.ln(4)


def _totals(pdf: FPDF, invoice: Invoice) -> None:
    currency = invoice.currency
    rows = [("Subtotal", format_money(invoice.subtotal_cents, currency), False)]
    if invoice.credit_applied_cents:
        rows.append(
            ("Credit applied", format_money(-invoice.credit_applied_cents, currency), False)
        )
    rows.append(("Total", format_money(invoice.total_cents, currency), True))
    rows.append(("Amount paid", format_money(invoice.amount_paid_cents, currency), False))
    if invoice.amount_credited_cents:
        rows.append(
            ("Refunded or credited", format_money(invoice.amount_credited_cents, currency), False)
        )
    rows.append(("Amount due", format_money(invoice.amount_due_cents, currency), True))
    row_height = 6
    # The block stays on one page.
    if pdf.get_y() + row_height * len(rows) > pdf.page_break_trigger:
        pdf.add_page()
    x = MARGIN + CONTENT_WIDTH - TOTALS_LABEL_WIDTH - TOTALS_VALUE_WIDTH
    for label, value, strong in rows:
        pdf.set_x(x)
        pdf.set_font(FONT, "B" if strong else "", 10.5 if strong else 9.5)
        pdf.cell(TOTALS_LABEL_WIDTH, row_height, label)
        pdf.cell(
            TOTALS_VALUE_WIDTH,
            row_height,
            pdf_text(value),
            align="R",
            new_x="LMARGIN",
            new_y="NEXT",
        )


def _page_footers(pdf: FPDF, *, platform: str, number: str) -> None:
    """ "Page i of n" on every page, drawn once the page count is known."""
    pages = pdf.pages_count
    pdf.set_auto_page_break(auto=False)
    for page in range(1, pages + 1):
        pdf.page = page
        pdf.set_xy(MARGIN, -BOTTOM_MARGIN + 8)
        pdf.set_font(FONT, "", 8)
        pdf.set_text_color(*MUTED)
        pdf.cell(CONTENT_WIDTH - 30, 5, pdf_text(f"{platform} · Invoice {number}"))
        pdf.cell(30, 5, f"Page {page} of {pages}", align="R")
    pdf.set_text_color(0)
