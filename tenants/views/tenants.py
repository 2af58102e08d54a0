"""The tenant directory and lifecycle (trial, active, suspended, cancelled)."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from config.exceptions import InsufficientPermissions, TenantSuspended
from config.serializers import CharField, Serializer

from ..api import PlatformViewSet
from ..models import Membership, MembershipStatus, Tenant
from ..permissions import AUTHENTICATED, STAFF, effective_permissions
from ..queries import organization_detail
from ..serializers.quotas import TenantQuotaSerializer
from ..serializers.tenants import TenantSerializer, TenantUpdateSerializer, tenant_quota
from ..services import lifecycle, quotas


def _with_quota_data(queryset):
    """What the tenant representation needs, in the same query: member counts and usage."""
    return queryset.with_member_count().with_seats_taken().with_quota_usage()


class TenantSuspendRequestSerializer(Serializer):
    """The body of POST tenants/{slug}/suspend/: why (kept on the tenant and in the audit log)."""

    reason = CharField(max_length=500)


class TenantViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    PlatformViewSet,
):
    """The tenant directory: staff see every tenant, others the ones they are active members
    of (any other slug is 404). Lifecycle and quota resets are staff actions."""

    queryset = Tenant.objects.all()
    serializer_class = TenantSerializer
    lookup_field = "slug"
    lookup_value_regex = "[-a-zA-Z0-9_]+"
    required_permissions = {
        "list": AUTHENTICATED,
        "create": AUTHENTICATED,
        "retrieve": AUTHENTICATED,
        "partial_update": AUTHENTICATED,  # staff, or a member holding settings.write
        "destroy": STAFF,
        "activate": STAFF,
        "suspend": STAFF,
        "restore": STAFF,
        "cancel": STAFF,
        "quota": AUTHENTICATED,
        "reset_quota": STAFF,
    }
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
        return _with_quota_data(super().filter_queryset(queryset))

    def get_object(self):
        # Lookups by slug are case-insensitive, like the slugs themselves.
        self.kwargs[self.lookup_field] = self.kwargs[self.lookup_field].lower()
        return super().get_object()

    def _live(self, tenant):
        """The tenant with its live api_calls (one Redis read): for the reads that show it; the
        writes answer with `_fresh` after the change instead."""
        return quotas.with_live_api_calls([tenant])[0]

    def retrieve(self, request, *args, **kwargs):
        return Response(self.get_serializer(self._live(self.get_object())).data)

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        return quotas.with_live_api_calls(page) if page is not None else None

    def _fresh(self, tenant):
        return self._live(organization_detail(tenant.pk))

    def _respond(self, tenant, status_code=status.HTTP_200_OK):
        return Response(self.get_serializer(self._fresh(tenant)).data, status=status_code)

    def create(self, request, *args, **kwargs):
        """Create a tenant in trial; the caller becomes its owner. Callers who are not staff
        create free-tier tenants only (403 otherwise), and may own at most
        ORGANIZATIONS_PER_USER tenants that are not cancelled to create another (409 CONFLICT
        past it, `details`: `organizations_owned`, `limit`)."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = lifecycle.tenant_create(actor=request.user, **serializer.validated_data)
        return self._respond(tenant, status.HTTP_201_CREATED)

    @extend_schema(request=TenantUpdateSerializer, responses={200: TenantSerializer})
    def partial_update(self, request, *args, **kwargs):
        tenant = self.get_object()
        if not request.user.is_staff:
            if tenant.is_blocked:
                # As on organizations/current: members of a blocked tenant may read, not write.
                raise TenantSuspended()
            membership = Membership.objects.get(tenant=tenant, user=request.user)
            permissions = effective_permissions(membership.role, membership.permissions)
            if "settings.write" not in permissions:
                raise InsufficientPermissions()
        serializer = TenantUpdateSerializer(
            tenant,
            data=request.data,
            partial=True,
            context={"representation": lambda: self.get_serializer(self._live(tenant)).data},
        )
        serializer.is_valid(raise_exception=True)
        lifecycle.tenant_update(
            tenant=tenant, actor=request.user, data=serializer.validated_data, merge_settings=True
        )
        return self._respond(tenant)

    def perform_destroy(self, instance):
        lifecycle.tenant_delete(tenant=instance, actor=self.request.user)

    @extend_schema(request=None, responses={200: TenantSerializer})
    @action(detail=True, methods=["post"])
    def activate(self, request, slug=None):
        tenant = lifecycle.tenant_activate(tenant=self.get_object(), actor=request.user)
        return self._respond(tenant)

    @extend_schema(request=TenantSuspendRequestSerializer, responses={200: TenantSerializer})
    @action(detail=True, methods=["post"])
    def suspend(self, request, slug=None):
        tenant = self.get_object()
        body = TenantSuspendRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._respond(
            lifecycle.tenant_suspend(
                tenant=tenant, actor=request.user, reason=body.validated_data["reason"]
            )
        )

    @extend_schema(request=None, responses={200: TenantSerializer})
    @action(detail=True, methods=["post"])
    def restore(self, request, slug=None):
        tenant = lifecycle.tenant_restore(tenant=self.get_object(), actor=request.user)
        return self._respond(tenant)

    @extend_schema(request=None, responses={200: TenantSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, slug=None):
        tenant = lifecycle.tenant_cancel(tenant=self.get_object(), actor=request.user)
        return self._respond(tenant)

    @extend_schema(responses={200: TenantQuotaSerializer})
    @action(detail=True, methods=["get"])
    def quota(self, request, slug=None):
        return Response(TenantQuotaSerializer(tenant_quota(self._live(self.get_object()))).data)

    @extend_schema(request=None, responses={200: TenantQuotaSerializer})
    @action(detail=True, methods=["post"])
    def reset_quota(self, request, slug=None):
        tenant = quotas.quota_reset(tenant=self.get_object(), actor=request.user)
        return Response(TenantQuotaSerializer(tenant_quota(self._fresh(tenant))).data)
