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


# Themes ----------------------------------------------------------------------------------------
# Read-mostly: staff may correct a theme's values, through the same checks and the same service
# (and so the same audit event) as the API. Themes are created by their tenant's first write;
# logos are uploaded through the API, where the file is inspected.

from django import forms  # noqa: E402

from .models import Theme  # noqa: E402
from .services.themes import THEME_FIELDS, theme_update  # noqa: E402
from .theme_assets import (  # noqa: E402
    ThemeAssetError,
    normalize_color,
    normalize_logo_url,
    validate_custom_css,
)


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
class ThemeAdmin(admin.ModelAdmin):
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
