import django_filters

from config.filters import UTCDateTimeFilter

from .models import AuditEvent


class AuditEventFilter(django_filters.FilterSet):
    event_type = django_filters.CharFilter(field_name="event_type", max_length=100)
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")
    actor = django_filters.UUIDFilter(field_name="actor_id")
    # Only widens anything for staff; everyone else's queryset is already their tenant's.
    tenant_id = django_filters.UUIDFilter(field_name="tenant_id")

    class Meta:
        model = AuditEvent
        fields = ["event_type", "since", "until", "actor", "tenant_id"]
