"""The API contract, checked over every routed endpoint (see endpoints.py)."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.services import api_key_revoke
from tenants.api import ControlPlaneAPIMixin
from tenants.models import Role
from tenants.permissions import ACCESS_LEVELS, ALL_PERMISSIONS, PUBLIC, AnyOf
from tests.conftest import assert_envelope
from tests.factories import TenantFactory, factory_for, issue_api_key

from .endpoints import ENDPOINTS

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]

PROTECTED = [e for e in ENDPOINTS if e.requirement != PUBLIC]
WITH_PERMISSION = [e for e in ENDPOINTS if e.permissions]
IN_TENANT = [e for e in ENDPOINTS if e.needs_tenant]
TENANT_DETAIL = [e for e in ENDPOINTS if e.is_tenant_scoped and e.is_detail]
TENANT_LISTS = [e for e in ENDPOINTS if e.is_tenant_scoped and e.action == "list"]


def _call(client, endpoint, url=None):
    return getattr(client, endpoint.method)(url or endpoint.url(), {}, format="json")


def test_the_router_serves_endpoints():
    assert len(ENDPOINTS) >= 7
    assert PROTECTED and WITH_PERMISSION and IN_TENANT and TENANT_DETAIL and TENANT_LISTS


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_every_action_declares_a_known_requirement(endpoint):
    assert issubclass(endpoint.view_class, ControlPlaneAPIMixin), endpoint
    assert endpoint.requirement is not None, f"{endpoint} has no required_permissions entry"
    requirement = endpoint.requirement
    if isinstance(requirement, AnyOf):
        assert set(requirement) <= ALL_PERMISSIONS, requirement
    else:
        assert requirement in ACCESS_LEVELS | ALL_PERMISSIONS, requirement


@pytest.mark.parametrize("endpoint", PROTECTED, ids=str)
def test_unauthenticated_caller_gets_401(endpoint):
    assert_envelope(_call(APIClient(), endpoint), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize("endpoint", PROTECTED, ids=str)
def test_invalid_token_gets_401(endpoint):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert_envelope(_call(client, endpoint), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize("endpoint", PROTECTED, ids=str)
@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_invalid_api_key_gets_401(endpoint, header):
    client = APIClient()
    value = "cp_" + "0" * 32 + "_" + "x" * 43
    client.credentials(**{header: value if header == "HTTP_X_API_KEY" else f"Api-Key {value}"})
    assert_envelope(_call(client, endpoint), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize("endpoint", PROTECTED, ids=str)
def test_revoked_api_key_gets_401(endpoint, make_caller):
    caller = make_caller(Role.OWNER)
    key, raw = issue_api_key(caller.membership, scopes=["read", "write"])
    with transaction.atomic():
        api_key_revoke(api_key=key, actor=caller.user)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    assert_envelope(_call(client, endpoint), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize("endpoint", WITH_PERMISSION, ids=str)
def test_member_lacking_the_permission_gets_403(endpoint, make_caller):
    # An owner holds everything; without the permission (every one an AnyOf names) it is refused.
    caller = make_caller(Role.OWNER, permissions=_overrides(endpoint.permissions, granted=None))
    assert_envelope(_call(caller.client, endpoint), 403, "INSUFFICIENT_PERMISSIONS")


@pytest.mark.parametrize("endpoint", WITH_PERMISSION, ids=str)
def test_member_with_the_permission_is_not_refused(endpoint, make_caller):
    # Each permission of an AnyOf is enough alone: the others are withdrawn.
    for granted in endpoint.permissions:
        overrides = _overrides(endpoint.permissions, granted=granted)
        caller = make_caller(Role.VIEWER, permissions=overrides)
        response = _call(caller.client, endpoint)
        assert response.status_code not in (401, 403), (endpoint, granted, response.content)


def _overrides(names, *, granted):
    """A permission object granting `granted` and withdrawing the other `names`."""
    overrides: dict[str, dict[str, bool]] = {}
    for name in names:
        area, action = name.split(".")
        overrides.setdefault(area, {})[action] = name == granted
    return overrides


@pytest.mark.parametrize("endpoint", IN_TENANT, ids=str)
def test_naming_a_tenant_the_caller_is_not_in_gets_404(endpoint, make_caller):
    caller = make_caller(Role.OWNER)
    client = caller.client_for(TenantFactory().pk)
    assert_envelope(_call(client, endpoint), 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("endpoint", TENANT_DETAIL + TENANT_LISTS, ids=str)
def test_every_tenant_scoped_model_has_a_factory(endpoint):
    # A list-only or detail route of a model without one fails here, naming where to add it.
    assert factory_for(endpoint.model)._meta.model is endpoint.model


@pytest.mark.parametrize("endpoint", TENANT_DETAIL, ids=str)
def test_another_tenants_object_is_404_like_a_random_id(endpoint, make_caller):
    caller = make_caller(Role.OWNER)
    foreign = factory_for(endpoint.model)(tenant=TenantFactory())
    own = endpoint.make(caller.tenant, owner=caller.user)

    foreign_error = assert_envelope(
        _call(caller.client, endpoint, endpoint.url(str(foreign.pk))), 404, "RESOURCE_NOT_FOUND"
    )
    random_error = assert_envelope(_call(caller.client, endpoint), 404, "RESOURCE_NOT_FOUND")
    assert foreign_error["message"] == random_error["message"]
    if endpoint.method == "get":
        assert _call(caller.client, endpoint, endpoint.url(str(own.pk))).status_code == 200


@pytest.mark.parametrize("endpoint", TENANT_LISTS, ids=str)
def test_list_shows_only_the_callers_tenant(endpoint, make_caller):
    caller = make_caller(Role.OWNER)
    factory = factory_for(endpoint.model)
    own = {str(endpoint.make(caller.tenant, owner=caller.user).pk) for _ in range(3)}
    for _ in range(3):
        factory(tenant=TenantFactory())
    response = caller.client.get(endpoint.url(), {"page_size": 100})
    assert response.status_code == 200
    ids = {row["id"] for row in response.json()["results"]}
    assert own <= ids
    assert all(
        row.get("tenant_id", str(caller.tenant.pk)) == str(caller.tenant.pk)
        for row in response.json()["results"]
    )
    assert not {str(o.pk) for o in endpoint.model.objects.exclude(tenant=caller.tenant)} & ids


# Models whose rows per tenant are bounded: compared at one row and at the bound.
ROWS_PER_TENANT_BOUND = {
    "support.SlaPolicy": 4,  # one policy per ticket priority
}


@pytest.mark.parametrize("endpoint", TENANT_LISTS, ids=str)
def test_list_query_count_does_not_grow_with_page_size(endpoint, make_caller):
    bound = ROWS_PER_TENANT_BOUND.get(endpoint.model._meta.label)

    def queries_for(rows: int) -> int:
        caller = make_caller(Role.OWNER)
        for _ in range(rows):
            endpoint.make(caller.tenant, owner=caller.user)
        with CaptureQueriesContext(connection) as captured:
            response = caller.client.get(endpoint.url(), {"page_size": 100})
        assert response.status_code == 200
        assert len(response.json()["results"]) >= rows
        return len(captured)

    if bound is not None:
        assert queries_for(1) == queries_for(bound)
    else:
        assert queries_for(3) == queries_for(30)
