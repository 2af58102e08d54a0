"""Models of the playground app: the gateway's catalogue (providers and models) and its facts
(one row per call), and prompt templates with their immutable versions and executions.

Providers and models are the platform's (staff edit them in the admin); calls, templates,
versions and executions are the tenant's. Rows change through playground.services only; each
model's factory lives in tests/playground/factories.py.
"""

import os

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from config.models import TimestampedModel
from tenants.models import Tenant, TenantOwned


class ProviderKind(models.TextChoices):
    LOCAL = "local", "Local (deterministic, offline)"
    OPENAI = "openai", "OpenAI-compatible (OpenAI, vLLM, Ollama, ...)"
    ANTHROPIC = "anthropic", "Anthropic Messages API"


_ENV_NAME = RegexValidator(
    r"^[A-Z][A-Z0-9_]{0,127}$", "An environment variable name: capitals, digits, underscores."
)


class Provider(TimestampedModel):
    """An upstream the gateway can call. Its key is never stored: `api_key_env` names the
    environment variable that holds it, read when the provider is used."""

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=ProviderKind.choices)
    # OpenAI-compatible: the API root, e.g. https://api.openai.com/v1 or http://ollama:11434/v1.
    # Anthropic: empty for https://api.anthropic.com.
    base_url = models.URLField(max_length=500, blank=True)
    api_key_env = models.CharField(
        max_length=128,
        blank=True,
        validators=[_ENV_NAME],
        help_text="Environment variable holding the key (empty: the upstream needs none).",
    )
    timeout_seconds = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(600)]
    )
    max_retries = models.PositiveSmallIntegerField(default=2, validators=[MaxValueValidator(5)])
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    @property
    def is_configured(self) -> bool:
        """Whether calls can go upstream: enabled, reachable (a base URL, or Anthropic's
        default) and keyed where a key is named. Otherwise its models are served by `local`."""
        if not self.enabled or not settings.GATEWAY_UPSTREAMS_ENABLED:
            return False
        if self.kind == ProviderKind.LOCAL:
            return True
        if self.kind == ProviderKind.OPENAI and not self.base_url:
            return False
        return not self.api_key_env or bool(self.api_key)


class LanguageModel(TimestampedModel):
    """A model tenants may call by its public `name`, served by `provider` as
    `upstream_model`, priced in micro-units of GATEWAY_CURRENCY per million tokens."""

    name = models.CharField(
        max_length=100,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")],
    )
    description = models.CharField(max_length=255, blank=True)
    # Empty: always the local provider.
    provider = models.ForeignKey(
        Provider, on_delete=models.PROTECT, null=True, blank=True, related_name="models"
    )
    upstream_model = models.CharField(max_length=200)
    context_window = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    max_output_tokens = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    input_price_micros = models.PositiveBigIntegerField(
        help_text="Micro-units of the currency per million prompt tokens ($30 = 30000000)."
    )
    output_price_micros = models.PositiveBigIntegerField(
        help_text="Micro-units of the currency per million completion tokens."
    )
    # Public names of other models to try, in order, when this one's upstream fails.
    fallbacks = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class CallStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    # The client went away mid-stream: metered at what was consumed.
    CANCELLED = "cancelled", "Cancelled"


class CallSource(models.TextChoices):
    API = "api", "chat/completions"
    PLAYGROUND = "playground", "Template execution"


class GatewayCall(TenantOwned):
    """One gateway call, as metered: the fact behind quotas, metrics, analytics and billing."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="gateway_calls", editable=False
    )
    api_key = models.ForeignKey(
        "accounts.APIKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    source = models.CharField(max_length=16, choices=CallSource.choices, default=CallSource.API)
    # The public name asked for, and the one that answered (a fallback may differ).
    requested_model = models.CharField(max_length=100)
    model = models.CharField(max_length=100)
    provider = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=CallStatus.choices)
    error_type = models.CharField(max_length=32, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    reserved_tokens = models.PositiveIntegerField(default=0)
    cost_micros = models.PositiveBigIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    streamed = models.BooleanField(default=False)
    usage_estimated = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=1)
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="gateway_call_tenant_time"),
            models.Index(fields=["tenant", "model", "created_at"], name="gateway_call_model_time"),
        ]

    def __str__(self):
        return f"{self.model} {self.status} {self.total_tokens} tokens"


class TemplateStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    ARCHIVED = "archived", "Archived"


class PromptTemplate(TenantOwned):
    """A named prompt of the tenant's; its content lives in immutable versions. `latest` is
    the newest version, `production` the one published explicitly (none until then)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="prompt_templates", editable=False
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=16, choices=TemplateStatus.choices, default=TemplateStatus.DRAFT
    )
    latest_version = models.PositiveIntegerField(default=1, editable=False)
    production_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="prompt_template_tenant_name")
        ]
        indexes = [
            models.Index(fields=["tenant", "category"], name="prompt_template_category"),
            models.Index(fields=["tenant", "status"], name="prompt_template_status"),
        ]

    def __str__(self):
        return self.name


class PromptTemplateVersion(TenantOwned):
    """One immutable version of a template's content."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    template = models.ForeignKey(
        PromptTemplate, on_delete=models.CASCADE, related_name="versions", editable=False
    )
    version = models.PositiveIntegerField(editable=False)
    system_prompt = models.TextField(blank=True, editable=False)
    user_prompt_template = models.TextField(editable=False)
    # [{"name", "type" (string/number/boolean/enum), "description", "required", "default",
    #   "options" (enum)}]
    variables = models.JSONField(default=list, editable=False)
    # {"model", "temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty"}
    model_config = models.JSONField(default=dict, editable=False)
    change_note = models.CharField(max_length=500, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["template", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "template", "version"], name="prompt_version_unique"
            )
        ]

    def __str__(self):
        return f"{self.template_id} v{self.version}"


class VariableType(models.TextChoices):
    """The types of a template variable (playground.rendering checks values against them)."""

    STRING = "string", "String"
    NUMBER = "number", "Number"
    BOOLEAN = "boolean", "Boolean"
    ENUM = "enum", "Enum (one of its options)"


class ExecutionStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class PromptExecution(TenantOwned):
    """A template version run through the gateway: what was sent, what came back, and what it
    cost."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="prompt_executions", editable=False
    )
    template = models.ForeignKey(
        PromptTemplate, on_delete=models.CASCADE, related_name="executions", editable=False
    )
    version = models.ForeignKey(
        PromptTemplateVersion, on_delete=models.CASCADE, related_name="executions", editable=False
    )
    # The call record this execution made (a foreign key, not one-to-one: every unique rule on
    # a tenant's table includes the tenant).
    gateway_call = models.ForeignKey(
        GatewayCall, on_delete=models.SET_NULL, null=True, blank=True, related_name="executions"
    )
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices)
    variables = models.JSONField(default=dict)
    rendered_prompt = models.TextField()
    output = models.TextField(blank=True)
    error = models.CharField(max_length=500, blank=True)
    model = models.CharField(max_length=100)
    response_time_ms = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    tokens_used = models.PositiveIntegerField(default=0)
    cost_micros = models.PositiveBigIntegerField(default=0)
    rating = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    rated_at = models.DateTimeField(null=True, blank=True)
    rated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    executed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["tenant", "template", "-created_at"], name="prompt_execution_time"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rating__isnull=True) | models.Q(rating__gte=1, rating__lte=5),
                name="prompt_execution_rating_range",
            )
        ]

    def __str__(self):
        return f"{self.template_id} v{self.version_id} {self.status}"


# Projects and orchestration -----------------------------------------------------------------


class ProjectStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    ARCHIVED = "archived", "Archived"
    FAILED = "failed", "Failed"


class Priority(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


# Priorities in their order (ordering=priority sorts by it, not alphabetically).
PRIORITY_RANK = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.URGENT: 3}


class Project(TenantOwned):
    """A piece of work the tenant runs orchestrations for: its topic is what runs work on."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="projects", editable=False
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=2000)
    topic = models.TextField(blank=True, max_length=5000)
    status = models.CharField(
        max_length=16, choices=ProjectStatus.choices, default=ProjectStatus.ACTIVE, db_index=True
    )
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.MEDIUM)
    # A JSON object of the tenant's own, at most PROJECT_METADATA_MAX_BYTES when serialised.
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "status"], name="project_status")]

    def __str__(self):
        return self.name


class OrchestrationTemplate(TenantOwned):
    """A reusable plan for runs: its phases, integrations and settings. A public one is seen by
    every member of the tenant, a private one by its creator only."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="orchestration_templates", editable=False
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=2000)
    category = models.CharField(max_length=64, blank=True)
    is_public = models.BooleanField(default=False)
    # {"phases": [...], "integrations": [...], "settings": {...}}: playground.orchestration.
    template_data = models.JSONField(default=dict)
    # Runs started from it; advanced atomically (F expression) by the run that uses it.
    usage_count = models.PositiveIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "category"], name="orch_template_category")
        ]

    def __str__(self):
        return self.name
