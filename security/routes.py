"""The (prefix, viewset, basename) triples this app registers on the one API router.

config/urls.py, the composition root, registers them under /api/v1/: the prefix is the
resource's plural path (`invoices`), the basename its singular. Every routed action needs a
permission (tests/api walks them all), and each tenant-owned resource joins the battery in
tests/security/test_api.py.
"""

from .views import (
    ComplianceAuditViewSet,
    IncidentViewSet,
    ProcessingActivityViewSet,
    SecurityReportViewSet,
)

routes: list = [
    ("security/incidents", IncidentViewSet, "security-incident"),
    ("security/audits", ComplianceAuditViewSet, "compliance-audit"),
    ("security/data-processing", ProcessingActivityViewSet, "processing-activity"),
    ("security/reports", SecurityReportViewSet, "security-report"),
]
