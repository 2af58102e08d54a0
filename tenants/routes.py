"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views.members import InvitationViewSet, MemberViewSet
from .views.organizations import OrganizationViewSet
from .views.tenants import TenantViewSet

routes = [
    ("tenants", TenantViewSet, "tenant"),
    ("organizations", OrganizationViewSet, "organization"),
    ("organizations/members", MemberViewSet, "member"),
    ("invitations", InvitationViewSet, "invitation"),
]
