from django.contrib import admin

from .models import Membership, Tenant


class TenantMembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "tenant"
    extra = 0
    fields = ("user", "role", "status", "joined_at")
    readonly_fields = ("joined_at",)
    raw_id_fields = ("user",)
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "status", "plan", "member_count", "created_at", "trial_ends_at")
    list_filter = ("status", "plan")
    search_fields = ("name", "slug", "domain", "contact_email")
    readonly_fields = (
        "id",
        "created_at",
        "updated_at",
        "activated_at",
        "suspended_at",
        "cancelled_at",
    )
    # Lifecycle fields change through the lifecycle services, not by hand.
    exclude = ("status", "suspension_reason")
    inlines = (TenantMembershipInline,)
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return super().get_queryset(request).with_member_count()

    @admin.display(description="Members", ordering="member_count")
    def member_count(self, obj):
        return obj.member_count


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "status", "joined_at")
    list_filter = ("role", "status")
    search_fields = ("user__email", "user__name", "tenant__name", "tenant__slug")
    list_select_related = ("user", "tenant")
    raw_id_fields = ("user", "invited_by")
    readonly_fields = ("tenant", "created_at", "updated_at")
