"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views import OrganizationViewSet, TenantViewSet

routes = [
    ("tenants", TenantViewSet, "tenant"),
    ("organizations", OrganizationViewSet, "organization"),
]
