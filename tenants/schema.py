"""The API's OpenAPI AutoSchema: the error envelope on every operation, the tenant header on
tenant-scoped ones, security taken from each action's required permission (API keys only
where a key is accepted: tenant-scoped, non-staff actions of views that take them), and, on
request bodies, the rules their validation enforces that DRF's mapping leaves out (text rules
as patterns, codes as enums, non-empty and distinct lists, one of two fields: docs/api.md)."""

from decimal import Decimal

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import append_meta, is_patched_serializer
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from config.schema import ERROR_RESPONSES, PUBLIC_ERROR_RESPONSES, ErrorEnvelopeSerializer
from config.serializers import DistinctListField, WholeObjectField
from config.validators import SafeTextValidator

from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import MAX_KEY_LENGTH, is_idempotent
from .permissions import PUBLIC, STAFF, required_permission_for
from .resolution import TENANT_HEADER, TENANT_QUERY_PARAM, TenantMode

# What tenants.idempotency.idempotency_key accepts: 1 to 255 characters, not all spaces, no
# control character.
IDEMPOTENCY_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_LENGTH,
    "pattern": r"^[^\u0000-\u001F\u007F]*[^\s\u0000-\u001F\u007F][^\u0000-\u001F\u007F]*$",
}
# The name of the API-key security scheme (accounts.schema defines it).
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

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        if isinstance(field, WholeObjectField):  # validated and answered as its serializer
            ref = self.resolve_serializer(field.serializer_class, direction).ref
            return append_meta(ref, self._get_serializer_field_meta(field, direction))
        build = getattr(field, "request_schema", None)  # a field's own rules, stated whole
        if build is not None and direction == "request":
            return append_meta(build(), self._get_serializer_field_meta(field, direction))
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # A request field's rules that its validation enforces and DRF's mapping leaves out (a
        # field may also state them whole, `request_schema`, as above): a CodeField's codes, a
        # non-empty or distinct list, a field's own `request_pattern`, else the text rule
        # (config.validators). Not on responses: a value stored before a rule tightened, or by
        # staff in the admin, is answered as it is.
        if direction != "request" or not isinstance(schema, dict):
            return schema
        codes = getattr(field, "request_codes", None)  # config.serializers.CodeField
        if codes is not None:
            schema["enum"] = sorted(codes())
        places = getattr(field, "decimal_places", None)
        if isinstance(field, serializers.DecimalField) and places is not None:
            schema.setdefault("multipleOf", float(Decimal(1).scaleb(-places)))
        if schema.get("type") == "array":
            if getattr(field, "allow_empty", True) is False:
                schema.setdefault("minItems", 1)
            if isinstance(field, DistinctListField):
                schema["uniqueItems"] = True
        if schema.get("type") == "string" and "enum" not in schema:
            pattern = getattr(field, "request_pattern", None)
            if pattern is None:
                rule = next((v for v in field.validators if isinstance(v, SafeTextValidator)), None)
                pattern = rule.pattern if rule is not None else None
            if pattern is not None:
                schema.setdefault("pattern", pattern)
        return schema

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        # Rules between optional fields of a body (each checked by the serializer's validate):
        # at least one of (`requires_one_of`), exactly one of (`requires_exactly_one_of`), or
        # never together (`excludes_together`).
        if direction != "request" or is_patched_serializer(serializer, direction):
            return schema
        if names := getattr(serializer, "requires_one_of", ()):
            schema["anyOf"] = [{"required": [name]} for name in names]
        if names := getattr(serializer, "requires_exactly_one_of", ()):
            schema["oneOf"] = [{"required": [name]} for name in names]
        if names := getattr(serializer, "excludes_together", ()):
            schema["not"] = {"required": list(names)}
        return schema

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
        if is_idempotent(getattr(self.view, getattr(self.view, "action", None) or "", None)):
            parameters = [
                *parameters,
                OpenApiParameter(
                    IDEMPOTENCY_HEADER,
                    IDEMPOTENCY_KEY_SCHEMA,
                    OpenApiParameter.HEADER,
                    description=(
                        "Up to 255 characters, scoped to the organization and the caller: the "
                        "same key and body replays the first answer (the effect happens once); "
                        "another body is 422 IDEMPOTENCY_KEY_REUSED; while the first request "
                        "runs, 409. Kept 24 hours."
                    ),
                ),
            ]
        return parameters

    def get_request_serializer(self):
        # The app kit's service-backed writes (tenants.api) read a body other than the one
        # they answer with.
        view, action = self.view, getattr(self.view, "action", None)
        if action == "create" and getattr(view, "create_serializer_class", None):
            return view.create_serializer_class()
        updates = ("update", "partial_update")
        if action in updates and getattr(view, "update_serializer_class", None):
            return view.update_serializer_class()
        return super().get_request_serializer()

    def get_response_serializers(self):
        view, action = self.view, getattr(self.view, "action", None)
        if action == "create" and getattr(view, "create_output_serializer_class", None):
            return view.create_output_serializer_class()
        return super().get_response_serializers()

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return operation
        ref = self.resolve_serializer(ErrorEnvelopeSerializer, "response").ref
        codes = PUBLIC_ERROR_RESPONSES if self._is_public() else tuple(ERROR_RESPONSES)
        content = {"application/json": {"schema": ref}}
        for code in codes:
            operation["responses"].setdefault(
                code, {"description": ERROR_RESPONSES[code], "content": content}
            )
        if is_idempotent(getattr(view := self.view, getattr(view, "action", None) or "", None)):
            operation["responses"].setdefault(
                "422",
                {
                    "description": "The Idempotency-Key was used with another request "
                    "(IDEMPOTENCY_KEY_REUSED).",
                    "content": content,
                },
            )
        return operation
