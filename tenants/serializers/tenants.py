from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.serializers import (
    ChoiceField,
    DescriptionField,
    DomainField,
    ModelSerializer,
    NameField,
    ObjectField,
    PhoneField,
    SlugField,
)

from ..models import PlanTier, Tenant
from ..services.lifecycle import SLUG_TAKEN, slug_in_use
from ..services.quotas import annotated_quota_states
from .quotas import TenantQuotaSerializer
from .settings_schema import OrganizationSettingsSerializer


def tenant_quota(tenant: Tenant) -> tuple:
    """(tenant, quota states) from a tenant annotated with its member count and usage."""
    return tenant, annotated_quota_states(tenant)


# Lifecycle fields (status, timestamps) change through lifecycle services, never a request body.
_TENANT_WRITABLE_FIELDS = frozenset(
    {"name", "slug", "domain", "subscription_tier", "contact_email", "contact_name",
     "contact_phone", "billing_email"}
)  # fmt: skip


class _TenantProfileSerializer(ModelSerializer):
    """The profile fields both tenant serializers write, with their text rules."""

    name = NameField(max_length=200)
    domain = DomainField(required=False, allow_blank=True)
    contact_name = NameField(required=False, allow_blank=True)
    contact_phone = PhoneField(required=False, allow_blank=True)

    class Meta:
        model = Tenant
        fields = ["name", "domain", "contact_name", "contact_phone"]


class TenantSerializer(_TenantProfileSerializer):
    """A tenant as the directory shows it; `subscription_tier` is the plan tier, which only
    platform staff may set above the free tier (tenants.services.lifecycle.tenant_create)."""

    subscription_tier = ChoiceField(source="plan", choices=PlanTier.choices, default=PlanTier.FREE)
    slug = SlugField(max_length=63, required=False)
    user_count = serializers.IntegerField(source="member_count", read_only=True)
    quota = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = [
            "id",
            "name",
            "slug",
            "domain",
            "status",
            "subscription_tier",
            "contact_email",
            "contact_name",
            "contact_phone",
            "billing_email",
            "created_at",
            "updated_at",
            "activated_at",
            "suspended_at",
            "suspension_reason",
            "cancelled_at",
            "trial_ends_at",
            "settings",
            "quota",
            "user_count",
        ]
        read_only_fields = [name for name in fields if name not in _TENANT_WRITABLE_FIELDS]

    @extend_schema_field(TenantQuotaSerializer)
    def get_quota(self, tenant) -> dict:
        return TenantQuotaSerializer(tenant_quota(tenant)).data

    def validate_slug(self, value):
        # Slugs are lowercase, so "ACME" and "acme" can never name two tenants.
        value = value.lower()
        if slug_in_use(value):
            raise serializers.ValidationError(SLUG_TAKEN)
        return value


class TenantUpdateSerializer(_TenantProfileSerializer):
    """PATCH tenants/{slug}: profile, tier (staff) and settings (merged key by key)."""

    subscription_tier = ChoiceField(source="plan", choices=PlanTier.choices)
    slug = SlugField(max_length=63)
    description = DescriptionField()
    settings = ObjectField()
    # Figures that move with every request (TenantSerializer's).
    live_fields = ("quota", "user_count", "updated_at")

    class Meta:
        model = Tenant
        fields = [
            "name",
            "slug",
            "description",
            "domain",
            "subscription_tier",
            "contact_email",
            "contact_name",
            "contact_phone",
            "billing_email",
            "settings",
        ]

    def validate_slug(self, value):
        value = value.lower()
        if slug_in_use(value, excluding=self.instance):
            raise serializers.ValidationError(SLUG_TAKEN)
        return value

    def validate_settings(self, value):
        # The keys to change (None removes one), merged by the service under the tenant's lock.
        schema = OrganizationSettingsSerializer(data=value, partial=True)
        schema.is_valid(raise_exception=True)
        return schema.validated_data
