"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views import AuditEventViewSet

routes = [
    ("audit/events", AuditEventViewSet, "audit-event"),
]
