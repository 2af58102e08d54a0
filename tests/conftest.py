import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest
from django.core.cache import cache
from django.db import connection, connections
from django.db.backends.signals import connection_created
from django.db.migrations.executor import MigrationExecutor
from django.db.models.signals import post_migrate
from django.dispatch import receiver
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.services import auth_token_issue
from config.epoch import recent_rows
from playground import cooldown
from tenants.models import Role

from .factories import MembershipFactory, TenantFactory, UserFactory


@receiver(connection_created)
def _let_the_test_runner_empty_audit_tables(sender, connection, **kwargs):
    """The audit triggers refuse TRUNCATE; the test runner empties tables with it between
    transactional tests. Only test connections carry this setting (see audit migration 0003)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET audit.allow_truncate = 'on'")


@receiver(post_migrate)
def _keep_the_seeded_catalogue(sender, app_config=None, **kwargs):
    """The gateway's catalogue and the plan catalogue are seeded by data migrations; a
    transactional test's flush empties them, then emits post_migrate: seed them again
    (idempotent), so later tests on the same database find what a fresh installation has."""
    if app_config is None or app_config.label not in ("playground", "billing"):
        return
    using = kwargs.get("using", "default")
    tables = connections[using].introspection.table_names()
    if app_config.label == "billing":
        from django.conf import settings

        from billing.catalogue import seed_plans
        from billing.models import Plan

        if Plan._meta.db_table in tables:
            seed_plans(Plan, settings.BILLING_CURRENCY)
        return
    from playground.catalogue import seed_catalogue
    from playground.models import LanguageModel, Provider

    # A migration test may have migrated the playground away (its flush emits this too).
    if Provider._meta.db_table in tables:
        seed_catalogue(Provider, LanguageModel)


def pytest_collection_modifyitems(config, items):
    """Tests marked `postgres` are skipped on SQLite (the smoke run), tests marked `redis`
    without Redis (the embedded defaults count in the process and the database instead)."""
    from django.conf import settings

    skips = {}
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        skips["postgres"] = pytest.mark.skip(reason="needs PostgreSQL")
    if not settings.REDIS_URL:
        skips["redis"] = pytest.mark.skip(reason="needs Redis")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


def pytest_ignore_collect(collection_path, config):
    """The smoke run (`-m smoke`) reads only the test modules that mark tests `smoke`: importing
    the rest, to deselect every test in them, took it longer than running its own tests."""
    if config.getoption("markexpr") != "smoke" or not collection_path.name.startswith("test_"):
        return None
    if collection_path.suffix != ".py" or "smoke" in collection_path.read_text():
        return None
    return True


# Tests of what holds only when each thread keeps its own connection, skipped under
# DATABASE_POOL=true, where the pool hands out a connection per request and configures every
# connection of the alias itself.
without_connection_pool = pytest.mark.skipif(
    bool(connection.settings_dict["OPTIONS"].get("pool")), reason="DATABASE_POOL is on"
)


@pytest.fixture(scope="session", autouse=True)
def _throwaway_media_root(tmp_path_factory):
    """Uploaded files (theme logos, also those Schemathesis generates) go to a folder of this
    test session, never to the project's var/media."""
    with override_settings(MEDIA_ROOT=str(tmp_path_factory.mktemp("media"))):
        yield


def on_each_thread(executor, threads: int, work) -> None:
    """Run `work` once on each of `threads` threads of `executor` (a ThreadPoolExecutor):
    each task waits for the others, so no thread can take two."""
    barrier = threading.Barrier(threads)

    def task():
        barrier.wait(timeout=10)
        work()

    for future in [executor.submit(task) for _ in range(threads)]:
        future.result(timeout=20)


@pytest.fixture
def connections_closed_per_request(monkeypatch):
    """Each request closes its database connection when it ends (CONN_MAX_AGE 0). For tests
    that serve through Django's ASGI handler (a thread per request) or through a front whose
    threads are made per test: no connection is left open behind a finished thread. (Kept
    connections under the front: tests/test_asgi_connections.py.)"""
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's. Before it drops a PostgreSQL test database, every other session on it
    is ended: connections that threads of in-process workers and servers kept (as production
    keeps them) and did not close, and the last ones of a stopped subprocess, which the server
    ends a moment after the process. A session left there would fail the drop."""
    yield
    if connection.vendor == "postgresql":
        end_other_sessions()


def end_other_sessions() -> None:
    """End every session on the PostgreSQL test database but this thread's, as a restart or a
    failover would, and wait until they are gone."""
    own = connection.connection.info.backend_pid if connection.connection else 0
    with outside_connection() as admin:
        others = [own, admin.info.backend_pid]
        for _ in range(250):
            left = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> ALL(%s)",
                [others],
            ).fetchone()[0]
            if left == 0:
                return
            time.sleep(0.02)


@pytest.fixture(autouse=True)
def _clear_cache():
    """Throttle counters live in the cache; each test starts from zero, and from no kept
    caller lookup or cooldown state (config.epoch, playground.cooldown)."""
    cache.clear()
    recent_rows.clear()
    cooldown.forget()
    yield
    cache.clear()
    recent_rows.clear()
    cooldown.forget()


@pytest.fixture
def api_client():
    return APIClient()


def outside_connection() -> psycopg.Connection:
    """A connection to the test database that is not Django's (autocommit): what an operator's
    psql would be."""
    database = connection.settings_dict
    return psycopg.connect(
        dbname=database["NAME"],
        user=database["USER"],
        password=database["PASSWORD"],
        host=database["HOST"],
        port=database["PORT"],
        autocommit=True,
    )


def race(runs: int, work) -> list:
    """`work()` in `runs` threads released together: the concurrency tests' parallel requests.
    Their results in the threads' order (an exception in one is raised here); each thread
    closes its database connections when done."""
    start = threading.Barrier(runs)

    def run():
        try:
            start.wait(timeout=30)
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=runs) as pool:
        futures = [pool.submit(run) for _ in range(runs)]
        return [future.result(timeout=120) for future in futures]


def migrate_to(target: tuple[str, str]) -> list[str]:
    """Migrate the test database to `target` (app, migration); the SQL it ran."""
    executor = MigrationExecutor(connection)
    with CaptureQueriesContext(connection) as queries:
        executor.migrate([target])
    return [query["sql"] for query in queries.captured_queries]


@contextmanager
def migrated_back_to(target: tuple[str, str]):
    """The test database at `target` for the block, then at the latest migrations again."""
    migrate_to(target)
    try:
        yield
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def token_for(user) -> str:
    from django.db import transaction

    with transaction.atomic():
        return auth_token_issue(user=user)


class Caller:
    """A user with a membership, and an API client authenticated as them in that tenant."""

    def __init__(self, membership):
        self.membership = membership
        self.user = membership.user
        self.tenant = membership.tenant
        self.token = token_for(self.user)
        self.client = self.client_for(self.tenant.pk)

    def client_for(self, tenant_identifier=None) -> APIClient:
        """A client with this caller's token, naming `tenant_identifier` (None: no header)."""
        client = APIClient()
        headers = {"HTTP_AUTHORIZATION": f"Token {self.token}"}
        if tenant_identifier is not None:
            headers["HTTP_X_ORGANIZATION_ID"] = str(tenant_identifier)
        client.credentials(**headers)
        return client


@pytest.fixture
def make_caller(db):
    """make_caller(role=..., tenant=..., permissions=...) -> Caller."""

    def make(role=Role.OWNER, tenant=None, permissions=None, **user_fields):
        membership = MembershipFactory(
            role=role,
            tenant=tenant or TenantFactory(),
            user=UserFactory(**user_fields),
            permissions=permissions or {},
        )
        return Caller(membership)

    return make


@pytest.fixture
def owner(make_caller):
    return make_caller(Role.OWNER)


@pytest.fixture
def staff_client(db):
    user = UserFactory(is_staff=True, is_superuser=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    client.user = user
    return client


@pytest.fixture
def is_postgres():
    return connection.vendor == "postgresql"


def plan_nodes(sql: str, *, analyze: bool = False, off: tuple[str, ...] = ("seqscan",)):
    """Every node of the statement's plan (PostgreSQL's EXPLAIN, with ANALYZE when asked), with
    the planner's `enable_<name>` settings in `off` turned off for the rest of the test's
    transaction: a test's tables are small enough to be cheapest read whole or sorted, and
    what is checked is what the indexes allow."""
    with connection.cursor() as cursor:
        for name in off:
            cursor.execute(f"SET LOCAL enable_{name} = off")
        cursor.execute(f"EXPLAIN ({'ANALYZE, ' if analyze else ''}FORMAT JSON) {sql}")
        raw = cursor.fetchone()[0]
    plans = [(json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]]
    while plans:
        plan = plans.pop()
        plans.extend(plan.get("Plans", []))
        yield plan


def rows_read(sql: str, table: str) -> int:
    """Rows the statement's plan reads from `table` (EXPLAIN ANALYZE, sequential scans off):
    what its scans of it return and what their filters drop, over all loops."""
    return sum(
        (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * plan["Actual Loops"]
        for plan in plan_nodes(sql, analyze=True)
        if plan.get("Relation Name") == table
    )


def assert_envelope(response, status: int, code: str | None = None) -> dict:
    """The response is the error envelope with this status (and code); returns the error object."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert error["request_id"] == response["X-Request-ID"]
    if code is not None:
        assert error["code"] == code, error
    return error


# What config/asgi.py serves, driven in-process (tests/playground/test_gateway_serving.py has the
# helpers; tests/test_asgi_serving.py uses them too).


@pytest.fixture
def front():
    """The ASGI front (playground.serving.GatewayFront) before Django's handler, two threads."""
    from django.core.asgi import get_asgi_application

    from playground.serving import GatewayFront

    application = GatewayFront(get_asgi_application(), threads=2)
    yield application
    application.threads.shutdown(wait=True)


@pytest.fixture
def django_application():
    """Django's ASGI handler alone, the reference the front must answer like."""
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


@pytest.fixture
def applications(front, django_application) -> dict:
    return {"front": front, "django": django_application}
