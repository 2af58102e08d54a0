"""POST /api/v1/auth/token/: exchanging email and password for an API token."""

import json
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from accounts.models import AuthToken
from audit.models import AuditEvent
from config.settings import base as base_settings
from tests.conftest import assert_envelope, token_for
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/token/"
WRONG_PASSWORD = "wrong-password-f00d-c0ffee"


def audit_trail_text() -> str:
    """Every stored audit event, every column, as one string to search for leaked secrets."""
    rows = list(AuditEvent.objects.values())
    return json.dumps(rows, default=str)


def test_username_and_password_give_a_token_that_authenticates(api_client):
    user = UserFactory()

    response = api_client.post(TOKEN_URL, {"username": user.email, "password": TEST_PASSWORD})

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token"}
    assert isinstance(body["token"], str) and body["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    assert api_client.get("/api/v1/auth/me").json()["user"]["id"] == str(user.pk)


def test_email_field_is_accepted_instead_of_username(api_client):
    user = UserFactory()

    response = api_client.post(TOKEN_URL, {"email": user.email, "password": TEST_PASSWORD})

    assert response.status_code == 200, response.content
    assert AuthToken.objects.filter(user=user).count() == 1


@pytest.mark.parametrize("field", ["username", "email"])
def test_email_is_matched_case_insensitively(api_client, field):
    user = UserFactory(email="Ada.Lovelace@example.com")

    response = api_client.post(
        TOKEN_URL, {field: "  ADA.lovelace@EXAMPLE.com ", "password": TEST_PASSWORD}
    )

    assert response.status_code == 200, response.content
    assert AuthToken.objects.get().user == user


def test_token_endpoint_answers_without_trailing_slash(api_client):
    user = UserFactory()

    response = api_client.post(
        TOKEN_URL.rstrip("/"), {"email": user.email, "password": TEST_PASSWORD}
    )

    assert response.status_code == 200, response.content
    assert response.json()["token"]


def test_each_login_issues_a_new_token_and_both_stay_valid(api_client):
    user = UserFactory()
    credentials = {"email": user.email, "password": TEST_PASSWORD}

    first = api_client.post(TOKEN_URL, credentials).json()["token"]
    second = api_client.post(TOKEN_URL, credentials).json()["token"]

    assert first != second
    assert AuthToken.objects.filter(user=user).count() == 2
    for token in (first, second):
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert api_client.get("/api/v1/auth/me").status_code == 200


def test_wrong_password_is_refused_and_audited_without_the_password(api_client):
    user = UserFactory()

    response = api_client.post(TOKEN_URL, {"email": user.email, "password": WRONG_PASSWORD})

    assert_envelope(response, 400, "VALIDATION_ERROR")
    assert not AuthToken.objects.exists()
    event = AuditEvent.objects.get(event_type="auth.login.failed")
    assert event.tenant_id is None
    assert event.payload["identifier"] == user.email
    assert event.actor_label == user.email
    assert WRONG_PASSWORD not in audit_trail_text()
    assert not AuditEvent.objects.filter(event_type="auth.login.succeeded").exists()


def test_unknown_user_is_refused_and_audited(api_client):
    response = api_client.post(
        TOKEN_URL, {"username": "Nobody@Example.com", "password": WRONG_PASSWORD}
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "non_field_errors" in error["details"]
    event = AuditEvent.objects.get(event_type="auth.login.failed")
    assert event.actor_id is None
    assert event.payload["identifier"] == "nobody@example.com"
    assert WRONG_PASSWORD not in audit_trail_text()


def test_unknown_user_and_wrong_password_get_the_same_answer(api_client):
    user = UserFactory()

    unknown = api_client.post(TOKEN_URL, {"email": "ghost@example.com", "password": TEST_PASSWORD})
    wrong = api_client.post(TOKEN_URL, {"email": user.email, "password": WRONG_PASSWORD})

    unknown_error = assert_envelope(unknown, 400, "VALIDATION_ERROR")
    wrong_error = assert_envelope(wrong, 400, "VALIDATION_ERROR")
    assert unknown_error["details"] == wrong_error["details"]
    assert unknown_error["message"] == wrong_error["message"]


def test_inactive_user_cannot_obtain_a_token(api_client):
    user = UserFactory(is_active=False)

    response = api_client.post(TOKEN_URL, {"email": user.email, "password": TEST_PASSWORD})

    assert_envelope(response, 400, "VALIDATION_ERROR")
    assert not AuthToken.objects.exists()


def test_successful_login_is_audited_without_token_or_password(api_client):
    user = UserFactory()

    response = api_client.post(TOKEN_URL, {"email": user.email, "password": TEST_PASSWORD})

    token = response.json()["token"]
    event = AuditEvent.objects.get(event_type="auth.login.succeeded")
    assert event.actor_id == user.pk
    assert event.actor_type == "user"
    assert event.actor_label == user.email
    assert event.tenant_id is None
    trail = audit_trail_text()
    assert token not in trail
    assert TEST_PASSWORD not in trail


@pytest.mark.parametrize(
    ("body", "missing_field"),
    [
        ({"email": "someone@example.com"}, "password"),
        ({"username": "someone@example.com"}, "password"),
        ({"password": TEST_PASSWORD}, "email"),
        ({}, "password"),
    ],
)
def test_missing_field_is_named_in_the_error(api_client, body, missing_field):
    response = api_client.post(TOKEN_URL, body)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert missing_field in error["details"], error
    assert not AuthToken.objects.exists()
    assert not AuditEvent.objects.filter(event_type__startswith="auth.login").exists()


@pytest.mark.parametrize(
    "authorization",
    ["Token not-a-real-token", "Token ", "Bearer whatever", "Basic Zm9vOmJhcg=="],
)
def test_stale_authorization_header_does_not_block_login(api_client, authorization):
    user = UserFactory()
    api_client.credentials(HTTP_AUTHORIZATION=authorization)

    response = api_client.post(TOKEN_URL, {"email": user.email, "password": TEST_PASSWORD})

    assert response.status_code == 200, response.content
    assert AuthToken.objects.filter(user=user).count() == 1


def test_expired_token_in_header_does_not_block_login(api_client):
    user = UserFactory()
    stale = token_for(user)
    AuthToken.objects.filter(user=user).update(expires_at=timezone.now() - timedelta(hours=1))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {stale}")

    response = api_client.post(TOKEN_URL, {"email": user.email, "password": TEST_PASSWORD})

    assert response.status_code == 200, response.content
    assert response.json()["token"] != stale


def test_base_settings_hash_new_passwords_with_argon2(api_client):
    with override_settings(PASSWORD_HASHERS=base_settings.PASSWORD_HASHERS):
        user = UserFactory()
        user.refresh_from_db()

        assert user.password.startswith("argon2")
        assert user.check_password(TEST_PASSWORD)
        response = api_client.post(TOKEN_URL, {"email": user.email, "password": TEST_PASSWORD})

    assert response.status_code == 200, response.content
