"""API-key usage counting: in memory and Redis on the request path, in the database in batches.

A request made with an API key costs no database write and, on Redis, no round trip: the base
view (tenants.api.ControlPlaneAPIMixin.finalize_response) calls `observe_api_key_request`,
which adds to the key's counts with config.metering's buffered counts (namespace
`apikey-usage`, one hash per key: `n`, `ok`, `fail`, `us`, `e:<route>` summed, `last` kept as
a maximum). `flush_api_key_usage` (Celery beat, and `manage.py flush_api_key_usage`) claims
everything counted so far and adds it to the APIKey rows.

On Redis (production, the test suite) each web process pushes its buffer every
`API_KEY_USAGE_BUFFER_SECONDS` (default 1) and once more when it exits; what a process killed
outright (SIGKILL, out of memory) had not pushed yet is lost: at most that interval of usage
statistics, never an API call of the tenant's quota, which the throttle counts in Redis at
once (tenants.throttling). `API_KEY_USAGE_BUFFER_SECONDS=0` writes every request through
instead, at one more round trip per request. Every count is written by exactly one flush: a
batch a crashed flusher left behind is taken over once stale, unless the flusher's transaction
committed (config.metering.flush_batches).

With the local-memory cache (development on embedded defaults) the counts live in the web
process, which the Celery worker cannot see: the web process flushes its own counts, at most
once per `API_KEY_USAGE_FLUSH_SECONDS`, after a request.
"""

import functools
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import router, transaction

from config import epoch, metering
from config.metering import STALE_BATCH_SECONDS
from config.redis import redis_cache

__all__ = ["STALE_BATCH_SECONDS", "Usage", "flush_api_key_usage", "observe_api_key_request"]

ROUTE_UNKNOWN = "(unrouted)"
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


NAMESPACE = "apikey-usage"
# `last` (epoch milliseconds of the latest request) is kept as a maximum, the rest summed.
_MAX_FIELDS = ("last",)


@dataclass
class Batch:
    """Usage taken out of the store by one flush, per key pk, and the metering batch."""

    usage: dict[str, Usage]
    counts: metering.Batch


class UsageStore:
    """API-key usage over one of config.metering's buffered counts."""

    def __init__(self, counts):
        self._counts = counts

    def record(self, key_pk: str, *, ok: bool, response_time_us: int, route: str, at_ms: int):
        self._counts.record(
            key_pk,
            {
                "n": 1,
                "ok" if ok else "fail": 1,
                "us": response_time_us,
                "last": at_ms,
                f"e:{route}": 1,
            },
        )

    def push(self) -> int:
        return self._counts.push()

    def claim(self) -> Batch:
        return _batch(self._counts.claim())

    def flush(self) -> int:
        """Write every counted request to its key's row, each once (metering.flush_batches);
        returns how many requests were written."""
        from .models import APIKey

        return metering.flush_batches(
            self._counts, _apply_counts, chunk=FLUSH_CHUNK, using=router.db_for_write(APIKey)
        )

    def pending(self, key_pk: str) -> Usage:
        return Usage.from_hash(self._counts.pending(key_pk))

    def buffered(self, key_pk: str) -> Usage:
        """What this process has counted for the key and not pushed yet."""
        return Usage.from_hash(self._counts.buffered(key_pk))

    def reset(self) -> None:
        self._counts.reset()


def _batch(counts: metering.Batch) -> Batch:
    return Batch({pk: Usage.from_hash(counted) for pk, counted in counts.counts.items()}, counts)


class RedisUsageStore(UsageStore):
    """Shared by every process, fed by each process's buffer."""

    @property
    def client(self):
        return self._counts.client

    @property
    def _hash_prefix(self) -> str:
        return self._counts._hash_prefix


class LocalUsageStore(UsageStore):
    """Inside this process, which flushes its own counts once the interval has passed."""

    def __init__(self):
        super().__init__(
            metering.LocalBufferedCounts(max_fields=_MAX_FIELDS, on_record=self._flush_when_due)
        )
        self._last_flush = time.monotonic()
        # The thread of the latest flush handed off the event loop, if any (tests wait for it).
        self.flushing = None

    def _flush_when_due(self) -> None:
        if time.monotonic() - self._last_flush >= settings.API_KEY_USAGE_FLUSH_SECONDS:
            # Marked at once: a flush handed to a thread claims a little later.
            self._last_flush = time.monotonic()
            self.flushing = metering.flush_beside_request(flush_api_key_usage)

    def claim(self) -> Batch:
        self._last_flush = time.monotonic()
        return super().claim()

    def reset(self) -> None:
        super().reset()
        self._last_flush = time.monotonic()


_stores: dict[tuple, UsageStore] = {}


def usage_store() -> UsageStore:
    """The store for the configured default cache (one per cache configuration)."""
    config = settings.CACHES["default"]
    ident = (config["BACKEND"], str(config.get("LOCATION", "")), config.get("KEY_PREFIX", ""))
    store = _stores.get(ident)
    if store is None:
        if redis_cache() is not None:
            counts = metering.buffered_counts(
                NAMESPACE,
                max_fields=_MAX_FIELDS,
                push_seconds=lambda: settings.API_KEY_USAGE_BUFFER_SECONDS,
            )
            store = RedisUsageStore(counts)
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

    Safe to run concurrently and while requests are being counted: each count is written by
    exactly one flush (see the module docstring).
    """
    return usage_store().flush()


def key_counter_writes():
    """A block whose writes to API keys touch only their counters: the usage flushed here and
    the monthly token budget (accounts.services, playground.services.ledger), written by every
    flush and gateway call. No kept principal lookup reads those columns (the API-key lookup,
    accounts.authentication, defers them), so these writes do not move the principals' epoch
    (config.epoch); every other write to a key does."""
    from .models import APIKey

    return epoch.unwatched(APIKey._meta.db_table)


def _apply_counts(counts: dict[str, Counter]) -> int:
    return _apply({pk: Usage.from_hash(counted) for pk, counted in counts.items()})


def _apply(usage: dict[str, "Usage"]) -> int:
    """Add one chunk of counters to the rows, in one transaction, under ordered row locks."""
    from .models import APIKey

    written = 0
    with key_counter_writes(), transaction.atomic():
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
