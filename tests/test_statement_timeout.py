"""Web processes bound how long one PostgreSQL statement may run (DATABASE_STATEMENT_TIMEOUT,
config.connections.limit_statement_time), and a statement the server cancels is a 503 in the
envelope, not a 500."""

import copy
import logging

import pytest
from django.conf import settings
from django.db import OperationalError, connection

from config.connections import limit_statement_time
from support.views import TicketViewSet
from tests.conftest import assert_envelope


def _limited(databases: dict, seconds: float) -> dict:
    databases = copy.deepcopy(databases)
    limit_statement_time(databases, seconds)
    return databases


POSTGRES = {"ENGINE": "django.db.backends.postgresql", "NAME": "x", "OPTIONS": {}}


def test_the_limit_is_a_startup_option_of_every_postgresql_connection():
    limited = _limited({"default": POSTGRES, "other": POSTGRES}, 2.5)

    assert limited["default"]["OPTIONS"]["options"] == "-c statement_timeout=2500"
    assert limited["other"]["OPTIONS"]["options"] == "-c statement_timeout=2500"


def test_other_startup_options_are_kept_and_a_limit_already_given_wins():
    given = {**POSTGRES, "OPTIONS": {"options": "-c search_path=app"}}
    own = {**POSTGRES, "OPTIONS": {"options": "-c statement_timeout=5s"}}

    limited = _limited({"default": given, "own": own}, 30)

    assert limited["default"]["OPTIONS"]["options"] == (
        "-c search_path=app -c statement_timeout=30000"
    )
    assert limited["own"]["OPTIONS"]["options"] == "-c statement_timeout=5s"


def test_zero_is_no_limit_and_sqlite_is_left_alone():
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}

    assert _limited({"default": POSTGRES}, 0) == {"default": POSTGRES}
    assert _limited({"default": sqlite}, 30) == {"default": sqlite}


def test_the_default_is_thirty_seconds():
    assert settings.DATABASE_STATEMENT_TIMEOUT == 30.0


postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's statement_timeout"
)


@pytest.fixture
def limited_connection():
    """The test connection, reconnected with a 50 ms statement limit; reconnected without it
    after."""
    options = connection.settings_dict.setdefault("OPTIONS", {})
    before = dict(options)
    connection.close()
    limit_statement_time({"default": connection.settings_dict}, 0.05)
    yield connection
    options.clear()
    options.update(before)
    connection.close()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_server_cancels_a_statement_past_the_limit(limited_connection):
    with limited_connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "50ms"
        with pytest.raises(OperationalError) as raised:
            cursor.execute("SELECT pg_sleep(1)")

    assert raised.value.__cause__.sqlstate == "57014"


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_cancelled_statement_is_a_503_in_the_envelope(
    owner, limited_connection, monkeypatch, caplog
):
    def slow_list(self, request, *args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(1)")

    monkeypatch.setattr(TicketViewSet, "list", slow_list)

    with caplog.at_level(logging.WARNING, logger="config.exceptions"):
        response = owner.client.get("/api/v1/support/tickets/")

    error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert error["message"].startswith("The database stopped this request")
    assert error["details"] == {}
    assert [r.getMessage() for r in caplog.records if r.name == "config.exceptions"] == [
        "A database statement of TicketViewSet was cancelled"
    ]
    # The connection is usable again for the next request.
    assert owner.client.get("/api/v1/organizations/current").status_code == 200
