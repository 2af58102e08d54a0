from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from config.exceptions import TenantRequired
from config.pagination import EventCursorPagination
from tenants.api import PlatformViewSet, TenantContextViewSet, TenantScopedViewSet
from tenants.models import Tenant
from tenants.permissions import PUBLIC

from . import services, signing
from .export import export_lines
from .filters import AuditEventFilter
from .models import PLATFORM_CHAIN, AuditEvent
from .serializers import (
    AuditEventSerializer,
    ChainQuerySerializer,
    ChainVerificationSerializer,
    ExportQuerySerializer,
    PublicKeySerializer,
)
from .walks import walk_slot, walking


def selected_chain(request, params: dict):
    """The tenant id of the chain to read: the request's tenant, or for staff reading across
    tenants the `tenant_id` named (None meaning the platform chain)."""
    if request.tenant is not None:
        return request.tenant.pk
    if params.get("chain") == PLATFORM_CHAIN:
        return None
    if params.get("tenant_id"):
        if not Tenant.objects.filter(pk=params["tenant_id"]).exists():
            raise NotFound("Organization not found.")
        return params["tenant_id"]
    raise TenantRequired("Name a chain: tenant_id=<uuid> or chain=platform.")


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """The tenant's audit events, newest first; staff may read across tenants."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    pagination_class = EventCursorPagination
    filterset_class = AuditEventFilter
    required_permissions = {"list": "audit.read", "retrieve": "audit.read", "export": "audit.read"}
    staff_cross_tenant = True

    @extend_schema(
        parameters=[ExportQuerySerializer],
        responses={(200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR)},
        summary="Stream the chain's sealed events and checkpoints as JSON Lines",
    )
    @action(detail=False, methods=["get"], url_path="export", filter_backends=[],
            pagination_class=None)  # fmt: skip
    def export(self, request):
        params = ExportQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        tenant_id = selected_chain(request, params.validated_data)
        lines = export_lines(
            tenant_id,
            from_seq=params.validated_data["from_seq"],
            to_seq=params.validated_data.get("to_seq"),
        )
        response = StreamingHttpResponse(
            walking(tenant_id, lines), content_type="application/x-ndjson"
        )
        name = f"audit-{tenant_id or PLATFORM_CHAIN}.jsonl"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class AuditChainViewSet(TenantContextViewSet):
    """Chain verification: the caller's chain; staff name any chain."""

    required_permissions = {"verify": "audit.read"}
    staff_cross_tenant = True

    @extend_schema(parameters=[ChainQuerySerializer], responses={200: ChainVerificationSerializer})
    @action(detail=False, methods=["get"], url_path="verify")
    def verify(self, request):
        params = ChainQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        tenant_id = selected_chain(request, params.validated_data)
        with walk_slot(tenant_id):
            result = services.chain_verify(tenant_id=tenant_id)
            status = services.chain_status(tenant_id=tenant_id)
        data = {
            "chain": str(tenant_id) if tenant_id else PLATFORM_CHAIN,
            "chain_valid": result.chain_valid,
            "verified_count": result.verified_count,
            "total_events": status["total_events"],
            "unsealed_count": status["unsealed_count"],
            "chain_head": result.chain_head,
            "last_seq": result.last_seq,
            "checkpoints_checked": result.checkpoints_checked,
            "broken_links": [link.__dict__ for link in result.broken_links],
        }
        return Response(ChainVerificationSerializer(data).data)


class AuditPublicKeyViewSet(PlatformViewSet):
    """The key that verifies every chain's signed checkpoints: one for the whole platform, and
    public, as a verifying key is meant to be (no credentials are read, so an auditor without
    an account, or with only an API key, can fetch it)."""

    authentication_classes = ()
    required_permissions = {"public_key": PUBLIC}

    @extend_schema(responses={200: PublicKeySerializer}, auth=[])
    @action(detail=False, methods=["get"], url_path="public-key")
    def public_key(self, request):
        return Response(
            {"algorithm": "Ed25519", "public_key": signing.public_key(), "key_id": signing.key_id()}
        )
