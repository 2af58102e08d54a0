"""Hot fixed queries prepared on the PostgreSQL server (`fetch_prepared`).

Django binds parameters on the client and never prepares, so PostgreSQL parses and plans every
query anew; for a join run on every request that costs more than running it.
"""

from typing import NamedTuple

import psycopg
from django.conf import settings
from django.db import connections
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format


class _PreparingCursor(psycopg.Cursor):
    """Server-side binding; every statement it runs is prepared once per connection (psycopg
    keeps the prepared names)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        # Django leaves the connection's prepare_threshold at None, which refuses even an
        # explicit `prepare=True`; lift it for this statement only, so Django's own queries
        # stay unprepared and untracked.
        connection = self.connection
        threshold = connection.prepare_threshold
        connection.prepare_threshold = _EXPLICIT_ONLY if threshold is None else threshold
        try:
            super().execute(query, params, prepare=True, binary=binary)
        finally:
            connection.prepare_threshold = threshold
        # Django logs `cursor._query.query`, which psycopg leaves unset for a prepared run.
        self._query = _Logged(query.encode() if isinstance(query, str) else query)
        return self


class _Logged(NamedTuple):
    query: bytes


# A threshold no query reaches: only explicit requests prepare.
_EXPLICIT_ONLY = 2**31 - 1
_TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid


def _server_prepared_cursor(db):
    """What `db.cursor()` gives (health check, error wrapping, logging, execute wrappers), over
    a `_PreparingCursor`; None where preparing is unavailable or turned off."""
    if db.vendor != "postgresql" or not settings.DATABASE_PREPARED_STATEMENTS:
        return None
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    if not isinstance(raw, psycopg.Connection):
        return None  # psycopg 2
    with db.wrap_database_errors:
        cursor = _PreparingCursor(raw)
    # As Django's create_cursor: the cursor reads timestamps in the connection's time zone.
    if db.timezone != raw.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT).timezone:
        register_tzloader(db.timezone, cursor)
    return db._prepare_cursor(cursor)


def fetch_prepared(alias: str, sql: str, params) -> list[tuple]:
    """The rows of one hot, fixed query. On PostgreSQL the statement is prepared on the server
    once per connection: parsing and planning a join can cost more than running it. Elsewhere,
    or with DATABASE_PREPARED_STATEMENTS off (a pooler that cannot keep prepared statements),
    it runs as any query does."""
    db = connections[alias]
    cursor = _server_prepared_cursor(db) or db.cursor()
    with cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
