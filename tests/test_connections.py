"""config.connections: a kept PostgreSQL connection the server has closed is found by polling its
socket, without a statement, and replaced before the next request queries (CONN_HEALTH_CHECKS,
a `SELECT 1` per request, is off)."""

import tempfile
import time

import pytest
from django.conf import settings
from django.db import connection

from config.connections import drop_closed_connections
from tests.conftest import outside_connection

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL connections"),
]


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate(pid: int) -> None:
    """The server ends the backend, as a restart or pg_terminate_backend from an operator."""
    with outside_connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        for _ in range(100):
            alive = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            if alive is None:
                break
            time.sleep(0.02)
    time.sleep(0.05)  # the FATAL message and the end of file reach this side


def test_health_checks_are_off():
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is False


def test_a_healthy_connection_is_kept_and_nothing_is_sent_to_check_it():
    pid = _backend_pid()
    raw = connection.connection
    with tempfile.TemporaryFile() as trace:
        raw.pgconn.trace(trace.fileno())
        try:
            drop_closed_connections()
        finally:
            raw.pgconn.untrace()
        trace.seek(0)
        sent = trace.read()

    assert connection.connection is raw
    assert sent == b"", sent
    assert _backend_pid() == pid


def test_a_connection_the_server_terminated_is_closed_and_the_next_query_reconnects():
    pid = _backend_pid()
    _terminate(pid)

    drop_closed_connections()

    assert connection.connection is None
    assert _backend_pid() != pid


def test_a_request_after_the_server_dropped_the_connection_is_served(owner):
    assert owner.client.get("/api/v1/organizations/current").status_code == 200
    pid = _backend_pid()
    _terminate(pid)

    response = owner.client.get("/api/v1/organizations/current")

    assert response.status_code == 200, response.content
    assert _backend_pid() != pid
