"""The current organization: its profile, plan tier, settings, branding and API quota."""

import functools

from rest_framework import serializers

from config.serializers import (
    CharField,
    DescriptionField,
    ModelSerializer,
    NameField,
    ObjectField,
    Serializer,
)

from ..models import QuotaResource, Tenant, Theme
from ..plans import tenant_limits
from .settings_schema import OrganizationSettingsSerializer
from .themes import ThemeSerializer

# The organization's `branding` keys -> Theme fields.
BRANDING_FIELDS = {
    "logo": "logo_url",
    "primaryColor": "primary_color",
    "secondaryColor": "secondary_color",
    "accentColor": "accent_color",
}


def theme_branding(theme: Theme | None, request=None) -> dict:
    """The organization's `branding` object (logo, primaryColor, secondaryColor, accentColor),
    read from the tenant's theme, or the theme's defaults when it has none or it is inactive
    (like the stylesheet); an uploaded logo's URL is absolute given the request."""
    if theme is None or not theme.is_active:
        return dict(_default_branding())
    return {
        "logo": theme.logo_in_use(request),
        "primaryColor": theme.primary_color,
        "secondaryColor": theme.secondary_color,
        "accentColor": theme.accent_color,
    }


@functools.cache
def _default_branding() -> tuple[tuple[str, str], ...]:
    """What a new theme shows, from the model's field defaults (no uploaded logo), read once:
    making a Theme for them was a third of serializing an unthemed organization."""
    return tuple(
        (key, Theme._meta.get_field(field).get_default()) for key, field in BRANDING_FIELDS.items()
    )


class OrganizationSerializer(ModelSerializer):
    """The current organization: profile, status, plan tier (`subscription_tier`), settings,
    branding, member and document counts and the API quota; reads a tenant annotated
    `with_member_count().with_quota_usage()`."""

    member_count = serializers.IntegerField(read_only=True)
    document_count = serializers.SerializerMethodField()
    branding = serializers.SerializerMethodField()
    subscription_tier = CharField(source="plan", read_only=True)
    api_quota_limit = serializers.SerializerMethodField()
    api_quota_used = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "plan",
            "subscription_tier",
            "status",
            "settings",
            "branding",
            "created_at",
            "updated_at",
            "member_count",
            "document_count",
            "api_quota_limit",
            "api_quota_used",
            "trial_ends_at",
        ]
        read_only_fields = fields

    def get_branding(self, tenant) -> dict:
        return theme_branding(getattr(tenant, "theme", None), self.context.get("request"))

    def get_document_count(self, tenant) -> int:
        return tenant.documents_used

    def get_api_quota_limit(self, tenant) -> int:
        return tenant_limits(tenant)[QuotaResource.API_CALLS]

    def get_api_quota_used(self, tenant) -> int:
        return tenant.api_calls_used


class OrganizationUpdateSerializer(Serializer):
    """PUT replaces name, description and settings (omitted settings become {}); PATCH changes
    what it names, and merges `settings` key by key (null removes a key). `branding` sets the
    keys it names on the tenant's theme, checked like organizations/theme."""

    name = NameField(max_length=200)
    description = DescriptionField(required=False, default="")
    # Figures that move with every request in the tenant (OrganizationSerializer's).
    live_fields = ("member_count", "document_count", "api_quota_used", "updated_at")
    settings = ObjectField(required=False, default=dict)
    branding = ObjectField(required=False)

    def validate_branding(self, value):
        unknown = sorted(set(value) - set(BRANDING_FIELDS))
        if unknown:
            allowed = ", ".join(BRANDING_FIELDS)
            raise serializers.ValidationError(
                {key: [f"Unknown branding key. Allowed: {allowed}."] for key in unknown}
            )
        data = {BRANDING_FIELDS[key]: item for key, item in value.items()}
        theme = Theme.objects.filter(tenant=self.instance).first()
        # The organization's representation is not the theme's.
        context = {key: value for key, value in self.context.items() if key != "representation"}
        checked = ThemeSerializer(theme, data=data, partial=True, context=context)
        if not checked.is_valid():
            by_field = {field: key for key, field in BRANDING_FIELDS.items()}
            raise serializers.ValidationError(
                {by_field.get(field, field): errors for field, errors in checked.errors.items()}
            )
        return checked.validated_data

    def validate_settings(self, value):
        # A PATCH's keys (None removes one) are merged into the settings by the service, under
        # the tenant's lock, so two PATCHes of different keys at once both keep theirs.
        schema = OrganizationSettingsSerializer(data=value, partial=self.partial)
        schema.is_valid(raise_exception=True)
        return schema.validated_data
