from django.contrib import admin, messages
from django.utils import timezone

from config.admin import ReadOnlyAdmin
from config.exceptions import ApplicationError

from .models import Invitation, InvitationStatus, Membership, MembershipStatus, Tenant
from .services.members import invitation_revoke, member_update


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
    """Memberships, pending invitations included (by their address). Role, status and
    permissions change through the members services (API, or the actions here), so the owner
    and seat rules hold and every change is audited."""

    list_display = ("email", "tenant", "role", "status", "invited_at", "joined_at")
    list_filter = ("status", "role")
    search_fields = (
        "user__email",
        "user__name",
        "invited_email",
        "tenant__name",
        "tenant__slug",
    )
    list_select_related = ("user", "tenant")
    readonly_fields = (
        "tenant",
        "user",
        "invited_email",
        "role",
        "status",
        "permissions",
        "invited_by",
        "invited_at",
        "joined_at",
        "created_at",
        "updated_at",
    )
    actions = ("suspend_members", "reactivate_members")

    @admin.display(description="Email")
    def email(self, obj):
        return obj.email

    def has_add_permission(self, request):
        # People join by invitation (or by creating a tenant), never by a hand-made row.
        return False

    @admin.action(description="Suspend selected members", permissions=["change"])
    def suspend_members(self, request, queryset):
        self._set_status(request, queryset, MembershipStatus.SUSPENDED, "Suspended")

    @admin.action(description="Reactivate selected members", permissions=["change"])
    def reactivate_members(self, request, queryset):
        self._set_status(request, queryset, MembershipStatus.ACTIVE, "Reactivated")

    def _set_status(self, request, queryset, status, verb):
        done = 0
        for membership in queryset.exclude(status=MembershipStatus.INVITED):
            try:
                member_update(membership=membership, actor=request.user, status=status)
            except ApplicationError as exc:
                self.message_user(request, f"{membership.email}: {exc.message}", messages.ERROR)
            else:
                done += 1
        self.message_user(request, f"{verb} {done} member(s).", messages.SUCCESS)


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    """Invitations, read-only: the token was only ever emailed and its digest is not shown.
    Staff can revoke pending ones (the same service as removing an invited member)."""

    list_display = ("email", "tenant", "status", "expired", "invited_by", "created_at")
    list_filter = ("status",)
    search_fields = ("email", "tenant__name", "tenant__slug")
    list_select_related = ("tenant", "invited_by")
    fields = (
        "email",
        "tenant",
        "membership",
        "status",
        "invited_by",
        "expires_at",
        "accepted_at",
        "created_at",
    )
    actions = ("revoke_invitations",)

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    @admin.display(description="Expired", boolean=True)
    def expired(self, obj):
        return obj.status == InvitationStatus.PENDING and obj.expires_at <= timezone.now()

    def has_revoke_permission(self, request):
        return request.user.has_perm("tenants.change_invitation")

    @admin.action(description="Revoke selected pending invitations", permissions=["revoke"])
    def revoke_invitations(self, request, queryset):
        revoked = 0
        for invitation in queryset.filter(status=InvitationStatus.PENDING):
            try:
                invitation_revoke(invitation=invitation, actor=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{invitation.email}: {exc.message}", messages.ERROR)
            else:
                revoked += 1
        self.message_user(request, f"Revoked {revoked} invitation(s).", messages.SUCCESS)
