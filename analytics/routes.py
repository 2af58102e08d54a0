"""The (prefix, viewset, basename) triples this app registers on the one API router.

config/urls.py, the composition root, registers them under /api/v1/. Every routed action
needs a permission (tests/api walks them all).
"""

from .views import AnalyticsReportViewSet, GatewayMetricsViewSet, QueryEventViewSet

routes: list = [
    ("analytics/events", QueryEventViewSet, "analytics-event"),
    ("analytics", AnalyticsReportViewSet, "analytics"),
    # The gateway's token metrics: served from this app's roll-ups of its calls.
    ("gateway", GatewayMetricsViewSet, "gateway"),
]
