from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from config.admin import ReadOnlyAdmin, RefusalMessageAdmin, ServiceDeleteAdmin, apply_each

from .emails import request_link_base
from .models import (
    IdempotencyKey,
    Invitation,
    InvitationStatus,
    Membership,
    MembershipStatus,
    QuotaCounter,
    Tenant,
    Theme,
)
from .serializers.settings_schema import OrganizationSettingsSerializer
from .services import lifecycle, quotas
from .services.members import (
    invitation_link_issue,
    invitation_revoke,
    member_remove,
    member_update,
)
from .services.themes import THEME_FIELDS, theme_update
from .theme_assets import (
    ThemeAssetError,
    normalize_color,
    normalize_logo_url,
    validate_custom_css,
)


class TenantMembershipInline(admin.TabularInline):
    """Read-only: roles and statuses change through the members services (the membership's
    own page and its actions), so the owner and seat rules hold and changes are audited."""

    model = Membership
    fk_name = "tenant"
    extra = 0
    fields = ("user", "invited_email", "role", "status", "joined_at")
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = sorted(lifecycle.UPDATABLE_FIELDS)

    def clean_domain(self):
        # Host names are case-insensitive; stored lowercase, as through the API.
        return self.cleaned_data["domain"].lower()

    def clean_slug(self):
        # Lowercase, as through the API: slugs are looked up lowercased (tenants/{slug},
        # X-Organization-ID), so "Acme" would be unreachable and could sit next to "acme".
        slug = self.cleaned_data["slug"].lower()
        if lifecycle.slug_in_use(slug, excluding=self.instance):
            raise forms.ValidationError(lifecycle.SLUG_TAKEN)
        return slug

    def clean_settings(self):
        schema = OrganizationSettingsSerializer(data=self.cleaned_data["settings"])
        if not schema.is_valid():
            raise forms.ValidationError(
                [f"{key}: {' '.join(map(str, errors))}" for key, errors in schema.errors.items()]
            )
        return schema.validated_data


class SuspendForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="Shown to staff and kept in the audit log.")


class QuotaCounterInline(admin.TabularInline):
    model = QuotaCounter
    fk_name = "tenant"
    extra = 0
    can_delete = False
    fields = ("resource", "used", "warned_at", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        # Counters change only through the quota services' atomic steps.
        return False


def _usage_percentage(tenant, resource: str) -> str:
    # Computed once per row for its three usage columns.
    states = tenant.__dict__.get("_quota_states")
    if states is None:
        states = tenant.__dict__["_quota_states"] = quotas.annotated_quota_states(tenant)
    state = states[resource]
    return f"{state.percentage:.0f}%" + (" (exceeded)" if state.exceeded else "")


@admin.register(Tenant)
class TenantAdmin(ServiceDeleteAdmin):
    list_display = (
        "name",
        "slug",
        "status",
        "plan",
        "member_count",
        "api_calls_usage",
        "tokens_usage",
        "storage_usage",
        "quota_reset_at",
        "created_at",
    )
    list_filter = ("status", "plan")
    search_fields = ("name", "slug", "domain", "contact_email")
    readonly_fields = (
        "id",
        "status",
        "suspension_reason",
        "created_at",
        "updated_at",
        "activated_at",
        "suspended_at",
        "cancelled_at",
        "quota_reset_at",
        "last_reset_at",
        "trial_ends_at",
    )
    form = TenantForm
    inlines = (TenantMembershipInline, QuotaCounterInline)
    date_hierarchy = "created_at"
    actions = (
        "activate_tenants",
        "suspend_tenants",
        "restore_tenants",
        "cancel_tenants",
        "reset_quotas",
    )

    def get_queryset(self, request):
        return (
            super().get_queryset(request).with_member_count().with_seats_taken().with_quota_usage()
        )

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        quotas.with_live_api_calls(changelist.result_list)
        return changelist

    @admin.display(description="Members", ordering="member_count")
    def member_count(self, obj):
        return obj.member_count

    @admin.display(description="API calls")
    def api_calls_usage(self, obj):
        return _usage_percentage(obj, "api_calls")

    @admin.display(description="Tokens")
    def tokens_usage(self, obj):
        return _usage_percentage(obj, "tokens")

    @admin.display(description="Storage")
    def storage_usage(self, obj):
        return _usage_percentage(obj, "storage")

    def save_model(self, request, obj, form, change):
        # Through the services, so the admin keeps the same rules and audit events as the API.
        data = {
            field: form.cleaned_data[field]
            for field in form.changed_data
            if field in lifecycle.UPDATABLE_FIELDS
        }
        if change:
            lifecycle.tenant_update(tenant=obj, actor=request.user, data=data)
            return
        created = lifecycle.tenant_create(actor=request.user, add_owner=False, **data)
        obj.pk = created.pk
        obj.refresh_from_db()

    def deletion_label(self, obj):
        return obj.slug

    def delete_through_service(self, request, obj):
        # The audit chain goes through chain_purge, and `tenant.deleted` is recorded.
        lifecycle.tenant_delete(tenant=obj, actor=request.user)

    def _apply(self, request, queryset, service, done: str, **kwargs):
        changed = apply_each(
            self,
            request,
            queryset,
            lambda tenant: service(tenant=tenant, actor=request.user, **kwargs),
            lambda tenant: tenant.slug,
        )
        if changed:
            self.message_user(request, f"{changed} organization(s) {done}.", messages.SUCCESS)

    @admin.action(description="Activate selected organizations (trial -> active)")
    def activate_tenants(self, request, queryset):
        self._apply(request, queryset, lifecycle.tenant_activate, "activated")

    @admin.action(description="Suspend selected organizations...")
    def suspend_tenants(self, request, queryset):
        form = SuspendForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            self._apply(request, queryset, lifecycle.tenant_suspend, "suspended", reason=reason)
            return None
        context = {**self.admin_site.each_context(request), "tenants": queryset, "form": form}
        return TemplateResponse(request, "admin/tenants/tenant/suspend.html", context)

    @admin.action(description="Restore selected organizations")
    def restore_tenants(self, request, queryset):
        self._apply(request, queryset, lifecycle.tenant_restore, "restored")

    @admin.action(description="Cancel selected organizations")
    def cancel_tenants(self, request, queryset):
        self._apply(request, queryset, lifecycle.tenant_cancel, "cancelled")

    @admin.action(description="Reset quotas of selected organizations now")
    def reset_quotas(self, request, queryset):
        self._apply(request, queryset, quotas.quota_reset, "reset")


def _issue_links(modeladmin, request, memberships) -> None:
    """A fresh invitation link for each pending member, shown once in a message: only its
    digest is stored, so an existing link cannot be shown again."""
    base = request_link_base(request)
    links = []

    def issue(membership):
        _, link = invitation_link_issue(membership=membership, actor=request.user, link_base=base)
        links.append((membership.email, link))

    apply_each(modeladmin, request, memberships, issue, lambda membership: membership.email)
    for email, link in links:
        modeladmin.message_user(
            request,
            f"New invitation link for {email}, shown only now; the previous link no longer "
            f"works: {link}",
            messages.WARNING,
        )


@admin.register(Membership)
class MembershipAdmin(ServiceDeleteAdmin):
    """Memberships, pending invitations included (by their address). Role, status and
    permissions change through the members services (API, or the actions here), so the owner
    and seat rules hold and every change is audited. Deleting removes the member through
    member_remove (for a pending invitation: revokes it)."""

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
    actions = ("suspend_members", "reactivate_members", "issue_invitation_links")

    @admin.display(description="Email")
    def email(self, obj):
        return obj.email

    def has_add_permission(self, request):
        # People join by invitation (or by creating a tenant), never by a hand-made row.
        return False

    def deletion_label(self, obj):
        return f"{obj.email} ({obj.tenant.slug})"

    def delete_through_service(self, request, obj):
        member_remove(membership=obj, actor=request.user)

    @admin.action(
        description="Create a fresh link for the selected invited members", permissions=["change"]
    )
    def issue_invitation_links(self, request, queryset):
        invited = queryset.filter(status=MembershipStatus.INVITED).select_related("user")
        _issue_links(self, request, invited)

    @admin.action(description="Suspend selected members", permissions=["change"])
    def suspend_members(self, request, queryset):
        self._set_status(request, queryset, MembershipStatus.SUSPENDED, "Suspended")

    @admin.action(description="Reactivate selected members", permissions=["change"])
    def reactivate_members(self, request, queryset):
        self._set_status(request, queryset, MembershipStatus.ACTIVE, "Reactivated")

    def _set_status(self, request, queryset, status, verb):
        done = apply_each(
            self,
            request,
            queryset.exclude(status=MembershipStatus.INVITED),
            lambda membership: member_update(
                membership=membership, actor=request.user, status=status
            ),
            lambda membership: membership.email,
        )
        self.message_user(request, f"{verb} {done} member(s).", messages.SUCCESS)


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    """Invitations, read-only: the token was only ever emailed and its digest is not shown.
    Staff can revoke pending ones (the same service as removing an invited member), or create
    a fresh link to pass on by hand (the previous one stops working)."""

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
    actions = ("revoke_invitations", "issue_links")

    @admin.display(description="Expired", boolean=True)
    def expired(self, obj):
        return obj.status == InvitationStatus.PENDING and obj.expires_at <= timezone.now()

    def has_revoke_permission(self, request):
        return request.user.has_perm("tenants.change_invitation")

    @admin.action(description="Revoke selected pending invitations", permissions=["revoke"])
    def revoke_invitations(self, request, queryset):
        revoked = apply_each(
            self,
            request,
            queryset.filter(status=InvitationStatus.PENDING),
            lambda invitation: invitation_revoke(invitation=invitation, actor=request.user),
            lambda invitation: invitation.email,
        )
        self.message_user(request, f"Revoked {revoked} invitation(s).", messages.SUCCESS)

    def has_reissue_permission(self, request):
        return request.user.has_perm("tenants.change_invitation")

    @admin.action(
        description="Create a fresh link for the selected pending invitations",
        permissions=["reissue"],
    )
    def issue_links(self, request, queryset):
        pending = queryset.filter(status=InvitationStatus.PENDING)
        memberships = Membership.objects.filter(
            pk__in=pending.values("membership_id")
        ).select_related("user")
        _issue_links(self, request, memberships)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    """The Idempotency-Keys callers sent to money-moving POSTs and the answers stored for them
    (tenants.idempotency), read-only: only requests with the key write them, and beat prunes
    them after IDEMPOTENCY_KEY_TTL_HOURS."""

    list_display = ("key", "caller", "tenant", "state", "response_status", "created_at")
    list_filter = ("state",)
    search_fields = ("key", "caller", "tenant__slug", "tenant__name")
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    fields = (
        "id",
        "tenant",
        "caller",
        "key",
        "fingerprint",
        "state",
        "response_status",
        "response_body",
        "locked_until",
        "created_at",
        "updated_at",
    )


# Themes ----------------------------------------------------------------------------------------
# Read-mostly: staff may correct a theme's values, through the same checks and the same service
# (and so the same audit event) as the API. Themes are created by their tenant's first write;
# logos are uploaded through the API, where the file is inspected.


def _checked(check, value):
    try:
        return check(value)
    except ThemeAssetError as error:
        raise forms.ValidationError(str(error)) from None


class ThemeAdminForm(forms.ModelForm):
    logo_url = forms.CharField(required=False, max_length=500, help_text="External http(s) URL.")

    class Meta:
        model = Theme
        fields = list(THEME_FIELDS)

    def clean_primary_color(self):
        return _checked(normalize_color, self.cleaned_data["primary_color"])

    def clean_secondary_color(self):
        return _checked(normalize_color, self.cleaned_data["secondary_color"])

    def clean_accent_color(self):
        return _checked(normalize_color, self.cleaned_data["accent_color"])

    def clean_logo_url(self):
        return _checked(normalize_logo_url, self.cleaned_data["logo_url"])

    def clean_custom_css(self):
        return _checked(validate_custom_css, self.cleaned_data["custom_css"])


@admin.register(Theme)
class ThemeAdmin(RefusalMessageAdmin):
    form = ThemeAdminForm
    list_display = ("tenant", "name", "primary_color", "is_active", "has_logo", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("tenant__name", "tenant__slug", "name")
    list_select_related = ("tenant",)
    readonly_fields = ("id", "tenant", "logo", "created_at", "updated_at")
    fields = ("id", "tenant", *THEME_FIELDS, "logo", "created_at", "updated_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Uploaded logo", boolean=True)
    def has_logo(self, obj):
        return bool(obj.logo)

    def save_model(self, request, obj, form, change):
        # Only the fields the form changed, through the service: its checks, its audit event.
        data = {name: form.cleaned_data[name] for name in form.changed_data if name in THEME_FIELDS}
        theme_update(tenant=obj.tenant, actor=request.user, data=data)
        obj.refresh_from_db()
