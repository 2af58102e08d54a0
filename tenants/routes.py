"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views.members import InvitationViewSet, MemberViewSet
from .views.tenants import OrganizationViewSet, TenantViewSet

routes = [
    ("tenants", TenantViewSet, "tenant"),
    ("organizations", OrganizationViewSet, "organization"),
    ("organizations/members", MemberViewSet, "member"),
    ("invitations", InvitationViewSet, "invitation"),
]
