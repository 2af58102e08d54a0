"""Every routed action against every kind of caller, compared with the role table.

Callers in one tenant: each role (token auth), a read-only API key of the owner, and a staff
operator who is not a member. What the table says (tenants.permissions.ROLE_PERMISSIONS, the
access levels, and the API-key rules of `key_may_call`) must be what the API does: allowed means
anything but 401/403 (a random id is a 404, an empty body a 400), refused means 403
INSUFFICIENT_PERMISSIONS.
"""

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from tenants.models import Role
from tenants.permissions import (
    AUTHENTICATED,
    PUBLIC,
    READ_PERMISSIONS,
    ROLE_PERMISSIONS,
    STAFF,
    TENANT_MEMBER,
    permissions_in,
)
from tenants.resolution import TenantMode
from tests.conftest import assert_envelope, token_for
from tests.factories import TenantFactory, UserFactory, issue_api_key

from .endpoints import ENDPOINTS

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]

ROLES = [Role.VIEWER, Role.MEMBER, Role.BILLING, Role.DPO, Role.ADMIN, Role.OWNER]
KEY_SCOPES = ["read"]


@dataclass
class Principal:
    name: str
    client: APIClient
    role: str | None = None
    is_key: bool = False
    is_staff: bool = False


def principals(make_caller) -> list[Principal]:
    tenant = TenantFactory()
    found = []
    for role in ROLES:
        caller = make_caller(role, tenant=tenant)
        found.append(Principal(role.value, caller.client, role=role))
        if role == Role.OWNER:
            _, raw = issue_api_key(caller.membership, scopes=KEY_SCOPES)
            key_client = APIClient()
            key_client.credentials(HTTP_X_API_KEY=raw)
            found.append(Principal("read-only key", key_client, role=role, is_key=True))
    staff = UserFactory(is_staff=True)
    staff_client = APIClient()
    staff_client.credentials(
        HTTP_AUTHORIZATION=f"Token {token_for(staff)}", HTTP_X_ORGANIZATION_ID=str(tenant.pk)
    )
    found.append(Principal("staff", staff_client, is_staff=True))
    return found


def key_may_call(endpoint) -> bool:
    """API keys reach only tenant endpoints, never staff actions, and only the actions a view
    opens to them (`api_key_actions`; key management and logout are for people)."""
    view = endpoint.view_class
    if view.tenant_mode is TenantMode.NONE or endpoint.requirement == STAFF:
        return False
    return view.api_key_actions is None or endpoint.action in view.api_key_actions


def allowed(principal: Principal, endpoint) -> bool:
    requirement = endpoint.requirement
    if requirement == PUBLIC:
        return True
    if principal.is_key and not key_may_call(endpoint):
        return False
    if requirement == STAFF:
        return principal.is_staff
    if requirement in (AUTHENTICATED, TENANT_MEMBER):
        return True
    if principal.is_staff:
        return True
    granted = ROLE_PERMISSIONS[principal.role]
    if principal.is_key:
        granted = granted & READ_PERMISSIONS
    return any(name in granted for name in permissions_in(requirement))


def test_the_matrix_covers_every_kind_of_requirement():
    requirements = {endpoint.requirement for endpoint in ENDPOINTS}

    assert {PUBLIC, AUTHENTICATED, TENANT_MEMBER} <= requirements
    assert any(permissions_in(requirement) for requirement in requirements)
    assert any(name.endswith(".write") for endpoint in ENDPOINTS for name in endpoint.permissions)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_every_action_answers_every_caller_as_the_role_table_says(endpoint, make_caller):
    mismatches = []
    for principal in principals(make_caller):
        response = getattr(principal.client, endpoint.method)(endpoint.url(), {}, format="json")
        expected = allowed(principal, endpoint)
        if expected and response.status_code in (401, 403):
            mismatches.append(f"{principal.name}: expected allowed, got {response.status_code}")
        elif not expected:
            if response.status_code != 403:
                mismatches.append(f"{principal.name}: expected 403, got {response.status_code}")
            else:
                assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")

    assert not mismatches, f"{endpoint}: " + "; ".join(mismatches)
