"""Serializers of the notifications app: the request bodies the API accepts and the shapes it
answers with (webhook endpoints, deliveries and attempts, the event catalogue, notifications
and preferences).

Serializers check shapes; the rules (SSRF guard, subscriptions, preferences) are the
services'.
"""

import json

from django.core.validators import RegexValidator
from rest_framework import serializers

from config.serializers import (
    CharField,
    ChoiceField,
    DescriptionField,
    JSONObjectField,
    ModelSerializer,
    NameField,
    PhoneField,
    ResponseSerializer,
    Serializer,
)
from tenants.models import Membership, MembershipStatus
from tenants.serializers.fields import StrictBooleanField

from . import targets
from .catalog import ALL_EVENTS, SUBSCRIBABLE
from .models import (
    Channel,
    Notification,
    NotificationPreference,
    NotificationStatus,
    NotificationType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

_EVENTS_HELP = (
    'Public event types (GET webhooks/event-types), or ["*"] for every one. Subscribing needs '
    "the permission each type names."
)
METADATA_MAX_BYTES = 4096


def _events_field(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=ChoiceField(choices=sorted(SUBSCRIBABLE | {ALL_EVENTS})),
        max_length=len(SUBSCRIBABLE) + 1,
        help_text=_EVENTS_HELP,
        **kwargs,
    )


class WebhookURLField(CharField):
    @property
    def request_pattern(self) -> str:
        return targets.url_pattern()


def _url_field(**kwargs) -> CharField:
    return WebhookURLField(
        max_length=2000,
        help_text=(
            "https URL whose host resolves only to public addresses (no loopback, private, "
            "link-local or reserved ones), without user or password. Redirects are not followed."
        ),
        **kwargs,
    )


class WebhookEndpointSerializer(ModelSerializer):
    """An endpoint as listed: never its secret."""

    organization_id = serializers.UUIDField(source="tenant_id", read_only=True)
    events = serializers.ListField(child=CharField(), read_only=True)
    created_by = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "organization_id",
            "name",
            "url",
            "description",
            "events",
            "is_active",
            "last_triggered_at",
            "last_success_at",
            "failure_count",
            "failing_since",
            "disabled_reason",
            "disabled_at",
            "previous_secret_expires_at",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookEndpointSecretSerializer(WebhookEndpointSerializer):
    """The answer to creating an endpoint or rotating its secret: the only times the secret is
    shown."""

    secret = CharField(
        read_only=True,
        help_text="The signing secret (whsec_...). Shown once; store it now.",
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointCreateSerializer(Serializer):
    name = NameField(max_length=100)
    url = _url_field()
    events = _events_field()
    description = DescriptionField(required=False, allow_blank=True)
    is_active = StrictBooleanField(required=False, default=True)
    secret_key = CharField(
        required=False,
        write_only=True,
        max_length=200,
        help_text="Your own signing secret (whsec_ + base64 of 24 to 64 bytes); one is "
        "generated when omitted.",
    )


class WebhookEndpointUpdateSerializer(Serializer):
    name = NameField(max_length=100)
    url = _url_field()
    events = _events_field()
    description = DescriptionField(required=False, allow_blank=True)
    is_active = StrictBooleanField(required=False)


class WebhookAttemptSerializer(ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = [
            "number",
            "succeeded",
            "status_code",
            "duration_ms",
            "response_excerpt",
            "error",
            "created_at",
        ]
        read_only_fields = fields


class WebhookDeliverySerializer(ModelSerializer):
    endpoint_id = serializers.UUIDField(read_only=True)
    event_id = serializers.UUIDField(read_only=True)
    payload = serializers.SerializerMethodField(help_text="The event's body as sent.")
    attempts = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "endpoint_id",
            "event_id",
            "event_type",
            "status",
            "attempt_count",
            "next_attempt_at",
            "last_attempt_at",
            "succeeded_at",
            "created_at",
            "payload",
            "attempts",
        ]
        read_only_fields = fields

    def get_payload(self, delivery) -> dict:
        return json.loads(delivery.event.body)


class WebhookTestResultSerializer(ResponseSerializer):
    delivery = WebhookDeliverySerializer()
    succeeded = serializers.BooleanField(help_text="Whether the receiver answered 2xx.")
    attempt = WebhookAttemptSerializer(
        allow_null=True, help_text="This call's attempt (null when the relay sent it first)."
    )


class ReplaySerializer(Serializer):
    since = serializers.DateTimeField(
        help_text="Queue every subscribed event recorded at or after this time."
    )


class ReplayResultSerializer(ResponseSerializer):
    queued = serializers.IntegerField(help_text="Events queued for the endpoint.")


class EventTypeSerializer(ResponseSerializer):
    type = CharField()
    description = CharField()
    permission = CharField(help_text="What a member needs to subscribe an endpoint to it.")
    roles = serializers.ListField(
        child=CharField(), help_text="The roles whose default permissions include it."
    )
    notify_roles = serializers.ListField(
        child=CharField(), help_text="Roles whose members are notified (per their preferences)."
    )
    subscribable = serializers.BooleanField()
    schema = serializers.DictField(help_text="JSON Schema of the event's `data`.")
    example = serializers.DictField(help_text="An example `data`.")


# Notifications ---------------------------------------------------------------------------------


class NotificationSerializer(ModelSerializer):
    user_id = serializers.UUIDField(source="recipient_id", read_only=True)
    sent_by = serializers.UUIDField(source="sent_by_id", read_only=True, allow_null=True)

    class Meta:
        model = Notification
        fields = [
            "id",
            "user_id",
            "title",
            "message",
            "type",
            "channel",
            "event_type",
            "metadata",
            "status",
            "is_read",
            "read_at",
            "sent_at",
            "sent_by",
            "created_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if instance.status == NotificationStatus.SENDING:
            # Its `sent_at` is the claim's time (the daily allowance counts it): not sent yet.
            data["sent_at"] = None
        return data


class NotificationSendSerializer(Serializer):
    user_id = serializers.UUIDField(help_text="An active member of the organization.")
    title = NameField(max_length=200)
    message = DescriptionField()
    type = ChoiceField(choices=NotificationType.choices, default=NotificationType.INFO)
    channel = ChoiceField(choices=Channel.choices, default=Channel.IN_APP)
    metadata = JSONObjectField(max_bytes=METADATA_MAX_BYTES, required=False, default=dict)

    def validate_user_id(self, value):
        membership = (
            Membership.objects.filter(
                tenant=self.context["tenant"], user_id=value, status=MembershipStatus.ACTIVE
            )
            .select_related("user")
            .first()
        )
        if membership is None:
            raise serializers.ValidationError("No active member of the organization has this id.")
        return membership.user

    def validate(self, attrs):
        attrs["recipient"] = attrs.pop("user_id")
        return attrs


class ReadAllResultSerializer(ResponseSerializer):
    updated = serializers.IntegerField(help_text="Notifications marked read.")


class NotificationPreferenceSerializer(ModelSerializer):
    email_enabled = StrictBooleanField()
    in_app_enabled = StrictBooleanField()
    sms_enabled = StrictBooleanField()
    phone_number = PhoneField(required=False, allow_blank=True)
    phone_number_confirmed = serializers.BooleanField(
        source="phone_confirmed",
        read_only=True,
        help_text="SMS goes to the number only once this is true: ask for a code "
        "(POST notifications/preferences/phone/code) and enter it "
        "(POST notifications/preferences/phone/confirm). Changing the number clears it.",
    )
    disabled_event_types = serializers.ListField(
        child=ChoiceField(choices=sorted(SUBSCRIBABLE)),
        required=False,
        max_length=len(SUBSCRIBABLE),
        help_text="Event types you are not notified of.",
    )

    class Meta:
        model = NotificationPreference
        fields = [
            "email_enabled",
            "in_app_enabled",
            "sms_enabled",
            "phone_number",
            "phone_number_confirmed",
            "disabled_event_types",
        ]

    def validate(self, attrs):
        sms = attrs.get("sms_enabled", getattr(self.instance, "sms_enabled", False))
        phone = attrs.get("phone_number", getattr(self.instance, "phone_number", ""))
        if sms and not phone:
            raise serializers.ValidationError(
                {"phone_number": ["SMS needs a phone number (E.164, e.g. +14155550100)."]}
            )
        return attrs


class PhoneCodeSentSerializer(ResponseSerializer):
    phone_number = serializers.CharField(help_text="The number the code was sent to.")
    expires_at = serializers.DateTimeField(help_text="The code works until then.")


class PhoneConfirmSerializer(Serializer):
    code = CharField(
        max_length=6,
        min_length=6,
        validators=[RegexValidator(r"^[0-9]{6}$", message="Enter the six digits of the code.")],
        help_text="The six-digit code sent by SMS.",
    )
