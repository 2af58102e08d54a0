"""API views of the security app: thin viewsets on the app kit
(`tenants.api`).

A tenant-owned resource is a `TenantCrudViewSet`, or a `TenantScopedViewSet` composed with the
`ServiceCreateMixin`, `ServiceUpdateMixin` and `ServiceDestroyMixin` it has: `queryset`,
`serializer_class`, `filterset_class`, `permission_area` and the services that write. A view
parses, calls a service or a selector and answers; it holds no rule. A custom action names its
permission in `required_permissions`; an action without one is refused.
"""

from django.db.models import Case, IntegerField, Prefetch, Value, When
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.response import Response

from config.renderers import CSVRenderer, JSONRenderer
from tenants.api import (
    AcceptsShownDocumentMixin,
    ServiceCreateMixin,
    ServiceUpdateMixin,
    TenantContextViewSet,
    TenantCrudViewSet,
    TenantScopedViewSet,
)

from . import selectors, services
from .filters import ComplianceAuditFilter, IncidentFilter, ProcessingActivityFilter
from .models import (
    SEVERITY_RANK,
    ComplianceAudit,
    Incident,
    IncidentTimelineEntry,
    ProcessingActivity,
)
from .serializers import (
    ComplianceAuditCreateSerializer,
    ComplianceAuditSerializer,
    ComplianceAuditUpdateSerializer,
    GdprRegisterSerializer,
    IncidentCreateSerializer,
    IncidentDetailSerializer,
    IncidentSerializer,
    IncidentStatsSerializer,
    IncidentUpdateSerializer,
    ProcessingActivityInputSerializer,
    ProcessingActivitySerializer,
    RegisterQuerySerializer,
    ReportQuerySerializer,
    SecurityDashboardSerializer,
    StatsQuerySerializer,
)

_UPDATES = ("update", "partial_update")


class IncidentViewSet(
    AcceptsShownDocumentMixin,
    ServiceCreateMixin,
    ServiceUpdateMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    """Security incidents: list (filters, `search`, `ordering`), log one, see one with its
    timeline, change it (legal status moves only), and statistics. An incident is a record:
    there is no delete."""

    queryset = Incident.objects.select_related("assigned_to", "reported_by")
    serializer_class = IncidentSerializer
    create_serializer_class = IncidentCreateSerializer
    create_output_serializer_class = IncidentDetailSerializer
    update_serializer_class = IncidentUpdateSerializer
    filterset_class = IncidentFilter
    permission_area = "security"
    required_permissions = {"stats": "security.read"}
    search_fields = ("title", "description")
    ordering_fields = ("detected_at", "created_at", "updated_at", "severity", "status", "title")
    ordering_aliases = {"severity": "severity_rank"}
    create_service = services.incident_create
    update_service = services.incident_update

    def get_serializer_class(self):
        if self.action in ("retrieve", *_UPDATES):
            return IncidentDetailSerializer
        return IncidentSerializer

    def scope_queryset(self, queryset):
        queryset = queryset.annotate(
            severity_rank=Case(
                *(When(severity=value, then=Value(rank)) for value, rank in SEVERITY_RANK.items()),
                output_field=IntegerField(),
            )
        )
        if self.action == "list":
            return queryset
        timeline = IncidentTimelineEntry.objects.select_related("actor")
        return queryset.prefetch_related(Prefetch("timeline", queryset=timeline))

    @extend_schema(parameters=[StatsQuerySerializer], responses={200: IncidentStatsSerializer})
    @action(detail=False, methods=["get"], url_path="stats")
    def stats(self, request):
        """Incidents detected in the last `days` days (default 30, at most 365)."""
        query = StatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        stats = selectors.incident_stats(tenant=request.tenant, days=query.validated_data["days"])
        return Response(IncidentStatsSerializer(stats).data)


class ComplianceAuditViewSet(
    AcceptsShownDocumentMixin,
    ServiceCreateMixin,
    ServiceUpdateMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    """Compliance audits: plan one, move it to in_progress, complete it with a score and
    findings (or fail it). An audit is a record: there is no delete."""

    queryset = ComplianceAudit.objects.select_related("created_by")
    serializer_class = ComplianceAuditSerializer
    create_serializer_class = ComplianceAuditCreateSerializer
    update_serializer_class = ComplianceAuditUpdateSerializer
    filterset_class = ComplianceAuditFilter
    permission_area = "security"
    search_fields = ("title", "description", "auditor_name")
    ordering_fields = ("created_at", "updated_at", "planned_date", "completed_at", "score", "title")
    create_service = services.compliance_audit_create
    update_service = services.compliance_audit_update


class ProcessingActivityViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """The register of processing activities (GDPR Art. 30). An activity starts as a draft;
    only a draft can be deleted (an approved one is deprecated instead)."""

    queryset = ProcessingActivity.objects.select_related("approved_by", "created_by")
    serializer_class = ProcessingActivitySerializer
    create_serializer_class = ProcessingActivityInputSerializer
    update_serializer_class = ProcessingActivityInputSerializer
    filterset_class = ProcessingActivityFilter
    permission_area = "security"
    search_fields = ("name", "description", "purpose")
    ordering_fields = (
        "name",
        "created_at",
        "updated_at",
        "privacy_impact_score",
        "retention_period_months",
    )
    create_service = services.processing_activity_create
    update_service = services.processing_activity_update
    destroy_service = services.processing_activity_delete


# The register's CSV columns: (header, how a cell is read off an activity).
REGISTER_COLUMNS = (
    ("id", lambda a: a.pk),
    ("name", lambda a: a.name),
    ("status", lambda a: a.status),
    ("purpose", lambda a: a.purpose),
    ("legal_basis", lambda a: a.legal_basis),
    ("data_categories", lambda a: "; ".join(a.data_categories)),
    ("data_subjects", lambda a: "; ".join(a.data_subjects)),
    ("special_categories", lambda a: "; ".join(a.special_categories)),
    ("recipients", lambda a: "; ".join(a.recipients)),
    (
        "international_transfers",
        lambda a: "; ".join(f"{t['country']}: {t['safeguard']}" for t in a.international_transfers),
    ),
    ("automated_processing", lambda a: a.automated_processing),
    ("profiling_involved", lambda a: a.profiling_involved),
    ("third_parties_involved", lambda a: a.third_parties_involved),
    ("retention_period_months", lambda a: a.retention_period_months),
    ("privacy_impact_score", lambda a: a.privacy_impact_score),
    ("dpia_required", lambda a: a.dpia_required),
    ("dpia_completed_on", lambda a: a.dpia_completed_on),
    ("risk_mitigation_measures", lambda a: a.risk_mitigation_measures),
    ("approved_at", lambda a: a.approved_at),
    ("updated_at", lambda a: a.updated_at),
)


class SecurityReportViewSet(TenantContextViewSet):
    """Generated reports: the GDPR register (JSON, or CSV for a regulator) and the security
    dashboard."""

    serializer_class = SecurityDashboardSerializer
    required_permissions = {"gdpr_register": "security.read", "security_dashboard": "security.read"}

    @extend_schema(
        parameters=[RegisterQuerySerializer],
        responses={
            (200, "application/json"): GdprRegisterSerializer,
            (200, "text/csv"): OpenApiResponse(
                response=OpenApiTypes.STR, description="One row per activity (`?format=csv`)."
            ),
        },
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="gdpr-register",
        renderer_classes=[JSONRenderer, CSVRenderer],
    )
    def gdpr_register(self, request):
        """The record of processing activities (GDPR Art. 30); `?format=csv` for a file."""
        query = RegisterQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        statuses = query.validated_data["status"]
        if request.accepted_renderer.format == CSVRenderer.format:
            activities = selectors.register_activities(tenant=request.tenant, statuses=statuses)
            table = {
                "columns": [name for name, _ in REGISTER_COLUMNS],
                "rows": [[cell(a) for _, cell in REGISTER_COLUMNS] for a in activities],
            }
            filename = f"gdpr-register-{request.tenant.slug}.csv"
            return Response(
                table, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
            )
        register = selectors.gdpr_register(tenant=request.tenant, statuses=statuses)
        return Response(GdprRegisterSerializer(register).data)

    @extend_schema(parameters=[ReportQuerySerializer], responses={200: SecurityDashboardSerializer})
    @action(detail=False, methods=["get"], url_path="security-dashboard")
    def security_dashboard(self, request):
        """Risk level, incidents, breach deadlines, compliance score and recommendations over
        the last `days` days (default 30)."""
        query = ReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        dashboard = selectors.security_dashboard(
            tenant=request.tenant, days=query.validated_data["days"]
        )
        return Response(SecurityDashboardSerializer(dashboard).data)
