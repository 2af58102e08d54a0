from django.contrib import admin, messages
from django.db.models import Count, IntegerField, OuterRef, Subquery

from config.admin import ReadOnlyAdmin

from . import services
from .models import AuditCheckpoint, AuditEvent, TenantAuditChain


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "event_type", "tenant", "actor_type", "actor_label", "seq")
    list_filter = ("event_type", "actor_type", ("tenant", admin.RelatedOnlyFieldListFilter))
    search_fields = ("event_type", "actor_label", "request_id")
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    show_full_result_count = False


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "tenant", "seq", "head_hash", "key_id")
    list_filter = (("tenant", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)


def _per_tenant(queryset, column: str) -> Subquery:
    """A correlated subquery (index-backed, evaluated for the page's rows only)."""
    return Subquery(queryset.filter(tenant=OuterRef("pk")).values(column)[:1],
                    output_field=IntegerField())  # fmt: skip


_LAST_SEQ = _per_tenant(AuditEvent.objects.filter(seq__isnull=False).order_by("-seq"), "seq")
_UNSEALED = _per_tenant(
    AuditEvent.objects.filter(seq__isnull=True).order_by().values("tenant").annotate(n=Count("pk")),
    "n",
)
_CHECKPOINT_SEQ = _per_tenant(AuditCheckpoint.objects.order_by("-seq"), "seq")


@admin.register(TenantAuditChain)
class TenantAuditChainAdmin(ReadOnlyAdmin):
    """Each tenant's chain: how far it is sealed and checkpointed; verify or seal on demand."""

    list_display = ("name", "slug", "last_seq", "unsealed", "checkpoint_seq")
    search_fields = ("name", "slug")
    actions = ("verify_chains", "seal_chains")
    ordering = ("name",)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_last_seq=_LAST_SEQ, _unsealed=_UNSEALED, _checkpoint_seq=_CHECKPOINT_SEQ)
            .order_by("name")
        )

    @admin.display(description="sealed up to seq", ordering="_last_seq")
    def last_seq(self, obj):
        return obj._last_seq or 0

    @admin.display(description="unsealed events", ordering="_unsealed")
    def unsealed(self, obj):
        return obj._unsealed or 0

    @admin.display(description="last checkpoint seq", ordering="_checkpoint_seq")
    def checkpoint_seq(self, obj):
        return obj._checkpoint_seq or "-"

    @admin.action(description="Verify the selected tenants' audit chains")
    def verify_chains(self, request, queryset):
        for tenant in queryset:
            result = services.chain_verify(tenant_id=tenant.pk)
            if result.chain_valid:
                self.message_user(
                    request,
                    f"{tenant.slug}: valid, {result.verified_count} events verified, "
                    f"{result.checkpoints_checked} checkpoints, head {result.chain_head or '-'}",
                    messages.SUCCESS,
                )
                continue
            first = result.broken_links[0]
            self.message_user(
                request,
                f"{tenant.slug}: BROKEN, {len(result.broken_links)} broken link(s); first at seq "
                f"{first.seq} (event {first.event_id}): {first.reason}",
                messages.ERROR,
            )

    @admin.action(description="Seal the selected tenants' audit chains now")
    def seal_chains(self, request, queryset):
        for tenant in queryset:
            sealed = services.chain_seal(tenant_id=tenant.pk)
            self.message_user(request, f"{tenant.slug}: sealed {sealed} event(s)")
