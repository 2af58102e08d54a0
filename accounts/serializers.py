from datetime import timedelta

from django.utils import timezone
from rest_framework import serializers

from config.serializers import (
    CharField,
    ChoiceField,
    EmailField,
    ListedField,
    ModelSerializer,
    NameField,
    ResponseSerializer,
    Serializer,
)
from tenants.models import Membership
from tenants.permissions import KNOWN_SCOPES

from .models import APIKey, User


class TokenObtainSerializer(Serializer):
    """Credentials for a token: `username` or `email` (either names the account), and `password`."""

    username = CharField(required=False, max_length=254, write_only=True)
    email = EmailField(required=False, write_only=True)
    password = CharField(max_length=4096, write_only=True, style={"input_type": "password"})

    def validate(self, attrs):
        identifier = attrs.get("email") or attrs.get("username")
        if not identifier:
            raise serializers.ValidationError({"email": ["Provide an email (or username)."]})
        attrs["identifier"] = identifier.strip().lower()
        return attrs


class TokenSerializer(ResponseSerializer):
    token = CharField(read_only=True)


class UserSerializer(ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "email", "name", "is_staff", "date_joined"]
        read_only_fields = fields


class MembershipTenantSerializer(ResponseSerializer):
    id = serializers.UUIDField(source="tenant.id")
    slug = CharField(source="tenant.slug")
    name = CharField(source="tenant.name")
    status = CharField(source="tenant.status")


class MyMembershipSerializer(ModelSerializer):
    tenant = MembershipTenantSerializer(source="*", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "tenant", "role", "status", "joined_at"]
        read_only_fields = fields


class CurrentTenantSerializer(ResponseSerializer):
    id = serializers.UUIDField()
    slug = CharField()
    name = CharField()
    status = CharField()


class MeAPIKeySerializer(ResponseSerializer):
    """The API key the caller authenticated with."""

    id = serializers.UUIDField()
    name = CharField()
    key_prefix = CharField()
    scopes = serializers.ListField(child=CharField())


class MeSerializer(ResponseSerializer):
    """The caller, their memberships and their effective permissions in the current tenant."""

    user = UserSerializer()
    memberships = MyMembershipSerializer(many=True)
    tenant = CurrentTenantSerializer(allow_null=True)
    role = CharField(allow_null=True)
    permissions = serializers.ListField(child=CharField())
    api_key = MeAPIKeySerializer(
        allow_null=True, help_text="The API key used for this request, when it was one."
    )


# JWT ---------------------------------------------------------------------------------------


class LoginSerializer(Serializer):
    email = EmailField(write_only=True)
    password = CharField(max_length=4096, write_only=True, style={"input_type": "password"})

    def validate(self, attrs):
        attrs["identifier"] = attrs["email"].strip().lower()
        return attrs


class TokenPairSerializer(ResponseSerializer):
    access_token = CharField(help_text="JWT for `Authorization: Bearer <token>`.")
    refresh_token = CharField(
        help_text="Exchange at POST /api/v1/auth/refresh; single use (rotated)."
    )
    token_type = ChoiceField(choices=["bearer"])
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class LoginUserSerializer(ResponseSerializer):
    id = serializers.UUIDField()
    email = EmailField()
    name = CharField(allow_blank=True)
    organization_id = serializers.UUIDField(
        allow_null=True, help_text="The user's only active organization, else null."
    )
    role = CharField(allow_null=True)


class LoginResponseSerializer(TokenPairSerializer):
    user = LoginUserSerializer()


class RefreshSerializer(Serializer):
    refresh_token = CharField(max_length=4096, write_only=True)


class LogoutSerializer(Serializer):
    refresh_token = CharField(
        max_length=4096,
        required=False,
        write_only=True,
        help_text="The JWT session to end; optional when calling with a token from auth/token/.",
    )


class MessageSerializer(ResponseSerializer):
    message = CharField()


# Roles -------------------------------------------------------------------------------------


class RoleSerializer(ResponseSerializer):
    role = CharField()
    name = CharField()
    permissions = serializers.ListField(child=CharField(), help_text="Sorted.")
    permissions_object = serializers.DictField(
        child=serializers.DictField(child=serializers.BooleanField()),
        help_text='Permission object: area -> action -> bool, e.g. {"documents": {"read": true}}',
    )


# API keys ----------------------------------------------------------------------------------


class APIKeySerializer(ModelSerializer):
    """A key as listed: masked (`key_prefix`), never the key or its hash."""

    organization_id = serializers.UUIDField(source="tenant_id", read_only=True)
    user_id = serializers.UUIDField(source="created_by_id", read_only=True, allow_null=True)
    scopes = serializers.ListField(child=CharField(), read_only=True)

    class Meta:
        model = APIKey
        fields = [
            "id",
            "organization_id",
            "user_id",
            "name",
            "key_prefix",
            "scopes",
            "is_active",
            "expires_at",
            "revoked_at",
            "usage_count",
            "last_used_at",
            "monthly_token_budget",
            "budget_tokens_used",
            "budget_period",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class APIKeyCreatedSerializer(APIKeySerializer):
    """The creation answer: the only time the full key is shown."""

    key = CharField(
        source="raw_key", read_only=True, help_text="The full key. Shown once; store it now."
    )

    class Meta(APIKeySerializer.Meta):
        fields = [*APIKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


_SCOPES_HELP = (
    '"read" (every *.read permission), "write" (every other permission) or permission '
    'strings such as "documents.read".'
)


def _scopes_field() -> serializers.ListField:
    return serializers.ListField(
        # The service checks them (accounts.services); the schema lists them.
        child=ListedField(codes=lambda: KNOWN_SCOPES, max_length=64),
        allow_empty=False,
        max_length=64,
        help_text=_SCOPES_HELP,
    )


_BUDGET_HELP = (
    "Optional cap on the gateway tokens calls through this key may use per calendar month "
    "(UTC); null for none (the organization's tokens quota still applies)."
)


def _budget_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=10**12, help_text=_BUDGET_HELP
    )


class APIKeyCreateSerializer(Serializer):
    name = NameField(max_length=200)
    scopes = _scopes_field()
    monthly_token_budget = _budget_field()
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    expires_days = serializers.IntegerField(
        required=False, min_value=1, max_value=3650, help_text="Alternative to expires_at."
    )

    def validate(self, attrs):
        days = attrs.pop("expires_days", None)
        if days is not None:
            if attrs.get("expires_at") is not None:
                raise serializers.ValidationError(
                    {"expires_days": ["Give expires_at or expires_days, not both."]}
                )
            attrs["expires_at"] = timezone.now() + timedelta(days=days)
        return attrs


class APIKeyUpdateSerializer(Serializer):
    name = NameField(max_length=200)
    scopes = _scopes_field()
    is_active = serializers.BooleanField(required=False)
    monthly_token_budget = _budget_field()


class APIKeyUsageSerializer(ResponseSerializer):
    total_requests = serializers.IntegerField()
    success_requests = serializers.IntegerField()
    failed_requests = serializers.IntegerField(help_text="Responses with status 400 or above.")
    avg_response_time_ms = serializers.FloatField()
    requests_by_endpoint = serializers.DictField(
        child=serializers.IntegerField(), help_text="Route template -> requests."
    )
