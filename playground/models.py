"""Models of the playground app: the gateway's catalogue (providers and models) and its facts
(one row per call), and prompt templates with their immutable versions and executions.

Providers and models are the platform's (staff edit them in the admin); calls, templates,
versions and executions are the tenant's. Rows change through playground.services only; each
model's factory lives in tests/playground/factories.py.
"""

import os

from django.conf import settings
from django.core.files.storage import storages
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from config.models import TimestampedModel, creator_field
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
    ORCHESTRATION = "orchestration", "Orchestration run"
    WORKFLOW = "workflow", "Workflow job"


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
            # The analytics roll-up job reads the calls recorded since its last run, every
            # minute and across organizations (analytics.streams).
            models.Index(fields=["created_at"], name="gateway_call_created"),
        ]

    def __str__(self):
        return f"{self.model} {self.status} {self.total_tokens} tokens"


class GatewayReservation(TenantOwned):
    """A gateway call's reservation that is not settled yet: written by the reservation's own
    statement and deleted by the settlement's, for every call. A row whose lease has run out
    belongs to a call whose process died before settling: the release of expired reservations
    (beat, every minute) gives its tokens back to the quota and the key's budget. The row of
    an orchestration phase's or a batch row's call is given back sooner by whoever takes the
    work over. Whichever deletes the row (a release, a takeover, the settlement) is the one
    that gives the reservation back (services.ledger)."""

    # No database constraints: a foreign key's check locks the referenced row (FOR KEY SHARE)
    # inside the reservation's statement, and every call of an organization would lock its
    # organization's row there while holding its tokens counter. The ORM still cascades (a
    # deleted organization takes its notes, a deleted key leaves its notes without one).
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="+", editable=False, db_constraint=False
    )
    api_key = models.ForeignKey(
        "accounts.APIKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    source = models.CharField(max_length=16, choices=CallSource.choices, default=CallSource.API)
    tokens = models.PositiveIntegerField()
    request_id = models.CharField(max_length=128, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        # No index but the key and the tenant's: every call inserts and deletes a row, and the
        # table holds only the calls in flight, which the release reads whole once a minute.
        ordering = ["expires_at"]

    def __str__(self):
        return f"{self.tokens} tokens reserved until {self.expires_at:%Y-%m-%d %H:%M:%S}"


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
    created_by = creator_field()

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
    created_by = creator_field()

    class Meta:
        ordering = ["template", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "template", "version"], name="prompt_version_unique"
            )
        ]

    def __str__(self):
        return f"{self.template_id} v{self.version}"

    @property
    def texts(self) -> tuple[str, str]:
        """The texts rendered with the variables' values: the system prompt, the user's."""
        return (self.system_prompt, self.user_prompt_template)


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
    # Made by a `template_batch` workflow: the job and the row of its input it answers (one
    # execution per row, so a resumed job skips the rows already done).
    workflow_job = models.ForeignKey(
        "WorkflowJob",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="executions",
        editable=False,
    )
    batch_row = models.PositiveIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # A template's executions, newest first: the list's pages walk it in their order
            # (the cursor's), and analytics read a range of it.
            models.Index(
                fields=["tenant", "template", "-created_at", "-id"], name="prompt_execution_order"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rating__isnull=True) | models.Q(rating__gte=1, rating__lte=5),
                name="prompt_execution_rating_range",
            ),
            models.UniqueConstraint(
                fields=["tenant", "workflow_job", "batch_row"],
                condition=models.Q(workflow_job__isnull=False),
                name="prompt_execution_batch_row",
            ),
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
    created_by = creator_field()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The list's pages walk these in their order (as OrchestrationRun's).
            models.Index(fields=["tenant", "-created_at", "-id"], name="project_created"),
            models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="project_status_time"
            ),
        ]

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
    created_by = creator_field()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "category"], name="orch_template_category")]

    def __str__(self):
        return self.name


# Background jobs: orchestration runs and workflow jobs ------------------------------------------


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_JOB_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)


def active_jobs_index(name: str) -> models.Index:
    """A job table's index for the reaper's scan: its pending and running jobs, oldest first.
    Not on `lease_expires_at`: with a changing column in an index, every lease renewal (a
    run's phase end, a batch's checkpoint) would write a new entry in each of the table's
    indexes, where PostgreSQL otherwise updates the row in place (a HOT update)."""
    return models.Index(
        fields=["created_at"], condition=models.Q(status__in=["pending", "running"]), name=name
    )


class BackgroundJob(TenantOwned):
    """What the job engine (playground.jobs) keeps of a job run by Celery: its status, its
    queue priority, and the lease of the worker running it.

    A worker claims a job by one conditional UPDATE (pending, or running with an expired
    lease) that sets a fresh `lease_token` and `lease_expires_at`; it renews the lease as it
    goes, and every write it makes is conditional on its token. A worker that dies stops
    renewing: the reaper finds the expired lease and queues the job again, up to
    JOBS_MAX_ATTEMPTS claims, then fails it.
    """

    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, editable=False
    )
    # 1 (lowest) to 10 (highest); the Celery message priority (docs/orchestration.md).
    priority = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(10)], editable=False
    )
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When its task was last sent to the broker (the reaper sends it again if it is lost).
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)
    execution_time_ms = models.PositiveBigIntegerField(default=0, editable=False)
    error = models.CharField(max_length=500, blank=True, editable=False)
    created_by = creator_field()

    class Meta:
        abstract = True

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_JOB_STATUSES


class OrchestrationRun(BackgroundJob):
    """A multi-phase run of a project's topic: each phase one gateway call, in order."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="orchestration_runs", editable=False
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="runs", editable=False
    )
    template = models.ForeignKey(
        OrchestrationTemplate,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="runs",
        editable=False,
    )
    topic = models.TextField(max_length=5000, editable=False)
    ai_model = models.CharField(max_length=100, editable=False)
    max_tokens = models.PositiveIntegerField(editable=False)
    temperature = models.FloatField(null=True, blank=True, editable=False)
    integration_enabled = models.BooleanField(default=False, editable=False)
    total_phases = models.PositiveSmallIntegerField(default=0, editable=False)
    completed_phases = models.PositiveSmallIntegerField(default=0, editable=False)
    failed_phases = models.PositiveSmallIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Lists' pages walk these in their order: the newest first, or by status, where
            # config.pagination.in_total_order breaks ties in the model's order (so the second
            # also serves a filter on a status, newest first).
            models.Index(fields=["tenant", "-created_at", "-id"], name="orch_run_created"),
            models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="orch_run_status_time"
            ),
            models.Index(fields=["tenant", "project", "-created_at"], name="orch_run_project"),
            active_jobs_index("orch_run_active"),
        ]

    def __str__(self):
        return f"{self.topic[:60]} ({self.status})"

    @property
    def success_rate(self) -> float:
        """Completed phases per phase, as a percentage with one decimal."""
        if not self.total_phases:
            return 0.0
        return round(self.completed_phases * 100 / self.total_phases, 1)


class PhaseStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"


class OrchestrationPhase(TenantOwned):
    """One phase of a run. `claim` is the token of the attempt running it: a phase completes
    only under the claim that started it, so a phase is never executed twice to completion."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    run = models.ForeignKey(
        OrchestrationRun, on_delete=models.CASCADE, related_name="phases", editable=False
    )
    position = models.PositiveSmallIntegerField(editable=False)
    name = models.CharField(max_length=64, editable=False)
    status = models.CharField(
        max_length=16, choices=PhaseStatus.choices, default=PhaseStatus.PENDING, editable=False
    )
    claim = models.UUIDField(null=True, blank=True, editable=False)
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    response_text = models.TextField(blank=True, editable=False)
    prompt_tokens = models.PositiveIntegerField(default=0, editable=False)
    completion_tokens = models.PositiveIntegerField(default=0, editable=False)
    total_tokens = models.PositiveIntegerField(default=0, editable=False)
    cost_micros = models.PositiveBigIntegerField(default=0, editable=False)
    gateway_call = models.ForeignKey(
        GatewayCall, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The gateway's reservation for the call under `claim`, noted with it: what recovery
    # gives back when that call was never settled (its worker died).
    reserved_tokens = models.PositiveIntegerField(default=0, editable=False)
    execution_time_ms = models.PositiveIntegerField(default=0, editable=False)
    error = models.CharField(max_length=500, blank=True, editable=False)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "run", "position"], name="orch_phase_position"
            )
        ]

    def __str__(self):
        return f"{self.code} {self.name} ({self.status})"

    @property
    def code(self) -> str:
        return f"Phase {self.position}"

    @property
    def display_name(self) -> str:
        """The name as shown: "ideation" -> "Ideation", "api_design" -> "Api design"."""
        name = self.name.replace("_", " ")
        return name[:1].upper() + name[1:]


def _artifact_storage():
    return storages["artifacts"]


def _artifact_path(artifact, filename: str) -> str:
    return f"{artifact.tenant_id}/{artifact.pk}/{filename}"


class Artifact(TenantOwned):
    """A file a job wrote to the tenant's file storage (STORAGES["artifacts"], private: served
    through the API only), counted against the tenant's `storage` quota while it exists."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="artifacts", editable=False
    )
    name = models.CharField(max_length=255, editable=False)
    content_type = models.CharField(max_length=100, editable=False)
    size_bytes = models.PositiveBigIntegerField(editable=False)
    sha256 = models.CharField(max_length=64, editable=False)
    file = models.FileField(
        upload_to=_artifact_path, max_length=400, storage=_artifact_storage, editable=False
    )
    run = models.ForeignKey(
        OrchestrationRun,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="artifacts",
        editable=False,
    )
    workflow_job = models.ForeignKey(
        "WorkflowJob",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="artifacts",
        editable=False,
    )
    created_by = creator_field()

    class Meta:
        ordering = ["-created_at"]
        # The list's pages walk it in their order (as OrchestrationRun's).
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="artifact_created")]

    def __str__(self):
        return self.name


class IntegrationOperation(TenantOwned):
    """What a run did with a phase's output beyond the gateway: `file_system` wrote it to the
    tenant's file storage as an artifact. One per phase and type."""

    class Type(models.TextChoices):
        FILE_SYSTEM = "file_system", "File system"

    class Status(models.TextChoices):
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    run = models.ForeignKey(
        OrchestrationRun, on_delete=models.CASCADE, related_name="operations", editable=False
    )
    phase = models.ForeignKey(
        OrchestrationPhase, on_delete=models.CASCADE, related_name="operations", editable=False
    )
    operation_type = models.CharField(max_length=32, choices=Type.choices, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, editable=False)
    result = models.JSONField(default=dict, editable=False)
    execution_time_ms = models.PositiveIntegerField(default=0, editable=False)
    artifact = models.ForeignKey(
        Artifact, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "phase", "operation_type"], name="orch_operation_per_phase"
            )
        ]

    def __str__(self):
        return f"{self.operation_type} {self.status}"


class WorkflowJob(BackgroundJob):
    """A background job from the workflow registry (playground.workflows): its type, its
    validated input, and what it produced (`output_data`, and usually an artifact)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="workflow_jobs", editable=False
    )
    workflow_type = models.CharField(max_length=64, editable=False)
    input_data = models.JSONField(default=dict, editable=False)
    output_data = models.JSONField(default=dict, editable=False)
    # Units of work done and to do (rows, events), for progress while it runs.
    progress_done = models.PositiveIntegerField(default=0, editable=False)
    progress_total = models.PositiveIntegerField(default=0, editable=False)
    # The gateway reservation of the call the job made last (template_batch rows), noted
    # before the call: a worker that dies before settling it leaves the amount to give back,
    # which whoever takes the job over does unless a call was recorded under that request id.
    reserved_tokens = models.PositiveIntegerField(default=0, editable=False)
    reserved_call = models.CharField(max_length=128, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The list's pages walk these in their order (as OrchestrationRun's).
            models.Index(fields=["tenant", "-created_at", "-id"], name="workflow_job_created"),
            models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="workflow_job_status_time"
            ),
            models.Index(fields=["tenant", "workflow_type"], name="workflow_job_type"),
            active_jobs_index("workflow_job_active"),
        ]

    def __str__(self):
        return f"{self.workflow_type} ({self.status})"
