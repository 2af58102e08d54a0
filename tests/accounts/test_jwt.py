"""JWT sessions: POST auth/login, auth/refresh (rotating, reuse refused), auth/logout."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.models import AuthToken
from audit.models import AuditEvent
from tenants.models import Role
from tests.conftest import assert_envelope, token_for
from tests.factories import TEST_PASSWORD, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

LOGIN_URL = "/api/v1/auth/login"
REFRESH_URL = "/api/v1/auth/refresh"
LOGOUT_URL = "/api/v1/auth/logout"
ME_URL = "/api/v1/auth/me"
WRONG_PASSWORD = "wrong-password-beef-cafe"


def login(user, client=None) -> dict:
    response = (client or APIClient()).post(
        LOGIN_URL, {"email": user.email, "password": TEST_PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def bearer(access_token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access_token}")
    return client


def refresh(refresh_token: str):
    return APIClient().post(REFRESH_URL, {"refresh_token": refresh_token}, format="json")


def audit_trail_text() -> str:
    return json.dumps(list(AuditEvent.objects.values()), default=str)


@pytest.mark.smoke
def test_login_answers_tokens_and_the_user():
    membership = MembershipFactory(role=Role.ADMIN, user=UserFactory(name="Ada"))

    body = login(membership.user)

    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds()
    assert body["expires_in"] == 15 * 60
    assert body["user"] == {
        "id": str(membership.user.pk),
        "email": membership.user.email,
        "name": "Ada",
        "organization_id": str(membership.tenant_id),
        "role": Role.ADMIN,
    }


@pytest.mark.parametrize("memberships", [0, 2])
def test_login_user_has_no_organization_unless_exactly_one(memberships):
    user = UserFactory()
    for _ in range(memberships):
        MembershipFactory(user=user)

    body = login(user)

    assert body["user"]["organization_id"] is None
    assert body["user"]["role"] is None


@pytest.mark.smoke
def test_access_token_authenticates_as_bearer():
    membership = MembershipFactory(role=Role.VIEWER)
    access = login(membership.user)["access_token"]

    response = bearer(access).get(ME_URL)

    assert response.status_code == 200, response.content
    assert response.json()["user"]["id"] == str(membership.user.pk)
    assert response.json()["role"] == Role.VIEWER


def test_login_is_audited_without_tokens_or_password():
    user = UserFactory()

    body = login(user)

    event = AuditEvent.objects.get(event_type="auth.login.succeeded")
    assert event.actor_id == user.pk
    assert event.payload == {"method": "jwt"}
    trail = audit_trail_text()
    for secret in (body["access_token"], body["refresh_token"], TEST_PASSWORD):
        assert secret not in trail


def test_wrong_password_is_refused_and_audited_without_the_password():
    user = UserFactory()

    response = APIClient().post(
        LOGIN_URL, {"email": user.email, "password": WRONG_PASSWORD}, format="json"
    )

    assert_envelope(response, 400, "VALIDATION_ERROR")
    event = AuditEvent.objects.get(event_type="auth.login.failed")
    assert event.payload == {
        "method": "jwt",
        "identifier": user.email,
        "reason": "invalid_credentials",
    }
    assert WRONG_PASSWORD not in audit_trail_text()
    assert not OutstandingToken.objects.exists()


def test_inactive_user_cannot_log_in():
    user = UserFactory(is_active=False)

    response = APIClient().post(
        LOGIN_URL, {"email": user.email, "password": TEST_PASSWORD}, format="json"
    )

    assert_envelope(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("body", [{}, {"email": "a@example.com"}, {"password": "x"}])
def test_missing_fields_are_named(body):
    response = APIClient().post(LOGIN_URL, body, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(error["details"]) <= {"email", "password"} and error["details"]


def test_stale_bearer_header_does_not_block_login():
    user = UserFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")

    assert login(user, client)["access_token"]


@pytest.mark.smoke
def test_refresh_rotates_and_the_old_refresh_token_is_refused():
    user = UserFactory()
    first = login(user)

    rotated = refresh(first["refresh_token"])
    replayed = refresh(first["refresh_token"])

    assert rotated.status_code == 200, rotated.content
    pair = rotated.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["refresh_token"] != first["refresh_token"]
    assert bearer(pair["access_token"]).get(ME_URL).status_code == 200
    error = assert_envelope(replayed, 401, "AUTHENTICATION_REQUIRED")
    assert "already used" in error["message"]
    assert refresh(pair["refresh_token"]).status_code == 200


def test_garbage_refresh_token_is_401():
    assert_envelope(refresh("not-a-token"), 401, "AUTHENTICATION_REQUIRED")


def test_an_access_token_is_not_a_refresh_token():
    access = login(UserFactory())["access_token"]

    assert_envelope(refresh(access), 401, "AUTHENTICATION_REQUIRED")


def test_access_token_expires_after_its_lifetime():
    access = login(UserFactory())["access_token"]

    with time_machine.travel(timezone.now() + timedelta(minutes=15, seconds=1)):
        response = bearer(access).get(ME_URL)

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_refresh_token_expires_after_its_lifetime():
    tokens = login(UserFactory())

    with time_machine.travel(timezone.now() + timedelta(hours=24, seconds=1)):
        assert_envelope(refresh(tokens["refresh_token"]), 401, "AUTHENTICATION_REQUIRED")


def test_a_password_change_ends_jwt_sessions():
    user = UserFactory()
    tokens = login(user)
    user.set_password("a-brand-new-password-42")
    user.save()

    assert_envelope(bearer(tokens["access_token"]).get(ME_URL), 401, "AUTHENTICATION_REQUIRED")
    assert_envelope(refresh(tokens["refresh_token"]), 401, "AUTHENTICATION_REQUIRED")


def test_a_deactivated_user_cannot_refresh():
    user = UserFactory()
    tokens = login(user)
    user.is_active = False
    user.save()

    assert_envelope(refresh(tokens["refresh_token"]), 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.smoke
def test_logout_blacklists_the_refresh_token():
    user = UserFactory()
    tokens = login(user)

    response = bearer(tokens["access_token"]).post(
        LOGOUT_URL, {"refresh_token": tokens["refresh_token"]}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json() == {"message": "Successfully logged out"}
    assert_envelope(refresh(tokens["refresh_token"]), 401, "AUTHENTICATION_REQUIRED")
    assert BlacklistedToken.objects.filter(token__user=user).count() == 1
    event = AuditEvent.objects.get(event_type="auth.logout")
    assert event.actor_id == user.pk
    assert event.payload == {"ended": ["jwt"]}
    assert tokens["refresh_token"] not in audit_trail_text()


def test_logout_with_a_hashed_token_deletes_that_token():
    user = UserFactory()
    raw = token_for(user)
    other = token_for(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")

    response = client.post(LOGOUT_URL, {}, format="json")

    assert response.json() == {"message": "Successfully logged out"}
    assert_envelope(client.get(ME_URL), 401, "AUTHENTICATION_REQUIRED")
    assert AuthToken.objects.filter(user=user).count() == 1
    client.credentials(HTTP_AUTHORIZATION=f"Token {other}")
    assert client.get(ME_URL).status_code == 200
    assert AuditEvent.objects.get(event_type="auth.logout").payload == {"ended": ["token"]}


def test_logout_of_a_jwt_session_needs_the_refresh_token():
    tokens = login(UserFactory())

    response = bearer(tokens["access_token"]).post(LOGOUT_URL, {}, format="json")

    assert "refresh_token" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert refresh(tokens["refresh_token"]).status_code == 200


def test_logout_refuses_another_users_refresh_token():
    mine = login(UserFactory())
    theirs = login(UserFactory())

    response = bearer(mine["access_token"]).post(
        LOGOUT_URL, {"refresh_token": theirs["refresh_token"]}, format="json"
    )

    assert "refresh_token" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert refresh(theirs["refresh_token"]).status_code == 200


def test_logout_needs_authentication():
    tokens = login(UserFactory())

    response = APIClient().post(
        LOGOUT_URL, {"refresh_token": tokens["refresh_token"]}, format="json"
    )

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_a_bad_bearer_token_is_a_plain_401():
    error = assert_envelope(bearer("abc.def.ghi").get(ME_URL), 401, "AUTHENTICATION_REQUIRED")

    assert error["message"] == "Invalid or expired token."
    assert error["details"] == {}


def test_auth_paths_answer_without_trailing_slash():
    user = UserFactory()
    response = APIClient().post(
        LOGIN_URL + "/", {"email": user.email, "password": TEST_PASSWORD}, format="json"
    )
    assert response.status_code == 200
    assert refresh(response.json()["refresh_token"]).status_code == 200


@pytest.mark.postgres
def test_concurrent_uses_of_one_refresh_token_succeed_once(transactional_db):
    """Two clients racing with the same refresh token: the row lock lets exactly one rotate."""
    import threading

    from django.db import connection as main_connection
    from django.db import connections

    tokens = login(UserFactory())
    barrier = threading.Barrier(2)
    statuses = []

    def use():
        barrier.wait()
        try:
            statuses.append(refresh(tokens["refresh_token"]).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 401]
    assert main_connection.vendor == "postgresql"
