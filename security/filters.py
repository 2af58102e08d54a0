"""FilterSets of the security app (django-filter), each named by a viewset's
`filterset_class`.

The queryset a FilterSet narrows is already the request tenant's, but a filter choosing among
other objects (`ModelChoiceFilter`) builds its own: it takes
`queryset=tenants.serializers.fields.tenant_queryset(Model)`, so no other tenant's row is
listed or matched. Timestamps use `config.filters.UTCDateTimeFilter`; text filters set a
`max_length`.
"""

import django_filters
from django.utils import timezone

from config.filters import ChoiceInFilter, UTCDateTimeFilter

from .models import (
    ActivityStatus,
    AuditStatus,
    AuditType,
    ComplianceAudit,
    Framework,
    Incident,
    IncidentCategory,
    IncidentStatus,
    LegalBasis,
    ProcessingActivity,
    RaisedBy,
    Severity,
)


class IncidentFilter(django_filters.FilterSet):
    """One value or several (`?status=open,investigating`), the assignee, breaches, and a
    detection range."""

    severity = ChoiceInFilter(choices=Severity.choices)
    status = ChoiceInFilter(choices=IncidentStatus.choices)
    category = ChoiceInFilter(choices=IncidentCategory.choices)
    raised_by = ChoiceInFilter(choices=RaisedBy.choices)
    assigned_to = django_filters.UUIDFilter(field_name="assigned_to_id")
    personal_data_breach = django_filters.BooleanFilter()
    notification_overdue = django_filters.BooleanFilter(method="filter_notification_overdue")
    detected_after = UTCDateTimeFilter(field_name="detected_at", lookup_expr="gte")
    detected_before = UTCDateTimeFilter(field_name="detected_at", lookup_expr="lt")

    class Meta:
        model = Incident
        fields = ["severity", "status", "category", "assigned_to", "personal_data_breach"]

    def filter_notification_overdue(self, queryset, name, value):
        overdue = Incident.objects.notification_overdue(now=timezone.now()).values("pk")
        return queryset.filter(pk__in=overdue) if value else queryset.exclude(pk__in=overdue)


class ComplianceAuditFilter(django_filters.FilterSet):
    framework = ChoiceInFilter(choices=Framework.choices)
    status = ChoiceInFilter(choices=AuditStatus.choices)
    audit_type = ChoiceInFilter(choices=AuditType.choices)
    planned_after = django_filters.DateFilter(field_name="planned_date", lookup_expr="gte")
    planned_before = django_filters.DateFilter(field_name="planned_date", lookup_expr="lte")

    class Meta:
        model = ComplianceAudit
        fields = ["framework", "status", "audit_type"]


class ProcessingActivityFilter(django_filters.FilterSet):
    status = ChoiceInFilter(choices=ActivityStatus.choices)
    legal_basis = ChoiceInFilter(choices=LegalBasis.choices)
    dpia_required = django_filters.BooleanFilter()

    class Meta:
        model = ProcessingActivity
        fields = ["status", "legal_basis", "dpia_required"]
