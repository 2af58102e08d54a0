"""OpenAPI generation: the error envelope on every operation, the tenant header on tenant-scoped
ones, and security taken from each action's required permission (API keys only where a key is
accepted: tenant-scoped, non-staff actions of views that take them)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from tenants.permissions import PUBLIC, STAFF, required_permission_for
from tenants.resolution import TENANT_HEADER, TENANT_QUERY_PARAM, TenantMode

from .exceptions import ERROR_CODES
from .serializers import CharField, ChoiceField, ResponseSerializer


class ErrorDetailSerializer(ResponseSerializer):
    code = ChoiceField(
        choices=list(ERROR_CODES),
        help_text="Machine-readable code: "
        + "; ".join(f"{code} ({status})" for code, (status, _) in ERROR_CODES.items())
        + ".",
    )
    message = CharField()
    details = serializers.DictField(help_text="Field errors or other structured detail.")
    request_id = CharField(help_text="Same value as the X-Request-ID header.")


class ErrorEnvelopeSerializer(ResponseSerializer):
    error = ErrorDetailSerializer()


_ERRORS = {
    "400": "Invalid input (VALIDATION_ERROR) or no tenant given (TENANT_REQUIRED).",
    "401": "Authentication required or credentials invalid (AUTHENTICATION_REQUIRED).",
    "403": "Permission missing (INSUFFICIENT_PERMISSIONS) or tenant suspended (TENANT_SUSPENDED).",
    "404": "No such resource in this tenant (RESOURCE_NOT_FOUND).",
    "405": "Method not allowed (METHOD_NOT_ALLOWED).",
    "406": "Requested format not available (NOT_ACCEPTABLE).",
    "409": "Conflicts with the current state (CONFLICT).",
    "413": "The request body is over the size limit (PAYLOAD_TOO_LARGE).",
    "415": "Unsupported media type (UNSUPPORTED_MEDIA_TYPE).",
    "429": "Rate limit (RATE_LIMIT_EXCEEDED) or quota (QUOTA_EXCEEDED) exhausted.",
    "500": "Unexpected server error (INTERNAL_ERROR).",
    "503": "A dependency is unavailable (SERVICE_UNAVAILABLE).",
}
_PUBLIC_ERRORS = ("400", "404", "405", "406", "413", "415", "429", "500")
API_KEY_SCHEME = "apiKeyAuth"


class ControlPlaneAutoSchema(AutoSchema):
    def _is_public(self) -> bool:
        permissions = getattr(self.view, "required_permissions", None)
        if permissions is None:
            return not getattr(self.view, "permission_classes", True)
        return required_permission_for(self.view, self.view.request) == PUBLIC

    def _accepts_api_keys(self) -> bool:
        accepts = getattr(self.view, "accepts_tenant_bound_credential", None)
        if accepts is None or not accepts():
            return False
        return required_permission_for(self.view, self.view.request) != STAFF

    def get_auth(self):
        if self._is_public():
            return []
        auth = super().get_auth()
        if not self._accepts_api_keys():
            auth = [scheme for scheme in auth if API_KEY_SCHEME not in scheme]
        return auth

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        mode = getattr(self.view, "tenant_mode", TenantMode.NONE)
        if mode is not TenantMode.NONE:
            description = "Tenant UUID or slug. Optional when the caller belongs to one tenant."
            parameters = [
                *parameters,
                OpenApiParameter(
                    TENANT_HEADER,
                    OpenApiTypes.STR,
                    OpenApiParameter.HEADER,
                    description=description,
                ),
                OpenApiParameter(
                    TENANT_QUERY_PARAM,
                    OpenApiTypes.STR,
                    OpenApiParameter.QUERY,
                    description="Alternative to the header.",
                ),
            ]
        return parameters

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return operation
        ref = self.resolve_serializer(ErrorEnvelopeSerializer, "response").ref
        codes = _PUBLIC_ERRORS if self._is_public() else tuple(_ERRORS)
        for code in codes:
            operation["responses"].setdefault(
                code,
                {"description": _ERRORS[code], "content": {"application/json": {"schema": ref}}},
            )
        return operation


class HashedTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.HashedTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Token authentication: "Token <key>" from POST /api/v1/auth/token/.',
        }


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.APIKeyAuthentication"
    name = API_KEY_SCHEME

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": (
                "API key from POST /api/v1/api-keys/ (`cp_...`), bound to one organization. "
                'Also accepted as "Authorization: Api-Key <key>".'
            ),
        }


class BearerJWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerJWTAuthentication"
    name = "jwtAuth"
    priority = 1  # ahead of drf-spectacular's generic simplejwt extension

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "Access token from POST /api/v1/auth/login (refresh: auth/refresh).",
        }


def request_bodies_refuse_unknown_fields(result, generator, request, public):
    """SPECTACULAR_SETTINGS POSTPROCESSING_HOOKS: request bodies list every field they accept
    (config.serializers refuses any other key), so their schemas say `additionalProperties:
    false`. Free-form objects inside them (settings, branding) keep their own rule."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component.setdefault("additionalProperties", False)
    return result
