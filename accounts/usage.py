"""API-key usage counting: in memory and Redis on the request path, in the database in batches.

A request made with an API key costs no database write and, on Redis, no round trip: the base
view (tenants.api.ControlPlaneAPIMixin.finalize_response) calls `observe_api_key_request`,
which adds to the key's counters in this process's buffer. `flush_api_key_usage` (Celery beat,
and `manage.py flush_api_key_usage`) moves the counters into the APIKey rows.

Two stores, chosen by the cache backend:

- Redis (production, the test suite): a thread of each web process pushes its buffer to Redis
  every `API_KEY_USAGE_BUFFER_SECONDS` (default 1), all keys in one Lua script call that
  increments each key's hash (`n`, `ok`, `fail`, `us`, `e:<route>`, `last` as a maximum) and
  marks the keys dirty, atomically; the process pushes once more when it exits. What a process
  killed outright (SIGKILL, out of memory) had not pushed yet is lost: at most that interval of
  usage statistics, never an API call of the tenant's quota, which the throttle counts in
  Redis at once (tenants.throttling). `API_KEY_USAGE_BUFFER_SECONDS=0` writes every request
  through instead, at one more round trip per request. A flush claims everything counted so
  far with one more script that atomically renames the dirty set and each dirty hash to batch
  keys; pushes arriving during the flush start fresh hashes, so every increment lands in
  exactly one batch. The batch is added to the rows under a row lock in one transaction per
  chunk, then its keys are deleted. A batch a crashed flusher left behind is picked up by a
  later flush once it is older than `STALE_BATCH_SECONDS` (claimed by an atomic rename, so only
  one flusher takes it). A flush pushes its own process's buffer first.
- The local-memory cache (development on embedded defaults): that cache lives inside one
  process, so the counters do too: the process's buffer, swapped out whole (atomic
  read-and-reset) by a flush. The Celery worker is another process and cannot see them, so the
  web process flushes its own counters, at most once per `API_KEY_USAGE_FLUSH_SECONDS`, after a
  request.
"""

import atexit
import functools
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import transaction
from redis.commands.core import Script
from redis.exceptions import ResponseError

from config.redis import redis_client

logger = logging.getLogger(__name__)

ROUTE_UNKNOWN = "(unrouted)"
STALE_BATCH_SECONDS = 600
FLUSH_CHUNK = 500
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>[^)]*\)")


@functools.lru_cache(maxsize=1024)
def route_template(route: str) -> str:
    """`api/v1/^audit/events/(?P<pk>[^/.]+)/?$` -> `/api/v1/audit/events/{id}/`."""
    path = _GROUP.sub(lambda m: "{id}" if m["name"] == "pk" else "{" + m["name"] + "}", route)
    path = path.replace("^", "").replace("$", "").replace("\\Z", "").replace("/?", "/")
    return "/" + path.lstrip("/")


def _route_of(request) -> str:
    match = getattr(request, "resolver_match", None)
    return route_template(match.route) if match is not None and match.route else ROUTE_UNKNOWN


@dataclass
class Usage:
    """Counters of one key, accumulated between two flushes."""

    requests: int = 0
    success: int = 0
    failed: int = 0
    response_time_us: int = 0
    last_used_ms: int = 0
    endpoints: Counter = field(default_factory=Counter)

    def count(self, *, ok: bool, response_time_us: int, route: str, at_ms: int) -> None:
        """Add one request."""
        self.requests += 1
        if ok:
            self.success += 1
        else:
            self.failed += 1
        self.response_time_us += response_time_us
        self.last_used_ms = max(self.last_used_ms, at_ms)
        self.endpoints[route] += 1

    def add(self, other: "Usage") -> None:
        self.requests += other.requests
        self.success += other.success
        self.failed += other.failed
        self.response_time_us += other.response_time_us
        self.last_used_ms = max(self.last_used_ms, other.last_used_ms)
        self.endpoints.update(other.endpoints)

    @classmethod
    def from_hash(cls, fields: dict) -> "Usage":
        usage = cls()
        for raw_name, raw_value in fields.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            value = int(raw_value)
            if name.startswith("e:"):
                usage.endpoints[name[2:]] += value
            elif name == "n":
                usage.requests = value
            elif name == "ok":
                usage.success = value
            elif name == "fail":
                usage.failed = value
            elif name == "us":
                usage.response_time_us = value
            elif name == "last":
                usage.last_used_ms = value
        return usage


# Buffers and stores of this process; a forked child starts with empty buffers and new locks.
_forkable: "weakref.WeakSet" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for owner in list(_forkable):
        owner.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class UsageBuffer:
    """Counters of this process, per key pk, under a lock: `add` per request, `take` swaps
    them out whole (an atomic read-and-reset)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._usage: dict[str, Usage] = {}
        _forkable.add(self)

    def add(self, key_pk: str, **request) -> None:
        with self._lock:
            usage = self._usage.get(key_pk)
            if usage is None:
                usage = self._usage[key_pk] = Usage()
            usage.count(**request)

    def take(self) -> dict[str, Usage]:
        with self._lock:
            usage, self._usage = self._usage, {}
        return usage

    def put_back(self, usage: dict[str, Usage]) -> None:
        """Return counters that could not be written, so nothing is lost."""
        with self._lock:
            for pk, counted in usage.items():
                self._usage.setdefault(pk, Usage()).add(counted)

    def peek(self, key_pk: str) -> Usage:
        counted = Usage()
        with self._lock:
            if key_pk in self._usage:
                counted.add(self._usage[key_pk])
        return counted

    def after_fork(self) -> None:
        # The parent still holds (and writes) what it counted.
        self._lock = threading.Lock()
        self._usage = {}


# KEYS: the dirty set, then one hash per key. ARGV, per key: pk, n, ok, fail, us, last, the
# number of routes m, then m pairs (route, count).
_PUSH_LUA = """
local a = 1
for i = 2, #KEYS do
  local h = KEYS[i]
  redis.call('HINCRBY', h, 'n', ARGV[a + 1])
  if ARGV[a + 2] ~= '0' then redis.call('HINCRBY', h, 'ok', ARGV[a + 2]) end
  if ARGV[a + 3] ~= '0' then redis.call('HINCRBY', h, 'fail', ARGV[a + 3]) end
  redis.call('HINCRBY', h, 'us', ARGV[a + 4])
  local last = tonumber(redis.call('HGET', h, 'last') or '0')
  if tonumber(ARGV[a + 5]) > last then redis.call('HSET', h, 'last', ARGV[a + 5]) end
  redis.call('SADD', KEYS[1], ARGV[a])
  local routes = tonumber(ARGV[a + 6])
  a = a + 7
  for _ = 1, routes do
    redis.call('HINCRBY', h, 'e:' .. ARGV[a], ARGV[a + 1])
    a = a + 2
  end
end
return #KEYS - 1
"""

# Moves every dirty hash to a batch key, atomically; returns [pk, [field, value, ...], ...].
_CLAIM_LUA = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
local out = {}
for _, pk in ipairs(members) do
  local source = ARGV[1] .. pk
  if redis.call('EXISTS', source) == 1 then
    local target = ARGV[2] .. pk
    redis.call('RENAME', source, target)
    table.insert(out, pk)
    table.insert(out, redis.call('HGETALL', target))
  end
end
return out
"""


@dataclass
class Batch:
    """Counters taken out of the store by one flush: usage per key pk, and where they sit."""

    usage: dict[str, Usage]
    keys: dict[str, str] = field(default_factory=dict)  # pk -> Redis batch key


def _pairs(flat: list) -> dict:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisUsageStore:
    """Counters in Redis hashes, shared by every process, fed by each process's buffer (see
    the module docstring)."""

    def __init__(self, namespace: str):
        self._hash_prefix = f"{namespace}:k:"
        self._dirty = f"{namespace}:dirty"
        self._batch_prefix = f"{namespace}:batch:"
        self._push_script = Script(None, _PUSH_LUA.encode())
        self._claim_script = Script(None, _CLAIM_LUA.encode())
        self._buffer = UsageBuffer()
        self._push_lock = threading.Lock()
        self._pushed_at = time.monotonic()
        self._pusher_pid = None
        _forkable.add(self)

    @property
    def client(self):
        # Each thread has its own cache backend object (and connection pool).
        return redis_client(caches["default"])

    def record(self, key_pk: str, **request) -> None:
        if settings.API_KEY_USAGE_BUFFER_SECONDS <= 0:
            usage = Usage()
            usage.count(**request)
            self._write({key_pk: usage})
            return
        self._buffer.add(key_pk, **request)
        if self._pusher_pid != os.getpid():
            self._start_pusher()

    def push(self) -> int:
        """Write this process's buffered counters to Redis (one script call); returns how
        many keys were written. On failure they go back into the buffer."""
        with self._push_lock:
            self._pushed_at = time.monotonic()
            usage = self._buffer.take()
            if not usage:
                return 0
            try:
                return self._write(usage)
            except Exception:
                self._buffer.put_back(usage)
                raise

    def _write(self, usage: dict[str, Usage]) -> int:
        keys, args = [self._dirty], []
        for pk, counted in usage.items():
            keys.append(self._hash_prefix + pk)
            args += [pk, counted.requests, counted.success, counted.failed]
            args += [counted.response_time_us, counted.last_used_ms, len(counted.endpoints)]
            for route, count in counted.endpoints.items():
                args += [route, count]
        return self._push_script(keys=keys, args=args, client=self.client)

    def _start_pusher(self) -> None:
        with _pusher_start_lock:
            if self._pusher_pid == os.getpid():
                return
            self._pusher_pid = os.getpid()
            thread = threading.Thread(
                target=self._push_periodically, name="api-key-usage-push", daemon=True
            )
            thread.start()
            atexit.register(self._push_logging_errors)

    def _push_periodically(self) -> None:
        # Wakes at least every second, so a changed interval applies within one.
        while True:
            time.sleep(min(max(settings.API_KEY_USAGE_BUFFER_SECONDS, 0.01), 1.0))
            if time.monotonic() - self._pushed_at >= settings.API_KEY_USAGE_BUFFER_SECONDS:
                self._push_logging_errors()

    def _push_logging_errors(self) -> None:
        try:
            self.push()
        except Exception:
            logger.warning("API-key usage not pushed to Redis; kept for later.", exc_info=True)

    def after_fork(self) -> None:
        self._push_lock = threading.Lock()
        self._pusher_pid = None

    def claim(self) -> Batch:
        """Atomically take every counter so far (this process's buffer included) into a new
        batch."""
        self.push()
        prefix = f"{self._batch_prefix}{int(time.time())}:{uuid.uuid4().hex}:"
        raw = self._claim_script(
            keys=[self._dirty], args=[self._hash_prefix, prefix], client=self.client
        )
        batch = Batch(usage={})
        for index in range(0, len(raw), 2):
            pk = raw[index].decode()
            batch.usage[pk] = Usage.from_hash(_pairs(raw[index + 1]))
            batch.keys[pk] = prefix + pk
        return batch

    def claim_stale(self) -> list[Batch]:
        """Batches a crashed flusher left behind, each re-claimed under a new name first."""
        client = self.client
        cutoff = time.time() - STALE_BATCH_SECONDS
        batches = []
        for raw_name in client.scan_iter(match=f"{self._batch_prefix}*", count=500):
            name = raw_name.decode()
            stamp, _, rest = name.removeprefix(self._batch_prefix).partition(":")
            pk = rest.partition(":")[2]
            if not stamp.isdigit() or int(stamp) > cutoff or not pk:
                continue
            target = f"{self._batch_prefix}{int(time.time())}:{uuid.uuid4().hex}:{pk}"
            try:
                client.rename(name, target)
            except ResponseError:
                continue  # another flusher claimed it first
            usage = Usage.from_hash(client.hgetall(target))
            batches.append(Batch(usage={pk: usage}, keys={pk: target}))
        return batches

    def release(self, batch: Batch, pks: list[str]) -> None:
        names = [batch.keys[pk] for pk in pks if pk in batch.keys]
        if names:
            self.client.delete(*names)

    def restore(self, batch: Batch, pks: list[str]) -> None:
        """Nothing to do: an unapplied batch stays in Redis and is re-claimed once stale."""

    def pending(self, key_pk: str) -> Usage:
        counted = Usage.from_hash(self.client.hgetall(self._hash_prefix + key_pk))
        counted.add(self._buffer.peek(key_pk))
        return counted

    def reset(self) -> None:
        """Drop every counter and batch (tests)."""
        with self._push_lock:
            self._buffer.take()
        client = self.client
        names = [*client.scan_iter(match=f"{self._hash_prefix}*")]
        names += [*client.scan_iter(match=f"{self._batch_prefix}*")]
        client.delete(self._dirty, *names)


class LocalUsageStore:
    """Counters inside this process, for the process-local cache (see the module docstring)."""

    def __init__(self):
        self._buffer = UsageBuffer()
        self._last_flush = time.monotonic()

    def record(self, key_pk: str, **request) -> None:
        self._buffer.add(key_pk, **request)
        if time.monotonic() - self._last_flush >= settings.API_KEY_USAGE_FLUSH_SECONDS:
            self._last_flush = time.monotonic()
            flush_api_key_usage()

    def claim(self) -> Batch:
        self._last_flush = time.monotonic()
        return Batch(usage=self._buffer.take())

    def claim_stale(self) -> list[Batch]:
        return []

    def release(self, batch: Batch, pks: list[str]) -> None:
        pass

    def restore(self, batch: Batch, pks: list[str]) -> None:
        """Put back counters the database did not take, so nothing is lost."""
        self._buffer.put_back({pk: batch.usage[pk] for pk in pks})

    def pending(self, key_pk: str) -> Usage:
        return self._buffer.peek(key_pk)

    def reset(self) -> None:
        self._buffer.take()
        self._last_flush = time.monotonic()


_stores: dict[tuple, object] = {}
_pusher_start_lock = threading.Lock()


def usage_store() -> RedisUsageStore | LocalUsageStore:
    """The store for the configured default cache (one per cache configuration)."""
    config = settings.CACHES["default"]
    ident = (config["BACKEND"], str(config.get("LOCATION", "")), config.get("KEY_PREFIX", ""))
    store = _stores.get(ident)
    if store is None:
        backend = caches["default"]
        if isinstance(backend, RedisCache):
            store = RedisUsageStore(namespace=backend.make_key("apikey-usage"))
        else:
            store = LocalUsageStore()
        store = _stores.setdefault(ident, store)
    return store


def observe_api_key_request(request, response) -> None:
    """Count one response to a request authenticated by an API key; no database access."""
    django_request = request._request
    key = getattr(django_request, "api_key", None)
    if key is None:
        return
    started = getattr(django_request, "started_at", None)
    elapsed_us = int((time.perf_counter() - started) * 1e6) if started is not None else 0
    usage_store().record(
        str(key.pk),
        ok=response.status_code < 400,
        response_time_us=max(elapsed_us, 0),
        route=_route_of(django_request),
        at_ms=int(time.time() * 1000),
    )


def flush_api_key_usage() -> int:
    """Add every counted request to its key's row; returns how many requests were written.

    Safe to run concurrently and while requests are being counted: each counter is claimed by
    exactly one flush (see the module docstring).
    """
    store = usage_store()
    written = 0
    for batch in [*store.claim_stale(), store.claim()]:
        pks = sorted(batch.usage)
        for start in range(0, len(pks), FLUSH_CHUNK):
            chunk = pks[start : start + FLUSH_CHUNK]
            try:
                written += _apply({pk: batch.usage[pk] for pk in chunk})
            except Exception:
                store.restore(batch, pks[start:])
                raise
            store.release(batch, chunk)
    return written


def _apply(usage: dict[str, "Usage"]) -> int:
    """Add one chunk of counters to the rows, in one transaction, under ordered row locks."""
    from .models import APIKey

    written = 0
    with transaction.atomic():
        keys = list(APIKey.objects.select_for_update().filter(pk__in=list(usage)).order_by("pk"))
        for key in keys:
            counted = usage[str(key.pk)]
            key.usage_count += counted.requests
            key.success_count += counted.success
            key.failed_count += counted.failed
            key.response_time_us_total += counted.response_time_us
            endpoints = Counter(key.requests_by_endpoint or {})
            endpoints.update(counted.endpoints)
            key.requests_by_endpoint = dict(endpoints)
            if counted.last_used_ms:
                last = datetime.fromtimestamp(counted.last_used_ms / 1000, tz=UTC)
                if key.last_used_at is None or last > key.last_used_at:
                    key.last_used_at = last
            written += counted.requests
        APIKey.objects.bulk_update(keys, USAGE_FIELDS)
    return written


USAGE_FIELDS = [
    "usage_count",
    "success_count",
    "failed_count",
    "response_time_us_total",
    "requests_by_endpoint",
    "last_used_at",
]
