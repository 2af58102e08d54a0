from django.contrib.auth import authenticate, user_logged_in
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from config.schema import ErrorEnvelopeSerializer
from tenants.api import PlatformViewSet, TenantCrudViewSet
from tenants.models import Role
from tenants.permissions import (
    AUTHENTICATED,
    PUBLIC,
    ROLE_PERMISSIONS,
    permissions_as_object,
)
from tenants.resolution import TenantMode

from . import lockout, services
from .models import APIKey
from .serializers import (
    APIKeyCreatedSerializer,
    APIKeyCreateSerializer,
    APIKeySerializer,
    APIKeyUpdateSerializer,
    APIKeyUsageSerializer,
    LoginResponseSerializer,
    LoginSerializer,
    LogoutSerializer,
    MeSerializer,
    MessageSerializer,
    RefreshSerializer,
    RoleSerializer,
    TokenObtainSerializer,
    TokenPairSerializer,
    TokenSerializer,
)

_INVALID_CREDENTIALS = "Unable to log in with the provided credentials."
# Actions that obtain credentials: they run without authentication, so that stale or broken
# credentials a client still sends never block logging in.
_CREDENTIAL_FREE_ACTIONS = frozenset({"token", "login", "refresh"})


def _authenticate(request, *, identifier: str, password: str, method: str):
    """The user with these credentials, or the 400 / lockout 429 answer (audited either way).

    Goes through django.contrib.auth.authenticate with the request, so django-axes counts the
    failure and refuses a locked account+address pair even with the right password.
    """
    django_request = request._request
    user = authenticate(request=django_request, username=identifier, password=password)
    if user is not None:
        # Axes clears this pair's failures; Django records last_login.
        user_logged_in.send(sender=user.__class__, request=django_request, user=user)
        return user
    locked_out = bool(getattr(django_request, "axes_locked_out", False))
    services.auth_login_failed(identifier=identifier, method=method, locked_out=locked_out)
    if locked_out:
        django_request.lockout_answered = True
        raise services.LoginLocked(
            lockout.LOCKED_MESSAGE,
            retry_after=lockout.retry_after_seconds(django_request, identifier),
        )
    raise ValidationError({"non_field_errors": [_INVALID_CREDENTIALS]})


_LOCKED_RESPONSE = OpenApiResponse(
    ErrorEnvelopeSerializer,
    description="Locked out after too many failed logins (RATE_LIMIT_EXCEEDED, Retry-After).",
)


class AuthViewSet(PlatformViewSet):
    """Obtaining and ending credentials, and describing the caller."""

    required_permissions = {
        "token": PUBLIC,
        "login": PUBLIC,
        "refresh": PUBLIC,
        "logout": AUTHENTICATED,
        "me": AUTHENTICATED,
    }
    tenant_mode = TenantMode.OPTIONAL
    anonymous_throttle_scope = "auth"
    # An API key may describe itself; it cannot log out (revoke it instead).
    api_key_actions = frozenset({"me"})

    def get_authenticators(self):
        request = self.request
        actions = getattr(self, "action_map", None) or {}
        if request is not None and actions.get(request.method.lower()) in _CREDENTIAL_FREE_ACTIONS:
            return []
        return super().get_authenticators()

    @extend_schema(
        request=TokenObtainSerializer,
        responses={200: TokenSerializer, 429: _LOCKED_RESPONSE},
        auth=[],
        summary="Exchange email (or username) and password for an API token",
    )
    @action(
        detail=False, methods=["post"], url_path="token", serializer_class=TokenObtainSerializer
    )
    def token(self, request):
        serializer = TokenObtainSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = _authenticate(
            request,
            identifier=serializer.validated_data["identifier"],
            password=serializer.validated_data["password"],
            method="token",
        )
        return Response({"token": services.auth_token_issue(user=user)}, status=status.HTTP_200_OK)

    @extend_schema(
        request=LoginSerializer,
        responses={200: LoginResponseSerializer, 429: _LOCKED_RESPONSE},
        auth=[],
        summary="Log in with email and password: a JWT access and refresh token",
    )
    @action(detail=False, methods=["post"], url_path="login", serializer_class=LoginSerializer)
    def login(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = _authenticate(
            request,
            identifier=serializer.validated_data["identifier"],
            password=serializer.validated_data["password"],
            method="jwt",
        )
        return Response(LoginResponseSerializer(services.jwt_login(user=user)).data)

    @extend_schema(
        request=RefreshSerializer,
        responses={
            200: TokenPairSerializer,
            401: OpenApiResponse(
                ErrorEnvelopeSerializer,
                description="Invalid, expired or already used refresh token.",
            ),
        },
        auth=[],
        summary="Exchange a refresh token for a new access token and a rotated refresh token",
    )
    @action(detail=False, methods=["post"], url_path="refresh", serializer_class=RefreshSerializer)
    def refresh(self, request):
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        pair = services.jwt_refresh(refresh_token=serializer.validated_data["refresh_token"])
        return Response(TokenPairSerializer(pair).data)

    @extend_schema(
        request=LogoutSerializer,
        responses={200: MessageSerializer},
        summary="Log out: blacklist the refresh token; delete the token used to call",
    )
    @action(detail=False, methods=["post"], url_path="logout", serializer_class=LogoutSerializer)
    def logout(self, request):
        serializer = LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.auth_logout(
            user=request.user,
            credential=request.auth,
            refresh_token=serializer.validated_data.get("refresh_token"),
        )
        return Response({"message": "Successfully logged out"})

    @extend_schema(responses={200: MeSerializer}, summary="The caller and their permissions")
    @action(detail=False, methods=["get"], url_path="me", serializer_class=MeSerializer)
    def me(self, request):
        api_key = request.auth if isinstance(request.auth, APIKey) else None
        if api_key is not None:
            # A key sees its own organization only, not where else its creator belongs.
            memberships = [request.membership]
        else:
            memberships = request.user.memberships.select_related("tenant").order_by("tenant__name")
        data = {
            "user": request.user,
            "memberships": list(memberships),
            "tenant": request.tenant,
            "role": request.membership.role if request.membership else None,
            "permissions": sorted(request.permissions),
            "api_key": api_key,
        }
        return Response(MeSerializer(data).data)


class RoleViewSet(PlatformViewSet):
    """The roles and the permissions each grants by default (tenants.permissions)."""

    serializer_class = RoleSerializer
    required_permissions = {"list": AUTHENTICATED}
    filter_backends = ()

    def get_queryset(self):
        """The roles, from the table in code (no database rows)."""
        return [
            {
                "role": role.value,
                "name": role.label,
                "permissions": sorted(ROLE_PERMISSIONS[role]),
                "permissions_object": permissions_as_object(ROLE_PERMISSIONS[role]),
            }
            for role in Role
        ]

    @extend_schema(responses={200: RoleSerializer(many=True)}, summary="Roles and permissions")
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(RoleSerializer(page, many=True).data)


@extend_schema_view(destroy=extend_schema(summary="Revoke the key (kept, inactive)"))
class APIKeyViewSet(TenantCrudViewSet):
    """The tenant's API keys. Keys are managed by people: an API key as the
    credential is refused here. DELETE revokes (the row and its usage stay)."""

    queryset = APIKey.objects.all()
    serializer_class = APIKeySerializer
    permission_area = "keys"
    required_permissions = {"usage": "keys.read", "revoke": "keys.write"}
    api_key_actions = frozenset()
    filterset_fields = ("is_active",)
    search_fields = ("name", "key_prefix")
    ordering_fields = ("created_at", "name", "last_used_at")
    create_serializer_class = APIKeyCreateSerializer
    create_output_serializer_class = APIKeyCreatedSerializer
    update_serializer_class = APIKeyUpdateSerializer
    update_service = services.api_key_update
    destroy_service = services.api_key_revoke
    service_object_name = "api_key"

    def perform_service_create(self, data):
        tenant = self.request.tenant
        api_key, raw = self.call_service(services.api_key_create, tenant=tenant, **data)
        # The only time the full key is shown (APIKeyCreatedSerializer).
        api_key.raw_key = raw
        return api_key

    @extend_schema(request=None, responses={200: APIKeySerializer}, summary="Revoke the key")
    @action(detail=True, methods=["post"], url_path="revoke")
    def revoke(self, request, pk=None):
        api_key = services.api_key_revoke(api_key=self.get_object(), actor=request.user)
        return Response(APIKeySerializer(api_key).data)

    @extend_schema(responses={200: APIKeyUsageSerializer}, summary="Usage statistics")
    @action(detail=True, methods=["get"], url_path="usage")
    def usage(self, request, pk=None):
        return Response(
            APIKeyUsageSerializer(services.api_key_usage(api_key=self.get_object())).data
        )
