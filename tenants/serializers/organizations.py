"""The current organization (seeds 000, 004), its settings schema and its quotas."""

from rest_framework import serializers

from ..models import Tenant, Theme


def theme_branding(theme: Theme) -> dict:
    """Seed 000's `branding` object, read from the tenant's theme."""
    return {
        "logo": theme.logo.url if theme.logo else theme.logo_url,
        "primaryColor": theme.primary_color,
        "secondaryColor": theme.secondary_color,
        "accentColor": theme.accent_color,
    }


class OrganizationSerializer(serializers.ModelSerializer):
    """Seed 000's current-organization shape."""

    member_count = serializers.IntegerField(read_only=True)
    branding = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "plan",
            "status",
            "settings",
            "branding",
            "created_at",
            "updated_at",
            "member_count",
            "trial_ends_at",
        ]
        read_only_fields = fields

    def get_branding(self, tenant) -> dict:
        return theme_branding(getattr(tenant, "theme", None) or Theme(tenant=tenant))
