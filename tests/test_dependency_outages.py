"""While the database, the cache or the task broker is down, a request answers 503
SERVICE_UNAVAILABLE with Retry-After in the envelope, changes nothing, and leaves one log line
without a traceback (config.exceptions.DependencyUnavailable); the admin's pages too
(config.middleware.JSONErrorMiddleware). The outages are real: a cache, a database and a broker
at a port where nothing listens, a backend the server terminates, a SQLite file another
connection holds locked."""

import contextlib
import logging
import socket
import sqlite3
import threading
from types import SimpleNamespace

import psycopg
import pytest
import redis
from django.db import InterfaceError, connection
from django.db.utils import DatabaseErrorWrapper
from django.test import override_settings
from kombu import Connection as BrokerConnection
from rest_framework.test import APIClient

from config.exceptions import DEPENDENCY_RETRY_AFTER_SECONDS, unavailable_dependency
from config.metering import RedisBufferedCounts
from playground.models import Project
from tests.conftest import assert_envelope
from tests.factories import UserFactory


def closed_port() -> int:
    """A local port nothing listens on (bound for a moment by the system, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unreachable_cache() -> dict:
    location = f"redis://127.0.0.1:{closed_port()}/0"
    return {"default": {"BACKEND": "config.cache.RedisCache", "LOCATION": location}}


@pytest.fixture
def cache_down():
    with override_settings(CACHES=unreachable_cache()):
        yield


@pytest.fixture
def database_down():
    """This thread's database connection points at a port nothing listens on; put back after."""
    settings_dict = connection.settings_dict
    before = settings_dict["HOST"], settings_dict["PORT"]
    connection.close()
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", closed_port()
    yield
    settings_dict["HOST"], settings_dict["PORT"] = before
    connection.close()


def outage_lines(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if "unavailable in" in record.getMessage()]


def assert_unavailable(response, dependency: str) -> dict:
    error = assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert response["Retry-After"] == str(DEPENDENCY_RETRY_AFTER_SECONDS)
    assert error["details"] == {
        "dependency": dependency,
        "retry_after_seconds": DEPENDENCY_RETRY_AFTER_SECONDS,
    }
    # Which part, never where it is: a connection error names hosts, ports and users.
    assert f"the {dependency}" in error["message"] and "127.0.0.1" not in error["message"]
    return error


# The cache ---------------------------------------------------------------------------------------
# Marked `redis`: a deployment with a Redis cache. Run against the local-memory default, the
# request's buffered counts would start a pusher on the unreachable Redis that outlives the test.


@pytest.mark.redis
def test_a_read_while_the_cache_is_down_is_a_503_and_one_log_line(owner, cache_down, caplog):
    with caplog.at_level(logging.INFO):
        response = owner.client.get("/api/v1/organizations/current/")

    assert_unavailable(response, "cache")
    [line] = outage_lines(caplog)
    assert line.name == "config.exceptions" and line.levelno == logging.ERROR
    assert line.getMessage().startswith(
        "cache unavailable in OrganizationViewSet (ConnectionError: "
    )
    assert line.exc_info is None
    assert not [record for record in caplog.records if record.exc_info]


@pytest.mark.redis
def test_a_write_while_the_cache_is_down_changes_nothing(owner, cache_down):
    response = owner.client.post(
        "/api/v1/projects/", {"name": "During the outage", "topic": "t"}, format="json"
    )

    assert_unavailable(response, "cache")
    assert not Project.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.redis
def test_signing_in_while_the_cache_is_down_is_a_503(db, cache_down):
    user = UserFactory(password="a-long-password-1")

    response = APIClient().post(
        "/api/v1/auth/token/",
        {"email": user.email, "password": "a-long-password-1"},
        format="json",
    )

    assert_unavailable(response, "cache")


@pytest.mark.redis
def test_an_admin_page_while_the_cache_is_down_is_a_503_and_one_log_line(db, client, caplog):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    with override_settings(CACHES=unreachable_cache()), caplog.at_level(logging.INFO):
        response = client.get("/admin/")

    assert_unavailable(response, "cache")
    [line] = outage_lines(caplog)
    assert line.getMessage().startswith("cache unavailable in /admin/ (ConnectionError: ")
    assert not [record for record in caplog.records if record.exc_info]


@pytest.mark.redis
def test_the_service_answers_again_once_the_cache_is_back(owner):
    with override_settings(CACHES=unreachable_cache()):
        assert owner.client.get("/api/v1/organizations/current/").status_code == 503

    assert owner.client.get("/api/v1/organizations/current/").status_code == 200


@pytest.mark.redis
def test_buffered_counts_log_an_outage_once_keep_the_counts_and_push_them_later(caplog):
    counts = RedisBufferedCounts("tests:outage", push_seconds=lambda: 3600)
    counts.reset()
    counts.record("owner-1", {"calls": 2})

    with caplog.at_level(logging.INFO, logger="config.metering"):
        with override_settings(CACHES=unreachable_cache()):
            counts.push_logged()
            counts.push_logged()
        assert counts.buffered("owner-1") == {"calls": 2}
        counts.push_logged()

    # This thread's (another store's pusher thread may log meanwhile).
    mine = [r for r in caplog.records if r.thread == threading.get_ident()]
    messages = [record.getMessage() for record in mine]
    assert len(messages) == 2, messages
    assert messages[0].startswith("Buffered counts not pushed: Redis is unavailable (Error ")
    assert messages[1] == "Buffered counts pushed to Redis again, after 2 failed attempts."
    assert not [record for record in mine if record.exc_info]
    assert counts.buffered("owner-1") == {}
    assert counts.pending("owner-1") == {"calls": 2}
    counts.reset()


# The database ------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_while_the_database_is_down_is_a_503_and_one_log_line(
    owner, database_down, caplog
):
    with caplog.at_level(logging.INFO):
        response = owner.client.get("/api/v1/organizations/members/")

    assert_unavailable(response, "database")
    [line] = outage_lines(caplog)
    assert " unavailable in " in line.getMessage() and "OperationalError" in line.getMessage()
    assert line.getMessage().startswith("database unavailable in ")
    assert not [record for record in caplog.records if record.exc_info]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_admin_page_while_the_database_is_down_is_a_503(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    settings_dict = connection.settings_dict
    before = settings_dict["HOST"], settings_dict["PORT"]
    connection.close()
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", closed_port()
    try:
        response = client.get("/admin/tenants/tenant/")
    finally:
        settings_dict["HOST"], settings_dict["PORT"] = before
        connection.close()

    assert_unavailable(response, "database")
    assert client.get("/admin/tenants/tenant/").status_code == 200


# Which failures are an outage -------------------------------------------------------------------


def as_django_error(database_module, action):
    """What `action` raises, as Django's wrapper raises it (the driver's error as the cause)."""
    wrapper = DatabaseErrorWrapper(SimpleNamespace(Database=database_module, errors_occurred=False))
    try:
        with wrapper:
            action()
    except Exception as error:
        return error
    raise AssertionError("no error")


def test_a_database_that_refuses_connections_is_an_outage():
    def connect():
        psycopg.connect(host="127.0.0.1", port=closed_port(), dbname="x", connect_timeout=5)

    assert unavailable_dependency(as_django_error(psycopg, connect)) == "database"


@pytest.mark.postgres
def test_a_backend_the_server_terminated_is_an_outage_and_a_bad_statement_is_not(db):
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as victim:
        pid = victim.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        terminated = as_django_error(psycopg, lambda: victim.execute("SELECT 1"))
        closed = as_django_error(psycopg, lambda: victim.execute("SELECT 1"))

    with psycopg.connect(**params, autocommit=True) as healthy:
        syntax = as_django_error(psycopg, lambda: healthy.execute("SELEC 1"))
        division = as_django_error(psycopg, lambda: healthy.execute("SELECT 1 / 0"))
        healthy.execute("SET default_transaction_read_only = on")
        read_only = as_django_error(psycopg, lambda: healthy.execute("CREATE TABLE t (x int)"))
        healthy.execute("SET default_transaction_read_only = off")
        healthy.execute("SET statement_timeout = 10")
        cancelled = as_django_error(psycopg, lambda: healthy.execute("SELECT pg_sleep(1)"))

    assert terminated.__cause__.sqlstate == "57P01"
    assert unavailable_dependency(terminated) == "database"
    assert unavailable_dependency(closed) == "database"
    # A write sent to a standby (what a failover does to connections kept to the old primary).
    assert read_only.__cause__.sqlstate == "25006"
    assert unavailable_dependency(read_only) == "database"
    # The client's or the code's doing, and a statement past the limit (its own 503).
    assert unavailable_dependency(syntax) is None
    assert unavailable_dependency(division) is None
    assert cancelled.__cause__.sqlstate == "57014"
    assert unavailable_dependency(cancelled) is None


def test_a_sqlite_file_locked_past_the_timeout_is_an_outage_and_a_missing_table_is_not(
    tmp_path,
):
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, timeout=0.01)
    try:
        locked = as_django_error(sqlite3, lambda: waiter.execute("INSERT INTO t VALUES (1)"))
        missing = as_django_error(sqlite3, lambda: waiter.execute("SELECT * FROM nowhere"))
    finally:
        waiter.close()
        holder.close()

    assert str(locked.__cause__).startswith("database is locked")
    assert unavailable_dependency(locked) == "database"
    assert unavailable_dependency(missing) is None


def test_a_cache_and_a_broker_that_refuse_connections_are_outages():
    client = redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError) as cache_error:
        client.get("key")
    broker = BrokerConnection(f"redis://127.0.0.1:{closed_port()}//")
    with pytest.raises(Exception) as broker_error:
        broker.ensure_connection(max_retries=1, interval_start=0, interval_step=0)

    assert unavailable_dependency(cache_error.value) == "cache"
    assert unavailable_dependency(broker_error.value) == "broker"
    assert unavailable_dependency(ValueError("a bug")) is None
    assert unavailable_dependency(None) is None


@pytest.mark.redis
def test_a_command_the_cache_refuses_is_not_an_outage():
    from django.core.cache import caches

    from config.redis import redis_client

    client = redis_client(caches["default"])
    client.set("tests:outage:text", "a")
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        client.incr("tests:outage:text")
    client.delete("tests:outage:text")

    assert unavailable_dependency(refused.value) is None


@pytest.mark.redis
def test_a_write_that_cannot_advance_the_principals_epoch_logs_one_line(caplog):
    from config import epoch

    with (
        override_settings(CACHES=unreachable_cache()),
        caplog.at_level(logging.WARNING, logger="config.epoch"),
    ):
        epoch.advance()

    [record] = [r for r in caplog.records if r.name == "config.epoch"]
    assert record.getMessage().startswith(
        "Could not advance the principals' epoch (Redis unavailable: Error "
    )
    assert record.exc_info is None


@contextlib.contextmanager
def silent_port():
    """A local port that takes connections and never answers (the listening socket never
    accepts: the system completes the handshake, nothing reads what is sent), as a Redis or a
    PostgreSQL behind a network partition does."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield silent.getsockname()[1]


class MuteServer:
    """A local server that accepts every connection, reads nothing and never answers, and
    counts the connections: how many times a client tried."""

    def __init__(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def connections(self) -> int:
        return len(self._held)

    def _accept(self):
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                self._held.append(self._listener.accept()[0])

    def close(self):
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
        for sock in (self._listener, *self._held):
            sock.close()


@contextlib.contextmanager
def mute_server():
    server = MuteServer()
    try:
        yield server
    finally:
        server.close()


class CuttableLink:
    """A TCP relay on a local port to a real server (`host`, `port`), which a test cuts (its
    connections dropped, new ones refused: the server restarting, a failover) and restores on
    the same port, for a process it cannot otherwise reach into (a worker in a subprocess)."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.port = closed_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def __enter__(self) -> "CuttableLink":
        self.restore()
        return self

    def __exit__(self, *exc) -> None:
        self.cut()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            dropped, self._sockets = self._sockets, []
        for sock in [listener, *dropped]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.redis
def test_the_cache_and_the_broker_wait_for_redis_at_most_the_configured_timeouts():
    from django.conf import settings
    from django.core.cache import caches

    from config.redis import redis_client

    timeouts = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}  # the defaults
    assert (settings.REDIS_SOCKET_TIMEOUT, settings.REDIS_CONNECT_TIMEOUT) == (1.0, 1.0)
    pool_options = redis_client(caches["default"]).connection_pool.connection_kwargs
    assert {name: pool_options[name] for name in timeouts} == timeouts
    assert timeouts.items() <= settings.CELERY_BROKER_TRANSPORT_OPTIONS.items()
    # A timeout in the cache's URL wins over the setting (redis-py's from_url).
    from config.cache import RedisCache

    location = f"{caches['default']._servers[0]}?socket_timeout=3"
    own = RedisCache(location, {"OPTIONS": settings.CACHES["default"]["OPTIONS"]})
    assert redis_client(own).connection_pool.connection_kwargs["socket_timeout"] == 3.0


@pytest.mark.redis
def test_a_cache_that_never_answers_is_a_503_not_a_request_held(owner, caplog):
    """A Redis that takes the connection and then says nothing: the request answers 503
    after REDIS_SOCKET_TIMEOUT (0.5 s here) instead of redis-py's 5 s per command."""
    with silent_port() as port:
        cache = {
            "BACKEND": "config.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        }
        with override_settings(CACHES={"default": cache}), caplog.at_level(logging.INFO):
            response = owner.client.get("/api/v1/organizations/current/")

    assert_unavailable(response, "cache")
    [line] = outage_lines(caplog)
    assert line.getMessage().startswith("cache unavailable in OrganizationViewSet (TimeoutError: ")


@pytest.mark.redis
def test_a_broker_that_never_answers_fails_a_publish_after_one_try():
    """Without a socket timeout (kombu's default) a publish to a broker that stopped
    answering waits for ever, and with it the web request whose commit sends the task. With
    the settings' transport options each try gives up after REDIS_SOCKET_TIMEOUT, and with their
    connection budget (CELERY_BROKER_CONNECTION_TIMEOUT) the publish gives up after one try, as
    an outage the commit hook logs. Celery's default budget (4 s) made it try again for 4.7 s,
    the request waiting."""
    from config.celery import app

    assert app.conf.broker_connection_timeout == 1.0
    outcome = []

    def publish(port):
        try:
            with app.connection_for_write(f"redis://127.0.0.1:{port}/1") as broker:
                app.send_task("accounts.tasks.purge_expired_auth_tokens", connection=broker)
        except Exception as error:  # what the publish raised, checked below
            outcome.append(error)
        else:
            outcome.append(None)

    with mute_server() as server:
        publishing = threading.Thread(target=publish, args=(server.port,), daemon=True)
        publishing.start()
        # Far above the second the try takes: a publish still waiting then waits for ever
        # (without the timeout it does).
        publishing.join(60)
        assert not publishing.is_alive(), "the publish is still waiting for the broker"

    [error] = outcome
    assert unavailable_dependency(error) == "broker"
    assert server.connections == 1


@pytest.mark.redis
def test_a_periodic_task_that_meets_an_outage_fails_with_one_line_and_no_traceback(caplog, db):
    """As a request does: the part and the task named on one line; Celery's own line says
    "raised expected" at INFO, without the traceback a beat tick logged every minute."""
    from tenants.tasks import sync_api_call_counters

    with (
        override_settings(CACHES=unreachable_cache()),
        caplog.at_level(logging.INFO),
    ):
        result = sync_api_call_counters.apply()

    assert result.failed() and unavailable_dependency(result.result) == "cache"
    [line] = [r for r in caplog.records if r.name == "config.celery"]
    assert line.levelno == logging.ERROR
    assert line.getMessage().startswith(
        "cache unavailable in task tenants.tasks.sync_api_call_counters (ConnectionError: "
    )
    celery_lines = [r for r in caplog.records if r.name == "celery.app.trace"]
    assert [(r.levelno, "raised expected" in r.getMessage()) for r in celery_lines] == [
        (logging.INFO, True)
    ]
    assert not [record for record in caplog.records if record.exc_info]


def test_a_task_that_fails_for_another_reason_keeps_its_traceback(caplog):
    from config.celery import app

    @app.task(name="tests.outages.broken", shared=False)
    def broken():
        raise ValueError("a bug")

    with caplog.at_level(logging.INFO):
        result = broken.apply()

    assert isinstance(result.result, ValueError)
    assert not [r for r in caplog.records if r.name == "config.celery"]
    [line] = [r for r in caplog.records if r.name == "celery.app.trace"]
    assert line.levelno == logging.ERROR and "raised unexpected" in line.getMessage()
    assert line.exc_info is not None


@pytest.mark.postgres
def test_a_closed_cursor_on_a_live_connection_is_a_bug_not_an_outage(db):
    with connection.cursor() as cursor:
        pass
    with pytest.raises(InterfaceError) as misuse:
        cursor.execute("SELECT 1")

    assert unavailable_dependency(misuse.value) is None


@pytest.mark.postgres
def test_a_database_that_never_answers_is_given_up_on_after_the_connect_timeout():
    """A host that takes the connection and then says nothing (the listening socket here
    never accepts: the system completes the handshake, nothing reads the startup packet), as
    a partitioned database does: the connection fails after `connect_timeout` (5 s by default,
    DATABASE_CONNECT_TIMEOUT; 2 here) instead of waiting for TCP, and is an outage."""
    assert connection.get_connection_params()["connect_timeout"] == 5
    with silent_port() as port:
        params = {
            **connection.get_connection_params(),
            "host": "127.0.0.1",
            "port": port,
            "connect_timeout": 2,
        }
        silence = as_django_error(psycopg, lambda: psycopg.connect(**params))

    assert unavailable_dependency(silence) == "database"
