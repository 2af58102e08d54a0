"""OpenAPI building blocks that know no app: the error envelope every operation answers with,
the documented error responses, and the schema post-processing hook. The tenancy-aware
AutoSchema is tenants.schema; the credentials' security schemes are accounts.schema."""

from rest_framework import serializers

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


# status -> description of the error responses every operation documents.
ERROR_RESPONSES = {
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
# The ones a public operation (no credentials) can answer.
PUBLIC_ERROR_RESPONSES = ("400", "404", "405", "406", "413", "415", "429", "500")


def request_bodies_refuse_unknown_fields(result, generator, request, public):
    """SPECTACULAR_SETTINGS POSTPROCESSING_HOOKS: request bodies list every field they accept
    (config.serializers refuses any other key), so their schemas say `additionalProperties:
    false`. Free-form objects inside them (settings, branding) keep their own rule."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and component.get("type") == "object":
            component.setdefault("additionalProperties", False)
    return result
