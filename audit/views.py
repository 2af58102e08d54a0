from rest_framework import mixins

from config.pagination import EventCursorPagination
from tenants.api import TenantScopedViewSet

from .filters import AuditEventFilter
from .models import AuditEvent
from .serializers import AuditEventSerializer


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """The tenant's audit events, newest first; staff may read across tenants (seed 002)."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    pagination_class = EventCursorPagination
    filterset_class = AuditEventFilter
    required_permissions = {"list": "audit.read", "retrieve": "audit.read"}
    staff_cross_tenant = True
