"""Serializers of the support app: the request bodies the API accepts and
the shapes it answers with.

Each derives from `config.serializers` (`ModelSerializer`, `Serializer`, `ResponseSerializer`
for a shape only ever answered), so text is strict and an unwritable key is a 400;
tests/api/test_serializer_rules.py walks them all. No serializer writes `tenant` (the view
sets it), and a reference to another tenant-owned object is a
`tenants.serializers.fields.TenantScopedPrimaryKeyRelatedField`, so another tenant's id is
refused like a random one. Serializers check shapes; rules are the services'.
"""

import zoneinfo

import pycountry
from rest_framework import serializers

from config.serializers import (
    CharField,
    ChoiceField,
    EmailField,
    JSONObjectField,
    ModelSerializer,
    PersonSerializer,
    Serializer,
    WholeObjectField,
)

from .models import (
    CustomerProfile,
    Representative,
    RepresentativeRole,
    RepresentativeStatus,
    SlaPolicy,
)

# A customer's `context`, once encoded.
CONTEXT_MAX_BYTES = 16_384
# Counters fit PostgreSQL's bigint.
BIGINT_MAX = 2**63 - 1
# A representative holds at most this many tickets at once.
MAX_CHATS_LIMIT = 100
# SLA targets: at most a year.
MINUTES_MAX = 525_600


class CustomerProfileSerializer(ModelSerializer):
    """A customer of the organization: who they are, their plan with it, their usage and the
    context its support team sees."""

    email = EmailField(max_length=254)
    lifetime_value_cents = serializers.IntegerField(
        min_value=0, max_value=BIGINT_MAX, required=False
    )
    token_balance = serializers.IntegerField(min_value=0, max_value=BIGINT_MAX, required=False)
    token_limit = serializers.IntegerField(min_value=0, max_value=BIGINT_MAX, required=False)
    active_sites = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    sites_limit = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    context = JSONObjectField(max_bytes=CONTEXT_MAX_BYTES, required=False)
    currency = CharField(min_length=3, max_length=3, required=False, help_text="ISO 4217.")

    class Meta:
        model = CustomerProfile
        fields = [
            "id",
            "name",
            "email",
            "tier",
            "standing",
            "lifetime_value_cents",
            "currency",
            "token_balance",
            "token_limit",
            "active_sites",
            "sites_limit",
            "billing_cycle",
            "context",
            "external_id",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}, "external_id": {"validators": []}}

    live_fields = ("updated_at",)

    def validate_currency(self, value):
        value = value.upper()
        if pycountry.currencies.get(alpha_3=value) is None:
            raise serializers.ValidationError("Not an ISO 4217 currency code.")
        return value


class RepresentativeSerializer(ModelSerializer):
    """A representative as every answer shows them, with their load."""

    user_id = serializers.UUIDField(read_only=True)
    user = PersonSerializer(read_only=True)
    free_capacity = serializers.IntegerField(
        read_only=True, help_text="max_chats - active_chats, never below 0."
    )

    class Meta:
        model = Representative
        fields = [
            "id",
            "user_id",
            "user",
            "role",
            "status",
            "last_active_at",
            "max_chats",
            "active_chats",
            "free_capacity",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class RepresentativeUpdateSerializer(ModelSerializer):
    """Role, presence and capacity; ONLINE or AWAY stamps last_active_at."""

    role = ChoiceField(choices=RepresentativeRole.choices, required=False)
    status = ChoiceField(choices=RepresentativeStatus.choices, required=False)
    max_chats = serializers.IntegerField(min_value=1, max_value=MAX_CHATS_LIMIT, required=False)

    class Meta:
        model = Representative
        fields = ["role", "status", "max_chats"]

    live_fields = ("updated_at", "last_active_at", "active_chats", "free_capacity")


class RepresentativeCreateSerializer(RepresentativeUpdateSerializer):
    user_id = serializers.UUIDField(help_text="The user id of an active member.")

    class Meta(RepresentativeUpdateSerializer.Meta):
        fields = ["user_id", "role", "status", "max_chats"]

    def validate(self, attrs):
        attrs["user"] = attrs.pop("user_id")
        return attrs


class BusinessHoursSerializer(Serializer):
    weekdays = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6),
        min_length=1,
        max_length=7,
        help_text="The working days, Monday 0 to Sunday 6.",
    )
    start = serializers.TimeField(format="%H:%M", input_formats=["%H:%M"], help_text='"09:00"')
    end = serializers.TimeField(format="%H:%M", input_formats=["%H:%M"], help_text='"17:00"')
    time_zone = CharField(max_length=64, help_text='An IANA time zone ("Europe/Paris").')

    def validate_weekdays(self, value):
        if len(set(value)) != len(value):
            raise serializers.ValidationError("A day is listed twice.")
        return sorted(value)

    def validate_time_zone(self, value):
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError("Not an IANA time zone.") from None
        return value

    def validate(self, attrs):
        if attrs["start"] >= attrs["end"]:
            raise serializers.ValidationError({"end": ["After start (the same day)."]})
        return attrs


class SlaPolicySerializer(ModelSerializer):
    """The targets of one ticket priority; business hours or around the clock (null)."""

    first_response_minutes = serializers.IntegerField(min_value=1, max_value=MINUTES_MAX)
    resolution_minutes = serializers.IntegerField(min_value=1, max_value=MINUTES_MAX)
    business_hours = WholeObjectField(
        BusinessHoursSerializer,
        required=False,
        allow_null=True,
        help_text='{"weekdays": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00", '
        '"time_zone": "Europe/Paris"}, or null for around the clock.',
    )

    class Meta:
        model = SlaPolicy
        fields = [
            "id",
            "name",
            "priority",
            "first_response_minutes",
            "resolution_minutes",
            "business_hours",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"name": {"validators": []}}

    live_fields = ("updated_at",)
