from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone: the audit log is append-only."""

    list_display = ("created_at", "event_type", "tenant", "actor_type", "actor_label", "seq")
    list_filter = ("event_type", "actor_type", ("tenant", admin.RelatedOnlyFieldListFilter))
    search_fields = ("event_type", "actor_label", "request_id")
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
