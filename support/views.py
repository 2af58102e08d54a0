"""API views of the support app: thin viewsets on the app kit
(`tenants.api`).

A tenant-owned resource is a `TenantCrudViewSet`, or a `TenantScopedViewSet` composed with the
`ServiceCreateMixin`, `ServiceUpdateMixin` and `ServiceDestroyMixin` it has: `queryset`,
`serializer_class`, `filterset_class`, `permission_area` and the services that write. A view
parses, calls a service or a selector and answers; it holds no rule. A custom action names its
permission in `required_permissions`; an action without one is refused.
"""

from tenants.api import AcceptsShownDocumentMixin, TenantCrudViewSet

from . import services
from .filters import CustomerProfileFilter, RepresentativeFilter
from .models import CustomerProfile, Representative, SlaPolicy
from .serializers import (
    CustomerProfileSerializer,
    RepresentativeCreateSerializer,
    RepresentativeSerializer,
    RepresentativeUpdateSerializer,
    SlaPolicySerializer,
)


class CustomerProfileViewSet(TenantCrudViewSet):
    """The organization's customers: filters `tier`, `standing` (comma lists), `email`,
    `external_id`; `search` (name, email, external id); `ordering`."""

    queryset = CustomerProfile.objects.all()
    serializer_class = CustomerProfileSerializer
    filterset_class = CustomerProfileFilter
    permission_area = "support"
    search_fields = ("name", "email", "external_id")
    ordering_fields = ("name", "email", "created_at", "lifetime_value_cents", "tier")
    create_service = services.customer_profile_create
    update_service = services.customer_profile_update
    destroy_service = services.customer_profile_delete


class RepresentativeViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """The organization's representatives, with their load (`active_chats`,
    `free_capacity`)."""

    queryset = Representative.objects.select_related("user")
    serializer_class = RepresentativeSerializer
    create_serializer_class = RepresentativeCreateSerializer
    update_serializer_class = RepresentativeUpdateSerializer
    filterset_class = RepresentativeFilter
    permission_area = "support"
    search_fields = ("user__email", "user__name")
    ordering_fields = ("created_at", "last_active_at", "active_chats", "max_chats", "role")
    create_service = services.representative_create
    update_service = services.representative_update
    destroy_service = services.representative_delete


class SlaPolicyViewSet(TenantCrudViewSet):
    """SLA policies, one per ticket priority."""

    queryset = SlaPolicy.objects.all()
    serializer_class = SlaPolicySerializer
    permission_area = "support"
    ordering_fields = ("priority", "created_at", "first_response_minutes", "resolution_minutes")
    create_service = services.sla_policy_create
    update_service = services.sla_policy_update
    destroy_service = services.sla_policy_delete
