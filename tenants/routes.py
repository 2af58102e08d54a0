"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views.members import InvitationViewSet, MemberViewSet
from .views.organizations import OrganizationViewSet
from .views.tenants import TenantViewSet
from .views.themes import ThemeStylesheetViewSet, ThemeViewSet

routes = [
    ("tenants", TenantViewSet, "tenant"),
    # organizations/theme and organizations/theme/logo. Before OrganizationViewSet, so that a
    # detail route it may grow (organizations/{id}) cannot shadow them.
    ("organizations", ThemeViewSet, "organization-theme"),
    ("organizations", OrganizationViewSet, "organization"),
    ("organizations/members", MemberViewSet, "member"),
    ("invitations", InvitationViewSet, "invitation"),
    ("themes", ThemeStylesheetViewSet, "theme-stylesheet"),
]
