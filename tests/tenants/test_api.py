"""The members endpoint joined to the generic battery (tests/api/battery.py). People join by
invitation, so there is no create; its rules have their own tests (test_members.py)."""

from tenants.models import Role
from tests.api.battery import ResourceBattery


class TestMembers(ResourceBattery):
    url = "/api/v1/organizations/members/"
    update_data = {"role": Role.VIEWER, "status": "active"}
    audit_prefix = "member"
    filter_examples = {"search": lambda membership: membership.user.email}
