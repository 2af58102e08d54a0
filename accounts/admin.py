from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from config.admin import ReadOnlyAdmin, ServiceDeleteAdmin
from tenants.models import Membership
from tenants.services.members import user_delete

from .models import APIKey, AuthToken, User
from .services import api_key_revoke, auth_logout, user_create


class MembershipInline(admin.TabularInline):
    """Read-only: roles and statuses change through the members services (the membership's
    own page and its actions), so the owner and seat rules hold and changes are audited."""

    model = Membership
    fk_name = "user"
    extra = 0
    fields = ("tenant", "role", "status", "joined_at")
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("tenant")

    def has_add_permission(self, request, obj=None):
        return False


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name")


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(ServiceDeleteAdmin, BaseUserAdmin):
    """Users. Created through user_create and deleted through user_delete (memberships removed
    by the members services, refused for an organization's last active owner). Profile and
    platform access (is_active, is_staff, ...) are saved by the form: no service owns them, and
    deactivating ends the user's sessions by itself (every credential checks is_active)."""

    add_form = UserCreationForm
    form = UserEditForm
    ordering = ("email",)
    list_display = ("email", "name", "is_staff", "is_active", "date_joined", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "name")
    readonly_fields = ("date_joined", "last_login")
    inlines = (MembershipInline,)
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name",)}),
        (
            "Platform access",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "name", "password1", "password2")}),
    )

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new user through the service, so `user.created` is recorded as for any other.
        usable = form.cleaned_data.get("set_usable_password", True)
        created = user_create(
            email=form.cleaned_data["email"],
            password=form.cleaned_data.get("password1") if usable else None,
            name=form.cleaned_data.get("name", ""),
            actor=request.user,
        )
        obj.pk = created.pk
        obj.refresh_from_db()

    def deletion_label(self, obj):
        return obj.email

    def delete_through_service(self, request, obj):
        user_delete(user=obj, actor=request.user)


@admin.register(AuthToken)
class AuthTokenAdmin(ServiceDeleteAdmin):
    """Tokens can be listed and revoked (deleted); their secret is never stored, so never shown.
    Deleting one ends that session as logging out does (auth_logout, `auth.logout`)."""

    list_display = ("user", "created_at", "expires_at")
    list_select_related = ("user",)
    search_fields = ("user__email",)
    fields = ("user", "created_at", "expires_at")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def deletion_label(self, obj):
        return f"token of {obj.user.email}"

    def delete_through_service(self, request, obj):
        auth_logout(user=obj.user, credential=obj, refresh_token=None)


@admin.register(APIKey)
class APIKeyAdmin(ReadOnlyAdmin):
    """Keys are shown masked (`key_prefix`); the secret is never stored, its hash never shown.
    Staff can revoke keys (the same service as the API); keys are created through the API."""

    list_display = (
        "name",
        "tenant",
        "key_prefix",
        "created_by",
        "is_active",
        "revoked_at",
        "expires_at",
        "usage_count",
        "last_used_at",
    )
    list_select_related = ("tenant", "created_by")
    list_filter = ("is_active",)
    search_fields = ("name", "key_prefix", "tenant__slug", "created_by__email")
    fields = (
        "name",
        "tenant",
        "key_prefix",
        "scopes",
        "created_by",
        "is_active",
        "revoked_at",
        "expires_at",
        "usage_count",
        "success_count",
        "failed_count",
        "last_used_at",
        "created_at",
        "updated_at",
    )
    actions = ("revoke_keys",)

    def has_revoke_permission(self, request):
        return request.user.has_perm("accounts.change_apikey")

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        revoked = 0
        for api_key in queryset.select_related("tenant"):
            if api_key.revoked_at is None:
                api_key_revoke(api_key=api_key, actor=request.user)
                revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)


# simplejwt's own admin shows each refresh token in full on its change page: replaced by one
# that shows only its id (jti), owner and dates.
admin.site.unregister(OutstandingToken)


@admin.register(OutstandingToken)
class OutstandingTokenAdmin(ReadOnlyAdmin):
    list_display = ("jti", "user", "created_at", "expires_at")
    list_select_related = ("user",)
    search_fields = ("user__email", "jti")
    fields = ("jti", "user", "created_at", "expires_at")
