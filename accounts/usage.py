"""API-key usage counting: in the cache on the request path, in the database in batches.

A request made with an API key costs one cache round trip and no database write: the base view
(tenants.api.ControlPlaneAPIMixin.finalize_response) calls `observe_api_key_request`, which
adds to the key's counters. `flush_api_key_usage` (Celery beat, and `manage.py
flush_api_key_usage`) moves the counters into the APIKey rows.

Two stores, chosen by the cache backend:

- Redis (production, the test suite): one Lua script per request increments the key's hash
  (`n`, `ok`/`fail`, `us`, `e:<route>`, `last` as a maximum) and marks the key dirty, atomically
  and in one round trip. A flush claims everything counted so far with one more script that
  atomically renames the dirty set and each dirty hash to batch keys; requests arriving during
  the flush start fresh hashes, so every increment lands in exactly one batch. The batch is
  added to the rows under a row lock in one transaction per chunk, then its keys are deleted. A
  batch a crashed flusher left behind is picked up by a later flush once it is older than
  `STALE_BATCH_SECONDS` (claimed by an atomic rename, so only one flusher takes it).
- The local-memory cache (development on embedded defaults): that cache lives inside one
  process, so the counters do too: a process-local table under a lock, swapped out whole
  (atomic read-and-reset) by a flush. The Celery worker is another process and cannot see them,
  so the web process flushes its own counters, at most once per `API_KEY_USAGE_FLUSH_SECONDS`,
  after a request.
"""

import functools
import re
import threading
import time
import uuid
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


_RECORD_LUA = """
local h = KEYS[1]
redis.call('HINCRBY', h, 'n', 1)
redis.call('HINCRBY', h, ARGV[1], 1)
redis.call('HINCRBY', h, 'us', ARGV[2])
redis.call('HINCRBY', h, ARGV[3], 1)
local last = tonumber(redis.call('HGET', h, 'last') or '0')
if tonumber(ARGV[4]) > last then redis.call('HSET', h, 'last', ARGV[4]) end
redis.call('SADD', KEYS[2], ARGV[5])
return 1
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
    """Counters in Redis hashes, shared by every process (see the module docstring)."""

    def __init__(self, namespace: str):
        self._hash_prefix = f"{namespace}:k:"
        self._dirty = f"{namespace}:dirty"
        self._batch_prefix = f"{namespace}:batch:"
        self._record_script = Script(None, _RECORD_LUA.encode())
        self._claim_script = Script(None, _CLAIM_LUA.encode())

    @property
    def client(self):
        # Each thread has its own cache backend object (and connection pool).
        return redis_client(caches["default"])

    def record(self, key_pk: str, *, ok: bool, response_time_us: int, route: str, at_ms: int):
        self._record_script(
            keys=[self._hash_prefix + key_pk, self._dirty],
            args=["ok" if ok else "fail", response_time_us, "e:" + route, at_ms, key_pk],
            client=self.client,
        )

    def claim(self) -> Batch:
        """Atomically take every counter so far into a new batch."""
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
        return Usage.from_hash(self.client.hgetall(self._hash_prefix + key_pk))

    def reset(self) -> None:
        """Drop every counter and batch (tests)."""
        client = self.client
        names = [*client.scan_iter(match=f"{self._hash_prefix}*")]
        names += [*client.scan_iter(match=f"{self._batch_prefix}*")]
        client.delete(self._dirty, *names)


class LocalUsageStore:
    """Counters inside this process, for the process-local cache (see the module docstring)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._usage: dict[str, Usage] = {}
        self._last_flush = time.monotonic()

    def record(self, key_pk: str, *, ok: bool, response_time_us: int, route: str, at_ms: int):
        with self._lock:
            usage = self._usage.get(key_pk)
            if usage is None:
                usage = self._usage[key_pk] = Usage()
            usage.requests += 1
            if ok:
                usage.success += 1
            else:
                usage.failed += 1
            usage.response_time_us += response_time_us
            usage.last_used_ms = max(usage.last_used_ms, at_ms)
            usage.endpoints[route] += 1
            due = time.monotonic() - self._last_flush >= settings.API_KEY_USAGE_FLUSH_SECONDS
            if due:
                self._last_flush = time.monotonic()
        if due:
            flush_api_key_usage()

    def claim(self) -> Batch:
        with self._lock:
            usage, self._usage = self._usage, {}
            self._last_flush = time.monotonic()
        return Batch(usage=usage)

    def claim_stale(self) -> list[Batch]:
        return []

    def release(self, batch: Batch, pks: list[str]) -> None:
        pass

    def restore(self, batch: Batch, pks: list[str]) -> None:
        """Put back counters the database did not take, so nothing is lost."""
        with self._lock:
            for pk in pks:
                self._usage.setdefault(pk, Usage()).add(batch.usage[pk])

    def pending(self, key_pk: str) -> Usage:
        counted = Usage()
        with self._lock:
            if key_pk in self._usage:
                counted.add(self._usage[key_pk])
        return counted

    def reset(self) -> None:
        with self._lock:
            self._usage = {}
            self._last_flush = time.monotonic()


_stores: dict[tuple, object] = {}


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
