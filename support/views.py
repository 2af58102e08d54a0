"""API views of the support app: thin viewsets on the app kit
(`tenants.api`).

A tenant-owned resource is a `TenantCrudViewSet`, or a `TenantScopedViewSet` composed with the
`ServiceCreateMixin`, `ServiceUpdateMixin` and `ServiceDestroyMixin` it has: `queryset`,
`serializer_class`, `filterset_class`, `permission_area` and the services that write. A view
parses, calls a service or a selector and answers; it holds no rule. A custom action names its
permission in `required_permissions`; an action without one is refused.
"""

from django.db.models import Case, IntegerField, Value, When
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from tenants.api import AcceptsShownDocumentMixin, TenantCrudViewSet

from . import services
from .filters import CustomerProfileFilter, RepresentativeFilter, TicketFilter
from .models import CustomerProfile, Representative, SlaPolicy, Ticket
from .serializers import (
    CustomerProfileDetailSerializer,
    CustomerProfileSerializer,
    RepresentativeCreateSerializer,
    RepresentativeSerializer,
    RepresentativeUpdateSerializer,
    SlaPolicySerializer,
    TicketAssignSerializer,
    TicketCreateSerializer,
    TicketSerializer,
    TicketUpdateSerializer,
)

# Priorities sort LOW < NORMAL < HIGH < URGENT, not alphabetically.
PRIORITY_RANK = {"LOW": 1, "NORMAL": 2, "HIGH": 3, "URGENT": 4}


class CustomerProfileViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """The organization's customers: filters `tier`, `standing` (comma lists), `email`,
    `external_id`; `search` (name, email, external id); `ordering`."""

    queryset = CustomerProfile.objects.all()
    serializer_class = CustomerProfileSerializer
    filterset_class = CustomerProfileFilter
    permission_area = "support"
    search_fields = ("name", "email", "external_id")
    ordering_fields = ("name", "email", "created_at", "lifetime_value_cents", "tier")
    update_serializer_class = CustomerProfileSerializer
    create_service = services.customer_profile_create
    update_service = services.customer_profile_update
    destroy_service = services.customer_profile_delete

    def get_serializer_class(self):
        if self.action in ("retrieve", "update", "partial_update"):
            return CustomerProfileDetailSerializer
        return CustomerProfileSerializer


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


class TicketViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """Tickets: filters `status`, `priority`, `category` (comma lists), `assignee`, `customer`,
    `unassigned`, `created_after` / `created_before`; `search` (number, subject, description);
    `ordering` (`priority` by rank). `POST {id}/assign` gives one to a representative, within
    their capacity."""

    queryset = Ticket.objects.select_related("customer", "assignee__user", "created_by")
    serializer_class = TicketSerializer
    create_serializer_class = TicketCreateSerializer
    update_serializer_class = TicketUpdateSerializer
    filterset_class = TicketFilter
    permission_area = "support"
    required_permissions = {"assign": "support.write"}
    search_fields = ("subject", "description", "customer__name", "customer__email")
    ordering_fields = ("created_at", "updated_at", "priority", "status", "number")
    ordering_aliases = {"priority": "priority_rank"}
    create_service = services.ticket_create
    update_service = services.ticket_update
    destroy_service = services.ticket_delete

    def scope_queryset(self, queryset):
        return queryset.annotate(
            priority_rank=Case(
                *(When(priority=value, then=Value(rank)) for value, rank in PRIORITY_RANK.items()),
                output_field=IntegerField(),
            )
        )

    @extend_schema(request=TicketAssignSerializer, responses={200: TicketSerializer})
    @action(detail=True, methods=["post"], url_path="assign")
    def assign(self, request, pk=None):
        """Assign to a representative, to "auto", or unassign (null)."""
        ticket = self.get_object()  # another organization's ticket is 404 whatever the body
        data = self.validated_input(TicketAssignSerializer)
        ticket = self.call_service(
            services.ticket_assign, ticket=ticket, representative=data["representative"]
        )
        return Response(TicketSerializer(self.refreshed(ticket)).data)
