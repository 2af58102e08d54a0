"""The analytics app's Django admin: what platform staff see and may do.

A model that services change is changed only through them: deletes through
`config.admin.ServiceDeleteAdmin.delete_through_service`, edits in a `save_model` that calls
the update service, actions looping with `config.admin.apply_each`; a record nobody edits by
hand is a `config.admin.ReadOnlyAdmin`. Each registered model is mapped to its service
modules in tests/test_admin_service_rules.py (`SERVICE_MODULES`), whose walk fails on any
delete or change path around them.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.utils import timezone

from config.admin import ReadOnlyAdmin

from . import tasks
from .models import QueryEvent, Rollup, RollupState


@admin.register(RollupState)
class RollupStateAdmin(ReadOnlyAdmin):
    """How far each tenant's roll-ups are built, and a rebuild over the raw retention."""

    list_display = ("tenant", "last_built_hour", "last_built_at", "lag", "hours_built")
    list_select_related = ("tenant",)
    search_fields = ("tenant__name", "tenant__slug")
    actions = ["rebuild"]

    @admin.display(description="Lag")
    def lag(self, state):
        if state.last_built_at is None:
            return "never built"
        seconds = int((timezone.now() - state.last_built_at).total_seconds())
        return f"{seconds // 60} min {seconds % 60} s"

    @admin.action(description="Rebuild the roll-ups over the raw retention")
    def rebuild(self, request, queryset):
        since = timezone.now() - timedelta(days=settings.ANALYTICS_RAW_RETENTION_DAYS)
        for state in queryset:
            # The worker does it (a rebuild reads every retained hour); with the embedded
            # defaults' in-process Celery it runs here.
            tasks.rebuild_rollups.delay(str(state.tenant_id), since.isoformat())
        messages.success(request, f"Rebuild queued for {queryset.count()} tenant(s).")


@admin.register(Rollup)
class RollupAdmin(ReadOnlyAdmin):
    list_display = ("tenant", "stream", "granularity", "bucket_start", "dimension", "count")
    list_filter = ("stream", "granularity")
    list_select_related = ("tenant",)
    search_fields = ("tenant__slug", "dimension")
    date_hierarchy = "bucket_start"


@admin.register(QueryEvent)
class QueryEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "tenant", "occurred_at", "query_category", "success")
    list_filter = ("success",)
    list_select_related = ("tenant",)
    search_fields = ("event_id", "query_text", "tenant__slug")
    date_hierarchy = "occurred_at"
