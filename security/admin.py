"""The security app's Django admin: what platform staff see and may do.

A model that services change is changed only through them: deletes through
`config.admin.ServiceDeleteAdmin.delete_through_service`, edits in a `save_model` that calls
the update service, actions looping with `config.admin.apply_each`; a record nobody edits by
hand is a `config.admin.ReadOnlyAdmin`. Each registered model is mapped to its service
modules in tests/test_admin_service_rules.py (`SERVICE_MODULES`), whose walk fails on any
delete or change path around them.
"""

from django import forms
from django.contrib import admin
from django.utils import timezone

from config.admin import ReadOnlyAdmin, ServiceActionsMixin, ServiceDeleteAdmin, ShownInline
from config.exceptions import Conflict

from . import services
from .models import (
    ActivityStatus,
    AuditStatus,
    ComplianceAudit,
    Incident,
    IncidentStatus,
    IncidentTimelineEntry,
    ProcessingActivity,
)


class ResolveForm(forms.Form):
    resolution_notes = forms.CharField(widget=forms.Textarea, max_length=10_000)


class AuthorityNotifiedForm(forms.Form):
    authority_notified_at = forms.DateTimeField(
        initial=timezone.now, help_text="When the supervisory authority was notified."
    )
    authority_reference = forms.CharField(
        max_length=200, required=False, help_text="The authority's case reference."
    )


class CompleteAuditForm(forms.Form):
    score = forms.IntegerField(min_value=0, max_value=100)


class _TransitionsAdmin(ServiceActionsMixin, ReadOnlyAdmin):
    """Read-only pages whose changes are actions through the services (audited): staff with
    the model's change permission may run them."""

    # The update service the status moves go through, and the keyword it takes the object by.
    update_service = None
    object_kwarg = ""

    def has_transition_permission(self, request):
        return request.user.has_perm(f"security.change_{self.model._meta.model_name}")

    def _move(self, request, queryset, status: str, done: str) -> None:
        """Move each selected object to `status` through the update service."""
        update = type(self).update_service
        self.each(
            request,
            queryset,
            lambda obj: update(**{self.object_kwarg: obj}, actor=request.user, status=status),
            done,
        )


class TimelineInline(ShownInline):
    model = IncidentTimelineEntry
    fields = ("created_at", "kind", "from_status", "to_status", "note", "actor")
    readonly_fields = fields


@admin.register(Incident)
class IncidentAdmin(_TransitionsAdmin):
    inlines = (TimelineInline,)
    list_display = (
        "title",
        "tenant",
        "severity",
        "status",
        "category",
        "personal_data_breach",
        "authority_notification_due_at",
        "overdue",
        "assigned_to",
        "detected_at",
    )
    list_select_related = ("tenant", "assigned_to")
    list_filter = ("severity", "status", "category", "personal_data_breach", "raised_by")
    search_fields = ("title", "tenant__slug", "tenant__name")
    date_hierarchy = "detected_at"
    actions = ("investigate", "resolve", "close", "reopen", "record_authority_notification")
    update_service = services.incident_update
    object_kwarg = "incident"

    @admin.display(boolean=True, description="notification overdue")
    def overdue(self, incident) -> bool:
        return incident.notification_overdue

    @admin.action(description="Start investigating", permissions=["transition"])
    def investigate(self, request, queryset):
        self._move(request, queryset, IncidentStatus.INVESTIGATING, "under investigation")

    @admin.action(description="Resolve (with resolution notes)...", permissions=["transition"])
    def resolve(self, request, queryset):
        return self.each_with_form(
            request,
            queryset,
            ResolveForm,
            action="resolve",
            title="Resolve",
            change=lambda incident, data: services.incident_update(
                incident=incident,
                actor=request.user,
                status=IncidentStatus.RESOLVED,
                resolution_notes=data["resolution_notes"],
            ),
            done="resolved",
        )

    @admin.action(description="Close (resolved incidents)", permissions=["transition"])
    def close(self, request, queryset):
        self._move(request, queryset, IncidentStatus.CLOSED, "closed")

    @admin.action(description="Reopen (resolved incidents)", permissions=["transition"])
    def reopen(self, request, queryset):
        def change(incident):
            if incident.status != IncidentStatus.RESOLVED:
                raise Conflict(f"Only a resolved incident is reopened (it is {incident.status}).")
            services.incident_update(
                incident=incident, actor=request.user, status=IncidentStatus.OPEN
            )

        self.each(request, queryset, change, "reopened")

    @admin.action(
        description="Record the authority's notification (personal data breaches)...",
        permissions=["transition"],
    )
    def record_authority_notification(self, request, queryset):
        return self.each_with_form(
            request,
            queryset,
            AuthorityNotifiedForm,
            action="record_authority_notification",
            title="Record the authority's notification",
            change=lambda incident, data: services.incident_update(
                incident=incident,
                actor=request.user,
                authority_notified_at=data["authority_notified_at"],
                # Left blank, the reference recorded before stays.
                **(
                    {"authority_reference": data["authority_reference"]}
                    if data["authority_reference"]
                    else {}
                ),
            ),
            done="recorded as notified",
        )


@admin.register(ComplianceAudit)
class ComplianceAuditAdmin(_TransitionsAdmin):
    list_display = (
        "title",
        "tenant",
        "framework",
        "audit_type",
        "status",
        "score",
        "planned_date",
        "completed_at",
    )
    list_select_related = ("tenant",)
    list_filter = ("framework", "status", "audit_type")
    search_fields = ("title", "auditor_name", "tenant__slug")
    actions = ("start", "complete", "fail")
    update_service = services.compliance_audit_update
    object_kwarg = "compliance_audit"

    @admin.action(description="Start (in progress)", permissions=["transition"])
    def start(self, request, queryset):
        self._move(request, queryset, AuditStatus.IN_PROGRESS, "started")

    @admin.action(description="Complete (with a score)...", permissions=["transition"])
    def complete(self, request, queryset):
        return self.each_with_form(
            request,
            queryset,
            CompleteAuditForm,
            action="complete",
            title="Complete",
            change=lambda audit, data: services.compliance_audit_update(
                compliance_audit=audit,
                actor=request.user,
                status=AuditStatus.COMPLETED,
                score=data["score"],
            ),
            done="completed",
        )

    @admin.action(description="Fail", permissions=["transition"])
    def fail(self, request, queryset):
        self._move(request, queryset, AuditStatus.FAILED, "failed")


@admin.register(ProcessingActivity)
class ProcessingActivityAdmin(ServiceDeleteAdmin, _TransitionsAdmin):
    """The register: approve and deprecate through the service; only drafts are deleted."""

    list_display = (
        "name",
        "tenant",
        "legal_basis",
        "status",
        "privacy_impact_score",
        "dpia_required",
        "dpia_completed_on",
        "approved_at",
    )
    list_select_related = ("tenant",)
    list_filter = ("status", "legal_basis", "dpia_required", "automated_processing")
    search_fields = ("name", "purpose", "tenant__slug")
    actions = ("approve", "deprecate")
    update_service = services.processing_activity_update
    object_kwarg = "processing_activity"

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("security.delete_processingactivity")

    def delete_through_service(self, request, obj) -> None:
        services.processing_activity_delete(processing_activity=obj, actor=request.user)

    @admin.action(description="Approve", permissions=["transition"])
    def approve(self, request, queryset):
        self._move(request, queryset, ActivityStatus.APPROVED, "approved")

    @admin.action(description="Deprecate", permissions=["transition"])
    def deprecate(self, request, queryset):
        self._move(request, queryset, ActivityStatus.DEPRECATED, "deprecated")
