"""GET /api/v1/auth/me: the caller, their memberships, their permissions in the current tenant."""

import pytest
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from tenants.models import MembershipStatus, Role
from tenants.permissions import ROLE_PERMISSIONS, effective_permissions
from tests.conftest import assert_envelope, token_for
from tests.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

ME_URL = "/api/v1/auth/me"


def me(user, **headers) -> dict:
    """GET /auth/me as `user` (token auth, no tenant header unless given); the decoded body."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    response = client.get(ME_URL, **headers)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize("url", [ME_URL, f"{ME_URL}/"])
def test_unauthenticated_caller_is_refused(api_client, url):
    assert_envelope(api_client.get(url), 401, "AUTHENTICATION_REQUIRED")


def test_me_describes_the_user():
    user = UserFactory(name="Grace Hopper")

    body = me(user)

    described = body["user"]
    assert parse_datetime(described.pop("date_joined")) == user.date_joined
    assert described == {
        "id": str(user.pk),
        "email": user.email,
        "name": "Grace Hopper",
        "is_staff": False,
    }


@pytest.mark.parametrize("role", [Role.OWNER, Role.MEMBER, Role.VIEWER, Role.BILLING, Role.DPO])
def test_single_membership_is_the_current_tenant_with_its_role_permissions(role):
    membership = MembershipFactory(role=role)

    body = me(membership.user)

    tenant = membership.tenant
    assert body["tenant"] == {
        "id": str(tenant.pk),
        "slug": tenant.slug,
        "name": tenant.name,
        "status": tenant.status,
    }
    assert body["role"] == role
    assert body["permissions"] == sorted(ROLE_PERMISSIONS[role])


def test_two_memberships_without_header_have_no_current_tenant():
    user = UserFactory()
    MembershipFactory(user=user, role=Role.OWNER)
    MembershipFactory(user=user, role=Role.VIEWER)

    body = me(user)

    assert body["tenant"] is None
    assert body["role"] is None
    assert body["permissions"] == []
    assert len(body["memberships"]) == 2


@pytest.mark.parametrize("identifier", ["pk", "slug"])
def test_organization_header_picks_the_current_tenant(identifier):
    user = UserFactory()
    MembershipFactory(user=user, role=Role.OWNER)
    chosen = MembershipFactory(user=user, role=Role.VIEWER)

    body = me(user, HTTP_X_ORGANIZATION_ID=str(getattr(chosen.tenant, identifier)))

    assert body["tenant"]["id"] == str(chosen.tenant_id)
    assert body["role"] == Role.VIEWER
    assert body["permissions"] == sorted(ROLE_PERMISSIONS[Role.VIEWER])


def test_organization_header_for_a_tenant_the_user_is_not_in_is_not_found():
    membership = MembershipFactory()
    other = TenantFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(membership.user)}")

    response = client.get(ME_URL, HTTP_X_ORGANIZATION_ID=str(other.pk))

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


def test_membership_permission_overrides_are_applied():
    overrides = {"audit": {"read": False}, "billing": {"write": True}}
    membership = MembershipFactory(role=Role.DPO, permissions=overrides)

    body = me(membership.user)

    assert "audit.read" not in body["permissions"]
    assert "billing.write" in body["permissions"]
    assert body["permissions"] == sorted(effective_permissions(Role.DPO, overrides))
    assert "audit.read" in ROLE_PERMISSIONS[Role.DPO]


def test_memberships_list_every_membership_of_the_user():
    user = UserFactory()
    mine = [
        MembershipFactory(user=user, role=Role.OWNER, tenant=TenantFactory(name="Alpha")),
        MembershipFactory(user=user, role=Role.BILLING, tenant=TenantFactory(name="Bravo")),
        MembershipFactory(
            user=user,
            role=Role.MEMBER,
            status=MembershipStatus.SUSPENDED,
            tenant=TenantFactory(name="Charlie"),
        ),
    ]
    MembershipFactory()  # someone else's

    body = me(user, HTTP_X_ORGANIZATION_ID=str(mine[0].tenant_id))

    listed = {m["id"]: m for m in body["memberships"]}
    assert set(listed) == {str(m.pk) for m in mine}
    for membership in mine:
        entry = listed[str(membership.pk)]
        assert entry["tenant"]["id"] == str(membership.tenant_id)
        assert entry["tenant"]["name"] == membership.tenant.name
        assert entry["role"] == membership.role
        assert entry["status"] == membership.status
