"""The project's URLs plus the bench-only views the benchmarks compare against: a bare view
(request_overhead.py), GET organizations/current with quota counting and throttling off
(quota_overhead.py) and, when djangorestframework-api-key is installed and enabled by
auth_overhead.py, the same GET authorized by that peer library."""

from django.conf import settings
from django.urls import include, path, re_path
from rest_framework.response import Response
from rest_framework.views import APIView

from config.throttling import PrincipalRateThrottle
from config.urls import router
from config.urls import urlpatterns as project_urlpatterns
from tenants.models import Tenant
from tenants.serializers.organizations import OrganizationSerializer
from tenants.views.organizations import OrganizationViewSet


class BareOrganizationView(APIView):
    """The same query and serializer as GET /api/v1/organizations/current, with no
    authentication, tenant resolution, permission or throttle."""

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()

    def get(self, request, slug):
        tenant = (
            Tenant.objects.with_member_count()
            .with_quota_usage()
            .select_related("theme")
            .get(slug=slug)
        )
        return Response(OrganizationSerializer(tenant).data)


class UncountedOrganizationViewSet(OrganizationViewSet):
    """GET organizations/current exactly as served, minus the api_calls quota and throttling."""

    throttle_classes = ()
    counts_api_calls = False


urlpatterns = [path("bench/bare/<slug:slug>", BareOrganizationView.as_view())]
api_patterns = list(router.urls)
# Inside /api/v1/ right before organizations/current, so URL resolution costs both the same.
_current = next(i for i, p in enumerate(api_patterns) if p.name == "organization-current")
api_patterns.insert(
    _current,
    re_path(
        r"^uncounted/organizations/current/?$",
        UncountedOrganizationViewSet.as_view({"get": "current"}),
    ),
)

if "rest_framework_api_key" in settings.INSTALLED_APPS:
    from rest_framework_api_key.permissions import HasAPIKey

    class PeerAPIKeyOrganizationView(APIView):
        """GET /api/v1/organizations/current as a djangorestframework-api-key user writes it:
        its HasAPIKey permission (`Authorization: Api-Key <key>`), the organization named by
        X-Organization-ID (the peer's keys carry no tenant), the same fairness throttle, query
        and serializer."""

        authentication_classes = ()
        permission_classes = (HasAPIKey,)
        throttle_classes = (PrincipalRateThrottle,)

        def get(self, request):
            tenant = (
                Tenant.objects.with_member_count()
                .with_quota_usage()
                .select_related("theme")
                .get(pk=request.headers["X-Organization-ID"])
            )
            return Response(OrganizationSerializer(tenant).data)

    # Mounted inside /api/v1/ right before organizations/current, so that URL resolution costs
    # both the same and the comparison measures authentication only.
    ours = next(i for i, p in enumerate(api_patterns) if p.name == "organization-current")
    api_patterns.insert(
        ours, re_path(r"^peer/organizations/current/?$", PeerAPIKeyOrganizationView.as_view())
    )

# The project's URLs, with its /api/v1/ include replaced by the copy above.
urlpatterns += [path("api/v1/", include(api_patterns)), *project_urlpatterns[1:]]
