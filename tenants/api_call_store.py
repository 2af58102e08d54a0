"""Where a tenant's `api_calls` counter lives while its period runs, when the cache is Redis.

Every member or key request counts one API call, so this counter is written far more often
than any other: on Redis it is checked and advanced atomically by the same Lua script, in the
same round trip, as the request's rate-limit windows (config.throttling.admit), instead of
one UPDATE of the same hot database row per request. The
QuotaCounter row stays the record: `api_calls_sync` (Celery beat, every minute) copies the
live values into it, and a counter missing from Redis (evicted, restarted) is seeded from it.

Keys are per period (`Tenant.last_reset_at`), so a reset, which moves the period in the
database, starts a fresh counter without touching Redis; old keys expire on their own.

Without Redis (the embedded SQLite default) `store()` is None and the conditional UPDATE in
tenants.services.quotas counts API calls like every other resource.
"""

from datetime import UTC, datetime, timedelta

from django.core.cache.backends.redis import RedisCache
from django.utils import timezone
from redis.commands.core import Script

from config.redis import per_cache, redis_cache, redis_client
from config.throttling import Meter

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The counter outlives its period by this much, so a late reset still finds it.
KEY_GRACE = timedelta(days=7)

# Takes the dirty set whole: members added after this start a new one.
_CLAIM_LUA = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
"""

_claim_script = Script(None, _CLAIM_LUA.encode())


def period_of(tenant) -> int:
    """The period's id: `last_reset_at` in whole microseconds since the epoch."""
    return (tenant.last_reset_at - _EPOCH) // timedelta(microseconds=1)


def period_start(period: int) -> datetime:
    return _EPOCH + timedelta(microseconds=period)


class RedisApiCallStore:
    def __init__(self, cache: RedisCache):
        self._cache = cache
        self._dirty = cache.make_and_validate_key("quota:api_calls:dirty")

    @property
    def client(self):
        return redis_client(self._cache)

    def key(self, tenant_id, period: int) -> str:
        return self._cache.make_key(f"quota:api_calls:{tenant_id}:{period}")

    def meter(self, tenant, amount: int, limit: int) -> Meter:
        """The counter of the tenant's current period, for config.throttling.admit: checked
        and advanced atomically, marked dirty for the sync when it counts."""
        period = period_of(tenant)
        return Meter(
            key=self.key(tenant.pk, period),
            amount=amount,
            limit=limit,
            mark_set=self._dirty,
            mark=f"{tenant.pk}:{period}",
        )

    def seed(self, tenant, value: int) -> None:
        """Start the period's counter at `value` (the database's), unless it exists."""
        ttl = max(tenant.quota_reset_at - timezone.now(), timedelta(0)) + KEY_GRACE
        key = self.key(tenant.pk, period_of(tenant))
        self.client.set(key, value, nx=True, ex=int(ttl.total_seconds()))

    def live(self, tenants) -> dict:
        """{tenant pk: current value} for the tenants whose counter is in Redis."""
        tenants = list(tenants)
        if not tenants:
            return {}
        keys = [self.key(tenant.pk, period_of(tenant)) for tenant in tenants]
        values = self.client.mget(keys)
        return {t.pk: int(v) for t, v in zip(tenants, values, strict=True) if v is not None}

    def claim_dirty(self) -> list[tuple[str, int, int]]:
        """(tenant id, period, value) of every counter changed since the last claim."""
        members = [m.decode() for m in _claim_script(keys=[self._dirty], client=self.client)]
        if not members:
            return []
        pairs = [member.rsplit(":", 1) for member in members]
        keys = [self.key(tenant_id, int(period)) for tenant_id, period in pairs]
        values = self.client.mget(keys)
        return [
            (tenant_id, int(period), int(value))
            for (tenant_id, period), value in zip(pairs, values, strict=True)
            if value is not None
        ]


def store() -> RedisApiCallStore | None:
    cache = redis_cache()
    return per_cache(cache, "api_call_store", RedisApiCallStore) if cache is not None else None
