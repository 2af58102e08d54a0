"""The (prefix, viewset, basename) triples this app registers on the one API router."""

from .views import AuditChainViewSet, AuditEventViewSet, AuditPublicKeyViewSet

routes = [
    ("audit/events", AuditEventViewSet, "audit-event"),
    ("audit", AuditChainViewSet, "audit-chain"),
    ("audit", AuditPublicKeyViewSet, "audit-public-key"),
]
