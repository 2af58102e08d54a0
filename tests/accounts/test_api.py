"""The API keys endpoint joined to the generic battery (tests/api/battery.py)."""

from tests.api.battery import ResourceBattery


class TestAPIKeys(ResourceBattery):
    url = "/api/v1/api-keys/"
    create_data = {"name": "CI", "scopes": ["read"]}
    update_data = {"name": "Renamed", "scopes": ["read", "write"]}
    audit_prefix = "api_key"

    def assert_destroyed(self, obj):
        # DELETE revokes: the row stays, with its usage figures, inactive.
        obj.refresh_from_db()
        assert obj.revoked_at is not None and not obj.is_active
