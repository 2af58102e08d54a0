from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from config.admin import ReadOnlyAdmin
from config.exceptions import ApplicationError

from .models import Membership, QuotaCounter, Tenant
from .serializers.settings_schema import OrganizationSettingsSerializer
from .services import lifecycle, quotas


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


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = sorted(lifecycle.UPDATABLE_FIELDS)

    def clean_slug(self):
        # Lowercase, as through the API: slugs are looked up lowercased (tenants/{slug},
        # X-Organization-ID), so "Acme" would be unreachable and could sit next to "acme".
        slug = self.cleaned_data["slug"].lower()
        if Tenant.objects.filter(slug=slug).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("An organization with this slug already exists.")
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
    state = quotas.quota_states(tenant, usage=quotas.annotated_usage(tenant))[resource]
    return f"{state.percentage:.0f}%" + (" (exceeded)" if state.exceeded else "")


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
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
        return super().get_queryset(request).with_member_count().with_quota_usage()

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

    def get_deleted_objects(self, objs, request):
        """Django asks for delete permission on every related row; the audit log and credentials
        have read-only admins (nobody deletes them by hand), which would forbid deleting any
        tenant that has them. tenant_delete removes those rows itself (the audit chain through
        chain_purge), so only the editable models' permissions still apply."""
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        read_only = {
            str(model._meta.verbose_name)
            for model, model_admin in self.admin_site._registry.items()
            if isinstance(model_admin, ReadOnlyAdmin)
        }
        return deleted, model_count, perms_needed - read_only, protected

    def delete_model(self, request, obj):
        lifecycle.tenant_delete(tenant=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for tenant in queryset:
            lifecycle.tenant_delete(tenant=tenant, actor=request.user)

    def _apply(self, request, queryset, service, done: str, **kwargs):
        changed = 0
        for tenant in queryset:
            try:
                service(tenant=tenant, actor=request.user, **kwargs)
                changed += 1
            except ApplicationError as error:
                self.message_user(request, f"{tenant.slug}: {error.message}", messages.ERROR)
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


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "status", "joined_at")
    list_filter = ("role", "status")
    search_fields = ("user__email", "user__name", "tenant__name", "tenant__slug")
    list_select_related = ("user", "tenant")
    raw_id_fields = ("user", "invited_by")
    readonly_fields = ("tenant", "created_at", "updated_at")
