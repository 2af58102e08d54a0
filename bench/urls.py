"""The project's URLs plus the bench-only views the benchmarks compare against: a bare view
(request_overhead.py), GET organizations/current with quota counting and throttling off
(quota_overhead.py) and, when djangorestframework-api-key is installed and enabled by
auth_overhead.py, the same GET authorized by that peer library: under the same rules as ours
(tenant-bound key, quota, tenant rate) and bare (key check only)."""

from django.conf import settings
from django.urls import include, path, re_path
from rest_framework.response import Response
from rest_framework.views import APIView

from config.routers import grouped_by_first_segment
from config.throttling import PrincipalRateThrottle
from config.urls import router
from config.urls import urlpatterns as project_urlpatterns
from tenants.queries import organization_detail
from tenants.serializers.organizations import OrganizationSerializer
from tenants.services.quotas import quota_consume, with_live_api_calls
from tenants.throttling import TenantThrottle
from tenants.views.organizations import OrganizationViewSet


class BareOrganizationView(APIView):
    """The same query and serializer as GET /api/v1/organizations/current, with no
    authentication, tenant resolution, permission or throttle."""

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()

    def get(self, request, pk):
        return Response(OrganizationSerializer(organization_detail(pk)).data)


class UncountedOrganizationViewSet(OrganizationViewSet):
    """GET organizations/current exactly as served, minus the api_calls quota and throttling."""

    throttle_classes = ()
    counts_api_calls = False


urlpatterns = [path("bench/bare/<uuid:pk>", BareOrganizationView.as_view())]
api_patterns = router.flat_urls()


def _mount_before_ours(pattern) -> None:
    """Inside /api/v1/ right before organizations/current, so that URL resolution costs both
    the same and a comparison measures what the views do."""
    ours = next(i for i, p in enumerate(api_patterns) if p.name == "organization-current")
    api_patterns.insert(ours, pattern)


_mount_before_ours(
    re_path(
        r"^uncounted/organizations/current/?$",
        UncountedOrganizationViewSet.as_view({"get": "current"}),
    )
)

if "bench.peer" in settings.INSTALLED_APPS:
    from rest_framework_api_key.permissions import HasAPIKey

    from bench.peer.permissions import HasOrganizationAPIKey

    class PeerOrganizationView(APIView):
        """GET /api/v1/organizations/current through djangorestframework-api-key, under the
        same rules as ours: the key belongs to one tenant (the library guide's custom key
        model and permission, bench/peer), which the request is about; it is counted in the
        caller's and the tenant's rate windows and in the tenant's api_calls quota in one step
        (TenantThrottle, as ours); the live count comes from that step. Same query and
        serializer."""

        authentication_classes = ()
        permission_classes = (HasOrganizationAPIKey,)
        throttle_classes = (TenantThrottle,)

        def counts_api_call(self, request) -> bool:
            return getattr(request, "tenant", None) is not None

        def get(self, request):
            if not getattr(request, "api_call_counted", False):
                quota_consume(tenant=request.tenant, resource="api_calls")
            tenant = organization_detail(request.tenant.pk)
            known = getattr(request, "api_calls_known", None)
            tenant = with_live_api_calls([tenant], known=known)[0]
            return Response(OrganizationSerializer(tenant).data)

    class BarePeerOrganizationView(APIView):
        """The same document behind the library's plain HasAPIKey, as its README shows: the
        key belongs to no tenant, the organization is whatever X-Organization-ID names, and
        only the caller's fairness window is counted (no tenant rate, no api_calls quota).
        Does less than the GET it mirrors; printed for reference."""

        authentication_classes = ()
        permission_classes = (HasAPIKey,)
        throttle_classes = (PrincipalRateThrottle,)

        def get(self, request):
            tenant = organization_detail(request.headers["X-Organization-ID"])
            return Response(OrganizationSerializer(tenant).data)

    _mount_before_ours(re_path(r"^peer/organizations/current/?$", PeerOrganizationView.as_view()))
    _mount_before_ours(
        re_path(r"^peer-bare/organizations/current/?$", BarePeerOrganizationView.as_view())
    )

# The project's URLs, with its /api/v1/ include replaced by the copy above (nested the same way).
urlpatterns += [
    path("api/v1/", include(grouped_by_first_segment(api_patterns))),
    *project_urlpatterns[1:],
]
