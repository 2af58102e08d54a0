"""Who-is-calling lookups kept between requests, and the epoch that says whether they still hold.

Every authenticated request looks up its credential (a token, an API key, a JWT's or a
session's user), its user, their membership and the tenant (accounts.principals, and
accounts.authentication for API keys): a database round trip and four rows made into
instances, about half of what the platform adds to a trivial read. The rows change rarely; a
request must still never act on a revoked token or key, a suspended member, a deactivated user
or a suspended tenant.

So each process keeps the rows of recent lookups (`RecentRows`), each stamped with the
**principals' epoch** it was read at: a number in Redis that moves forward whenever a row of a
watched table (users, tokens, API keys, memberships, tenants) is written. The request's
admission, the one Redis call every request already makes (config.metering.admit), takes the
stamp and, in the same atomic step, refuses to count anything if the epoch has moved since: the
request is then authenticated again from the database (tenants.api.ControlPlaneAPIMixin.initial).
A kept row is thus acted on only if nothing it was read from has been written since, as of the
moment the request is counted.

- **What moves the epoch.** An execute wrapper on every database connection (`watch_writes`)
  sees each statement; an INSERT, UPDATE, DELETE or TRUNCATE naming a watched table moves the
  epoch when its transaction commits (`transaction.on_commit`, before the write's own response
  is sent). This covers the ORM's saves, queryset updates and deletes, cascades, the admin,
  commands and raw SQL through Django. Writes made inside an `unwatched` block are the one
  exception: an API key's counters, which no kept lookup reads and every gateway call and
  usage flush writes (accounts.usage.key_counter_writes). The wrapper cannot see writes made
  outside the application (psql), which is what `PRINCIPAL_CACHE_SECONDS` bounds, and what
  `manage.py invalidate_principals` is for.
- **Other state kept by the same rule.** The gateway's upstream cooldowns
  (playground.cooldown): a cooldown's start and its clearing advance the epoch.
- **Stamps are taken before the read.** A lookup is stamped with the epoch this process last
  saw, read before the query runs: a write that commits after the query moves the epoch past
  the stamp. A process that has seen no epoch yet keeps nothing.
- **Never reused across a restart.** A missing epoch (a new or flushed Redis) starts at the
  current time in microseconds, past any value the old one reached, so no stamp taken before
  can match it.
- **What is not kept:** lookups that found nothing, and reads made inside a transaction (they
  may see that transaction's own uncommitted writes).

Without Redis there is no epoch and nothing is kept.
"""

import contextvars
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager

from django.conf import settings
from django.db import connections, transaction
from redis.commands.core import Script

from .exceptions import unavailable_dependency
from .prepared import KeptRows, fetch_prepared
from .redis import redis_cache, redis_client

logger = logging.getLogger(__name__)

EPOCH_KEY = "principals:epoch"

# The Lua that reads the epoch, starting it (as above) when it is missing. Shared by the
# admission's script (config.metering) and `advance`.
EPOCH_LUA = """
local function current_epoch(key)
  local value = redis.call('GET', key)
  if not value then
    local now = redis.call('TIME')
    value = string.format('%.0f', tonumber(now[1]) * 1000000 + tonumber(now[2]))
    redis.call('SET', key, value)
  end
  return value
end
"""

_ADVANCE_LUA = (
    EPOCH_LUA
    + """
current_epoch(KEYS[1])
return redis.call('INCR', KEYS[1])
"""
)
_advance_script = Script(None, _ADVANCE_LUA.encode())


def epoch_key(cache) -> str:
    return cache.make_key(EPOCH_KEY)


# The epoch this process last saw (any thread's admission), or None before the first.
_observed: int | None = None


def observe(value) -> None:
    """Record the epoch an admission returned."""
    global _observed
    _observed = int(value)


def observed() -> int | None:
    return _observed


def advance() -> None:
    """Move the epoch forward: every kept lookup in every process is read again. A Redis
    failure is logged, not raised: the write that asked has committed, and the kept lookups
    then expire by age (PRINCIPAL_CACHE_SECONDS)."""
    cache = redis_cache()
    if cache is None:
        return
    from .metering import run_script

    try:
        run_script(_advance_script, keys=[epoch_key(cache)], client=redis_client(cache))
    except Exception as error:
        if unavailable_dependency(error) is None:
            logger.exception("Could not advance the principals' epoch; kept lookups expire by age.")
        else:
            # Redis is down: no request is admitted meanwhile (admission is a Redis call).
            logger.warning(
                "Could not advance the principals' epoch (Redis unavailable: %s); kept lookups "
                "expire by age.",
                error,
            )
    recent_rows.clear()


# Watched writes --------------------------------------------------------------------------------

_watched_tables: set[str] = set()
_WRITE = re.compile(r"\b(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)


# Tables whose writes in the current context move nothing (`unwatched`).
_unwatched: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "principals_unwatched", default=frozenset()
)


def watch(*tables: str) -> None:
    """Writes to these tables move the epoch."""
    _watched_tables.update(tables)


@contextmanager
def unwatched(*tables: str):
    """Writes to these tables, made inside the block, move nothing. Only for writes to columns
    no kept lookup reads: an API key's usage counters and monthly budget, written by every
    gateway call and usage flush, which would otherwise make every kept lookup read again
    (accounts.usage, the budget statements of accounts.services and playground.services)."""
    token = _unwatched.set(_unwatched.get() | frozenset(tables))
    try:
        yield
    finally:
        _unwatched.reset(token)


def writes_watched_table(sql, watched: set[str] | frozenset[str] | None = None) -> bool:
    """Whether `sql` writes one of the `watched` tables (by default, every watched table)."""
    if watched is None:
        watched = _watched_tables
    if not isinstance(sql, str):
        sql = str(sql)
    sql = sql.lstrip()
    head = sql[:8].upper()
    if head.startswith("SELECT"):
        return False  # the hot path's reads, SELECT ... FOR UPDATE included
    if head.startswith("TRUNCATE"):
        return any(f'"{table}"' in sql or f" {table}" in sql for table in watched)
    if head.startswith("WITH"):
        # A data-modifying CTE writes wherever in the statement it is.
        return not tables_written_by_ctes(sql).isdisjoint(watched)
    # INSERT, UPDATE, DELETE name their table first: a bulk INSERT is not scanned whole.
    match = _WRITE.match(sql)
    return match is not None and match[1] in watched


# The tables each WITH statement writes, by its text. Scanning a statement whole is slow (60 µs
# for a gateway call's reservation, 1.3 kB), and the same few are run again and again (the
# gateway's reservation and settlement, the engine's): each is scanned once per process.
# Emptied when full, so texts that never repeat cannot make it grow without end.
CTE_WRITES_MAX = 2_000
_cte_writes: dict[str, frozenset[str]] = {}


def tables_written_by_ctes(sql: str) -> frozenset[str]:
    """The tables a WITH statement names after UPDATE, INSERT INTO or DELETE FROM."""
    written = _cte_writes.get(sql)
    if written is None:
        written = frozenset(_WRITE.findall(sql))
        if len(_cte_writes) >= CTE_WRITES_MAX:
            _cte_writes.clear()
        _cte_writes[sql] = written
    return written


def watch_writes(execute, sql, params, many, context):
    """Execute wrapper (installed on every connection by `install`)."""
    result = execute(sql, params, many, context)
    if _watched_tables:
        ignored = _unwatched.get()
        watched = _watched_tables - ignored if ignored else _watched_tables
        if writes_watched_table(sql, watched):
            transaction.on_commit(advance, using=context["connection"].alias)
    return result


def install(connection, **_) -> None:
    """A `connection_created` receiver: the connection's statements are watched."""
    if watch_writes not in connection.execute_wrappers:
        connection.execute_wrappers.append(watch_writes)


# Kept lookups ----------------------------------------------------------------------------------

# Lookups kept per process at most; the least recently kept goes first.
RECENT_ROWS_MAX = 10_000


class RecentRows:
    """The rows of recent lookups by key, each with the epoch it was read at and its age."""

    def __init__(self, max_entries: int = RECENT_ROWS_MAX):
        self._entries: OrderedDict = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, key) -> tuple[int, tuple[tuple, ...]] | None:
        """(epoch, rows) kept for `key`, unless absent or older than the setting."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        epoch, kept_at, rows = entry
        if time.monotonic() - kept_at > settings.PRINCIPAL_CACHE_SECONDS:
            self._entries.pop(key, None)
            return None
        return epoch, rows

    def put(self, key, epoch: int, rows: list[tuple]) -> None:
        """Keep `rows`, which every request then shares: their values are immutable (Django
        reads JSON columns as text), and each request gets its own copy of the instances built
        from them (config.prepared.built_from)."""
        with self._lock:
            self._entries[key] = (epoch, time.monotonic(), KeptRows(rows))
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


recent_rows = RecentRows()


def _after_fork_in_child() -> None:
    # A forked child (a Celery pool process, a server started with --preload) starts with
    # nothing kept, a lock no parent thread can be holding, and no epoch seen.
    global _observed
    recent_rows.__init__(recent_rows._max)
    _observed = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def keeping_enabled() -> bool:
    return settings.PRINCIPAL_CACHE_SECONDS > 0 and redis_cache() is not None


# The request's side ------------------------------------------------------------------------------


class StaleLookup(Exception):
    """The request acted on a kept lookup the epoch has since moved past: the admission
    counted nothing, and the request is authenticated again from the database."""


def _http(request):
    return getattr(request, "_request", request)


def allow_keeping(request, *, reuse: bool = True) -> None:
    """This request's lookups are kept, and (`reuse`) may act on kept rows: only where its view
    confirms them by its admission, or authenticates again without them (`reuse=False`, which
    then keeps what it reads in their place; tenants.api.ControlPlaneAPIMixin.initial)."""
    http = _http(request)
    http.principal_lookups_keepable = True
    http.principal_lookups_reused = reuse
    http.principal_epoch = None


def keeping_allowed(request) -> bool:
    return getattr(_http(request), "principal_lookups_keepable", False) and keeping_enabled()


def reuse_allowed(request) -> bool:
    return getattr(_http(request), "principal_lookups_reused", False)


def acted_on_kept(request, epoch: int) -> None:
    """The request's lookup came from rows kept at `epoch`, not yet confirmed."""
    http = _http(request)
    http.principal_epoch = epoch
    http.principal_epoch_confirmed = False


def kept_epoch(request) -> int | None:
    """The epoch of the kept rows the request acts on, for its admission to confirm."""
    return getattr(_http(request), "principal_epoch", None)


def confirm(request) -> None:
    _http(request).principal_epoch_confirmed = True


def unconfirmed(request) -> bool:
    """Whether the request acts on kept rows no admission has confirmed."""
    http = _http(request)
    return getattr(http, "principal_epoch", None) is not None and not getattr(
        http, "principal_epoch_confirmed", False
    )


def fetch_kept(request, alias: str, sql: str, params: list) -> list[tuple]:
    """A principal lookup's rows (`sql` with `params` on `alias`): kept ones (`KeptRows`, whose
    instances config.prepared.built_from copies) if this request may act on them, which its
    admission then confirms; else read, and kept (in place of any older) when found outside a
    transaction. Without a request, always read."""
    if request is None or not keeping_allowed(request):
        return fetch_prepared(alias, sql, params)
    key = (alias, sql, *params)
    kept = recent_rows.get(key) if reuse_allowed(request) else None
    if kept is not None:
        kept_at, rows = kept
        acted_on_kept(request, kept_at)
        return rows
    read_at = observed()  # before the read: a write committed after it moves past this
    rows = fetch_prepared(alias, sql, params)
    if rows and read_at is not None and not connections[alias].in_atomic_block:
        recent_rows.put(key, read_at, rows)
    return rows
