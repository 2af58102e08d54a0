from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from tenants.api import PlatformViewSet
from tenants.permissions import AUTHENTICATED, PUBLIC
from tenants.resolution import TenantMode

from . import services
from .serializers import MeSerializer, TokenObtainSerializer, TokenSerializer


class AuthViewSet(PlatformViewSet):
    """Obtaining credentials and describing the caller."""

    required_permissions = {"token": PUBLIC, "me": AUTHENTICATED}
    tenant_mode = TenantMode.OPTIONAL
    anonymous_throttle_scope = "auth"

    def get_authenticators(self):
        # Obtaining a token must work whatever stale credentials the client still sends.
        if self.request is not None and self.request.method == "POST":
            return []
        return super().get_authenticators()

    @extend_schema(
        request=TokenObtainSerializer,
        responses={200: TokenSerializer},
        auth=[],
        summary="Exchange email (or username) and password for an API token",
    )
    @action(
        detail=False, methods=["post"], url_path="token", serializer_class=TokenObtainSerializer
    )
    def token(self, request):
        serializer = TokenObtainSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        identifier = serializer.validated_data["identifier"]
        user = authenticate(
            request=request._request,
            username=identifier,
            password=serializer.validated_data["password"],
        )
        if user is None:
            services.auth_login_failed(identifier=identifier)
            raise ValidationError(
                {"non_field_errors": ["Unable to log in with the provided credentials."]}
            )
        return Response({"token": services.auth_token_issue(user=user)}, status=status.HTTP_200_OK)

    @extend_schema(responses={200: MeSerializer}, summary="The caller and their permissions")
    @action(detail=False, methods=["get"], url_path="me", serializer_class=MeSerializer)
    def me(self, request):
        memberships = request.user.memberships.select_related("tenant").order_by("tenant__name")
        tenant = request.tenant
        data = {
            "user": request.user,
            "memberships": list(memberships),
            "tenant": tenant,
            "role": request.membership.role if request.membership else None,
            "permissions": sorted(request.permissions),
        }
        return Response(MeSerializer(data).data)
