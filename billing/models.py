"""Models of the billing app: the platform billing its tenants.

Plans are the platform's (staff edit them in the admin); a tenant has one subscription to a
plan, and invoices with their lines and a gapless number sequence. Money is integer cents of
the row's `currency`; amounts below a cent (a per-token price) are micro-units (`*_micros`, a
millionth of the currency unit, 10,000 per cent), which become cents only on an invoice line,
rounded half-up once per line (billing.periods).

Rows change through billing.services only; each model's factory lives in
tests/billing/factories.py.
"""

from django.conf import settings
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from config.models import TimestampedModel
from config.validators import DESCRIPTION_MAX_LENGTH, validate_name, validate_text
from tenants.models import PlanTier, Tenant, TenantOwned

CURRENCY_CODE = RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 currency code: three capitals.")


class BillingInterval(models.TextChoices):
    MONTHLY = "monthly", "Monthly"
    YEARLY = "yearly", "Yearly"


class TokenPricing(models.TextChoices):
    """How a plan bills the gateway's tokens of a period, in arrears."""

    # Tokens beyond the plan's included amount (features.maxTokensPerMonth), per 1,000.
    PER_TOKEN = "per_token", "Tokens beyond the included amount, per 1,000"
    # The gateway's recorded cost of every call (GatewayCall.cost_micros), passed through.
    AT_COST = "at_cost", "The gateway's recorded cost"


class Plan(TimestampedModel):
    """A plan tenants may subscribe to: its price per interval, the tier (rate limits) and the
    features (limits and flags) it grants, and the unit prices of metered usage."""

    code = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100, validators=[validate_name])
    description = models.TextField(
        blank=True, max_length=DESCRIPTION_MAX_LENGTH, validators=[validate_text]
    )
    price_cents = models.PositiveBigIntegerField(default=0)
    currency = models.CharField(max_length=3, default="USD", validators=[CURRENCY_CODE])
    billing_interval = models.CharField(
        max_length=16, choices=BillingInterval.choices, default=BillingInterval.MONTHLY
    )
    trial_days = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(365)])
    # billing.features.PLAN_FEATURES: the limits (maxUsers, ...) and flags (sso, ...).
    features = models.JSONField(default=dict, blank=True)
    tier = models.CharField(max_length=16, choices=PlanTier.choices, default=PlanTier.FREE)
    token_pricing = models.CharField(
        max_length=16, choices=TokenPricing.choices, default=TokenPricing.PER_TOKEN
    )
    # Micro-units per 1,000 tokens beyond the included amount (per_token pricing).
    token_overage_micros_per_1k = models.PositiveBigIntegerField(default=0)
    # Cents per GB-month of storage beyond the included amount (features.maxStorageMB).
    storage_overage_cents_per_gb = models.PositiveBigIntegerField(default=0)
    # The catalogue's order (cheapest first); ties by price.
    position = models.PositiveSmallIntegerField(default=0)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "price_cents", "code"]

    def __str__(self):
        return f"{self.name} ({self.code})"

    @property
    def is_free(self) -> bool:
        return self.price_cents == 0


class SubscriptionStatus(models.TextChoices):
    TRIALING = "trialing", "Trialing"
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    CANCELED = "canceled", "Canceled"


class Subscription(TenantOwned):
    """The tenant's one current subscription: its plan, the period being billed, a plan change
    scheduled for the period end (a downgrade), and cancellation."""

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="subscription", editable=False
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(
        max_length=16, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField(db_index=True)
    trial_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    canceled_at = models.DateTimeField(null=True, blank=True)
    # A downgrade, applied when the current period ends.
    pending_plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Set when dunning suspended the tenant for non-payment: paying restores only such a
    # suspension, never one staff made for another reason.
    dunning_suspended_at = models.DateTimeField(null=True, blank=True)
    # The provider's id of the payment method given at checkout (`pm_...`; not a secret: it
    # charges nothing without the platform's provider key): each new invoice is charged to it.
    default_payment_method = models.CharField(max_length=255, blank=True)
    payment_provider = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.tenant_id}: {self.plan_id} ({self.status})"

    @property
    def next_invoice_date(self):
        """When the next period's invoice is issued: the period end, unless the subscription
        ends there (or has ended)."""
        if self.status == SubscriptionStatus.CANCELED or self.cancel_at_period_end:
            return None
        return self.current_period_end


class InvoiceStatus(models.TextChoices):
    # Being built: no number yet, not shown to the tenant.
    DRAFT = "draft", "Draft"
    PENDING = "pending", "Pending"
    PAID = "paid", "Paid"
    OVERDUE = "overdue", "Overdue"
    VOID = "void", "Void"


# Statuses of an issued invoice that still wants paying.
UNPAID_STATUSES = (InvoiceStatus.PENDING, InvoiceStatus.OVERDUE)


class InvoiceReason(models.TextChoices):
    # A subscription period: the plan fee in advance, the previous period's usage in arrears.
    PERIOD = "period", "Subscription period"
    # An upgrade's proration, charged when the plan changes.
    PLAN_CHANGE = "plan_change", "Plan change"


class Invoice(TenantOwned):
    """An invoice. Its charge lines add up to `subtotal_cents`; its credit lines (negative:
    credit notes' credit used up) to minus `credit_applied_cents`; all its lines to
    `total_cents`, what is owed. The number is allocated when it is issued."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="invoices", editable=False
    )
    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="invoices", null=True, blank=True
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+", null=True)
    number = models.CharField(max_length=40, blank=True)
    reason = models.CharField(max_length=16, choices=InvoiceReason.choices)
    status = models.CharField(
        max_length=16, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT, db_index=True
    )
    currency = models.CharField(max_length=3, validators=[CURRENCY_CODE])
    # The period it bills (an upgrade's invoice: the rest of the current period).
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    subtotal_cents = models.BigIntegerField(default=0)
    # Credit from credit notes applied to this invoice (never more than the subtotal).
    credit_applied_cents = models.PositiveBigIntegerField(default=0)
    total_cents = models.BigIntegerField(default=0)
    amount_paid_cents = models.PositiveBigIntegerField(default=0)
    # Refunded or credited through credit notes against this (paid) invoice.
    amount_credited_cents = models.PositiveBigIntegerField(default=0)
    issued_at = models.DateTimeField(null=True, blank=True)
    due_date = models.DateField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    overdue_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    # Settled outside the provider (bank transfer), by staff: who and why, for the record.
    paid_offline_note = models.CharField(max_length=500, blank=True)
    # Who was billed, as it stood when the invoice was issued (name, slug, email, domain): an
    # issued invoice does not change when the organization is renamed.
    billed_to = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-period_start", "-created_at"]
        constraints = [
            # One invoice per subscription and period, however often the run is started.
            models.UniqueConstraint(
                fields=["tenant", "subscription", "period_start"],
                condition=Q(reason="period"),
                name="invoice_one_per_period",
            ),
            models.UniqueConstraint(
                fields=["tenant", "number"], condition=~Q(number=""), name="invoice_number_unique"
            ),
            models.CheckConstraint(
                condition=Q(
                    total_cents=models.F("subtotal_cents") - models.F("credit_applied_cents")
                ),
                name="invoice_total_adds_up",
            ),
        ]
        indexes = [models.Index(fields=["status", "due_date"], name="invoice_status_due")]

    def __str__(self):
        return self.number or f"draft {self.pk}"

    @property
    def amount_due_cents(self) -> int:
        if self.status not in UNPAID_STATUSES:
            return 0
        return max(self.total_cents - self.amount_paid_cents, 0)

    @property
    def creditable_cents(self) -> int:
        """What credit notes may still return of a paid invoice."""
        if self.status != InvoiceStatus.PAID:
            return 0
        return max(self.amount_paid_cents - self.amount_credited_cents, 0)


class LineType(models.TextChoices):
    SUBSCRIPTION = "subscription", "Subscription"
    PRORATION = "proration", "Proration"
    USAGE = "usage", "Usage"
    CREDIT = "credit", "Credit"


class InvoiceLine(TenantOwned):
    """One line: `amount_cents` is `quantity` * `unit_amount_micros`, rounded half-up once to
    the cent (a usage line's unit price can be below a cent); credit lines are negative."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    type = models.CharField(max_length=16, choices=LineType.choices)
    description = models.CharField(max_length=300)
    quantity = models.BigIntegerField(default=1)
    unit_amount_micros = models.BigIntegerField(default=0)
    amount_cents = models.BigIntegerField(default=0)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    position = models.PositiveSmallIntegerField(default=0)
    # A credit line's credit note: voiding the invoice gives the credit back to it.
    credit_note = models.ForeignKey(
        "CreditNote", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["invoice", "position"]

    def __str__(self):
        return f"{self.description}: {self.amount_cents}"


class InvoiceSequence(TenantOwned):
    """The tenant's last invoice (and credit note) number: numbers are gapless and never
    restart (the year in the number is the issue date's), allocated under this row's lock when
    an invoice is issued, so a rolled-back issue takes no number."""

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="+", editable=False
    )
    last_number = models.PositiveBigIntegerField(default=0)
    # Credit notes are numbered the same way, in their own sequence (`CN-<year>-<sequence>`).
    last_credit_note_number = models.PositiveBigIntegerField(default=0)

    def __str__(self):
        return f"{self.tenant_id}: {self.last_number}"


class PaymentStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Payment(TenantOwned):
    """One attempt to pay an invoice through the provider (or offline, by staff)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="payments", editable=False
    )
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    amount_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, validators=[CURRENCY_CODE])
    status = models.CharField(max_length=16, choices=PaymentStatus.choices)
    provider = models.CharField(max_length=32)
    provider_payment_id = models.CharField(max_length=255, blank=True)
    # What the provider says of the method (e.g. "visa ending 4242"), never the method's secret.
    payment_method = models.CharField(max_length=100, blank=True)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A provider's charge is recorded as succeeded once, however often it is retried.
            models.UniqueConstraint(
                fields=["tenant", "provider", "provider_payment_id"],
                condition=Q(status="succeeded") & ~Q(provider_payment_id=""),
                name="payment_charge_once",
            )
        ]

    def __str__(self):
        return f"{self.amount_cents} {self.currency} {self.status}"


class CreditNoteKind(models.TextChoices):
    # Money back through the provider.
    REFUND = "refund", "Refund"
    # Credit the next invoices take off their total.
    CREDIT = "credit", "Credit"


class CreditNote(TenantOwned):
    """Money given back against a paid invoice: refunded, or kept as credit that the tenant's
    next invoices use up (`remaining_cents`)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="credit_notes", editable=False
    )
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=40)
    kind = models.CharField(max_length=16, choices=CreditNoteKind.choices)
    amount_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, validators=[CURRENCY_CODE])
    # Credit not yet used by an invoice (refunds: 0).
    remaining_cents = models.PositiveBigIntegerField(default=0)
    reason = models.CharField(max_length=500, validators=[validate_text])
    provider_refund_id = models.CharField(max_length=255, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "number"], name="credit_note_number_unique"),
            models.CheckConstraint(
                condition=Q(remaining_cents__lte=models.F("amount_cents")),
                name="credit_note_remaining_within_amount",
            ),
        ]

    def __str__(self):
        return self.number


class CheckoutStatus(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETE = "complete", "Complete"
    EXPIRED = "expired", "Expired"


class CheckoutSession(TenantOwned):
    """A checkout for a paid plan: the provider's hosted page takes the payment method, and
    the provider's event completes it (billing.services.checkout)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="checkout_sessions", editable=False
    )
    # The provider's id of the session (`cs_...`, random), public: it is in the page's URL.
    session_id = models.CharField(max_length=255)
    provider = models.CharField(max_length=32)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=16, choices=CheckoutStatus.choices, default=CheckoutStatus.OPEN
    )
    # The payment method the page took (a test one for the local provider).
    payment_method = models.CharField(max_length=255, blank=True)
    success_url = models.URLField(max_length=2000)
    cancel_url = models.URLField(max_length=2000)
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "session_id"], name="checkout_session_id")
        ]
        indexes = [models.Index(fields=["session_id"], name="checkout_session_lookup")]

    def __str__(self):
        return self.session_id


class ProviderEvent(TimestampedModel):
    """A payment provider's event, stored by its id before it is acted on: a replay (providers
    retry) is recognised and changes nothing. Platform-level: it arrives before its
    organization is known, and its id is unique across them all, so it is no tenant-owned row
    (under Citus, a table of the coordinator). `organization_id` is the organization it turned
    out to concern, a plain id: no foreign key ties a platform row to a tenant's shard."""

    provider = models.CharField(max_length=32)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    organization_id = models.UUIDField(null=True, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="provider_event_once")
        ]

    def __str__(self):
        return f"{self.provider} {self.type} {self.event_id}"
