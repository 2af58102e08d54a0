"""Serializers of the playground app: the gateway's OpenAI-compatible request, the catalogue
and call records, prompt templates with their versions, executions, analytics and bulk operations.

Serializers check shapes; the rules (a model's limits, placeholders, version immutability) are
the services'. Money is `*_micros` (micro-units of the gateway currency), never floats.
"""

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.serializers import (
    CharField,
    ChoiceField,
    DescriptionField,
    ListedField,
    ModelSerializer,
    NameField,
    ObjectField,
    PersonSerializer,
    QuerySerializer,
    ResponseSerializer,
    Serializer,
    StrictTextMixin,
    plain_text,
)
from tenants.serializers.fields import StrictBooleanField

from . import selectors
from .models import (
    Artifact,
    GatewayCall,
    IntegrationOperation,
    LanguageModel,
    OrchestrationPhase,
    OrchestrationRun,
    OrchestrationTemplate,
    Project,
    PromptExecution,
    PromptTemplate,
    PromptTemplateVersion,
    TemplateStatus,
    VariableType,
    WorkflowJob,
)
from .services.templates import BULK_MAX_IDS, BULK_OPERATIONS
from .workflows import REGISTRY


class RegexField(StrictTextMixin, serializers.RegexField):
    """A string matching a pattern; a number or boolean is refused, not turned into text."""


# The gateway: chat/completions --------------------------------------------------------------

# OpenAI's roles; `developer` (its newer name for system) is read as system.
_ROLES = ("system", "developer", "user", "assistant")


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}},
                    "required": ["type", "text"],
                },
            },
        ]
    }
)
class MessageContentField(serializers.Field):
    """A message's text: a string, or OpenAI's list of `{"type": "text", "text": ...}` parts
    (joined). Images, audio and tool content are not supported by the gateway."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list) and data:
            texts = []
            for part in data:
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    raise serializers.ValidationError("Only text content parts are supported.")
                if not isinstance(part.get("text"), str):
                    raise serializers.ValidationError("A text part's `text` must be a string.")
                texts.append(part["text"])
            return "\n".join(texts)
        raise serializers.ValidationError("Must be a string or a list of text parts.")

    def to_representation(self, value):
        return value


class ChatMessageSerializer(Serializer):
    role = ChoiceField(choices=_ROLES)
    content = MessageContentField()
    name = CharField(required=False, max_length=64)

    def validate(self, attrs):
        if attrs["role"] == "developer":
            attrs["role"] = "system"
        return {"role": attrs["role"], "content": attrs["content"]}


def stop_sequences(value) -> tuple[str, ...] | None:
    """`stop` as a tuple: a string, or a list of 1 to GATEWAY_MAX_STOP_SEQUENCES non-empty
    strings of 256 characters at most; None when it is neither."""
    values = [value] if isinstance(value, str) else value
    if (
        not isinstance(values, list)
        or not 1 <= len(values) <= settings.GATEWAY_MAX_STOP_SEQUENCES
        or not all(isinstance(value, str) and 0 < len(value) <= 256 for value in values)
    ):
        return None
    return tuple(values)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
        ],
        "nullable": True,
    }
)
class StopField(serializers.Field):
    """`stop`: a string or up to four strings."""

    def to_internal_value(self, data):
        if data is None:
            return ()
        sequences = stop_sequences(data)
        if sequences is None:
            raise serializers.ValidationError(
                f"A string or a list of 1 to {settings.GATEWAY_MAX_STOP_SEQUENCES} non-empty "
                "strings (256 characters at most)."
            )
        return sequences

    def to_representation(self, value):
        return list(value)


class StreamOptionsSerializer(Serializer):
    include_usage = StrictBooleanField(required=False)


class ChatCompletionSerializer(Serializer):
    """OpenAI's chat completion request, the parameters the gateway supports."""

    model = CharField(max_length=100)
    messages = serializers.ListField(
        child=ChatMessageSerializer(), min_length=1, max_length=settings.GATEWAY_MAX_MESSAGES
    )
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    # OpenAI's newer name for max_tokens.
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    stop = StopField(required=False, allow_null=True)
    stream = StrictBooleanField(required=False, default=False)
    # Usage is always in the last chunk of a stream; accepted for compatibility.
    stream_options = StreamOptionsSerializer(required=False, allow_null=True)
    user = CharField(required=False, allow_blank=True, max_length=256)
    n = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=1, help_text="Only 1."
    )
    # The tenant comes from the credential; a tenant_id in the body is ignored.
    tenant_id = serializers.JSONField(required=False, allow_null=True, write_only=True)

    def validate(self, attrs):
        attrs.pop("tenant_id", None)
        return _one_max_tokens(attrs)

    @classmethod
    def validated(cls, data) -> dict:
        """The body's values: a plainly valid body's from `plain_chat_completion`, any other's
        from the serializer, which answers a 400 with its messages when the body is not
        valid."""
        plain = plain_chat_completion(data)
        if plain is not None:
            return plain
        serializer = cls(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


def _one_max_tokens(attrs: dict) -> dict:
    """`max_tokens` (None when neither is given) from `max_tokens` or its newer name; both given
    must agree."""
    both = attrs.get("max_tokens") is not None and attrs.get("max_completion_tokens")
    if both and attrs["max_tokens"] != attrs["max_completion_tokens"]:
        raise serializers.ValidationError(
            {"max_completion_tokens": ["Give max_tokens or max_completion_tokens, not both."]}
        )
    if attrs.get("max_tokens") is None:
        attrs["max_tokens"] = attrs.get("max_completion_tokens")
    return attrs


# The fast path of a chat completion's body -----------------------------------------------------
# Every gateway call's body goes through a validation, and through the serializer above it took
# DRF some thirty field steps per message: 145 us per call in one process, 8 % of the web
# workers' CPU under bench/gateway.py. Most bodies are plainly valid: every value already of
# its JSON type, in range, printable text. `plain_chat_completion` accepts exactly those, with
# the values the serializer gives them, and answers None for anything else, which then goes
# through the serializer for its verdict and its error messages. So it can only be
# conservative: it never accepts what the serializer refuses (a property test checks it against
# the serializer on generated bodies). A `tenant_id` (ignored) and content given as parts are
# left to the serializer.

_PLAIN_KEYS = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "stream",
        "user",
        "n",
        "stream_options",
    }
)
_PLAIN_MESSAGE_KEYS = frozenset({"role", "content", "name"})
_PLAIN_STREAM_OPTIONS = frozenset({"include_usage"})
_PLAIN_FLOATS = (("temperature", 2), ("top_p", 1))  # (name, maximum); minimum 0, null allowed
_PLAIN_INTEGERS = ("max_tokens", "max_completion_tokens")  # at least 1, null allowed
_PLAIN_INTEGER_MAX = 2**63 - 1  # beyond, the serializer decides


def _plain_messages(messages) -> list[dict] | None:
    if type(messages) is not list or not 1 <= len(messages) <= settings.GATEWAY_MAX_MESSAGES:
        return None
    plain = []
    for message in messages:
        if type(message) is not dict or not _PLAIN_MESSAGE_KEYS.issuperset(message):
            return None
        role, content = message.get("role"), message.get("content")
        if type(role) is not str or role not in _ROLES or type(content) is not str:
            return None
        if "name" in message and plain_text(message["name"], 64, blank=False) is None:
            return None
        plain.append({"role": "system" if role == "developer" else role, "content": content})
    return plain


def plain_chat_completion(raw) -> dict | None:
    """A plainly valid body's values, as ChatCompletionSerializer validates them; None for any
    other body (the serializer's to judge)."""
    if type(raw) is not dict or not _PLAIN_KEYS.issuperset(raw):
        return None
    model = plain_text(raw.get("model"), 100, blank=False)
    messages = _plain_messages(raw.get("messages"))
    if model is None or messages is None:
        return None
    data = {"model": model, "messages": messages, "stream": False}
    for name, maximum in _PLAIN_FLOATS:
        if name in raw:
            value = raw[name]
            if value is not None:
                if type(value) not in (int, float) or not 0 <= value <= maximum:
                    return None  # NaN fails the comparison too
                value = float(value)
            data[name] = value
    for name in _PLAIN_INTEGERS:
        if name in raw:
            value = raw[name]
            if value is not None and not (type(value) is int and 1 <= value <= _PLAIN_INTEGER_MAX):
                return None
            data[name] = value
    if "n" in raw:
        if raw["n"] is not None and not (type(raw["n"]) is int and raw["n"] == 1):
            return None
        data["n"] = raw["n"]
    if "stop" in raw:
        value = raw["stop"]
        if value is not None:
            value = stop_sequences(value)
            if value is None:
                return None
        data["stop"] = value
    if "stream" in raw:
        if type(raw["stream"]) is not bool:
            return None
        data["stream"] = raw["stream"]
    if "user" in raw:
        value = plain_text(raw["user"], 256, blank=True)
        if value is None:
            return None
        data["user"] = value
    if "stream_options" in raw:
        options = raw["stream_options"]
        if options is not None:
            if type(options) is not dict or not _PLAIN_STREAM_OPTIONS.issuperset(options):
                return None
            if type(options.get("include_usage", False)) is not bool:
                return None
            options = dict(options)
        data["stream_options"] = options
    try:
        return _one_max_tokens(data)
    except serializers.ValidationError:
        return None


class UsageSerializer(ResponseSerializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class ChatChoiceMessageSerializer(ResponseSerializer):
    role = serializers.CharField()
    content = serializers.CharField()


class ChatChoiceSerializer(ResponseSerializer):
    index = serializers.IntegerField()
    message = ChatChoiceMessageSerializer()
    finish_reason = serializers.CharField()
    logprobs = serializers.JSONField(allow_null=True)


class ChatCompletionResponseSerializer(ResponseSerializer):
    """OpenAI's chat.completion object (documentation of the answer; built by the view).
    With `stream: true` the answer is `text/event-stream` of chat.completion.chunk objects
    ending with `data: [DONE]`, the last chunk carrying `usage`."""

    id = serializers.CharField()
    object = serializers.CharField(help_text="chat.completion")
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = ChatChoiceSerializer(many=True)
    usage = UsageSerializer()
    system_fingerprint = serializers.CharField(allow_null=True)


# The gateway: catalogue and call records ------------------------------------------------------


class LanguageModelSerializer(ModelSerializer):
    """A model the tenant may call, with its prices (micro-units per million tokens)."""

    provider = serializers.SerializerMethodField()
    currency = serializers.SerializerMethodField()

    class Meta:
        model = LanguageModel
        fields = [
            "name",
            "description",
            "provider",
            "context_window",
            "max_output_tokens",
            "input_price_micros",
            "output_price_micros",
            "currency",
            "fallbacks",
        ]
        read_only_fields = fields

    def get_provider(self, model) -> str:
        """The kind of upstream that serves the model now: local, openai or anthropic."""
        provider = model.provider
        return provider.kind if provider is not None and provider.is_configured else "local"

    def get_currency(self, model) -> str:
        return settings.GATEWAY_CURRENCY


class GatewayCallSerializer(ModelSerializer):
    class Meta:
        model = GatewayCall
        fields = [
            "id",
            "source",
            "requested_model",
            "model",
            "provider",
            "status",
            "error_type",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cost_micros",
            "latency_ms",
            "time_to_first_token_ms",
            "streamed",
            "usage_estimated",
            "attempts",
            "api_key",
            "user",
            "request_id",
            "created_at",
        ]
        read_only_fields = fields


# Prompt templates ----------------------------------------------------------------------------


class TemplateVariableSerializer(Serializer):
    name = RegexField(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", max_length=64)
    type = ChoiceField(choices=VariableType.choices, default=VariableType.STRING)
    description = CharField(required=False, allow_blank=True, max_length=500, default="")
    required = StrictBooleanField(required=False, default=False)
    default = serializers.JSONField(required=False, allow_null=True, default=None)
    options = serializers.ListField(
        child=CharField(max_length=200), required=False, max_length=100, default=list
    )


class ModelConfigField(serializers.DictField):
    """The model settings: `model` and numbers; checked against the model by the service."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if len(value) > 10:
            raise serializers.ValidationError("At most 10 settings.")
        return value


_TEMPLATE_TEXT = 50_000


class PromptTemplateWriteSerializer(Serializer):
    name = NameField(max_length=200)
    description = DescriptionField(required=False, allow_blank=True, max_length=2000)
    category = RegexField(
        r"^[a-z0-9][a-z0-9_-]{0,63}$",
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="Lower-case letters, digits, `-` and `_`.",
    )
    status = ChoiceField(choices=TemplateStatus.choices, required=False)
    system_prompt = CharField(required=False, allow_blank=True, max_length=_TEMPLATE_TEXT)
    user_prompt_template = CharField(max_length=_TEMPLATE_TEXT)
    variables = TemplateVariableSerializer(many=True, required=False, max_length=50)
    model_config = ModelConfigField(required=False)
    change_note = CharField(required=False, allow_blank=True, max_length=500)


class TemplateVersionSummarySerializer(ModelSerializer):
    labels = serializers.SerializerMethodField()

    class Meta:
        model = PromptTemplateVersion
        fields = ["version", "labels", "change_note", "created_by", "created_at"]
        read_only_fields = fields

    def get_labels(self, version) -> list[str]:
        return labels_of(version.template, version.version)


def labels_of(template: PromptTemplate, number: int) -> list[str]:
    labels = []
    if template.production_version == number:
        labels.append("production")
    if template.latest_version == number:
        labels.append("latest")
    return labels


class PromptTemplateSerializer(ModelSerializer):
    """A template with the content of one version: `shown_version` (the latest unless the
    request asked for a version or label)."""

    version = serializers.SerializerMethodField()
    labels = serializers.SerializerMethodField()
    system_prompt = serializers.SerializerMethodField()
    user_prompt_template = serializers.SerializerMethodField()
    variables = serializers.SerializerMethodField()
    model_config = serializers.SerializerMethodField()

    class Meta:
        model = PromptTemplate
        fields = [
            "id",
            "name",
            "description",
            "category",
            "status",
            "version",
            "labels",
            "latest_version",
            "production_version",
            "system_prompt",
            "user_prompt_template",
            "variables",
            "model_config",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def _shown(self, template) -> PromptTemplateVersion:
        return template.shown_version

    def get_version(self, template) -> int:
        return self._shown(template).version

    def get_labels(self, template) -> list[str]:
        return labels_of(template, self._shown(template).version)

    def get_system_prompt(self, template) -> str:
        return self._shown(template).system_prompt

    def get_user_prompt_template(self, template) -> str:
        return self._shown(template).user_prompt_template

    def get_variables(self, template) -> list[dict]:
        return self._shown(template).variables

    def get_model_config(self, template) -> dict:
        return self._shown(template).model_config


class PromptTemplateDetailSerializer(PromptTemplateSerializer):
    versions = serializers.SerializerMethodField()

    class Meta(PromptTemplateSerializer.Meta):
        fields = [*PromptTemplateSerializer.Meta.fields, "versions"]
        read_only_fields = fields

    def get_versions(self, template) -> list[dict]:
        versions = sorted(template.versions.all(), key=lambda v: -v.version)
        for version in versions:
            version.template = template
        return TemplateVersionSummarySerializer(versions, many=True).data


class TemplateVersionQuerySerializer(QuerySerializer):
    version = serializers.IntegerField(required=False, min_value=1)
    label = ChoiceField(choices=("production", "latest"), required=False)

    def validate(self, attrs):
        if "version" in attrs and "label" in attrs:
            raise serializers.ValidationError({"label": ["Give version or label, not both."]})
        return attrs


class PublishSerializer(Serializer):
    version = serializers.IntegerField(min_value=1)


class ExecuteSerializer(Serializer):
    excludes_together = ("version", "label")  # the schema says so (tenants.schema)
    variables = serializers.DictField(required=False, default=dict)
    save_execution = StrictBooleanField(required=False, default=True)
    version = serializers.IntegerField(required=False, min_value=1)
    label = ChoiceField(choices=("production", "latest"), required=False)
    # The path names the template; an id in the body (as some clients send) is ignored.
    template_id = serializers.JSONField(required=False, write_only=True)

    def validate(self, attrs):
        attrs.pop("template_id", None)
        if "version" in attrs and "label" in attrs:
            raise serializers.ValidationError({"label": ["Give version or label, not both."]})
        if len(attrs["variables"]) > 50:
            raise serializers.ValidationError({"variables": ["At most 50 variables."]})
        return attrs


class PromptExecutionSerializer(ModelSerializer):
    template_id = serializers.UUIDField(read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)
    response_time = serializers.SerializerMethodField(help_text="Seconds.")
    executed_at = serializers.DateTimeField(source="created_at", read_only=True)
    saved = serializers.SerializerMethodField()

    class Meta:
        model = PromptExecution
        fields = [
            "id",
            "template_id",
            "version",
            "status",
            "model",
            "variables",
            "rendered_prompt",
            "output",
            "error",
            "response_time",
            "response_time_ms",
            "prompt_tokens",
            "completion_tokens",
            "tokens_used",
            "cost_micros",
            "rating",
            "rated_at",
            "executed_by",
            "executed_at",
            "saved",
        ]
        read_only_fields = fields

    def get_response_time(self, execution) -> float:
        return round(execution.response_time_ms / 1000, 3)

    def get_saved(self, execution) -> bool:
        return not execution._state.adding


class RatingSerializer(Serializer):
    rating = serializers.IntegerField(min_value=1, max_value=5)


class TemplateUpdateQuerySerializer(QuerySerializer):
    create_new_version = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Save content changes as the next version (versions are immutable).",
    )


class AnalyticsQuerySerializer(QuerySerializer):
    days = serializers.IntegerField(required=False, default=30, min_value=1, max_value=365)


class CompareSerializer(Serializer):
    template_ids = serializers.ListField(child=serializers.UUIDField(), min_length=1, max_length=10)
    days = serializers.IntegerField(required=False, default=30, min_value=1, max_value=365)


class BulkSerializer(Serializer):
    operation = ChoiceField(choices=BULK_OPERATIONS)
    template_ids = serializers.ListField(
        child=serializers.UUIDField(), min_length=1, max_length=BULK_MAX_IDS
    )
    parameters = serializers.DictField(required=False, default=dict)


class CategorySerializer(ResponseSerializer):
    name = serializers.CharField()
    total_templates = serializers.IntegerField()
    active_templates = serializers.IntegerField()
    draft_templates = serializers.IntegerField()
    archived_templates = serializers.IntegerField()


class BulkItemSerializer(ResponseSerializer):
    id = serializers.CharField()
    status = serializers.ChoiceField(choices=("success", "error"))
    error = serializers.CharField(required=False)


class BulkErrorSerializer(ResponseSerializer):
    id = serializers.CharField()
    error = serializers.CharField()


class BulkResultSerializer(ResponseSerializer):
    success_count = serializers.IntegerField()
    error_count = serializers.IntegerField()
    total_count = serializers.IntegerField()
    errors = BulkErrorSerializer(many=True)
    results = BulkItemSerializer(many=True)


class PeriodSerializer(ResponseSerializer):
    days = serializers.IntegerField()
    start_date = serializers.DateField()
    end_date = serializers.DateField()


class RecommendationSerializer(ResponseSerializer):
    type = serializers.CharField()
    priority = serializers.ChoiceField(choices=("low", "medium", "high"))
    title = serializers.CharField()
    description = serializers.CharField()


class ExecutionStatsSerializer(ResponseSerializer):
    executions = serializers.IntegerField()
    failed = serializers.IntegerField()
    error_rate = serializers.FloatField()
    avg_response_time = serializers.FloatField(allow_null=True, help_text="Seconds.")
    p50_response_time_ms = serializers.FloatField(allow_null=True)
    p95_response_time_ms = serializers.FloatField(allow_null=True)
    p99_response_time_ms = serializers.FloatField(allow_null=True)
    total_tokens = serializers.IntegerField()
    avg_tokens = serializers.FloatField()
    total_cost_micros = serializers.IntegerField()
    avg_cost_micros = serializers.FloatField()
    avg_rating = serializers.FloatField(allow_null=True)
    rated_executions = serializers.IntegerField()


class VersionStatsSerializer(ExecutionStatsSerializer):
    version = serializers.IntegerField()


class DailyUsageSerializer(ResponseSerializer):
    date = serializers.DateField()
    executions = serializers.IntegerField()
    errors = serializers.IntegerField()
    tokens = serializers.IntegerField()
    cost_micros = serializers.IntegerField()
    avg_response_time_ms = serializers.FloatField()


class TrendsSerializer(ResponseSerializer):
    daily_usage = DailyUsageSerializer(many=True)
    performance_trend = serializers.ChoiceField(
        choices=("improving", "stable", "degrading", "insufficient_data")
    )


class TemplateAnalyticsSerializer(ResponseSerializer):
    template_id = serializers.UUIDField()
    template_name = serializers.CharField()
    period = PeriodSerializer()
    summary = ExecutionStatsSerializer()
    versions = VersionStatsSerializer(many=True)
    trends = TrendsSerializer()
    recommendations = RecommendationSerializer(many=True)
    generated_at = serializers.DateTimeField()


class ComparedTemplateSerializer(ResponseSerializer):
    name = serializers.CharField()
    category = serializers.CharField()
    executions = serializers.IntegerField()
    avg_response_time = serializers.FloatField(allow_null=True)
    p50_response_time_ms = serializers.FloatField(allow_null=True)
    avg_cost_micros = serializers.FloatField(allow_null=True)
    avg_rating = serializers.FloatField(allow_null=True)
    error_rate = serializers.FloatField(allow_null=True)


class WinnersSerializer(ResponseSerializer):
    fastest = serializers.DictField(allow_null=True, help_text="id, name, time_ms (p50).")
    cheapest = serializers.DictField(allow_null=True, help_text="id, name, cost_micros (mean).")
    highest_rated = serializers.DictField(allow_null=True, help_text="id, name, rating.")


class CompareResultSerializer(ResponseSerializer):
    period = PeriodSerializer()
    templates = serializers.DictField(child=ComparedTemplateSerializer())
    winners = WinnersSerializer()
    generated_at = serializers.DateTimeField()


# Projects and orchestration templates ---------------------------------------------------------


class ProjectSerializer(ModelSerializer):
    """A project: what runs work on (`topic`), its status, priority and metadata."""

    created_by = PersonSerializer(read_only=True, allow_null=True)
    metadata = ObjectField(required=False, help_text="A JSON object, at most 16 KB.")

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "description",
            "topic",
            "status",
            "priority",
            "metadata",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_by", "created_at", "updated_at"]


class OrchestrationTemplateSerializer(ModelSerializer):
    """An orchestration template: phases, integrations and settings (`template_data`)."""

    created_by = PersonSerializer(read_only=True, allow_null=True)
    template_data = ObjectField(
        help_text='{"phases": [...], "integrations": [...], "settings": {...}}'
    )
    is_public = StrictBooleanField(required=False)

    class Meta:
        model = OrchestrationTemplate
        fields = [
            "id",
            "name",
            "description",
            "category",
            "is_public",
            "usage_count",
            "template_data",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "usage_count", "created_by", "created_at", "updated_at"]


# Orchestration runs ---------------------------------------------------------------------------


class RunSettingsSerializer(Serializer):
    ai_model = CharField(required=False, max_length=100, help_text="A model of gateway/models.")
    max_tokens = serializers.IntegerField(required=False, min_value=1)
    temperature = serializers.FloatField(required=False, min_value=0, max_value=2)
    integration_enabled = StrictBooleanField(required=False)


class OrchestrateSerializer(Serializer):
    """`POST orchestrate`: phases from `custom_phases`, else the template's, else the seven
    defaults (ideation, research, design, implementation, testing, documentation, review)."""

    project_id = serializers.UUIDField()
    topic = CharField(required=False, allow_blank=True, max_length=5000,
                      help_text="Default: the project's topic.")  # fmt: skip
    custom_phases = serializers.ListField(
        child=serializers.JSONField(), required=False, allow_empty=False, max_length=20
    )
    template_id = serializers.UUIDField(required=False, allow_null=True)
    integration_enabled = StrictBooleanField(required=False, allow_null=True)
    settings = RunSettingsSerializer(required=False)


class PhaseEstimateSerializer(ResponseSerializer):
    code = serializers.CharField(help_text='"Phase 0", "Phase 1", ...')
    name = serializers.CharField()
    status = serializers.CharField()
    estimated_duration = serializers.CharField()


class OrchestrationStartedSerializer(ResponseSerializer):
    run_id = serializers.UUIDField()
    status = serializers.CharField(help_text='"started".')
    message = serializers.CharField()
    estimated_completion = serializers.DateTimeField()
    phases = PhaseEstimateSerializer(many=True)


class _ProjectRef(ResponseSerializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class RunListSerializer(ModelSerializer):
    """A run in a list: its project, topic, status and outcome."""

    project = _ProjectRef(read_only=True)
    success_rate = serializers.FloatField(read_only=True)

    class Meta:
        model = OrchestrationRun
        fields = [
            "id",
            "project",
            "topic",
            "status",
            "total_phases",
            "completed_phases",
            "success_rate",
            "execution_time_ms",
            "created_at",
        ]
        read_only_fields = fields


class RunSerializer(ModelSerializer):
    project_id = serializers.UUIDField(read_only=True)
    template_id = serializers.UUIDField(read_only=True, allow_null=True)
    success_rate = serializers.FloatField(read_only=True)
    settings = serializers.SerializerMethodField()

    class Meta:
        model = OrchestrationRun
        fields = [
            "id",
            "project_id",
            "template_id",
            "topic",
            "status",
            "priority",
            "total_phases",
            "completed_phases",
            "failed_phases",
            "success_rate",
            "integration_enabled",
            "settings",
            "execution_time_ms",
            "attempts",
            "error",
            "started_at",
            "completed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(RunSettingsSerializer)
    def get_settings(self, run) -> dict:
        return {
            "ai_model": run.ai_model,
            "max_tokens": run.max_tokens,
            "temperature": run.temperature,
            "integration_enabled": run.integration_enabled,
        }


class TokenUsageSerializer(ResponseSerializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class PhaseSerializer(ModelSerializer):
    phase_code = serializers.CharField(source="code", read_only=True)
    phase_name = serializers.CharField(source="display_name", read_only=True)
    token_usage = serializers.SerializerMethodField()

    class Meta:
        model = OrchestrationPhase
        fields = [
            "id",
            "phase_code",
            "phase_name",
            "status",
            "response_text",
            "execution_time_ms",
            "token_usage",
            "cost_micros",
            "attempts",
            "error",
            "started_at",
            "completed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(TokenUsageSerializer)
    def get_token_usage(self, phase) -> dict:
        return {
            "prompt_tokens": phase.prompt_tokens,
            "completion_tokens": phase.completion_tokens,
            "total_tokens": phase.total_tokens,
        }


class IntegrationOperationSerializer(ModelSerializer):
    phase_id = serializers.UUIDField(read_only=True)
    artifact_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = IntegrationOperation
        fields = [
            "id",
            "phase_id",
            "operation_type",
            "status",
            "result",
            "execution_time_ms",
            "artifact_id",
            "created_at",
        ]
        read_only_fields = fields


class RunDetailSerializer(ResponseSerializer):
    run = RunSerializer()
    phases = PhaseSerializer(many=True)
    integration_operations = IntegrationOperationSerializer(many=True)


class RunCancelledSerializer(ResponseSerializer):
    message = serializers.CharField()
    run_id = serializers.UUIDField()
    status = serializers.CharField()


class ProjectDetailSerializer(ProjectSerializer):
    """A project with its most recent runs (newest first): the retrieve's answer, never
    written through."""

    recent_runs = serializers.SerializerMethodField()

    class Meta(ProjectSerializer.Meta):
        fields = [*ProjectSerializer.Meta.fields, "recent_runs"]
        read_only_fields = fields

    @extend_schema_field(RunListSerializer(many=True))
    def get_recent_runs(self, project) -> list:
        return RunListSerializer(selectors.recent_runs(project), many=True).data


# Artifacts and workflows ----------------------------------------------------------------------


class ArtifactSerializer(ModelSerializer):
    run_id = serializers.UUIDField(read_only=True, allow_null=True)
    workflow_job_id = serializers.UUIDField(read_only=True, allow_null=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Artifact
        fields = [
            "id",
            "name",
            "content_type",
            "size_bytes",
            "sha256",
            "run_id",
            "workflow_job_id",
            "download_url",
            "created_at",
        ]
        read_only_fields = fields

    def get_download_url(self, artifact) -> str:
        return f"/api/v1/artifacts/{artifact.pk}/download"


class WorkflowExecuteSerializer(Serializer):
    # The service checks it (playground.services.workflows); the schema lists the types.
    workflow_type = ListedField(
        codes=lambda: REGISTRY, max_length=64, help_text="GET workflows/types lists them."
    )
    input_data = ObjectField(help_text="The type's input (docs/orchestration.md).")
    priority = serializers.IntegerField(
        required=False, min_value=1, max_value=10, default=5,
        help_text="1 (lowest) to 10 (highest); the job's Celery message priority.",
    )  # fmt: skip


class WorkflowQueuedSerializer(ResponseSerializer):
    job_id = serializers.UUIDField()
    status = serializers.CharField()
    message = serializers.CharField()


class WorkflowJobSerializer(ModelSerializer):
    organization_id = serializers.UUIDField(source="tenant_id", read_only=True)
    user_id = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)
    job_type = serializers.CharField(source="workflow_type", read_only=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowJob
        fields = [
            "id",
            "organization_id",
            "user_id",
            "job_type",
            "status",
            "priority",
            "input_data",
            "output_data",
            "progress",
            "attempts",
            "error",
            "execution_time_ms",
            "started_at",
            "completed_at",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
        }
    )
    def get_progress(self, job) -> dict:
        return {"done": job.progress_done, "total": job.progress_total}


class WorkflowMetricsSerializer(ResponseSerializer):
    total_jobs = serializers.IntegerField()
    pending_jobs = serializers.IntegerField()
    running_jobs = serializers.IntegerField()
    completed_jobs = serializers.IntegerField()
    failed_jobs = serializers.IntegerField()
    cancelled_jobs = serializers.IntegerField()
    avg_execution_time_seconds = serializers.FloatField(
        allow_null=True, help_text="Over jobs that ran to an end (completed or failed)."
    )
    by_type = serializers.DictField(child=serializers.DictField())


class WorkflowTypeSerializer(ResponseSerializer):
    name = serializers.CharField()
    description = serializers.CharField()
    permission = serializers.CharField()
