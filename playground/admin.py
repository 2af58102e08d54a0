"""The playground app's Django admin: the gateway's catalogue (providers, never a key; models
with their prices), the call records (read-only, filterable), and prompt templates with their
versions inline and executions; projects, orchestration runs with their phases and integration
operations inline, workflow jobs and artifacts (read-only, cancelled or deleted through their
services).

Catalogue changes go through playground.services.catalogue (a platform audit event each);
templates are changed by their services (the API's), so here they are read-only apart from the
actions that call them.
"""

from django import forms
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from config.admin import ReadOnlyAdmin, ServiceDeleteAdmin, ServiceSaveAdmin, apply_each
from config.exceptions import ApplicationError

from .models import (
    Artifact,
    GatewayCall,
    GatewayReservation,
    IntegrationOperation,
    LanguageModel,
    OrchestrationPhase,
    OrchestrationRun,
    OrchestrationTemplate,
    Project,
    PromptExecution,
    PromptTemplate,
    PromptTemplateVersion,
    Provider,
    TemplateStatus,
    WorkflowJob,
)
from .services import (
    artifact_delete,
    catalogue,
    orchestration_run_cancel,
    orchestration_template_delete,
    project_delete,
    prompt_template_delete,
    prompt_template_update,
    workflow_job_cancel,
)


def _money(micros: int) -> str:
    return f"{micros / 1_000_000:,.2f}"


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, required=False, assume_scheme="https")

    class Meta:
        model = Provider
        fields = catalogue.PROVIDER_FIELDS


@admin.register(Provider)
class ProviderAdmin(ServiceSaveAdmin):
    form = ProviderForm
    create_service = staticmethod(catalogue.provider_create)
    update_service = staticmethod(catalogue.provider_update)
    delete_service = staticmethod(catalogue.provider_delete)
    object_kwarg = "provider"
    list_display = ("name", "kind", "base_url", "api_key_env", "key_present", "serving", "enabled")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "base_url")
    readonly_fields = ("key_present", "serving", "created_at", "updated_at")

    @admin.display(description="key set", boolean=True)
    def key_present(self, provider) -> bool:
        # Whether the named variable is set in this process; the key itself is never shown.
        return bool(provider.api_key)

    @admin.display(description="serving")
    def serving(self, provider) -> str:
        return "upstream" if provider.is_configured else "local (not configured)"


class LanguageModelForm(forms.ModelForm):
    class Meta:
        model = LanguageModel
        fields = catalogue.MODEL_FIELDS

    def clean(self):
        cleaned = super().clean()
        if "fallbacks" in cleaned and cleaned.get("name"):
            try:
                catalogue.check_fallbacks(cleaned["fallbacks"], name=cleaned["name"])
            except ApplicationError as error:
                self.add_error("fallbacks", error.message)
        return cleaned


@admin.register(LanguageModel)
class LanguageModelAdmin(ServiceSaveAdmin):
    form = LanguageModelForm
    create_service = staticmethod(catalogue.language_model_create)
    update_service = staticmethod(catalogue.language_model_update)
    delete_service = staticmethod(catalogue.language_model_delete)
    object_kwarg = "model"
    list_display = (
        "name",
        "provider",
        "upstream_model",
        "context_window",
        "input_per_million",
        "output_per_million",
        "active",
    )
    list_select_related = ("provider",)
    list_filter = ("active", "provider")
    search_fields = ("name", "upstream_model")
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="input / 1M tokens", ordering="input_price_micros")
    def input_per_million(self, model) -> str:
        return _money(model.input_price_micros)

    @admin.display(description="output / 1M tokens", ordering="output_price_micros")
    def output_per_million(self, model) -> str:
        return _money(model.output_price_micros)


@admin.register(GatewayCall)
class GatewayCallAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "tenant",
        "model",
        "provider",
        "status",
        "total_tokens",
        "cost",
        "latency_ms",
        "streamed",
        "usage_estimated",
    )
    list_select_related = ("tenant",)
    list_filter = ("status", "source", "streamed", "usage_estimated", "provider", "model")
    search_fields = ("tenant__slug", "model", "request_id")
    date_hierarchy = "created_at"

    @admin.display(description="cost", ordering="cost_micros")
    def cost(self, call) -> str:
        return _money(call.cost_micros)


@admin.register(GatewayReservation)
class GatewayReservationAdmin(ReadOnlyAdmin):
    """Reservations of calls in flight, and of calls whose process died before settling (past
    their lease: beat gives them back within a minute, `manage.py
    release_expired_reservations` at once)."""

    list_display = ("created_at", "tenant", "source", "tokens", "api_key", "expires_at", "expired")
    list_select_related = ("tenant", "api_key")
    list_filter = ("source",)
    search_fields = ("tenant__slug", "request_id")

    @admin.display(boolean=True, description="past its lease")
    def expired(self, reservation) -> bool:
        return reservation.expires_at <= timezone.now()


class VersionInline(admin.TabularInline):
    model = PromptTemplateVersion
    fields = (
        "version",
        "change_note",
        "user_prompt_template",
        "model_config",
        "created_by",
        "created_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-version",)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PromptTemplate)
class PromptTemplateAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    list_display = (
        "name",
        "tenant",
        "category",
        "status",
        "latest_version",
        "production_version",
        "executions_link",
        "updated_at",
    )
    list_select_related = ("tenant",)
    list_filter = ("status", "category")
    search_fields = ("name", "tenant__slug", "category")
    inlines = (VersionInline,)
    actions = ("activate", "archive")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("playground.delete_prompttemplate")

    def has_manage_permission(self, request):
        return request.user.has_perm("playground.change_prompttemplate")

    def delete_through_service(self, request, obj) -> None:
        prompt_template_delete(template=obj, actor=request.user)

    @admin.display(description="executions")
    def executions_link(self, template) -> str:
        url = f"../promptexecution/?template__id__exact={template.pk}"
        return format_html('<a href="{}">executions</a>', url)

    def _set_status(self, request, queryset, status) -> int:
        return apply_each(
            self,
            request,
            queryset.select_related("tenant"),
            lambda template: prompt_template_update(
                template=template, actor=request.user, status=status
            ),
            str,
        )

    @admin.action(description="Activate selected templates", permissions=["manage"])
    def activate(self, request, queryset):
        done = self._set_status(request, queryset, TemplateStatus.ACTIVE)
        self.message_user(request, f"Activated {done} template(s).", messages.SUCCESS)

    @admin.action(description="Archive selected templates", permissions=["manage"])
    def archive(self, request, queryset):
        done = self._set_status(request, queryset, TemplateStatus.ARCHIVED)
        self.message_user(request, f"Archived {done} template(s).", messages.SUCCESS)


@admin.register(PromptExecution)
class PromptExecutionAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "template",
        "tenant",
        "status",
        "model",
        "tokens_used",
        "cost",
        "response_time_ms",
        "rating",
    )
    list_select_related = ("template", "tenant")
    list_filter = ("status", "rating", "model")
    search_fields = ("template__name", "tenant__slug")
    date_hierarchy = "created_at"

    @admin.display(description="cost", ordering="cost_micros")
    def cost(self, execution) -> str:
        return _money(execution.cost_micros)


@admin.register(Project)
class ProjectAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    """Projects are the tenants' own: shown, and deleted through the service (audited)."""

    list_display = ("name", "tenant", "status", "priority", "created_by", "created_at")
    list_select_related = ("tenant", "created_by")
    list_filter = ("status", "priority")
    search_fields = ("name", "topic", "tenant__slug")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("playground.delete_project")

    def delete_through_service(self, request, obj) -> None:
        project_delete(project=obj, actor=request.user)


@admin.register(OrchestrationTemplate)
class OrchestrationTemplateAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    list_display = ("name", "tenant", "category", "is_public", "usage_count", "created_by")
    list_select_related = ("tenant", "created_by")
    list_filter = ("is_public", "category")
    search_fields = ("name", "tenant__slug")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("playground.delete_orchestrationtemplate")

    def delete_through_service(self, request, obj) -> None:
        orchestration_template_delete(orchestration_template=obj, actor=request.user)


class _CancelAdmin(ReadOnlyAdmin):
    """Jobs: read-only, with a "cancel" action through the job's service (audited)."""

    cancel_service = None
    cancel_object_name = ""

    def has_manage_permission(self, request):
        return request.user.has_perm(f"playground.change_{self.model._meta.model_name}")

    @admin.action(description="Cancel selected (pending or running)", permissions=["manage"])
    def cancel(self, request, queryset):
        done = apply_each(
            self,
            request,
            queryset.select_related("tenant"),
            lambda job: type(self).cancel_service(**{self.cancel_object_name: job},
                                                  actor=request.user),
            str,
        )  # fmt: skip
        self.message_user(request, f"Cancelled {done}.", messages.SUCCESS)


class PhaseInline(admin.TabularInline):
    model = OrchestrationPhase
    extra = 0
    can_delete = False
    fields = ("position", "name", "status", "attempts", "total_tokens", "cost_micros",
              "execution_time_ms", "error", "started_at", "completed_at")  # fmt: skip
    readonly_fields = fields
    ordering = ("position",)

    def has_add_permission(self, request, obj=None):
        return False


class OperationInline(admin.TabularInline):
    model = IntegrationOperation
    extra = 0
    can_delete = False
    fields = ("phase", "operation_type", "status", "result", "execution_time_ms", "artifact")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(OrchestrationRun)
class OrchestrationRunAdmin(_CancelAdmin):
    list_display = ("topic_short", "project", "tenant", "status", "completed_phases",
                    "total_phases", "ai_model", "attempts", "created_at")  # fmt: skip
    list_select_related = ("project", "tenant")
    list_filter = ("status", "ai_model", "integration_enabled")
    search_fields = ("topic", "project__name", "tenant__slug")
    date_hierarchy = "created_at"
    inlines = (PhaseInline, OperationInline)
    actions = ("cancel",)
    cancel_service = orchestration_run_cancel
    cancel_object_name = "run"

    @admin.display(description="topic")
    def topic_short(self, run) -> str:
        return run.topic[:80]


@admin.register(WorkflowJob)
class WorkflowJobAdmin(_CancelAdmin):
    list_display = ("workflow_type", "tenant", "status", "priority", "progress", "attempts",
                    "created_by", "created_at")  # fmt: skip
    list_select_related = ("tenant", "created_by")
    list_filter = ("status", "workflow_type")
    search_fields = ("tenant__slug", "workflow_type")
    date_hierarchy = "created_at"
    actions = ("cancel",)
    cancel_service = workflow_job_cancel
    cancel_object_name = "workflow_job"

    @admin.display(description="progress")
    def progress(self, job) -> str:
        return f"{job.progress_done}/{job.progress_total}" if job.progress_total else "-"


@admin.register(Artifact)
class ArtifactAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    """Files of runs and workflows; deleting one gives its bytes back to the storage quota."""

    list_display = ("name", "tenant", "size_bytes", "content_type", "run", "workflow_job",
                    "created_at")  # fmt: skip
    list_select_related = ("tenant", "run", "workflow_job")
    search_fields = ("name", "tenant__slug")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("playground.delete_artifact")

    def delete_through_service(self, request, obj) -> None:
        artifact_delete(artifact=obj, actor=request.user)
