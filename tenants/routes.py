"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views.tenants import OrganizationViewSet, TenantViewSet
from .views.themes import ThemeStylesheetViewSet, ThemeViewSet

routes = [
    ("tenants", TenantViewSet, "tenant"),
    # organizations/theme and organizations/theme/logo. Before OrganizationViewSet, so that a
    # detail route it may grow (organizations/{id}) cannot shadow them.
    ("organizations", ThemeViewSet, "organization-theme"),
    ("organizations", OrganizationViewSet, "organization"),
    ("themes", ThemeStylesheetViewSet, "theme-stylesheet"),
]
