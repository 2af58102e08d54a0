"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views import AuthViewSet

routes = [
    ("auth", AuthViewSet, "auth"),
]
