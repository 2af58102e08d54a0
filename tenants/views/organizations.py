"""The caller's current organization (profile, settings, branding) and its quotas."""

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from ..api import ServiceWriteMixin, TenantContextViewSet
from ..permissions import TENANT_MEMBER
from ..queries import organization_detail
from ..serializers.organizations import OrganizationSerializer, OrganizationUpdateSerializer
from ..serializers.quotas import OrganizationQuotasSerializer
from ..services import lifecycle
from ..services.quotas import annotated_quota_states, with_live_api_calls


class OrganizationViewSet(ServiceWriteMixin, TenantContextViewSet):
    """GET, PUT and PATCH organizations/current; GET organizations/quotas."""

    serializer_class = OrganizationSerializer
    update_serializer_class = OrganizationUpdateSerializer
    required_permissions = {
        "current": TENANT_MEMBER,
        "update_current": "settings.write",
        "partial_update_current": "settings.write",
        "quotas": "settings.read",
    }
    # Reading the organization still works while it is suspended.
    allowed_when_suspended = frozenset({"current"})

    def get_object(self):
        """The request's tenant, annotated for the serializer."""
        # OPTIONS metadata probes with a cloned request that carries no tenant.
        tenant = getattr(self.request, "tenant", None)
        if tenant is None:
            raise NotFound()
        tenant = organization_detail(tenant.pk)
        known = getattr(self.request, "api_calls_known", None)
        return with_live_api_calls([tenant], known=known)[0]

    @extend_schema(responses={200: OrganizationSerializer})
    @action(detail=False, methods=["get"], url_path="current")
    def current(self, request):
        return Response(self.get_serializer(self.get_object()).data)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.action in ("update_current", "partial_update_current"):
            # What GET shows: sent back unchanged, its read-only fields are accepted.
            context["representation"] = lambda: self.get_serializer(self.get_object()).data
        return context

    def perform_service_update(self, instance, data, *, partial):
        branding = data.pop("branding", None)
        self.call_service(
            lifecycle.organization_update,
            tenant=self.request.tenant,
            data=data,
            branding=branding,
            # PUT replaces the settings (keeping the limits only staff could set).
            replace_settings=not partial,
        )
        return self.get_object()

    @extend_schema(request=OrganizationUpdateSerializer, responses={200: OrganizationSerializer})
    @current.mapping.put
    def update_current(self, request):
        return self.service_update(partial=False)

    @extend_schema(request=OrganizationUpdateSerializer, responses={200: OrganizationSerializer})
    @current.mapping.patch
    def partial_update_current(self, request):
        return self.service_update(partial=True)

    @extend_schema(responses={200: OrganizationQuotasSerializer})
    @action(detail=False, methods=["get"])
    def quotas(self, request):
        tenant = self.get_object()
        states = annotated_quota_states(tenant)
        return Response(OrganizationQuotasSerializer((tenant, states)).data)
