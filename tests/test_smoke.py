"""The smoke part: runs on PostgreSQL and again on the embedded SQLite default."""

import pytest

from .conftest import assert_envelope
from .factories import TEST_PASSWORD, MembershipFactory

pytestmark = [pytest.mark.smoke, pytest.mark.django_db]


def test_health_answers_without_auth(api_client):
    response = api_client.get("/health/")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response["X-Request-ID"]


def test_ready_reports_every_dependency(api_client):
    response = api_client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "cache": "ok", "broker": "ok"}


def test_token_from_login_reads_me(api_client):
    membership = MembershipFactory()
    response = api_client.post(
        "/api/v1/auth/token/", {"username": membership.user.email, "password": TEST_PASSWORD}
    )
    assert response.status_code == 200
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    me = api_client.get("/api/v1/auth/me").json()
    assert me["user"]["email"] == membership.user.email
    assert me["tenant"]["id"] == str(membership.tenant_id)
    assert "members.read" in me["permissions"]


def test_unknown_api_path_is_the_envelope(api_client):
    assert_envelope(api_client.get("/api/v1/no-such-thing/"), 404, "RESOURCE_NOT_FOUND")


def test_created_tenant_is_listed_for_its_owner(owner):
    created = owner.client.post("/api/v1/tenants/", {"name": "Smoke Test Co"})
    assert created.status_code == 201, created.content
    slugs = [t["slug"] for t in owner.client.get("/api/v1/tenants").json()["results"]]
    assert created.json()["slug"] in slugs
