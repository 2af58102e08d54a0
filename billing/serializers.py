"""Serializers of the billing app: the request bodies the API accepts and the shapes it answers
with.

Money is integer cents of the row's `currency` (`*_cents`); a unit price below a cent is also
given in micro-units (`unit_amount_micros`, 10,000 per cent). Serializers check shapes; rules
(what a plan change costs, what may be cancelled) are the services'.
"""

from datetime import timedelta

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from config.serializers import (
    CharField,
    ChoiceField,
    ModelSerializer,
    QuerySerializer,
    ResponseSerializer,
    Serializer,
    URLField,
)
from tenants.plans import MIB
from tenants.serializers.fields import StrictBooleanField, TenantScopedPrimaryKeyRelatedField

from .catalogue import FLAG_FEATURES, LIMIT_FEATURES
from .models import (
    CheckoutSession,
    CreditNote,
    CreditNoteKind,
    Invoice,
    InvoiceLine,
    Payment,
    Plan,
    Subscription,
)
from .periods import divide_half_up
from .providers import provider as payment_provider
from .services.plans import PLAN_FIELDS

_FEATURES_SCHEMA = {
    "type": "object",
    "properties": {
        **{key: {"type": "integer", "minimum": 1, "description": text}
           for key, text in LIMIT_FEATURES.items()},
        **{key: {"type": "boolean", "description": text} for key, text in FLAG_FEATURES.items()},
    },
}  # fmt: skip


@extend_schema_field(_FEATURES_SCHEMA)
class FeaturesField(serializers.JSONField):
    """A plan's features, described in the schema key by key."""


class PlanSerializer(ModelSerializer):
    """A plan of the catalogue: its price per interval, what it includes and grants."""

    features = FeaturesField(read_only=True)

    class Meta:
        model = Plan
        # What staff set, but the catalogue's order (`position`), which only sorts the list.
        fields = ["id", *(name for name in PLAN_FIELDS if name != "position")]
        read_only_fields = fields


class PlanSummarySerializer(ModelSerializer):
    class Meta:
        model = Plan
        fields = ["id", "code", "name", "price_cents", "currency", "billing_interval"]
        read_only_fields = fields


class SubscriptionSerializer(ModelSerializer):
    """The organization's subscription: its plan, the period being billed, what is scheduled."""

    organization_id = serializers.UUIDField(source="tenant_id", read_only=True)
    plan = PlanSerializer(read_only=True)
    pending_plan = PlanSummarySerializer(read_only=True, allow_null=True)
    next_invoice_date = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = Subscription
        fields = [
            "id",
            "organization_id",
            "plan",
            "status",
            "current_period_start",
            "current_period_end",
            "trial_end",
            "cancel_at_period_end",
            "canceled_at",
            "pending_plan",
            "next_invoice_date",
            "created_at",
        ]
        read_only_fields = fields


class PlanReferenceField(CharField):
    """A plan by its id or its code (`team`)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 64)
        super().__init__(**kwargs)


class ChangePlanSerializer(Serializer):
    """`new_plan_id` (a plan's id or code), or `plan` for the same."""

    # One of the two is required (the schema's anyOf, tenants.schema).
    requires_one_of = ("new_plan_id", "plan")
    new_plan_id = PlanReferenceField(required=False, help_text="The plan's id or code.")
    plan = PlanReferenceField(required=False, help_text="Same as new_plan_id.")

    def validate(self, attrs):
        references = {attrs.get("new_plan_id"), attrs.get("plan")} - {None}
        if not references:
            raise serializers.ValidationError({"new_plan_id": ["This field is required."]})
        if len(references) > 1:
            raise serializers.ValidationError(
                {"plan": ["Give new_plan_id or plan, not two different plans."]}
            )
        return {"plan": references.pop()}


class CancelSerializer(Serializer):
    immediately = StrictBooleanField(
        required=False,
        default=False,
        help_text="End the subscription now instead of at the period end (platform staff).",
    )


class PlanChangePreviewSerializer(ResponseSerializer):
    """What a plan change would do now: when it applies and the exact amount charged."""

    old_plan = PlanSummarySerializer()
    new_plan = PlanSummarySerializer()
    change = serializers.ChoiceField(
        choices=[
            ("upgrade", "applies now; the difference is charged pro rata"),
            ("downgrade", "applies at the period end"),
            ("interval_change", "applies at the period end"),
            ("same_price", "applies now; nothing to charge"),
            ("during_trial", "applies now; nothing has been charged yet"),
            ("keep_current", "drops the change scheduled for the period end"),
        ]
    )
    applies_now = serializers.BooleanField()
    effective_at = serializers.DateTimeField()
    proration_amount_cents = serializers.IntegerField()
    currency = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    remaining_seconds = serializers.IntegerField()
    period_seconds = serializers.IntegerField()

    def to_representation(self, change):
        return {
            "old_plan": PlanSummarySerializer(change.old_plan).data,
            "new_plan": PlanSummarySerializer(change.new_plan).data,
            "change": change.kind,
            "applies_now": change.applies_now,
            "effective_at": serializers.DateTimeField().to_representation(change.effective_at),
            "proration_amount_cents": change.proration_amount_cents,
            "currency": change.currency,
            "period_start": serializers.DateTimeField().to_representation(change.period_start),
            "period_end": serializers.DateTimeField().to_representation(change.period_end),
            "remaining_seconds": change.remaining_seconds,
            "period_seconds": change.period_seconds,
        }


class _InvoiceReferenceSerializer(ResponseSerializer):
    id = serializers.UUIDField()
    invoice_number = serializers.CharField()
    total_cents = serializers.IntegerField()
    currency = serializers.CharField()


class _PlanChangeDataSerializer(ResponseSerializer):
    old_plan = serializers.CharField(help_text="The old plan's name.")
    new_plan = serializers.CharField(help_text="The new plan's name.")
    proration_amount_cents = serializers.IntegerField()
    change = serializers.CharField()
    applies_now = serializers.BooleanField()
    effective_at = serializers.DateTimeField()
    invoice = _InvoiceReferenceSerializer(allow_null=True)
    subscription = SubscriptionSerializer()


class PlanChangeResultSerializer(ResponseSerializer):
    """`change-plan`'s answer: success, message, data (the change), timestamp."""

    success = serializers.BooleanField()
    message = serializers.CharField()
    data = _PlanChangeDataSerializer()
    timestamp = serializers.DateTimeField()


class InvoiceLineSerializer(ModelSerializer):
    unit_amount_cents = serializers.SerializerMethodField(
        help_text="The unit price in cents, rounded half-up (exact: unit_amount_micros)."
    )

    class Meta:
        model = InvoiceLine
        fields = [
            "type",
            "description",
            "quantity",
            "unit_amount_cents",
            "unit_amount_micros",
            "amount_cents",
            "period_start",
            "period_end",
        ]
        read_only_fields = fields

    def get_unit_amount_cents(self, line) -> int:
        return divide_half_up(line.unit_amount_micros, 10_000)


class InvoiceSerializer(ModelSerializer):
    """An issued invoice with its lines; `amount_cents` is what is owed in all (the total)."""

    organization_id = serializers.UUIDField(source="tenant_id", read_only=True)
    invoice_number = serializers.CharField(source="number", read_only=True)
    amount_cents = serializers.IntegerField(source="total_cents", read_only=True)
    amount_due_cents = serializers.IntegerField(read_only=True)
    line_items = InvoiceLineSerializer(source="lines", many=True, read_only=True)
    pdf_url = serializers.SerializerMethodField()

    class Meta:
        model = Invoice
        fields = [
            "id",
            "organization_id",
            "invoice_number",
            "reason",
            "status",
            "currency",
            "amount_cents",
            "subtotal_cents",
            "credit_applied_cents",
            "total_cents",
            "amount_paid_cents",
            "amount_due_cents",
            "amount_credited_cents",
            "period_start",
            "period_end",
            "issued_at",
            "due_date",
            "paid_at",
            "voided_at",
            "line_items",
            "pdf_url",
            "created_at",
        ]
        read_only_fields = fields

    def get_pdf_url(self, invoice) -> str:
        request = self.context.get("request")
        return reverse("invoice-pdf", kwargs={"pk": invoice.pk}, request=request)


class CheckoutSerializer(Serializer):
    """A checkout for a paid plan: where the payer goes back to after paying, or giving up."""

    plan = PlanReferenceField(help_text="The plan's id or code.")
    success_url = URLField(max_length=2000)
    cancel_url = URLField(max_length=2000)


class CheckoutSessionSerializer(ModelSerializer):
    """The session, and `url`: the provider's hosted page to send the payer to."""

    url = serializers.SerializerMethodField()
    plan = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = CheckoutSession
        fields = ["session_id", "url", "plan", "status", "expires_at", "created_at"]
        read_only_fields = fields

    def get_url(self, session) -> str:
        return payment_provider(session.provider).checkout_url(
            session_id=session.session_id, request=self.context.get("request")
        )


class PaySerializer(Serializer):
    payment_method_id = CharField(
        max_length=255,
        help_text="The payment provider's id of the method (local provider: pm_card_visa, ...).",
    )


class PaymentSerializer(ModelSerializer):
    invoice_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Payment
        fields = [
            "id",
            "invoice_id",
            "amount_cents",
            "currency",
            "status",
            "provider",
            "provider_payment_id",
            "payment_method",
            "failure_code",
            "failure_message",
            "created_at",
        ]
        read_only_fields = fields


class PayResultSerializer(ResponseSerializer):
    """A successful payment: the payment, and the invoice as it now stands (paid)."""

    payment = PaymentSerializer()
    invoice = InvoiceSerializer()


class CreditNoteSerializer(ModelSerializer):
    """A credit note: a refund (money back through the provider) or credit the next invoices
    use up (`remaining_cents` is what is left of it)."""

    invoice_id = serializers.UUIDField(read_only=True)
    invoice_number = serializers.CharField(source="invoice.number", read_only=True)

    class Meta:
        model = CreditNote
        fields = [
            "id",
            "number",
            "invoice_id",
            "invoice_number",
            "kind",
            "amount_cents",
            "currency",
            "remaining_cents",
            "reason",
            "provider_refund_id",
            "created_at",
        ]
        read_only_fields = fields


class CreditNoteCreateSerializer(Serializer):
    invoice_id = TenantScopedPrimaryKeyRelatedField(
        source="invoice", queryset=Invoice.objects.all(), help_text="A paid invoice."
    )
    amount_cents = serializers.IntegerField(min_value=1, max_value=10**12)
    kind = ChoiceField(choices=CreditNoteKind.choices)
    reason = CharField(max_length=500, help_text="Why; kept on the note and the audit event.")


# Usage ------------------------------------------------------------------------------------------


def _last_day(end):
    """An exclusive end instant as the inclusive last day (2026-02-01T00:00 -> 2026-01-31)."""
    return (end - timedelta(microseconds=1)).date()


class UsageQuerySerializer(QuerySerializer):
    months = serializers.IntegerField(min_value=1, max_value=12, default=3, required=False)


class UsageRecordSerializer(ResponseSerializer):
    """One ended quota period: what was used, and what that usage costs at the current plan's
    prices (cents; the gateway's recorded cost is `gateway_cost_micros`)."""

    organization_id = serializers.UUIDField()
    period_start = serializers.DateField()
    period_end = serializers.DateField(help_text="The period's last day.")
    documents_processed = serializers.IntegerField()
    tokens_used = serializers.IntegerField()
    storage_used_mb = serializers.IntegerField()
    api_calls = serializers.IntegerField()
    total_cost_cents = serializers.IntegerField()
    token_cost_cents = serializers.IntegerField()
    storage_cost_cents = serializers.IntegerField()
    gateway_cost_micros = serializers.IntegerField()

    def to_representation(self, entry):
        record, usage, costs = entry["record"], entry["usage"], entry["costs"]
        return {
            "organization_id": str(record.tenant_id),
            "period_start": record.period_start.date().isoformat(),
            "period_end": _last_day(record.period_end).isoformat(),
            "documents_processed": record.documents,
            "tokens_used": record.tokens,
            "storage_used_mb": record.storage_bytes // MIB,
            "api_calls": record.api_calls,
            "total_cost_cents": costs.total,
            "token_cost_cents": costs.tokens,
            "storage_cost_cents": costs.storage,
            "gateway_cost_micros": usage.cost_micros,
        }


class UsageHistorySerializer(ResponseSerializer):
    """A page of usage records (the list envelope)."""

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = UsageRecordSerializer(many=True)


class _Span(ResponseSerializer):
    start = serializers.DateField()
    end = serializers.DateField()


class _Used(ResponseSerializer):
    used = serializers.IntegerField()
    limit = serializers.IntegerField()
    percentage = serializers.FloatField()


class _UsedStorage(ResponseSerializer):
    used_mb = serializers.IntegerField()
    limit_mb = serializers.IntegerField()
    percentage = serializers.FloatField()


class _CurrentUsage(ResponseSerializer):
    documents = _Used()
    tokens = _Used()
    storage = _UsedStorage()
    api_calls = _Used()
    users = _Used()


class _Breakdown(ResponseSerializer):
    tokens = serializers.IntegerField()
    storage = serializers.IntegerField()
    other = serializers.IntegerField()


class _Costs(ResponseSerializer):
    total_cents = serializers.IntegerField()
    breakdown = _Breakdown()


class _Projected(ResponseSerializer):
    total_cents = serializers.IntegerField()
    token_cents = serializers.IntegerField()
    storage_cents = serializers.IntegerField()


class _Warning(ResponseSerializer):
    type = serializers.CharField()
    resource = serializers.CharField()
    severity = serializers.ChoiceField(choices=["medium", "high", "critical"])
    message = serializers.CharField()


class UsageCurrentSerializer(ResponseSerializer):
    """The current quota period so far (`end` is today), its costs at the plan's prices, a
    projection to the period's end (tokens linear, storage as held) and the warnings."""

    current_period = _Span()
    period_end = serializers.DateField(help_text="The period's last day.")
    usage = _CurrentUsage()
    costs = _Costs()
    projected_costs = _Projected()
    warnings = _Warning(many=True)

    def to_representation(self, current):
        states = current["states"]

        def used(resource):
            state = states[resource]
            return {"used": state.current, "limit": state.limit, "percentage": state.percentage}

        storage = states["storage"]
        costs, projected = current["costs"], current["projected"]
        return {
            "current_period": {
                "start": current["start"].date().isoformat(),
                "end": current["now"].date().isoformat(),
            },
            "period_end": _last_day(current["end"]).isoformat(),
            "usage": {
                "documents": used("documents"),
                "tokens": used("tokens"),
                "storage": {
                    "used_mb": storage.current // MIB,
                    "limit_mb": storage.limit // MIB,
                    "percentage": storage.percentage,
                },
                "api_calls": used("api_calls"),
                "users": used("users"),
            },
            "costs": {
                "total_cents": costs.total,
                "breakdown": {"tokens": costs.tokens, "storage": costs.storage, "other": 0},
            },
            "projected_costs": {
                "total_cents": projected.total,
                "token_cents": projected.tokens,
                "storage_cents": projected.storage,
            },
            "warnings": current["warnings"],
        }
