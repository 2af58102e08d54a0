"""Persistent database connections the server has closed, found without a round trip.

Web processes and workers keep their connections between requests (CONN_MAX_AGE). A kept
connection can be closed by the server in the meantime: a PostgreSQL restart or failover,
`idle_session_timeout`, `pg_terminate_backend`, a pooler recycling its server connections.
Django's answer, CONN_HEALTH_CHECKS, sends `SELECT 1` before the first query of every request:
a round trip per request, as much as the request's own lookup on a loopback connection.

Here each kept connection's socket is polled instead, at the start of every request (the first
middleware) and task (config.celery), which costs a system call: a server that closed the
connection has left data to read on it (its FATAL message, then end of file), an idle healthy
connection has none. Anything found there is read (libpq's `consume_input`); a connection that
is then not OK is closed, and Django opens a new one at the request's first query.

What a poll cannot see, a network path that silently dropped (no FIN ever arrives), `SELECT 1`
would only see after the TCP retransmission timeout too; TCP keepalives (the `keepalives_*`
connection options) are the remedy for both. Connections given out by a pool (DATABASE_POOL)
are checked out per request and are not touched here; Celery workers do not use the pool
(`leave_connection_pool`).
"""

import select

from django.db import connections

try:
    import psycopg
    from psycopg import pq
except ImportError:  # pragma: no cover - psycopg is a requirement; SQLite-only installs skip
    psycopg = None


def _closed_by_server(raw) -> bool:
    """Whether a psycopg connection idle between requests has been closed by the server."""
    if raw.closed or raw.broken:
        return True
    pgconn = raw.pgconn
    try:
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        # A terminated connection holds the server's FATAL message, then its end of file:
        # the first read takes the message, the next one fails on the end of file.
        for _ in range(3):
            if not poller.poll(0):
                return False
            pgconn.consume_input()
            if pgconn.status != pq.ConnStatus.OK:
                return True
    except (OSError, psycopg.OperationalError):
        return True
    return True  # still more to read while idle: not a connection to reuse


def drop_closed_connections() -> None:
    """Close every kept PostgreSQL connection outside a transaction that the server closed."""
    if psycopg is None:
        return
    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if (
            raw is None
            or connection.vendor != "postgresql"
            or connection.in_atomic_block
            or not isinstance(raw, psycopg.Connection)
        ):
            continue
        if _closed_by_server(raw):
            connection.close()


def leave_connection_pool() -> None:
    """Serve this process's connections without psycopg's pool (DATABASE_POOL), from now on.

    For Celery workers (config.celery, at `worker_init`, before the worker makes its pool of
    processes or its solo pool). Django's Celery fixup, at `worker_process_init`, closes the
    file descriptor of each connection the process holds (for a forked child, whose
    connections are its parent's), then closes the connection, which a pool takes back: the
    pool then holds a connection whose descriptor is closed, and the next query given it writes
    to a closed descriptor or one already reused (a socket, an event loop's), and waits there
    for ever. A forked child would also inherit the parent's pool and its idle connections,
    sockets the parent still uses. A worker keeps its connections between tasks instead
    (CELERY_DB_REUSE_MAX), as it does without the pool."""
    for alias in connections:
        options = connections.settings[alias].get("OPTIONS", {})
        if not options.get("pool"):
            continue
        wrapper = connections[alias]
        wrapper.close()  # this thread's connection back to the pool, which closes it below
        options.pop("pool")
        pool = type(wrapper)._connection_pools.pop(alias, None)
        if pool is not None:
            pool.close()


def limit_statement_time(databases: dict, seconds: float) -> None:
    """Every statement on the PostgreSQL connections of `databases` (settings.DATABASES) ends
    after `seconds` (0: no limit), from each one's next connection on: the server cancels it,
    and the API answers 503 (config.exceptions).

    For web processes (config.asgi, config.wsgi), whose statements serve one request and take
    milliseconds: a request that makes the database work for longer (an unbounded filter, a
    query no index serves) is stopped there instead of holding a backend and its memory until
    the request's client is long gone. Celery workers and `manage.py` (migrations, reports) are
    not limited. Sent as the connection's startup `options`, so it costs no round trip; a
    `statement_timeout` already in DATABASE_URL's options wins. PgBouncer refuses startup
    options unless `ignore_startup_parameters` lists `options`: set the limit on the web
    processes' database role there instead, and this to 0."""
    if seconds <= 0:
        return
    for database in databases.values():
        if not database["ENGINE"].endswith("postgresql"):
            continue
        options = database.setdefault("OPTIONS", {})
        given = options.get("options", "")
        if "statement_timeout" not in given:
            limit = f"-c statement_timeout={round(seconds * 1000)}"
            options["options"] = f"{given} {limit}".strip()
