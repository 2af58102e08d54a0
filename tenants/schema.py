"""The API's OpenAPI AutoSchema: the error envelope on every operation, the tenant header on
tenant-scoped ones, and security taken from each action's required permission (API keys only
where a key is accepted: tenant-scoped, non-staff actions of views that take them)."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

from config.schema import ERROR_RESPONSES, PUBLIC_ERROR_RESPONSES, ErrorEnvelopeSerializer

from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import is_idempotent
from .permissions import PUBLIC, STAFF, required_permission_for
from .resolution import TENANT_HEADER, TENANT_QUERY_PARAM, TenantMode

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
                    OpenApiTypes.STR,
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
