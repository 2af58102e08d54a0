"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views import APIKeyViewSet, AuthViewSet, RoleViewSet

routes = [
    ("auth", AuthViewSet, "auth"),
    ("roles", RoleViewSet, "role"),
    ("api-keys", APIKeyViewSet, "api-key"),
]
