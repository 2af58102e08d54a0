"""Viewsets of the analytics app: thin, each parses its query, calls a selector or a service
and serializes. Every action names its permission in `required_permissions`; an action
without one is refused.

The reports share the tenant's `analytics` rate (ANALYTICS rate, 20/min by default; the
gateway's own metrics keep the ordinary rates they had in the playground app); the ingestion
endpoint is the product's own traffic and counts against the caller's and the
tenant's ordinary limits (and the api_calls quota) like any other request.
"""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from config.renderers import CSVRenderer, JSONRenderer
from tenants.api import TenantContextViewSet

from . import selectors, services
from .serializers import (
    PERIOD_DAYS,
    DashboardQuerySerializer,
    DashboardSerializer,
    EventBatchResultSerializer,
    EventBatchSerializer,
    GatewayMetricsQuerySerializer,
    GatewayMetricsSerializer,
    PerformanceMetricsQuerySerializer,
    PerformanceMetricsSerializer,
    PerformanceQuerySerializer,
    PerformanceSerializer,
    QueriesQuerySerializer,
    QueriesReportSerializer,
    TeamPerformanceQuerySerializer,
    TeamPerformanceSerializer,
    UsageQuerySerializer,
    UsageReportSerializer,
    validated_events,
)

USAGE_COLUMNS = (
    "date",
    "total_queries",
    "unique_users",
    "avg_response_time",
    "requests",
    "avg_request_time_ms",
    "gateway_calls",
    "tokens",
    "cost_cents",
)
QUERY_COLUMNS = (
    "query_text",
    "query_category",
    "execution_count",
    "avg_response_time",
    "avg_satisfaction",
    "last_executed",
)


def _parsed(serializer_class, request) -> dict:
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


def _csv(columns, rows, filename) -> Response:
    table = {"columns": list(columns), "rows": [[row[c] for c in columns] for row in rows]}
    return Response(table, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _csv_schema(serializer):
    return {
        (200, "application/json"): serializer,
        (200, "text/csv"): OpenApiResponse(
            response=OpenApiTypes.STR, description="The table as CSV (`?format=csv`)."
        ),
    }


class AnalyticsReportViewSet(TenantContextViewSet):
    """The tenant's analytics, served from the roll-ups (docs/analytics.md)."""

    throttle_scope = "analytics"
    serializer_class = DashboardSerializer
    required_permissions = {
        "dashboard": "analytics.read",
        "usage": "analytics.read",
        "queries": "analytics.read",
        "performance": "analytics.read",
        "performance_metrics": "analytics.read",
        "team_performance": "analytics.read",
    }

    @extend_schema(parameters=[DashboardQuerySerializer], responses={200: DashboardSerializer})
    @action(detail=False, methods=["get"])
    def dashboard(self, request):
        """Summary, daily usage, costs and quality, top queries, satisfaction and its trend,
        and the cost breakdown over the last 7, 30 or 90 days or the last year."""
        query = _parsed(DashboardQuerySerializer, request)
        report = selectors.dashboard(
            request.tenant,
            days=PERIOD_DAYS[query["period"]],
            period=query["period"],
            tz=query["tz"],
        )
        return Response(DashboardSerializer(report).data)

    @extend_schema(parameters=[UsageQuerySerializer], responses=_csv_schema(UsageReportSerializer))
    @action(detail=False, methods=["get"], renderer_classes=[JSONRenderer, CSVRenderer])
    def usage(self, request):
        """Usage series (queries, users, requests, gateway tokens and cost) per hour, day, week
        or month, trends against the previous equal period, and orchestration runs;
        `?format=csv` for the series."""
        query = _parsed(UsageQuerySerializer, request)
        report = selectors.usage(
            request.tenant, days=query["days"], granularity=query["granularity"], tz=query["tz"]
        )
        data = UsageReportSerializer(report).data
        if request.accepted_renderer.format == CSVRenderer.format:
            return _csv(USAGE_COLUMNS, data["data"], f"usage-{request.tenant.slug}.csv")
        return Response(data)

    @extend_schema(
        parameters=[QueriesQuerySerializer], responses=_csv_schema(QueriesReportSerializer)
    )
    @action(detail=False, methods=["get"], renderer_classes=[JSONRenderer, CSVRenderer])
    def queries(self, request):
        """Top queries by normalized text, categories, daily trends and failure analysis;
        `?format=csv` for the top queries."""
        query = _parsed(QueriesQuerySerializer, request)
        report = selectors.queries_report(
            request.tenant,
            days=query["days"],
            limit=query["limit"],
            include_failed=query["include_failed"],
            tz=query["tz"],
        )
        data = QueriesReportSerializer(report).data
        if request.accepted_renderer.format == CSVRenderer.format:
            return _csv(QUERY_COLUMNS, data["top_queries"], f"queries-{request.tenant.slug}.csv")
        return Response(data)

    @extend_schema(parameters=[PerformanceQuerySerializer], responses={200: PerformanceSerializer})
    @action(detail=False, methods=["get"])
    def performance(self, request):
        """API response-time percentiles, error rates and throughput, and the gateway's; the
        host's resource usage for platform staff only."""
        query = _parsed(PerformanceQuerySerializer, request)
        report = selectors.performance(
            request.tenant,
            days=query["days"],
            tz=query["tz"],
            include_resources=request.user.is_staff,
        )
        return Response(PerformanceSerializer(report).data)

    @extend_schema(
        parameters=[PerformanceMetricsQuerySerializer],
        responses={200: PerformanceMetricsSerializer},
    )
    @action(detail=False, methods=["get"], url_path="performance-metrics")
    def performance_metrics(self, request):
        """The support centre's figures per day, week, month, quarter or year, latest first."""
        query = _parsed(PerformanceMetricsQuerySerializer, request)
        report = selectors.performance_metrics(
            request.tenant,
            period=query["period"],
            limit=query["limit"],
            offset=query["offset"],
            tz=query["tz"],
        )
        return Response(PerformanceMetricsSerializer(report).data)

    @extend_schema(
        parameters=[TeamPerformanceQuerySerializer], responses={200: TeamPerformanceSerializer}
    )
    @action(detail=False, methods=["get"], url_path="team-performance")
    def team_performance(self, request):
        """Each representative's figures over the current period, with their trend."""
        query = _parsed(TeamPerformanceQuerySerializer, request)
        report = selectors.team_performance(request.tenant, period=query["period"], tz=query["tz"])
        return Response(TeamPerformanceSerializer(report).data)


class QueryEventViewSet(TenantContextViewSet):
    """Ingestion of the product's query events."""

    serializer_class = EventBatchSerializer
    required_permissions = {"create": "analytics.write"}

    @extend_schema(request=EventBatchSerializer, responses={200: EventBatchResultSerializer})
    def create(self, request):
        """Store a batch of up to 1,000 query events. Each is validated on its own: the valid
        ones are stored and the invalid ones listed in `errors` with their index. An event
        whose id was already received (in an earlier batch or earlier in this one) changes
        nothing and is counted in `duplicates`, so a batch can be resent safely."""
        batch = EventBatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        events, errors, repeated = validated_events(batch.validated_data["events"])
        stored = services.query_events_ingest(tenant=request.tenant, events=events)
        result = {
            "received": len(batch.validated_data["events"]),
            "accepted": len(stored),
            "duplicates": repeated + len(events) - len(stored),
            "rejected": len(errors),
            "errors": errors,
        }
        return Response(EventBatchResultSerializer(result).data, status=status.HTTP_200_OK)


class GatewayMetricsViewSet(TenantContextViewSet):
    """GET gateway/metrics: the gateway's tokens by model today and this month, its cost, and a
    daily series, read from the gateway stream's roll-ups like every report here. It is the
    gateway's own figure, so it needs the gateway's read permission and keeps the ordinary
    rates rather than the reports' `analytics` one."""

    required_permissions = {"metrics": "playground.read"}

    @extend_schema(
        parameters=[GatewayMetricsQuerySerializer],
        responses={200: GatewayMetricsSerializer},
        summary="Gateway token metrics",
    )
    @action(detail=False, methods=["get"], url_path="metrics")
    def metrics(self, request):
        query = _parsed(GatewayMetricsQuerySerializer, request)
        data = selectors.gateway_metrics(request.tenant, **query)
        data["currency"] = settings.GATEWAY_CURRENCY
        return Response(GatewayMetricsSerializer(data).data)
