"""The typed schema of an organization's `settings`: data residency, compliance and integration
flags, per-tenant limits, the hourly rate and the default AI model.

Every key is optional; unknown keys are refused by name, values are strictly typed (a limit is
a JSON integer, not "5" or 5.0 or true). Limits above the plan tier need staff: that rule is in
tenants.services.lifecycle.check_limit_settings, because it depends on who is asking.
"""

from rest_framework import serializers

from config.serializers import ChoiceField, Serializer

from .fields import StrictBooleanField

DATA_RESIDENCY_REGIONS = ("eu", "us", "uk", "ca", "au", "apac")
# The AI models the playground's gateway serves, by name.
SUPPORTED_AI_MODELS = (
    "gpt-4",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "o1-preview",
    "o1-mini",
    "claude-3-opus",
    "claude-3-sonnet",
    "claude-3-haiku",
)
MAX_LIMIT = 10**12
# The support desk's representative roles (support.models.RepresentativeRole; a test keeps
# them equal): the keys of support_refund_authority_cents.
REPRESENTATIVE_ROLES = ("JUNIOR_SUPPORT", "SENIOR_SUPPORT", "TEAM_LEAD", "ADMIN")


class StrictPositiveIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "Must be a whole number (a JSON integer)."}

    def __init__(self, **kwargs):
        super().__init__(min_value=1, max_value=MAX_LIMIT, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictAmountField(serializers.IntegerField):
    default_error_messages = {"invalid": "Must be a whole number of cents (a JSON integer)."}

    def __init__(self, **kwargs):
        super().__init__(min_value=0, max_value=MAX_LIMIT, **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class RefundAuthorityField(serializers.DictField):
    """{representative role: the most, in cents, a representative of that role may approve
    as a refund}; a role not named has no authority."""

    def __init__(self, **kwargs):
        super().__init__(child=StrictAmountField(), **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in REPRESENTATIVE_ROLES)
            if unknown:
                allowed = ", ".join(REPRESENTATIVE_ROLES)
                raise serializers.ValidationError(
                    {key: [f"Not a role. One of {allowed}."] for key in unknown}
                )
        return super().to_internal_value(data)


class OrganizationSettingsSerializer(Serializer):
    """One organization's settings. With `partial`, a key set to null is removed."""

    dataResidency = ChoiceField(choices=DATA_RESIDENCY_REGIONS, required=False)
    hdsCompliant = StrictBooleanField(required=False)
    maxDocuments = StrictPositiveIntegerField(required=False)
    maxUsers = StrictPositiveIntegerField(required=False)
    maxTokensPerMonth = StrictPositiveIntegerField(required=False)
    maxStorageMB = StrictPositiveIntegerField(required=False)
    # Negotiated limits (custom plans); above the tier they need staff like the others.
    maxApiCallsPerMonth = StrictPositiveIntegerField(required=False)
    rateLimitPerHour = StrictPositiveIntegerField(required=False)
    default_ai_model = ChoiceField(choices=SUPPORTED_AI_MODELS, required=False)
    integration_enabled = StrictBooleanField(required=False)
    # Support desk: a new ticket without an assignee goes to the online representative with the
    # most free capacity (support.services.tickets).
    support_auto_assign = StrictBooleanField(required=False)
    # Support desk: apply the enabled decision rules to tickets as they are created and changed.
    support_apply_rules = StrictBooleanField(required=False)
    # Support: the most each representative role may approve as one refund, in cents
    # ({"SENIOR_SUPPORT": 5000, "TEAM_LEAD": 50000}); billing.write approves any amount.
    support_refund_authority_cents = RefundAuthorityField(required=False)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Settings must be an object."]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {
                    key: [f"Unknown setting. Allowed: {', '.join(sorted(self.fields))}."]
                    for key in unknown
                }
            )
        removed = [key for key, value in data.items() if value is None]
        if removed and not self.partial:
            raise serializers.ValidationError(
                {key: ["May not be null (omit the key instead)."] for key in removed}
            )
        values = super().to_internal_value({k: v for k, v in data.items() if v is not None})
        return {**values, **dict.fromkeys(removed)}
