"""Brute-force protection (django-axes): failed logins lock the account+address pair; while
locked even the right password answers 429 RATE_LIMIT_EXCEEDED with Retry-After; the lock lifts
after the cool-off."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from axes.models import AccessAttempt
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests.conftest import assert_envelope
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

WRONG_PASSWORD = "wrong-password-7a7a7a"
LOGIN_ENDPOINTS = {
    "jwt": ("/api/v1/auth/login", "email"),
    "token": ("/api/v1/auth/token/", "username"),
}


def attempt(kind: str, email: str, password: str, address: str = "127.0.0.1"):
    url, field = LOGIN_ENDPOINTS[kind]
    return APIClient().post(
        url, {field: email, "password": password}, format="json", REMOTE_ADDR=address
    )


def fail(kind: str, email: str, times: int, address: str = "127.0.0.1") -> list[int]:
    return [attempt(kind, email, WRONG_PASSWORD, address).status_code for _ in range(times)]


def assert_locked(response) -> int:
    error = assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
    retry_after = int(response["Retry-After"])
    assert error["details"]["retry_after_seconds"] == retry_after
    assert 0 < retry_after <= settings.AXES_COOLOFF_TIME.total_seconds()
    return retry_after


def test_defaults_are_five_failures_and_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60


@pytest.mark.smoke
@pytest.mark.parametrize("kind", list(LOGIN_ENDPOINTS))
def test_the_limit_locks_the_account_even_for_the_right_password(kind):
    user = UserFactory()

    statuses = fail(kind, user.email, settings.AXES_FAILURE_LIMIT)
    locked = attempt(kind, user.email, TEST_PASSWORD)

    assert statuses == [400] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    assert assert_locked(locked) == 15 * 60


@pytest.mark.parametrize("kind", list(LOGIN_ENDPOINTS))
def test_the_lock_lifts_after_the_cool_off(kind):
    user = UserFactory()
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        fail(kind, user.email, settings.AXES_FAILURE_LIMIT)
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        assert assert_locked(attempt(kind, user.email, TEST_PASSWORD)) == 5 * 60
    with time_machine.travel(start + timedelta(minutes=15, seconds=1), tick=False):
        response = attempt(kind, user.email, TEST_PASSWORD)

    assert response.status_code == 200, response.content


def test_attempts_while_locked_do_not_extend_the_lock():
    user = UserFactory()
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        fail("jwt", user.email, settings.AXES_FAILURE_LIMIT)
    with time_machine.travel(start + timedelta(minutes=14), tick=False):
        assert_locked(attempt("jwt", user.email, WRONG_PASSWORD))
    with time_machine.travel(start + timedelta(minutes=15, seconds=1), tick=False):
        assert attempt("jwt", user.email, TEST_PASSWORD).status_code == 200


def test_the_lock_is_per_account_and_address():
    user, other = UserFactory(), UserFactory()
    fail("jwt", user.email, settings.AXES_FAILURE_LIMIT)

    assert attempt("jwt", user.email, TEST_PASSWORD, address="10.1.2.3").status_code == 200
    assert attempt("jwt", other.email, TEST_PASSWORD).status_code == 200
    assert_locked(attempt("jwt", user.email, TEST_PASSWORD))


def test_both_login_endpoints_count_towards_one_lock():
    user = UserFactory()
    fail("jwt", user.email, 3)
    fail("token", user.email.upper(), 2)

    assert_locked(attempt("jwt", user.email, TEST_PASSWORD))


def test_a_successful_login_clears_the_failures():
    user = UserFactory()
    fail("jwt", user.email, settings.AXES_FAILURE_LIMIT - 1)
    assert attempt("jwt", user.email, TEST_PASSWORD).status_code == 200

    assert fail("jwt", user.email, settings.AXES_FAILURE_LIMIT - 1) == [400] * 4
    assert attempt("jwt", user.email, TEST_PASSWORD).status_code == 200


@override_settings(AXES_FAILURE_LIMIT=2)
def test_the_failure_limit_is_configurable():
    user = UserFactory()

    assert fail("token", user.email, 2) == [400, 429]


def test_lockouts_are_audited_without_passwords():
    user = UserFactory()
    fail("jwt", user.email, settings.AXES_FAILURE_LIMIT)
    attempt("jwt", user.email, TEST_PASSWORD)

    reasons = list(
        AuditEvent.objects.filter(event_type="auth.login.failed")
        .order_by("created_at")
        .values_list("payload__reason", flat=True)
    )
    assert reasons == ["invalid_credentials"] * 4 + ["locked_out"] * 2
    trail = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert WRONG_PASSWORD not in trail and TEST_PASSWORD not in trail


def test_no_password_is_kept_in_the_lockout_records(client):
    user = UserFactory()
    fail("jwt", user.email, 2)
    for _ in range(2):
        client.post(reverse("admin:login"), {"username": user.email, "password": WRONG_PASSWORD})

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AccessAttempt._meta.db_table}")  # noqa: S608
        rows = json.dumps(cursor.fetchall(), default=str)
    assert AccessAttempt.objects.exists()
    assert WRONG_PASSWORD not in rows and TEST_PASSWORD not in rows


def test_the_admin_login_locks_and_answers_the_envelope(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    url = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post(url, {"username": staff.email, "password": WRONG_PASSWORD})
        assert response.status_code == 200  # the form again, with its error
    last_failure = client.post(url, {"username": staff.email, "password": WRONG_PASSWORD})

    locked = client.post(url, {"username": staff.email, "password": TEST_PASSWORD})

    assert_locked(last_failure)
    assert_locked(locked)
    assert "_auth_user_id" not in client.session


def test_api_failures_lock_the_admin_login_too(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    fail("token", staff.email, settings.AXES_FAILURE_LIMIT)

    response = client.post(
        reverse("admin:login"), {"username": staff.email, "password": TEST_PASSWORD}
    )

    assert_locked(response)


def test_the_axes_admin_lists_lockouts(client):
    fail("jwt", UserFactory().email, settings.AXES_FAILURE_LIMIT)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    changelist = client.get(reverse("admin:axes_accessattempt_changelist"))
    attempt_row = AccessAttempt.objects.get()
    change = client.get(reverse("admin:axes_accessattempt_change", args=[attempt_row.pk]))

    assert changelist.status_code == 200
    assert attempt_row.username.encode() in changelist.content
    assert change.status_code == 200


def test_lockout_settings_come_from_the_environment():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "AXES_FAILURE_LIMIT": "9",
        "AXES_COOLOFF_MINUTES": "4",
        "JWT_ACCESS_TOKEN_MINUTES": "7",
        "JWT_REFRESH_TOKEN_HOURS": "3",
        "API_KEY_USAGE_FLUSH_SECONDS": "30",
    }
    script = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds(), "
        "s.SIMPLE_JWT['ACCESS_TOKEN_LIFETIME'].total_seconds(), "
        "s.SIMPLE_JWT['REFRESH_TOKEN_LIFETIME'].total_seconds(), "
        "s.API_KEY_USAGE_FLUSH_SECONDS]))"
    )
    result = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [9, 240, 420, 10800, 30]
