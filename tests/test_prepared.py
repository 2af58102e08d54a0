"""config.prepared: hot fixed queries prepared on the PostgreSQL server (fetch_prepared), visible
to Django like any query and run as usual elsewhere or when turned off, and hot querysets
compiled by the ORM once (CompiledQuery); one-row INSERTs compiled once (insert_row)."""

import threading
import uuid

import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, models, transaction
from django.db.models.functions import Now
from django.test import override_settings
from django.test.utils import CaptureQueriesContext, isolate_apps
from django.utils import timezone
from psycopg.adapt import Transformer

from audit.models import AuditEvent
from config import prepared as prepared_module
from config.prepared import (
    EXPLICIT_ONLY,
    CompiledQuery,
    KeptRows,
    built_from,
    fetch_prepared,
    insert_row,
    insert_statement,
)
from tenants import queries as queries_module
from tenants.models import MembershipStatus, Tenant, Theme
from tenants.queries import organization_detail

from .factories import MembershipFactory, TenantFactory, ThemeFactory

pytestmark = pytest.mark.django_db

# What preparing on the server does, where it is on (the default; turned off behind a pooler
# that cannot keep prepared statements, where the rest of the suite runs unprepared).
preparing = pytest.mark.skipif(
    not settings.DATABASE_PREPARED_STATEMENTS, reason="DATABASE_PREPARED_STATEMENTS is off"
)


QUERY = "SELECT id, slug FROM tenants_tenant WHERE slug = %s"


def unique_sql() -> str:
    """A query text no earlier test prepared on this connection."""
    return f"{QUERY} /* {uuid.uuid4()} */"


def server_prepared(sql_fragment: str) -> list[str]:
    """This session's prepared statements whose text contains the fragment."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s",
            [f"%{sql_fragment}%"],
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.smoke
def test_returns_the_rows_a_plain_cursor_returns():
    tenant = TenantFactory(slug="prepared-org")
    sql = unique_sql()

    rows = fetch_prepared(DEFAULT_DB_ALIAS, sql, ["prepared-org"])

    with connection.cursor() as cursor:
        cursor.execute(sql, ["prepared-org"])
        assert rows == cursor.fetchall()
    assert [slug for _, slug in rows] == [tenant.slug]
    assert fetch_prepared(DEFAULT_DB_ALIAS, sql, ["no-such-org"]) == []


@pytest.mark.smoke
def test_is_logged_and_wrapped_like_any_query():
    TenantFactory(slug="logged-org")
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    sql = unique_sql()
    with CaptureQueriesContext(connection) as queries, connection.execute_wrapper(wrapper):
        fetch_prepared(DEFAULT_DB_ALIAS, sql, ["logged-org"])

    assert len(queries.captured_queries) == 1
    logged = queries.captured_queries[0]["sql"]
    assert logged.startswith("SELECT id, slug FROM tenants_tenant WHERE slug = ")
    assert seen == [sql]


@pytest.mark.smoke
def test_database_errors_are_django_errors():
    with pytest.raises(DatabaseError) as raised:
        fetch_prepared(DEFAULT_DB_ALIAS, "SELECT no_such_column FROM tenants_tenant", [])

    assert type(raised.value).__module__ == "django.db.utils"


@pytest.mark.postgres
@preparing
def test_is_prepared_on_the_server_once_per_connection():
    TenantFactory(slug="server-org")
    sql = unique_sql()
    marker = sql.rsplit("/*", 1)[1]

    for _ in range(3):
        assert len(fetch_prepared(DEFAULT_DB_ALIAS, sql, ["server-org"])) == 1

    assert server_prepared(marker) == [sql.replace("%s", "$1")]


@pytest.mark.postgres
@preparing
def test_a_statement_past_psycopg_s_own_bounds_is_converted_once():
    """psycopg converts the placeholders of a statement of more than 50 parameters on every
    run; a fixed statement's conversion is kept (the orchestration's settlement has 52)."""
    sql = f"SELECT {' + '.join(['%s::int'] * 60)} /* {uuid.uuid4()} */"
    before = prepared_module._placeholders_converted.cache_info()

    for total in (60, 120, 180):
        assert fetch_prepared(DEFAULT_DB_ALIAS, sql, [total // 60] * 60) == [(total,)]

    after = prepared_module._placeholders_converted.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT %s::int, %s::text", [1, "a"]),
        ("SELECT %(b)s::text, %(a)s::int, %(b)s::text", {"a": 1, "b": "x"}),
        ("SELECT %b::int, %t::text, '100%%'", [2, "y"]),
        (b"SELECT %s::uuid", [uuid.uuid4()]),
        ("SELECT 1", None),
    ],
)
def test_a_kept_conversion_is_psycopg_s_own(sql, params):
    """The kept conversion gives what psycopg's gives (its query class is not public API: a
    psycopg upgrade that changes it fails here)."""
    from psycopg._queries import PostgresQuery

    connection.ensure_connection()
    queries = []
    for query_class in (PostgresQuery, prepared_module._FixedStatementQuery):
        query = query_class(Transformer(connection.connection))
        query.convert(sql, params)
        queries.append((query.query, query.params, query.types, query.formats))

    assert queries[0] == queries[1]


def kept_cursor():
    """The preparing cursor kept on this thread's connection."""
    return getattr(connections[DEFAULT_DB_ALIAS], prepared_module._KEPT_CURSOR, None)


@pytest.mark.postgres
@preparing
def test_a_connection_s_statements_share_one_cursor():
    """One psycopg cursor per connection, kept open: a new one per statement cost a third of
    the client's time for a one-row statement."""
    TenantFactory(slug="kept-cursor-org")
    sql = unique_sql()
    fetch_prepared(DEFAULT_DB_ALIAS, sql, ["kept-cursor-org"])
    cursor = kept_cursor()

    for _ in range(3):
        assert len(fetch_prepared(DEFAULT_DB_ALIAS, sql, ["kept-cursor-org"])) == 1
    insert_row(
        AuditEvent(
            tenant=None, event_type="kept.cursor", actor_type="system", created_at=timezone.now()
        )
    )

    assert kept_cursor() is cursor
    assert not cursor.closed
    assert cursor.connection is connection.connection
    assert AuditEvent.objects.filter(event_type="kept.cursor").count() == 1


@pytest.mark.postgres
@preparing
@pytest.mark.django_db(transaction=True)
def test_a_new_connection_or_thread_gets_its_own_cursor():
    TenantFactory(slug="own-cursor-org")
    sql = unique_sql()
    fetch_prepared(DEFAULT_DB_ALIAS, sql, ["own-cursor-org"])
    first = kept_cursor()
    in_thread = []

    def other_thread():
        try:
            in_thread.append(len(fetch_prepared(DEFAULT_DB_ALIAS, sql, ["own-cursor-org"])))
            in_thread.append(kept_cursor())
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    connection.close()  # as at the end of a request past CONN_MAX_AGE, or a lost connection
    rows = fetch_prepared(DEFAULT_DB_ALIAS, sql, ["own-cursor-org"])

    assert in_thread[0] == 1
    assert in_thread[1] is not first
    assert len(rows) == 1
    assert kept_cursor() is not first
    assert kept_cursor().connection is connection.connection


@pytest.mark.postgres
@preparing
def test_django_cursors_stay_unprepared():
    """Enabling explicit preparation on the connection prepares nothing Django runs itself."""
    fetch_prepared(DEFAULT_DB_ALIAS, unique_sql(), ["any"])
    for _ in range(10):
        list(Tenant.objects.filter(name="unprepared-query"))

    assert server_prepared("unprepared-query") == []
    assert server_prepared('"tenants_tenant"."name" = $1') == []
    # The settings' prepare_threshold: never reached, so nothing is prepared automatically.
    assert connection.connection.prepare_threshold == EXPLICIT_ONLY


@pytest.mark.postgres
@preparing
def test_a_rollback_on_the_connection_is_survived():
    """psycopg forgets its prepared statements on a rollback; the next run prepares again."""
    TenantFactory(slug="rolled-org")
    sql = unique_sql()
    fetch_prepared(DEFAULT_DB_ALIAS, sql, ["rolled-org"])

    with pytest.raises(RuntimeError), transaction.atomic():
        fetch_prepared(DEFAULT_DB_ALIAS, sql, ["rolled-org"])
        raise RuntimeError("roll back to the savepoint")

    assert len(fetch_prepared(DEFAULT_DB_ALIAS, sql, ["rolled-org"])) == 1
    assert server_prepared(sql.rsplit("/*", 1)[1]) == [sql.replace("%s", "$1")]


@pytest.mark.postgres
@override_settings(DATABASE_PREPARED_STATEMENTS=False)
def test_turned_off_nothing_is_prepared():
    TenantFactory(slug="plain-org")
    sql = unique_sql()

    assert len(fetch_prepared(DEFAULT_DB_ALIAS, sql, ["plain-org"])) == 1

    assert server_prepared(sql.rsplit("/*", 1)[1]) == []


# CompiledQuery: a hot queryset compiled once, run with each new value.


def _as_dicts(tenant) -> dict:
    theme = tenant.__dict__.get("_state").fields_cache.get("theme", "not cached")
    return {
        "tenant": tenant.__dict__ | {"_state": None},
        "theme": theme.__dict__ | {"_state": None} if isinstance(theme, Theme) else theme,
        "adding": tenant._state.adding,
        "db": tenant._state.db,
    }


@pytest.mark.smoke
@pytest.mark.parametrize("themed", [True, False])
def test_compiled_organization_is_the_orm_s_own(themed):
    """organization_detail builds what its queryset builds: fields, annotations, the theme (or
    its absence) already loaded."""
    tenant = TenantFactory()
    MembershipFactory(tenant=tenant)
    MembershipFactory(tenant=tenant, status=MembershipStatus.SUSPENDED)
    if themed:
        ThemeFactory(tenant=tenant, primary_color="#123456")

    with CaptureQueriesContext(connection) as queries:
        compiled = organization_detail(tenant.pk)
        compiled_str = organization_detail(str(tenant.pk))
    orm = queries_module._organization(tenant.pk).get()

    assert len(queries.captured_queries) == 2
    assert _as_dicts(compiled) == _as_dicts(orm) == _as_dicts(compiled_str)
    assert compiled.member_count == 1
    assert (compiled.theme.primary_color if themed else None) == (
        orm.theme.primary_color if themed else None
    )


@pytest.mark.smoke
def test_compiled_organization_of_no_tenant_is_does_not_exist():
    with pytest.raises(Tenant.DoesNotExist):
        organization_detail(uuid.uuid4())


@pytest.mark.postgres
@preparing
def test_compiled_query_is_compiled_once_and_prepared_on_the_server():
    first, second = TenantFactory(), TenantFactory()
    query = CompiledQuery(lambda pk: Tenant.objects.filter(pk=pk).order_by(), Tenant._meta.pk)

    assert [t.pk for t in query(first.pk)] == [first.pk]
    compiled = query._compiled[DEFAULT_DB_ALIAS]
    assert [t.pk for t in query(second.pk)] == [second.pk]

    assert query._compiled[DEFAULT_DB_ALIAS] is compiled
    assert server_prepared(compiled.sql.replace("%s", "$1")) == [compiled.sql.replace("%s", "$1")]


@pytest.mark.django_db(transaction=True)
def test_compiled_query_is_compiled_once_per_process_not_per_thread():
    """Under ASGI each request runs on a new thread: a per-thread compilation would be one per
    request. Another thread reuses the compilation, with its own connection."""
    tenant = TenantFactory()
    query = CompiledQuery(lambda pk: Tenant.objects.filter(pk=pk).order_by(), Tenant._meta.pk)
    assert [t.pk for t in query(tenant.pk)] == [tenant.pk]
    compiled = query._compiled[DEFAULT_DB_ALIAS]
    found = []

    def other_thread():
        try:
            found.extend(t.pk for t in query(tenant.pk))
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()

    assert found == [tenant.pk]
    assert query._compiled[DEFAULT_DB_ALIAS] is compiled


def test_a_query_that_does_not_compare_its_value_once_is_refused():
    TenantFactory()
    ignoring = CompiledQuery(lambda pk: Tenant.objects.all(), Tenant._meta.pk)

    with pytest.raises(ValueError, match="exactly once"):
        ignoring(uuid.uuid4())


@pytest.mark.smoke
def test_instances_are_built_from_kept_rows_once_and_from_other_rows_every_time():
    tenant = TenantFactory(settings={"theme": "dark"})
    calls = []

    def build(rows):
        calls.append(rows)
        return [Tenant.objects.get(pk=pk) for (pk,) in rows]

    read = [(tenant.pk,)]
    assert built_from(read, build) is not built_from(read, build)
    assert len(calls) == 2

    kept = KeptRows(read)
    first, second = built_from(kept, build), built_from(kept, build)
    assert len(calls) == 3
    assert first[0] is not second[0] is not kept.built[0]
    first[0].settings["theme"] = "light"
    assert second[0].settings == kept.built[0].settings == {"theme": "dark"}


# One-row INSERTs compiled once ------------------------------------------------------------------


def _stored(event_id) -> dict:
    row = AuditEvent.objects.filter(pk=event_id).values().get()
    row.pop("id")
    return row


def _event(tenant, **fields):
    values = {
        "event_type": "tenant.updated",
        "actor_type": "user",
        "actor_label": "owner@example.com",
        "payload": {"changes": {"name": ["Old", "New"]}, "tags": ["a", None, 3]},
        "request_id": "req-1",
        "ip_address": "2001:db8::7",
        "user_agent": "curl/8",
        "created_at": timezone.now(),
    }
    return AuditEvent(tenant=tenant, **{**values, **fields})


@pytest.mark.smoke
def test_an_inserted_row_is_what_saving_inserts():
    tenant = TenantFactory()
    by_orm, by_insert = _event(tenant), _event(tenant)
    by_insert.created_at = by_orm.created_at
    by_orm.save(force_insert=True)

    insert_row(by_insert)

    assert _stored(by_insert.pk) == _stored(by_orm.pk)
    # A saved row, as after save(): saving it again would update it, not insert another.
    assert (by_insert._state.adding, by_insert._state.db) == (False, DEFAULT_DB_ALIAS)


@pytest.mark.smoke
def test_empty_values_are_inserted_as_saving_inserts_them():
    by_orm, by_insert = _event(None, ip_address=None), _event(None, ip_address=None)
    by_orm.payload = by_insert.payload = {}
    by_insert.created_at = by_orm.created_at
    by_orm.save(force_insert=True)

    insert_row(by_insert)

    assert _stored(by_insert.pk) == _stored(by_orm.pk)


@pytest.mark.postgres
@preparing
def test_the_insert_is_compiled_once_and_prepared_on_the_server():
    insert_row(_event(TenantFactory()))

    assert insert_statement(AuditEvent) is insert_statement(AuditEvent)
    assert server_prepared('INSERT INTO "audit_auditevent"')


@isolate_apps("tests")
def test_a_model_whose_insert_is_not_a_placeholder_per_field_is_refused():
    class Stamped(models.Model):
        id = models.UUIDField(primary_key=True, default=uuid.uuid4)
        stamped_at = models.DateTimeField(db_default=Now())

        class Meta:
            app_label = "tests"

        def __str__(self):
            return str(self.id)

    with pytest.raises(ValueError, match="one plain placeholder per field"):
        insert_statement(Stamped)


@isolate_apps("tests")
def test_a_model_whose_key_the_database_assigns_or_with_a_parent_is_refused():
    class Counted(models.Model):
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "tests"

        def __str__(self):
            return self.name

    class Child(Counted):
        class Meta:
            app_label = "tests"

    for model in (Counted, Child):
        with pytest.raises(ValueError, match="key set in Python"):
            insert_statement(model)
