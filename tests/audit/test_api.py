"""The audit events endpoint joined to the generic battery (tests/api/battery.py): read only."""

from tests.api.battery import ResourceBattery


class TestAuditEvents(ResourceBattery):
    url = "/api/v1/audit/events/"
    audit_prefix = "audit"
    filter_examples = {
        "since": lambda event: event.created_at.isoformat(),
        "until": lambda event: event.created_at.isoformat(),
        "actor": lambda event: "00000000-0000-0000-0000-000000000000",
    }
