"""Where a tenant's `api_calls` counter lives while its period runs, when the cache is Redis: a
meter of config.metering, one per tenant and period.

Every member or key request counts one API call, so this counter is written far more often
than any other: on Redis it is checked and advanced atomically by the same Lua script, in the
same round trip, as the request's rate-limit windows (config.metering.admit), instead of one
UPDATE of the same hot database row per request. The QuotaCounter row stays the record:
`api_calls_sync` (Celery beat, every minute) copies the live values into it, and a counter
missing from Redis (evicted, restarted) is seeded from it.

Periods are identified by `Tenant.last_reset_at`, so a reset, which moves the period in the
database, starts a fresh counter without touching Redis; old keys expire on their own.

Without Redis (the embedded SQLite default) `store()` is None and the conditional UPDATE in
tenants.services.quotas counts API calls like every other resource.
"""

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from config.metering import Meter, MeterStore, meter_store

NAMESPACE = "quota:api_calls"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The counter outlives its period by this much, so a late reset still finds it.
KEY_GRACE = timedelta(days=7)


def period_of(tenant) -> int:
    """The period's id: `last_reset_at` in whole microseconds since the epoch."""
    return (tenant.last_reset_at - _EPOCH) // timedelta(microseconds=1)


def period_start(period: int) -> datetime:
    return _EPOCH + timedelta(microseconds=period)


class RedisApiCallStore(MeterStore):
    """The api_calls meters, addressed by tenant."""

    def meter(self, tenant, amount: int, limit: int) -> Meter:
        return super().meter(tenant.pk, period_of(tenant), amount=amount, limit=limit)

    def seed(self, tenant, value: int) -> None:
        """Start the period's counter at `value` (the database's), unless it exists."""
        ttl = max(tenant.quota_reset_at - timezone.now(), timedelta(0)) + KEY_GRACE
        super().seed(tenant.pk, period_of(tenant), value, ttl_seconds=int(ttl.total_seconds()))

    def live(self, tenants) -> dict:
        """{tenant pk: current value} for the tenants whose counter is in Redis."""
        tenants = list(tenants)
        values = self.values((tenant.pk, period_of(tenant)) for tenant in tenants)
        return {t.pk: v for t, v in zip(tenants, values, strict=True) if v is not None}


def store() -> RedisApiCallStore | None:
    return meter_store(NAMESPACE, RedisApiCallStore)
