"""Serializers of the support app: the request bodies the API accepts and
the shapes it answers with.

Each derives from `config.serializers` (`ModelSerializer`, `Serializer`, `ResponseSerializer`
for a shape only ever answered), so text is strict and an unwritable key is a 400;
tests/api/test_serializer_rules.py walks them all. No serializer writes `tenant` (the view
sets it), and a reference to another tenant-owned object is a
`tenants.serializers.fields.TenantScopedPrimaryKeyRelatedField`, so another tenant's id is
refused like a random one. Serializers check shapes; rules are the services'.
"""

import uuid
import zoneinfo

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.serializers import (
    UUID_PATTERN,
    CharField,
    ChoiceField,
    CurrencyField,
    EmailField,
    JSONObjectField,
    ModelSerializer,
    NameField,
    PersonSerializer,
    ResponseSerializer,
    Serializer,
    WholeItemsField,
    WholeObjectField,
)
from tenants.serializers.fields import StrictBooleanField

from . import selectors
from .models import (
    AgentAssertion,
    AgentStatus,
    AgentType,
    AiAgent,
    Budget,
    BudgetPeriod,
    BudgetType,
    BudgetUsageRecord,
    CustomerProfile,
    DecisionRule,
    Escalation,
    EscalationPriority,
    EscalationReason,
    EscalationStatus,
    Refund,
    RefundReason,
    RefundStatus,
    Representative,
    RepresentativeRole,
    RepresentativeStatus,
    RuleApplication,
    SlaPolicy,
    SlaStatus,
    SlaTarget,
    Ticket,
    TicketAttachment,
    TicketComment,
    TicketSlaPause,
    TicketStatus,
)
from .rules import ACTIONS, action_params_errors, conditions_errors, conditions_schema

# A customer's `context`, once encoded.
CONTEXT_MAX_BYTES = 16_384
# Counters fit PostgreSQL's bigint.
BIGINT_MAX = 2**63 - 1
# A representative holds at most this many tickets at once.
MAX_CHATS_LIMIT = 100
# SLA targets: at most a year.
MINUTES_MAX = 525_600


class CustomerProfileSerializer(ModelSerializer):
    """A customer of the organization: who they are, their plan with it, their usage and the
    context its support team sees."""

    email = EmailField(max_length=254)
    lifetime_value_cents = serializers.IntegerField(
        min_value=0, max_value=BIGINT_MAX, required=False
    )
    token_balance = serializers.IntegerField(min_value=0, max_value=BIGINT_MAX, required=False)
    token_limit = serializers.IntegerField(min_value=0, max_value=BIGINT_MAX, required=False)
    active_sites = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    sites_limit = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    context = JSONObjectField(max_bytes=CONTEXT_MAX_BYTES, required=False)
    currency = CurrencyField(required=False)

    class Meta:
        model = CustomerProfile
        fields = [
            "id",
            "name",
            "email",
            "tier",
            "standing",
            "lifetime_value_cents",
            "currency",
            "token_balance",
            "token_limit",
            "active_sites",
            "sites_limit",
            "billing_cycle",
            "context",
            "external_id",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}, "external_id": {"validators": []}}

    live_fields = ("updated_at", "open_tickets")


class RepresentativeSerializer(ModelSerializer):
    """A representative as every answer shows them, with their load."""

    user_id = serializers.UUIDField(read_only=True)
    user = PersonSerializer(read_only=True)
    free_capacity = serializers.IntegerField(
        read_only=True, help_text="max_chats - active_chats, never below 0."
    )
    rating = serializers.FloatField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The average satisfaction score (1-5) of their tickets; null before the first.",
    )

    class Meta:
        model = Representative
        fields = [
            "id",
            "user_id",
            "user",
            "role",
            "status",
            "last_active_at",
            "max_chats",
            "active_chats",
            "free_capacity",
            "rating",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class RepresentativeUpdateSerializer(ModelSerializer):
    """Role, presence and capacity; ONLINE or AWAY stamps last_active_at."""

    role = ChoiceField(choices=RepresentativeRole.choices, required=False)
    status = ChoiceField(choices=RepresentativeStatus.choices, required=False)
    max_chats = serializers.IntegerField(min_value=1, max_value=MAX_CHATS_LIMIT, required=False)

    class Meta:
        model = Representative
        fields = ["role", "status", "max_chats"]

    live_fields = ("updated_at", "last_active_at", "active_chats", "free_capacity", "rating")


class RepresentativeCreateSerializer(RepresentativeUpdateSerializer):
    user_id = serializers.UUIDField(help_text="The user id of an active member.")

    class Meta(RepresentativeUpdateSerializer.Meta):
        fields = ["user_id", "role", "status", "max_chats"]

    def validate(self, attrs):
        attrs["user"] = attrs.pop("user_id")
        return attrs


class BusinessHoursSerializer(Serializer):
    weekdays = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6),
        min_length=1,
        max_length=7,
        help_text="The working days, Monday 0 to Sunday 6.",
    )
    start = serializers.TimeField(format="%H:%M", input_formats=["%H:%M"], help_text='"09:00"')
    end = serializers.TimeField(format="%H:%M", input_formats=["%H:%M"], help_text='"17:00"')
    time_zone = CharField(max_length=64, help_text='An IANA time zone ("Europe/Paris").')

    def validate_weekdays(self, value):
        if len(set(value)) != len(value):
            raise serializers.ValidationError("A day is listed twice.")
        return sorted(value)

    def validate_time_zone(self, value):
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise serializers.ValidationError("Not an IANA time zone.") from None
        return value

    def validate(self, attrs):
        if attrs["start"] >= attrs["end"]:
            raise serializers.ValidationError({"end": ["After start (the same day)."]})
        return attrs


class SlaPolicySerializer(ModelSerializer):
    """The targets of one ticket priority; business hours or around the clock (null)."""

    first_response_minutes = serializers.IntegerField(min_value=1, max_value=MINUTES_MAX)
    resolution_minutes = serializers.IntegerField(min_value=1, max_value=MINUTES_MAX)
    business_hours = WholeObjectField(
        BusinessHoursSerializer,
        required=False,
        allow_null=True,
        help_text='{"weekdays": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00", '
        '"time_zone": "Europe/Paris"}, or null for around the clock.',
    )

    class Meta:
        model = SlaPolicy
        fields = [
            "id",
            "name",
            "priority",
            "first_response_minutes",
            "resolution_minutes",
            "business_hours",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}}

    live_fields = ("updated_at",)


class _CustomerRef(ResponseSerializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    email = serializers.EmailField()
    tier = serializers.CharField()


class _AssigneeRef(ResponseSerializer):
    id = serializers.UUIDField()
    user = PersonSerializer()
    role = serializers.CharField()
    status = serializers.CharField()


class RepresentativeChoiceField(CharField):
    """A representative's id, "auto" (the online one with the most free capacity, ties to the
    longest idle), or null (nobody)."""

    request_pattern = f"^(auto|{UUID_PATTERN})$"

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault(
            "help_text",
            "A representative's id, 'auto' (the online one with the most free capacity, ties "
            "to the longest idle), or null.",
        )
        super().__init__(**kwargs)

    def run_validation(self, data=serializers.empty):
        # The text's validators (max_length, control characters) run on the string; the UUID
        # comes after them (len() of a UUID is a TypeError).
        value = super().run_validation(data)
        if value is None or value == "auto":
            return value
        try:
            return uuid.UUID(value)
        except ValueError:
            raise serializers.ValidationError(
                "A representative's id, 'auto' or null.", code="invalid"
            ) from None


TICKET_FIELDS = [
    "id",
    "ticket_number",
    "subject",
    "description",
    "status",
    "priority",
    "category",
    "customer_id",
    "customer",
    "assignee_id",
    "assignee",
    "conversation_id",
    "ai_handled",
    "sentiment",
    "customer_satisfaction_score",
    "assigned_at",
    "resolved_at",
    "closed_at",
    "reopened_count",
    "sla_policy_id",
    "sla_status",
    "first_response_due_at",
    "resolution_due_at",
    "first_responded_at",
    "sla_paused_at",
    "sla_breached_at",
    "sla_breach",
    "created_by",
    "created_at",
    "updated_at",
]
# Computed or set by the desk: a ticket's GET document sent back ignores them.
TICKET_LIVE_FIELDS = (
    "updated_at",
    "assigned_at",
    # The nested objects show the assignee's presence and the customer's profile, which change
    # on their own; `assignee_id` is compared (change it with POST {id}/assign).
    "assignee",
    "customer",
    "sla_status",
    "first_response_due_at",
    "resolution_due_at",
    "first_responded_at",
    "sla_paused_at",
    "sla_breached_at",
    "sla_breach",
    "sla_policy_id",
    "comments",
    "attachments",
    "sla_pauses",
    "rule_applications",
)


class TicketSerializer(ModelSerializer):
    """A ticket as every answer shows it, with its customer and assignee."""

    ticket_number = serializers.CharField(read_only=True, help_text="TICKET-1001, ...")
    customer_id = serializers.UUIDField(read_only=True, allow_null=True)
    customer = _CustomerRef(read_only=True, allow_null=True)
    assignee_id = serializers.UUIDField(read_only=True, allow_null=True)
    assignee = _AssigneeRef(read_only=True, allow_null=True)
    created_by = PersonSerializer(read_only=True, allow_null=True)
    sentiment = serializers.FloatField(read_only=True, allow_null=True)
    sla_policy_id = serializers.UUIDField(read_only=True, allow_null=True)
    sla_breach = serializers.SerializerMethodField(
        help_text="The target first missed: first_response or resolution; null while none is."
    )
    sla_status = serializers.SerializerMethodField(
        help_text="ok, at_risk (a quarter of a running target or less left), breached, paused "
        "(WAITING on the customer) or met; null when no SLA policy applies."
    )

    class Meta:
        model = Ticket
        fields = TICKET_FIELDS
        read_only_fields = fields

    @extend_schema_field(ChoiceField(choices=SlaTarget.choices, allow_null=True))
    def get_sla_breach(self, ticket) -> str | None:
        return ticket.sla_breach or None

    @extend_schema_field(ChoiceField(choices=SlaStatus.choices, allow_null=True))
    def get_sla_status(self, ticket) -> str | None:
        if "now" not in self.context:
            self.context["now"] = timezone.now()
        return ticket.sla_status_at(self.context["now"])


class TicketCommentSerializer(ModelSerializer):
    author = PersonSerializer(read_only=True, allow_null=True)
    representative_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = TicketComment
        fields = ["id", "comment", "is_internal", "author", "representative_id", "created_at"]
        read_only_fields = fields


class TicketCommentCreateSerializer(ModelSerializer):
    """A reply (`is_internal` false: the customer sees it) or an internal note."""

    comment = CharField(max_length=20_000)
    is_internal = StrictBooleanField(required=False, default=False)

    class Meta:
        model = TicketComment
        fields = ["comment", "is_internal"]


class TicketAttachmentSerializer(ModelSerializer):
    uploaded_by = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = TicketAttachment
        fields = ["id", "name", "content_type", "size_bytes", "sha256", "uploaded_by", "created_at"]
        read_only_fields = fields


class TicketAttachmentUploadSerializer(Serializer):
    file = serializers.FileField(
        allow_empty_file=False,
        help_text="PNG, JPEG, GIF, WebP, PDF or UTF-8 plain text, recognised by content; at most "
        "SUPPORT_ATTACHMENT_MAX_BYTES.",
    )


class TicketSlaPauseSerializer(ModelSerializer):
    class Meta:
        model = TicketSlaPause
        fields = ["reason", "started_at", "ended_at"]
        read_only_fields = fields


class RuleApplicationSerializer(ModelSerializer):
    rule_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = RuleApplication
        fields = [
            "id",
            "rule_id",
            "rule_name",
            "action",
            "action_params",
            "outcome",
            "detail",
            "created_at",
        ]
        read_only_fields = fields


class TicketDetailSerializer(TicketSerializer):
    """A ticket with its conversation (comments, oldest first), attachments, SLA pauses and
    the decision rules applied to it."""

    comments = TicketCommentSerializer(many=True, read_only=True)
    attachments = TicketAttachmentSerializer(many=True, read_only=True)
    sla_pauses = TicketSlaPauseSerializer(many=True, read_only=True)
    rule_applications = RuleApplicationSerializer(many=True, read_only=True)

    class Meta(TicketSerializer.Meta):
        fields = [*TICKET_FIELDS, "comments", "attachments", "sla_pauses", "rule_applications"]
        read_only_fields = fields


class _TicketInput(ModelSerializer):
    customer_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="A customer profile of the organization."
    )
    ai_handled = StrictBooleanField(required=False)
    sentiment = serializers.DecimalField(
        max_digits=3,
        decimal_places=2,
        min_value=-1,
        max_value=1,
        required=False,
        allow_null=True,
        coerce_to_string=False,
        help_text="-1 (negative) to 1 (positive).",
    )

    class Meta:
        model = Ticket
        fields = [
            "subject",
            "description",
            "priority",
            "category",
            "customer_id",
            "conversation_id",
            "ai_handled",
            "sentiment",
        ]
        extra_kwargs = {"conversation_id": {"allow_null": True}}

    def validate(self, attrs):
        if "customer_id" in attrs:
            attrs["customer"] = attrs.pop("customer_id")
        return attrs


class TicketCreateSerializer(_TicketInput):
    assignee = RepresentativeChoiceField(required=False)

    class Meta(_TicketInput.Meta):
        fields = [*_TicketInput.Meta.fields, "assignee"]


class TicketUpdateSerializer(_TicketInput):
    """The status moves along the legal transitions; the satisfaction score once resolved."""

    status = ChoiceField(choices=TicketStatus.choices, required=False)
    customer_satisfaction_score = serializers.IntegerField(
        min_value=1, max_value=5, required=False, allow_null=True
    )
    live_fields = TICKET_LIVE_FIELDS

    class Meta(_TicketInput.Meta):
        fields = [*_TicketInput.Meta.fields, "status", "customer_satisfaction_score"]
        extra_kwargs = {
            **_TicketInput.Meta.extra_kwargs,
            "subject": {"required": False},
        }


class TicketAssignSerializer(Serializer):
    representative = RepresentativeChoiceField()


class CustomerProfileDetailSerializer(CustomerProfileSerializer):
    """A customer with their open tickets: how many, and the newest of them
    (selectors.OPEN_TICKETS_SHOWN; a customer with thousands open made an answer as long)."""

    open_tickets = serializers.SerializerMethodField()
    open_tickets_count = serializers.SerializerMethodField()

    class Meta(CustomerProfileSerializer.Meta):
        fields = [*CustomerProfileSerializer.Meta.fields, "open_tickets", "open_tickets_count"]
        read_only_fields = fields

    @extend_schema_field(TicketSerializer(many=True))
    def get_open_tickets(self, customer) -> list:
        tickets = selectors.customer_open_tickets(customer=customer).select_related(
            "customer", "assignee__user", "created_by"
        )[: selectors.OPEN_TICKETS_SHOWN]
        return TicketSerializer(tickets, many=True).data

    def get_open_tickets_count(self, customer) -> int:
        return selectors.customer_open_tickets(customer=customer).count()


class EscalationSerializer(ModelSerializer):
    """An escalation with its customer, ticket and assignee; `wait_time` in seconds."""

    customer_id = serializers.UUIDField(read_only=True, allow_null=True)
    customer = _CustomerRef(read_only=True, allow_null=True)
    ticket_id = serializers.UUIDField(read_only=True, allow_null=True)
    ticket_number = serializers.SerializerMethodField()
    assignee_id = serializers.UUIDField(read_only=True, allow_null=True)
    assignee = _AssigneeRef(read_only=True, allow_null=True)
    created_by = PersonSerializer(read_only=True, allow_null=True)
    wait_time = serializers.SerializerMethodField(
        help_text="Seconds from creation until someone took it (or until now)."
    )

    class Meta:
        model = Escalation
        fields = [
            "id",
            "conversation_id",
            "customer_id",
            "customer",
            "ticket_id",
            "ticket_number",
            "reason",
            "issue_description",
            "priority",
            "status",
            "wait_time",
            "ai_summary",
            "assignee_id",
            "assignee",
            "assigned_at",
            "resolved_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_ticket_number(self, escalation) -> str | None:
        return escalation.ticket.ticket_number if escalation.ticket_id else None

    def get_wait_time(self, escalation) -> int:
        if "now" not in self.context:
            self.context["now"] = timezone.now()
        return escalation.wait_time_at(self.context["now"])


class _EscalationInput(ModelSerializer):
    customer_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="A customer profile of the organization."
    )
    ticket_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="A ticket of the organization."
    )
    assignee_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="A representative of the organization."
    )
    reason = ChoiceField(choices=EscalationReason.choices)
    priority = ChoiceField(choices=EscalationPriority.choices, required=False)
    issue_description = CharField(max_length=20_000)
    ai_summary = CharField(max_length=20_000, required=False, allow_blank=True)

    class Meta:
        model = Escalation
        fields = [
            "conversation_id",
            "customer_id",
            "ticket_id",
            "reason",
            "issue_description",
            "priority",
            "ai_summary",
            "assignee_id",
        ]
        extra_kwargs = {"conversation_id": {"allow_null": True}}

    def validate(self, attrs):
        for field, name in (("customer_id", "customer"), ("ticket_id", "ticket")):
            if field in attrs:
                attrs[name] = attrs.pop(field)
        if "assignee_id" in attrs:
            attrs["assignee"] = attrs.pop("assignee_id")
        return attrs


class EscalationCreateSerializer(_EscalationInput):
    pass


class EscalationUpdateSerializer(_EscalationInput):
    """Forward moves only (PENDING -> ASSIGNED -> IN_PROGRESS -> RESOLVED)."""

    reason = ChoiceField(choices=EscalationReason.choices, required=False)
    issue_description = CharField(max_length=20_000, required=False)
    status = ChoiceField(choices=EscalationStatus.choices, required=False)
    live_fields = (
        "updated_at",
        "wait_time",
        "assigned_at",
        "resolved_at",
        "assignee",
        "customer",
        "ticket_number",
    )

    class Meta(_EscalationInput.Meta):
        fields = [*_EscalationInput.Meta.fields, "status"]


class PerformanceQuerySerializer(Serializer):
    days = serializers.IntegerField(min_value=1, max_value=365, required=False, default=30)


class PerformanceDaySerializer(ResponseSerializer):
    date = serializers.DateField()
    handled = serializers.IntegerField()
    resolved = serializers.IntegerField()
    customer_satisfaction = serializers.FloatField(allow_null=True)


class RepresentativePerformanceSerializer(ResponseSerializer):
    """A representative's performance over the last `period_days` days, from their tickets
    assigned in it."""

    representative_id = serializers.UUIDField()
    period_days = serializers.IntegerField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    tickets_handled = serializers.IntegerField()
    tickets_resolved = serializers.IntegerField()
    tickets_open = serializers.IntegerField()
    resolution_rate = serializers.FloatField(allow_null=True, help_text="Percent resolved.")
    avg_first_response_seconds = serializers.IntegerField(allow_null=True)
    customer_satisfaction = serializers.FloatField(allow_null=True, help_text="1-5.")
    ratings = serializers.IntegerField(help_text="Tickets with a satisfaction score.")
    sla_met_rate = serializers.FloatField(
        allow_null=True, help_text="Percent of their tickets under an SLA never breached."
    )
    trend = ChoiceField(
        choices=["UP", "DOWN", "STABLE"],
        help_text="Resolved in the second half of the period against the first (10% band).",
    )
    daily = PerformanceDaySerializer(many=True)


# Automation ---------------------------------------------------------------------------------------


class AgentThresholdsSerializer(Serializer):
    confidence = serializers.FloatField(
        min_value=0, max_value=1, required=False, help_text="0 to 1."
    )
    max_tokens = serializers.IntegerField(
        min_value=1,
        max_value=1_000_000,
        required=False,
        help_text="At most the model's output limit.",
    )


class AiAgentSerializer(ModelSerializer):
    """An AI agent's configuration and its record, counted from the recorded outcomes."""

    assertions = serializers.IntegerField(source="assertions_count", read_only=True)
    accuracy = serializers.FloatField(
        read_only=True, allow_null=True, help_text="Percent of outcomes correct."
    )
    avg_latency = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Milliseconds."
    )
    created_by = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = AiAgent
        fields = [
            "id",
            "name",
            "type",
            "description",
            "enabled",
            "status",
            "model",
            "data_sources",
            "thresholds",
            "assertions",
            "accuracy",
            "avg_latency",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AiAgentInputSerializer(ModelSerializer):
    name = NameField()
    type = ChoiceField(choices=AgentType.choices)
    status = ChoiceField(choices=AgentStatus.choices, required=False)
    enabled = StrictBooleanField(required=False)
    description = CharField(max_length=2_000, required=False, allow_blank=True)
    model = CharField(max_length=100, help_text="A model of the gateway's catalogue.")
    data_sources = serializers.ListField(
        child=NameField(max_length=100), max_length=20, required=False
    )
    thresholds = WholeObjectField(
        AgentThresholdsSerializer,
        required=False,
        help_text='{"confidence": 0.85, "max_tokens": 500}',
    )
    live_fields = ("updated_at", "assertions", "accuracy", "avg_latency")

    class Meta:
        model = AiAgent
        fields = [
            "name",
            "type",
            "description",
            "enabled",
            "status",
            "model",
            "data_sources",
            "thresholds",
        ]


class AiAgentUpdateSerializer(AiAgentInputSerializer):
    name = NameField(required=False)
    type = ChoiceField(choices=AgentType.choices, required=False)
    model = CharField(max_length=100, required=False)


class AgentAssertionSerializer(ModelSerializer):
    agent_id = serializers.UUIDField(read_only=True)
    ticket_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = AgentAssertion
        fields = ["id", "agent_id", "correct", "latency_ms", "ticket_id", "note", "created_at"]
        read_only_fields = fields


class AgentAssertionInputSerializer(Serializer):
    correct = StrictBooleanField(help_text="Whether the agent's answer was right.")
    latency_ms = serializers.IntegerField(min_value=0, max_value=3_600_000)
    ticket_id = serializers.UUIDField(required=False, allow_null=True)
    note = CharField(max_length=500, required=False, allow_blank=True)

    def validate(self, attrs):
        if "ticket_id" in attrs:
            attrs["ticket"] = attrs.pop("ticket_id")
        return attrs


class DecisionRuleSerializer(ModelSerializer):
    """A decision rule: when all `conditions` hold, `action` with `action_params`."""

    created_by = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = DecisionRule
        fields = [
            "id",
            "name",
            "description",
            "enabled",
            "priority",
            "conditions",
            "action",
            "action_params",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ConditionsField(serializers.JSONField):
    """A rule's conditions: checked by the rule language (support.rules), which the schema
    states in full on requests."""

    request_schema = staticmethod(conditions_schema)


class DecisionRuleInputSerializer(ModelSerializer):
    name = NameField()
    description = CharField(max_length=2_000, required=False, allow_blank=True)
    enabled = StrictBooleanField(required=False)
    priority = serializers.IntegerField(
        min_value=0, max_value=1_000_000, help_text="Tried lowest first; unique among enabled."
    )
    conditions = ConditionsField(
        required=False,
        help_text='[{"field": "confidence", "operator": "gt", "value": 0.95}], all must hold.',
    )
    action = ChoiceField(choices=[(action, action) for action in ACTIONS])
    action_params = JSONObjectField(max_bytes=4_096, required=False)
    live_fields = ("updated_at",)

    class Meta:
        model = DecisionRule
        fields = [
            "name",
            "description",
            "enabled",
            "priority",
            "conditions",
            "action",
            "action_params",
        ]

    def validate_conditions(self, value):
        errors = conditions_errors(value)
        if errors:
            raise serializers.ValidationError(errors)
        return value

    def validate(self, attrs):
        action = attrs.get("action", getattr(self.instance, "action", None))
        if action in ACTIONS and ("action_params" in attrs or "action" in attrs):
            params = attrs.get("action_params")
            if params is None:
                keep = self.instance is not None and action == self.instance.action
                params = self.instance.action_params if keep else {}
            errors = action_params_errors(action, params)
            if errors:
                raise serializers.ValidationError({"action_params": errors})
        return attrs


class DecisionRuleUpdateSerializer(DecisionRuleInputSerializer):
    name = NameField(required=False)
    priority = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)
    action = ChoiceField(choices=[(action, action) for action in ACTIONS], required=False)


class RuleEvaluateSerializer(Serializer):
    """What to evaluate: a payload of facts, or a ticket of the organization."""

    requires_exactly_one_of = ("payload", "ticket_id")  # the schema says so (tenants.schema)
    payload = JSONObjectField(
        max_bytes=16_384,
        required=False,
        help_text="Facts by field name (confidence, sentiment, priority, ...); others ignored.",
    )
    ticket_id = serializers.UUIDField(required=False)
    include_disabled = StrictBooleanField(
        required=False, default=False, help_text="Try disabled rules too (to test them)."
    )
    rule_ids = serializers.ListField(
        child=serializers.UUIDField(), required=False, max_length=100, help_text="Only these."
    )

    def validate(self, attrs):
        if ("payload" in attrs) == ("ticket_id" in attrs):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give either payload or ticket_id."]}
            )
        return attrs


class _RuleRef(ResponseSerializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    priority = serializers.IntegerField()


class _ConditionResult(ResponseSerializer):
    field = serializers.CharField()
    operator = serializers.CharField()
    value = serializers.JSONField()
    actual = serializers.JSONField(allow_null=True)
    holds = serializers.BooleanField()
    reason = serializers.CharField(help_text="holds, does not hold, missing, ...")


class _RuleTrace(ResponseSerializer):
    rule_id = serializers.UUIDField()
    name = serializers.CharField()
    priority = serializers.IntegerField()
    enabled = serializers.BooleanField()
    matched = serializers.BooleanField()
    conditions = _ConditionResult(many=True)


class RuleEvaluationSerializer(ResponseSerializer):
    """The first rule that holds, its action, and why each rule tried held or not."""

    matched = serializers.BooleanField()
    rule = _RuleRef(allow_null=True)
    action = serializers.CharField(allow_null=True)
    action_params = serializers.JSONField(allow_null=True)
    facts = serializers.JSONField(help_text="The facts used (the allow-listed fields).")
    trace = _RuleTrace(many=True)


# Budgets and refunds ---------------------------------------------------------------------------

# Amounts of money stay JSON-safe integers (2**53 - 1): they travel in audit payloads and
# webhooks, whose canonical JSON (RFC 8785) takes no larger integer.
MONEY_MAX = 2**53 - 1
# A threshold list stays short.
ALERT_THRESHOLDS_MAX = 10


class AlertThresholdSerializer(Serializer):
    percentage = serializers.IntegerField(
        min_value=1, max_value=100, help_text="Of the limit, 1 to 100."
    )
    enabled = StrictBooleanField(required=False, default=True)


class BudgetUsageRecordSerializer(ModelSerializer):
    """One amount drawn from a budget."""

    budget_id = serializers.UUIDField(read_only=True)
    customer_id = serializers.UUIDField(read_only=True, allow_null=True)
    customer = _CustomerRef(read_only=True, allow_null=True)
    refund_id = serializers.UUIDField(read_only=True, allow_null=True)
    created_by = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = BudgetUsageRecord
        fields = [
            "id",
            "budget_id",
            "period_start",
            "amount_cents",
            "customer_id",
            "customer",
            "refund_id",
            "description",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields


BUDGET_FIELDS = [
    "id",
    "type",
    "period",
    "limit_cents",
    "currency",
    "spent_cents",
    "remaining_cents",
    "alert_thresholds",
    "alerted_percentages",
    "refund_limit_per_customer_cents",
    "period_start",
    "period_end",
    "created_by",
    "created_at",
    "updated_at",
]


class BudgetSerializer(ModelSerializer):
    """A budget in its current period: `spent_cents` and `remaining_cents` come from what was
    drawn; `alerted_percentages` are the thresholds already reached in the period."""

    remaining_cents = serializers.IntegerField(read_only=True)
    created_by = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Budget
        fields = BUDGET_FIELDS
        read_only_fields = fields


class BudgetDetailSerializer(BudgetSerializer):
    """A budget with the usage records of its current period, newest first."""

    usage_records = serializers.SerializerMethodField()

    class Meta(BudgetSerializer.Meta):
        fields = [*BUDGET_FIELDS, "usage_records"]
        read_only_fields = fields

    @extend_schema_field(BudgetUsageRecordSerializer(many=True))
    def get_usage_records(self, budget) -> list:
        from .selectors import budget_usage_records

        return BudgetUsageRecordSerializer(budget_usage_records(budget=budget), many=True).data


class BudgetInputSerializer(ModelSerializer):
    type = ChoiceField(choices=BudgetType.choices)
    period = ChoiceField(choices=BudgetPeriod.choices)
    limit_cents = serializers.IntegerField(min_value=0, max_value=MONEY_MAX)
    currency = CurrencyField(required=False)
    alert_thresholds = WholeItemsField(
        child=AlertThresholdSerializer(),
        max_length=ALERT_THRESHOLDS_MAX,
        required=False,
        help_text='[{"percentage": 80, "enabled": true}]; each percentage once.',
    )
    refund_limit_per_customer_cents = serializers.IntegerField(
        min_value=0,
        max_value=MONEY_MAX,
        required=False,
        allow_null=True,
        help_text="The most one customer may receive in a period; null: no limit.",
    )
    period_start = serializers.DateTimeField(
        required=False,
        help_text="Day 1 to 28 of a month; default: the start of the current calendar period.",
    )
    period_end = serializers.DateTimeField(
        required=False, help_text="Computed (the next period's start); if given, must match."
    )
    live_fields = ("updated_at", "spent_cents", "remaining_cents", "alerted_percentages")

    class Meta:
        model = Budget
        fields = [
            "type",
            "period",
            "limit_cents",
            "currency",
            "alert_thresholds",
            "refund_limit_per_customer_cents",
            "period_start",
            "period_end",
        ]

    def validate_alert_thresholds(self, value):
        percentages = [threshold["percentage"] for threshold in value]
        if len(set(percentages)) != len(percentages):
            raise serializers.ValidationError("Each percentage once.")
        return sorted(value, key=lambda threshold: threshold["percentage"])


class BudgetUpdateSerializer(BudgetInputSerializer):
    """The limits, thresholds and period length; a budget's type and currency are fixed
    (another type or currency is another budget)."""

    period = ChoiceField(choices=BudgetPeriod.choices, required=False)
    limit_cents = serializers.IntegerField(min_value=0, max_value=MONEY_MAX, required=False)
    live_fields = (*BudgetInputSerializer.live_fields, "period_end")

    class Meta(BudgetInputSerializer.Meta):
        fields = ["period", "limit_cents", "alert_thresholds", "refund_limit_per_customer_cents"]


class BudgetUsageInputSerializer(Serializer):
    amount_cents = serializers.IntegerField(min_value=1, max_value=MONEY_MAX)
    customer_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="A customer profile of the organization."
    )
    description = CharField(max_length=500, required=False, allow_blank=True)

    def validate(self, attrs):
        if "customer_id" in attrs:
            attrs["customer"] = attrs.pop("customer_id")
        return attrs


REFUND_FIELDS = [
    "id",
    "order_id",
    "customer_id",
    "customer",
    "amount_cents",
    "currency",
    "reason",
    "notes",
    "ticket_id",
    "ticket_number",
    "status",
    "processed_at",
    "completed_at",
    "approved_by",
    "decided_by_rule_id",
    "rejection_reason",
    "budget_id",
    "created_by",
    "created_at",
    "updated_at",
]


class RefundSerializer(ModelSerializer):
    """A refund with its customer, ticket and who decided it."""

    customer_id = serializers.UUIDField(read_only=True)
    customer = _CustomerRef(read_only=True)
    ticket_id = serializers.UUIDField(read_only=True, allow_null=True)
    ticket_number = serializers.SerializerMethodField()
    approved_by = PersonSerializer(read_only=True, allow_null=True)
    decided_by_rule_id = serializers.UUIDField(read_only=True, allow_null=True)
    budget_id = serializers.UUIDField(read_only=True, allow_null=True)
    created_by = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Refund
        fields = REFUND_FIELDS
        read_only_fields = fields

    def get_ticket_number(self, refund) -> str | None:
        return refund.ticket.ticket_number if refund.ticket_id else None


class RefundDetailSerializer(RefundSerializer):
    """A refund with the decision rules applied to it."""

    rule_applications = RuleApplicationSerializer(many=True, read_only=True)

    class Meta(RefundSerializer.Meta):
        fields = [*REFUND_FIELDS, "rule_applications"]
        read_only_fields = fields


class _RefundInput(ModelSerializer):
    customer_id = serializers.UUIDField(help_text="A customer profile of the organization.")
    ticket_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="A ticket of the organization."
    )
    order_id = NameField(max_length=100, help_text="The order in the organization's systems.")
    amount_cents = serializers.IntegerField(min_value=1, max_value=MONEY_MAX)
    currency = CurrencyField(required=False, help_text="ISO 4217; default: the customer's.")
    reason = ChoiceField(choices=RefundReason.choices)
    notes = CharField(max_length=5_000, required=False, allow_blank=True)

    class Meta:
        model = Refund
        fields = [
            "order_id",
            "customer_id",
            "amount_cents",
            "currency",
            "reason",
            "notes",
            "ticket_id",
        ]

    def validate(self, attrs):
        for field, name in (("customer_id", "customer"), ("ticket_id", "ticket")):
            if field in attrs:
                attrs[name] = attrs.pop(field)
        return attrs


class RefundCreateSerializer(_RefundInput):
    pass


class RefundUpdateSerializer(_RefundInput):
    """The order, amount, currency, reason and ticket while PENDING; the notes always. A new
    `status` is a move (APPROVED, REJECTED with `rejection_reason`, COMPLETED)."""

    customer_id = None
    order_id = NameField(max_length=100, required=False)
    amount_cents = serializers.IntegerField(min_value=1, max_value=MONEY_MAX, required=False)
    reason = ChoiceField(choices=RefundReason.choices, required=False)
    status = ChoiceField(choices=RefundStatus.choices, required=False)
    # Read with a move to REJECTED (blank otherwise, as the refund shows it).
    rejection_reason = CharField(max_length=500, required=False, allow_blank=True)
    live_fields = ("updated_at", "processed_at", "completed_at", "approved_by", "budget_id")

    class Meta(_RefundInput.Meta):
        fields = [
            "order_id",
            "amount_cents",
            "currency",
            "reason",
            "notes",
            "ticket_id",
            "status",
            "rejection_reason",
        ]


class RefundRejectSerializer(Serializer):
    rejection_reason = CharField(max_length=500, help_text="Why it is rejected.")
