"""The request path of an authenticated read: one statement for the caller (credential, user,
membership and tenant; accounts.principals), one for the view, whatever the credential; tenant
resolution from what authentication read; every change to access seen on the very next request.

These tests run in a transaction, where a process keeps no caller's lookup; what is kept
between requests, and that changes are still seen at once, is in test_kept_lookups.py.
"""

import pytest
from django.contrib.auth import HASH_SESSION_KEY
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.models import AuthToken
from accounts.services import jwt_login
from tenants.models import MembershipStatus, Role, TenantStatus
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, TenantFactory, issue_api_key

ORG_URL = "/api/v1/organizations/current"
MEMBERS_URL = "/api/v1/organizations/members"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
CREDENTIALS = ("token", "jwt", "api_key", "session")


def client_for(caller, credential: str, *, named=True) -> APIClient:
    """A client of `caller` with one kind of credential, naming its organization or not."""
    client = APIClient()
    headers = {"HTTP_X_ORGANIZATION_ID": str(caller.tenant.pk)} if named else {}
    if credential == "token":
        headers["HTTP_AUTHORIZATION"] = f"Token {caller.token}"
    elif credential == "jwt":
        headers["HTTP_AUTHORIZATION"] = f"Bearer {jwt_login(user=caller.user)['access_token']}"
    elif credential == "api_key":
        _, raw = issue_api_key(caller.membership)
        headers["HTTP_X_API_KEY"] = raw
    else:
        client.force_login(caller.user, backend=MODEL_BACKEND)
    client.credentials(**headers)
    return client


def statements_of(client, url=ORG_URL) -> list[str]:
    """The SQL statements of a second GET of `url` (the first one warms what is kept per
    process: compiled statements, the session in the cache)."""
    assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return [query["sql"] for query in captured]


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.redis
def test_a_trivial_read_is_two_statements_for_every_credential(owner, credential):
    statements = statements_of(client_for(owner, credential))

    assert len(statements) == 2, statements
    assert all(sql.lstrip().upper().startswith("SELECT") for sql in statements)


@pytest.mark.parametrize("credential", ["token", "jwt", "session"])
@pytest.mark.redis
def test_the_only_organization_is_resolved_without_another_statement(owner, credential):
    statements = statements_of(client_for(owner, credential, named=False))

    assert len(statements) == 2, statements


@pytest.mark.redis
def test_an_organization_named_by_slug_is_resolved_in_the_same_statement(owner):
    client = owner.client_for(owner.tenant.slug.upper())

    statements = statements_of(client)

    assert len(statements) == 2, statements
    assert client.get(ORG_URL).json()["id"] == str(owner.tenant.pk)


def test_a_member_of_two_organizations_must_name_one(owner):
    MembershipFactory(user=owner.user, role=Role.MEMBER)

    response = owner.client_for(None).get(ORG_URL)

    assert_envelope(response, 400, "TENANT_REQUIRED")
    assert owner.client_for(owner.tenant.pk).get(ORG_URL).status_code == 200


@pytest.mark.parametrize("credential", ["token", "jwt", "session"])
def test_an_organization_the_caller_is_not_in_is_not_found(owner, credential):
    client = client_for(owner, credential, named=False)
    other = TenantFactory()

    for name in (str(other.pk), other.slug, "not a name!"):
        response = client.get(ORG_URL, HTTP_X_ORGANIZATION_ID=name)
        assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


def test_staff_reach_an_organization_they_are_not_a_member_of(staff_client):
    other = TenantFactory()

    response = staff_client.get(ORG_URL, HTTP_X_ORGANIZATION_ID=str(other.pk))

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(other.pk)


def test_header_and_query_naming_two_organizations_is_refused(owner):
    other = MembershipFactory(user=owner.user).tenant

    response = owner.client.get(f"{ORG_URL}?organization_id={other.pk}")

    assert_envelope(response, 400)


# --- Every change seen on the very next request ----------------------------------------------


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_a_suspended_member_is_refused_on_the_next_request(owner, credential):
    client = client_for(owner, credential)
    assert client.get(MEMBERS_URL).status_code == 200

    owner.membership.status = MembershipStatus.SUSPENDED
    owner.membership.save(update_fields=["status"])

    assert client.get(MEMBERS_URL).status_code in (401, 404)


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_a_suspended_organization_is_refused_on_the_next_request(owner, credential):
    client = client_for(owner, credential)
    assert client.get(MEMBERS_URL).status_code == 200

    owner.tenant.status = TenantStatus.SUSPENDED
    owner.tenant.save(update_fields=["status"])

    response = client.get(MEMBERS_URL)
    assert response.status_code in (401, 403), response.content


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_a_deactivated_user_is_refused_on_the_next_request(owner, credential):
    client = client_for(owner, credential)
    assert client.get(ORG_URL).status_code == 200

    owner.user.is_active = False
    owner.user.save(update_fields=["is_active"])

    assert client.get(ORG_URL).status_code in (401, 403)


def test_a_deleted_token_is_refused_on_the_next_request(owner):
    assert owner.client.get(ORG_URL).status_code == 200

    AuthToken.objects.filter(user=owner.user).delete()

    assert_envelope(owner.client.get(ORG_URL), 401)


@pytest.mark.parametrize("credential", ["jwt", "session"])
def test_a_password_change_ends_jwts_and_sessions_on_the_next_request(owner, credential):
    client = client_for(owner, credential)
    assert client.get(ORG_URL).status_code == 200

    owner.user.set_password("a-brand-new-password-42")
    owner.user.save(update_fields=["password"])

    assert client.get(ORG_URL).status_code in (401, 403)


def test_a_session_whose_password_hash_no_longer_matches_is_flushed(owner):
    client = client_for(owner, "session")
    session = client.session
    session[HASH_SESSION_KEY] = "not-the-users-hash"
    session.save()

    assert client.get(ORG_URL).status_code in (401, 403)
    assert HASH_SESSION_KEY not in client.session


def test_a_session_signed_in_with_a_backend_no_longer_configured_is_anonymous(owner, settings):
    client = client_for(owner, "session")
    settings.AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend"]

    assert client.get(ORG_URL).status_code in (401, 403)


def test_a_session_write_still_needs_the_csrf_token(owner):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner.user, backend=MODEL_BACKEND)

    response = client.patch(ORG_URL, {"description": "x"}, format="json")

    assert_envelope(response, 403)
