from rest_framework import serializers

from ..models import PlanTier, Tenant

# Lifecycle fields (status, timestamps) change through lifecycle services, never a request body.
_TENANT_WRITABLE_FIELDS = frozenset(
    {"name", "slug", "domain", "subscription_tier", "contact_email", "contact_name",
     "contact_phone", "billing_email"}
)  # fmt: skip


class TenantSerializer(serializers.ModelSerializer):
    """Seed 002's tenant shape; `subscription_tier` is the plan tier."""

    subscription_tier = serializers.ChoiceField(
        source="plan", choices=PlanTier.choices, default=PlanTier.FREE
    )
    slug = serializers.SlugField(max_length=63, required=False)
    user_count = serializers.IntegerField(source="member_count", read_only=True)

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
            "trial_ends_at",
            "settings",
            "user_count",
        ]
        read_only_fields = [name for name in fields if name not in _TENANT_WRITABLE_FIELDS]

    def validate_slug(self, value):
        # Slugs are lowercase, so "ACME" and "acme" can never name two tenants.
        value = value.lower()
        if Tenant.objects.filter(slug=value).exists():
            raise serializers.ValidationError("An organization with this slug already exists.")
        return value
