"""API tokens after they are issued: stored hashed, refused once expired, purged in batches."""

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.sessions.backends.cached_db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts.models import AuthToken
from accounts.services import auth_tokens_purge_expired
from accounts.tasks import purge_expired_auth_tokens
from audit.models import AuditEvent
from tests.conftest import assert_envelope, token_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ME_URL = "/api/v1/auth/me"


def get_me(api_client, raw_token: str):
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {raw_token}")
    return api_client.get(ME_URL)


def make_tokens(*, expired: int, valid: int) -> tuple[set[str], set[str]]:
    """Issue tokens (one user each) and expire some; returns (expired digests, valid digests)."""
    for _ in range(expired + valid):
        token_for(UserFactory())
    digests = list(AuthToken.objects.values_list("digest", flat=True))
    expired_digests, valid_digests = set(digests[:expired]), set(digests[expired:])
    AuthToken.objects.filter(digest__in=expired_digests).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    return expired_digests, valid_digests


def remaining_digests() -> set[str]:
    return set(AuthToken.objects.values_list("digest", flat=True))


def test_token_is_stored_only_as_its_sha256_digest():
    user = UserFactory()

    raw = token_for(user)

    token = AuthToken.objects.get(user=user)
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert token.digest != raw
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT * FROM {connection.ops.quote_name(AuthToken._meta.db_table)}"  # noqa: S608
        )
        rows = cursor.fetchall()
    assert len(rows) == 1
    assert all(raw not in str(value) for value in rows[0])


def test_token_expires_after_the_configured_lifetime(settings):
    before = timezone.now()

    token_for(UserFactory())

    token = AuthToken.objects.get()
    assert before + settings.AUTH_TOKEN_TTL <= token.expires_at
    assert token.expires_at <= timezone.now() + settings.AUTH_TOKEN_TTL
    assert not token.is_expired


def test_valid_token_authenticates(api_client):
    user = UserFactory()

    response = get_me(api_client, token_for(user))

    assert response.status_code == 200
    assert response.json()["user"]["email"] == user.email


def test_expired_token_is_refused(api_client):
    user = UserFactory()
    raw = token_for(user)
    AuthToken.objects.filter(user=user).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = get_me(api_client, raw)

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")
    assert AuthToken.objects.get(user=user).is_expired


@pytest.mark.parametrize("garbage", ["garbage", "0" * 40, "a" * 64, "ü-not-ascii"])
def test_unknown_token_is_refused(api_client, garbage):
    token_for(UserFactory())

    response = get_me(api_client, garbage)

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_presenting_the_digest_instead_of_the_key_is_refused(api_client):
    user = UserFactory()
    token_for(user)
    digest = AuthToken.objects.get(user=user).digest

    response = get_me(api_client, digest)

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_inactive_users_token_is_refused(api_client):
    user = UserFactory()
    raw = token_for(user)
    user.is_active = False
    user.save(update_fields=["is_active"])

    response = get_me(api_client, raw)

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_deleting_the_token_revokes_it(api_client):
    user = UserFactory()
    raw = token_for(user)
    AuthToken.objects.filter(user=user).delete()

    response = get_me(api_client, raw)

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_purge_removes_only_expired_tokens(batch_size):
    expired, valid = make_tokens(expired=5, valid=3)

    removed = auth_tokens_purge_expired(batch_size=batch_size)

    assert removed == 5
    assert remaining_digests() == valid
    assert not remaining_digests() & expired


def test_purge_with_nothing_expired_removes_nothing():
    _, valid = make_tokens(expired=0, valid=2)

    assert auth_tokens_purge_expired(batch_size=1) == 0
    assert remaining_digests() == valid


def test_purge_command_removes_only_expired_tokens():
    _, valid = make_tokens(expired=3, valid=2)
    out = StringIO()

    call_command("purge_expired_tokens", stdout=out)

    assert remaining_digests() == valid
    assert "Removed 3 expired token(s) and session(s)." in out.getvalue()


def test_purge_task_removes_only_expired_tokens():
    _, valid = make_tokens(expired=4, valid=1)

    result = purge_expired_auth_tokens.apply()

    assert result.successful()
    assert result.get() == 4
    assert remaining_digests() == valid


def test_purge_task_called_as_a_function_removes_expired_tokens():
    _, valid = make_tokens(expired=2, valid=2)

    assert purge_expired_auth_tokens() == 2
    assert remaining_digests() == valid


@pytest.mark.django_db
def test_purge_also_removes_expired_jwt_refresh_records():
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

    from audit.models import AuditEvent
    from tests.factories import UserFactory

    user = UserFactory()
    now = timezone.now()
    expired = OutstandingToken.objects.create(
        user=user, jti="expired-jti", token="x", expires_at=now - timedelta(hours=1)
    )
    BlacklistedToken.objects.create(token=expired)
    live = OutstandingToken.objects.create(
        user=user, jti="live-jti", token="y", expires_at=now + timedelta(hours=1)
    )

    assert auth_tokens_purge_expired(batch_size=1) == 1

    assert list(OutstandingToken.objects.values_list("pk", flat=True)) == [live.pk]
    assert not BlacklistedToken.objects.exists()
    event = AuditEvent.objects.get(event_type="auth.tokens.purged")
    assert event.payload == {
        "tokens_removed": 0,
        "refresh_tokens_removed": 1,
        "sessions_removed": 0,
    }


def test_purge_removes_only_expired_sessions():
    """Django never deletes a session row on its own (a staff member's admin logins)."""
    live, expired = SessionStore(), SessionStore()
    live["who"], expired["who"] = "live", "expired"
    live.create()
    expired.set_expiry(-60)
    expired.create()
    assert Session.objects.count() == 2

    assert auth_tokens_purge_expired(batch_size=1) == 1

    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]
    assert SessionStore(session_key=live.session_key).load() == {"who": "live"}
    event = AuditEvent.objects.get(event_type="auth.tokens.purged")
    assert event.payload["sessions_removed"] == 1
