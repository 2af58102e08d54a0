"""config.prepared.fetch_prepared: hot fixed queries prepared on the PostgreSQL server, visible to
Django like any query, and run as usual elsewhere or when turned off."""

import uuid

import pytest
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from config.prepared import fetch_prepared
from tenants.models import Tenant

from .factories import TenantFactory

pytestmark = pytest.mark.django_db


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
def test_is_prepared_on_the_server_once_per_connection():
    TenantFactory(slug="server-org")
    sql = unique_sql()
    marker = sql.rsplit("/*", 1)[1]

    for _ in range(3):
        assert len(fetch_prepared(DEFAULT_DB_ALIAS, sql, ["server-org"])) == 1

    assert server_prepared(marker) == [sql.replace("%s", "$1")]


@pytest.mark.postgres
def test_django_cursors_stay_unprepared():
    """Enabling explicit preparation on the connection prepares nothing Django runs itself."""
    fetch_prepared(DEFAULT_DB_ALIAS, unique_sql(), ["any"])
    for _ in range(10):
        list(Tenant.objects.filter(name="unprepared-query"))

    assert server_prepared("unprepared-query") == []
    assert server_prepared('"tenants_tenant"."name" = $1') == []
    assert connection.connection.prepare_threshold is None  # as Django set it


@pytest.mark.postgres
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
