"""The project's URLs plus the bare baseline view the overhead benchmark compares against."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import urlpatterns as project_urlpatterns
from tenants.models import Tenant
from tenants.serializers import OrganizationSerializer


class BareOrganizationView(APIView):
    """The same query and serializer as GET /api/v1/organizations/current, with no
    authentication, tenant resolution, permission or throttle."""

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()

    def get(self, request, slug):
        tenant = Tenant.objects.with_member_count().get(slug=slug)
        return Response(OrganizationSerializer(tenant).data)


urlpatterns = [
    path("bench/bare/<slug:slug>", BareOrganizationView.as_view()),
    *project_urlpatterns,
]
