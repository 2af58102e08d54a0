"""GET /api/v1/roles: each role and the permissions it grants by default."""

import pytest

from tenants.models import Role
from tenants.permissions import PERMISSIONS_BY_AREA, ROLE_PERMISSIONS
from tests.conftest import assert_envelope

pytestmark = pytest.mark.django_db

ROLES_URL = "/api/v1/roles"


@pytest.mark.smoke
def test_roles_list_every_role_with_its_permissions(owner):
    response = owner.client.get(ROLES_URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == len(Role) == 6
    by_role = {row["role"]: row for row in body["results"]}
    assert set(by_role) == set(Role.values)
    for role in Role:
        row = by_role[role.value]
        assert row["name"] == role.label
        assert row["permissions"] == sorted(ROLE_PERMISSIONS[role])
        assert set(row["permissions_object"]) == set(PERMISSIONS_BY_AREA)
        granted = {
            f"{area}.{action}"
            for area, actions in row["permissions_object"].items()
            for action, allowed in actions.items()
            if allowed
        }
        assert granted == set(ROLE_PERMISSIONS[role])


def test_viewer_permissions_object_maps_areas_to_actions(owner):
    body = owner.client.get(ROLES_URL + "/").json()
    viewer = next(row for row in body["results"] if row["role"] == "viewer")

    assert viewer["permissions_object"]["documents"] == {
        "read": True,
        "write": False,
        "delete": False,
    }
    assert viewer["permissions_object"]["billing"] == {"read": False, "write": False}


def test_roles_need_authentication(api_client):
    assert_envelope(api_client.get(ROLES_URL), 401, "AUTHENTICATION_REQUIRED")
