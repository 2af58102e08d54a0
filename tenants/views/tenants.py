from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from ..api import PlatformViewSet, TenantContextViewSet
from ..models import Membership, MembershipStatus, Tenant
from ..permissions import AUTHENTICATED, TENANT_MEMBER
from ..serializers.organizations import OrganizationSerializer
from ..serializers.tenants import TenantSerializer
from ..services.lifecycle import tenant_create


class TenantViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, PlatformViewSet):
    """The tenant directory (seed 002): staff see every tenant, others the ones they belong to."""

    queryset = Tenant.objects.all()
    serializer_class = TenantSerializer
    lookup_field = "slug"
    required_permissions = {"list": AUTHENTICATED, "create": AUTHENTICATED}
    filterset_fields = ("status", "plan")
    search_fields = ("name", "slug", "domain")
    ordering_fields = ("name", "slug", "created_at")

    def filter_queryset(self, queryset):
        user = self.request.user
        if not user.is_staff:
            # A subquery, not a join: a join on memberships would also narrow user_count.
            queryset = queryset.filter(
                pk__in=Membership.objects.filter(user=user, status=MembershipStatus.ACTIVE).values(
                    "tenant_id"
                )
            )
        return super().filter_queryset(queryset).with_member_count()

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = tenant_create(actor=request.user, **serializer.validated_data)
        tenant.member_count = 1
        return Response(self.get_serializer(tenant).data, status=status.HTTP_201_CREATED)


class OrganizationViewSet(TenantContextViewSet):
    """The caller's current organization (seeds 000, 004)."""

    serializer_class = OrganizationSerializer
    required_permissions = {"current": TENANT_MEMBER}
    allowed_when_suspended = frozenset({"current"})

    @extend_schema(responses={200: OrganizationSerializer})
    @action(detail=False, methods=["get"], url_path="current")
    def current(self, request):
        tenant = (
            Tenant.objects.with_member_count().select_related("theme").get(pk=request.tenant.pk)
        )
        return Response(self.get_serializer(tenant).data)
