"""Quotas: per-tenant usage counters, checked and advanced in one atomic step.

`quota_consume` is what every app calls before using a counted resource (the API base view for
each request's `api_calls`, the gateway for `tokens`, documents for `documents` and `storage`).
It is one conditional UPDATE, `used = used + n WHERE used + n <= limit`, so concurrent callers
can never pass the limit and nothing is counted past it. Inside a caller's transaction the
consumption commits or rolls back with the caller's change.

Limits are not stored: they come from the tenant's plan tier and settings (tenants.plans), so a
plan or settings change applies to the next call. `users` is not a counter: it is the seats
taken (active members and pending, unexpired invitations), and the membership services enforce
its limit on the same count.

`api_calls` is counted on every request: where the cache is Redis its live counter is there
(tenants.api_call_store: one Lua script per request, copied to the QuotaCounter row every
minute by `api_calls_sync`); elsewhere it is the same conditional UPDATE as the others.

The quota period is the calendar month (UTC). `tokens` and `api_calls` restart at
`Tenant.quota_reset_at`; the reset sets the next one in the same UPDATE that claims the due
tenant, so two resets running at once reset a tenant once. What the ended period used (every
counter, stock levels as held) is kept as a UsageRecord in the same transaction.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.services import record
from config.db import raw_uuid
from config.exceptions import QuotaExceeded
from config.metering import METER_COUNTED, METER_MISSING, METER_OVER_LIMIT, Admission, admit
from config.prepared import Rider, fetch_prepared, one_row_from

from .. import api_call_store
from ..models import (
    COUNTED_QUOTA_RESOURCES,
    Membership,
    QuotaCounter,
    QuotaResource,
    Tenant,
    UsageRecord,
)
from ..plans import PERIODIC_RESOURCES, first_of_next_month, tenant_limits

# Raw SQL for RETURNING (one statement, no read-modify-write); only the model's own table name
# is interpolated, every value is a parameter.
_TABLE = QuotaCounter._meta.db_table
_CONSUME_SQL = (
    f"UPDATE {_TABLE} SET used = used + %s, updated_at = %s "  # noqa: S608
    "WHERE tenant_id = %s AND resource = %s AND used + %s <= %s RETURNING used, warned_at"
)
# quota_consume carrying a caller's write (config.prepared.Rider): the UPDATE as the CTE
# `quota_update`, one row when the amount was counted; the row is there either way.
_CONSUME_HOST = {
    "ctes": f"quota_update AS ({_CONSUME_SQL})",
    "columns": "quota_update.used, quota_update.warned_at",
    "tail": one_row_from("quota_update"),
}
_ADJUST_SQL = (
    f"UPDATE {_TABLE} SET used = used + %s, updated_at = %s "  # noqa: S608
    "WHERE tenant_id = %s AND resource = %s RETURNING used, warned_at"
)
_RELEASE_SQL = (
    f"UPDATE {_TABLE} SET used = CASE WHEN used > %s THEN used - %s ELSE 0 END, "  # noqa: S608
    "updated_at = %s WHERE tenant_id = %s AND resource = %s RETURNING used"
)


@dataclass(frozen=True)
class QuotaState:
    """One resource's quota: current, limit, percentage, warning threshold, exceeded."""

    resource: str
    current: int
    limit: int
    warning_threshold: float

    @property
    def percentage(self) -> float:
        return round(self.current * 100 / self.limit, 2) if self.limit else 100.0

    @property
    def exceeded(self) -> bool:
        return self.current >= self.limit


def _check_resource(resource: str) -> None:
    if resource not in COUNTED_QUOTA_RESOURCES:
        raise ValueError(f"{resource!r} is not a counted quota resource: {COUNTED_QUOTA_RESOURCES}")


def _ensure_counter(tenant: Tenant, resource: str) -> QuotaCounter:
    # Tenants made before quotas (or by fixtures) get their rows on first use.
    return QuotaCounter.objects.get_or_create(tenant=tenant, resource=resource)[0]


def quota_exceeded_error(
    tenant: Tenant, resource: str, limit: int, amount: int, used: int | None
) -> QuotaExceeded:
    """The 429 refusing `amount` of `resource`: resource, limit, used, requested, resets_at."""
    details = {"resource": resource, "limit": limit, "used": used, "requested": amount}
    if resource in PERIODIC_RESOURCES and tenant.quota_reset_at is not None:
        details["resets_at"] = tenant.quota_reset_at
    if resource in PERIODIC_RESOURCES:
        message = f"The organization's {resource} quota is exhausted for this period."
    else:  # a stock level (documents, storage): full until something is removed
        message = f"The organization's {resource} quota is full."
    return QuotaExceeded(message, details=details)


def _used(tenant: Tenant, resource: str) -> int | None:
    return (
        QuotaCounter.objects.filter(tenant=tenant, resource=resource)
        .values_list("used", flat=True)
        .first()
    )


def quota_room(*, tenant: Tenant, resource: str) -> tuple[int, Callable[[int], QuotaExceeded]]:
    """What `resource` can still take now, and the refusal of an amount past it: for work that
    makes its amount in pieces before it can be counted (a file written as it comes), so that
    it stops as soon as the amount could not be counted, not once all of it is made. Counting
    is still quota_consume's, which decides."""
    _check_resource(resource)
    limit = tenant_limits(tenant)[resource]
    used = _used(tenant, resource) or 0
    refusal = functools.partial(quota_exceeded_error, tenant, resource, limit, used=used)
    return max(0, limit - used), refusal


def quota_consume(
    *, tenant: Tenant, resource: str, amount: int = 1, rider: Rider | None = None
) -> int:
    """Count `amount` of `resource` for `tenant` and return the new total, or refuse with
    `QuotaExceeded` (429) when it would pass the limit, counting nothing.

    `rider`, for a resource counted in the database: the caller's write made with the count,
    in its statement on PostgreSQL (the CTE `quota_update` has one row when the amount was
    counted), else after it in one transaction; its answer is left in `rider.answered`."""
    _check_resource(resource)
    if amount < 0:
        raise ValueError("amount must not be negative; use quota_release to give back")
    if resource == QuotaResource.API_CALLS and api_call_store.store() is not None:
        if rider is not None:
            raise ValueError("api_calls is counted in Redis: no statement carries a rider")
        return api_calls_admit(tenant=tenant, windows=(), amount=amount).meter_value
    if rider is not None and connection.vendor != "postgresql":
        with transaction.atomic():
            used = quota_consume(tenant=tenant, resource=resource, amount=amount)
            rider.made_apart()
        return used
    limit = tenant_limits(tenant)[resource]
    params = [amount, timezone.now(), raw_uuid(tenant.pk), resource, amount, limit]
    sql = _CONSUME_SQL
    if rider is not None:
        sql, params = rider.carried_by(**_CONSUME_HOST, params=params)
    for attempt in range(2):
        # A fixed text, prepared on the server once per connection (config.prepared): every
        # gateway call without an API key counts its tokens here, as does each counted resource.
        rows = fetch_prepared(connection.alias, sql, params)
        row = rows[0] if rows and rows[0][0] is not None else None
        if row is not None:
            break
        if attempt == 0:
            # No row matched: the counter may not exist yet (or another request created it
            # meanwhile). Make sure it does and let a second UPDATE decide.
            _ensure_counter(tenant, resource)
            continue
        raise quota_exceeded_error(tenant, resource, limit, amount, _used(tenant, resource))
    used, warned_at = row[:2]
    if rider is not None:
        rider.answered = row[2:]
    quota_warn_if_due(tenant=tenant, resource=resource, used=used, warned_at=warned_at, limit=limit)
    return used


def quota_warn_if_due(
    *, tenant: Tenant, resource: str, used: int, warned_at, limit: int | None = None
) -> None:
    """After a counter moved to `used` (its row's `warned_at` as the same statement returned
    it): record `quota.warning` once per period when it reached the warning threshold."""
    if warned_at is not None:
        return
    if limit is None:
        limit = tenant_limits(tenant)[resource]
    if used * 100 >= settings.QUOTA_WARNING_THRESHOLD * limit:
        _warn_once(tenant=tenant, resource=resource, used=used, limit=limit)


def api_calls_admit(
    *, tenant: Tenant, windows, amount: int = 1, epoch: int | None = None
) -> Admission:
    """Count `amount` api_calls (Redis) together with rate-limit `windows`, in one atomic step:
    nothing is counted unless every window and the quota have room (and the principals' epoch
    is still `epoch`, when given: config.metering.admit). Refuses with QuotaExceeded; a
    refusing window is the caller's to report (see `refused_window`), a stale admission too."""
    store = api_call_store.store()
    limit = tenant_limits(tenant)[QuotaResource.API_CALLS]
    meter = store.meter(tenant, amount, limit)
    admission = admit(windows, meter, epoch=epoch)
    if admission.meter_status == METER_MISSING:
        store.seed(tenant, _ensure_counter(tenant, QuotaResource.API_CALLS).used)
        admission = admit(windows, meter, epoch=epoch)
    if admission.meter_status == METER_OVER_LIMIT:
        refused = quota_exceeded_error(
            tenant, QuotaResource.API_CALLS, limit, amount, admission.meter_value
        )
        # The windows' states, for the 429's rate-limit headers (config.throttling).
        refused.admission = admission
        raise refused
    if admission.meter_status == METER_COUNTED:
        used = admission.meter_value
        if (used - amount) * 100 < settings.QUOTA_WARNING_THRESHOLD * limit <= used * 100:
            _warn_once(tenant=tenant, resource=QuotaResource.API_CALLS, used=used, limit=limit)
    return admission


def api_calls_sync() -> int:
    """Copy the live api_calls counters (Redis) into their QuotaCounter rows; a counter of a
    period that has since been reset is not copied. Returns the rows written."""
    store = api_call_store.store()
    if store is None:
        return 0
    written = 0
    for tenant_id, period, value in store.claim_dirty():
        with transaction.atomic():
            # The tenant's row first, as a reset takes it: a reset in progress is waited for,
            # and the row is then read as it committed, so an ended period is not copied over
            # the reset's zero (a condition through the join would be checked on the old row).
            current = Tenant.objects.select_for_update(no_key=True).filter(
                pk=tenant_id, last_reset_at=api_call_store.period_start(period)
            )
            if not current.values_list("pk", flat=True):
                continue
            written += QuotaCounter.objects.filter(
                tenant_id=tenant_id, resource=QuotaResource.API_CALLS
            ).update(used=value, updated_at=timezone.now())
    return written


def counted_reading(tenant: Tenant, admission: Admission) -> dict:
    """The tenant's live api_calls as its request's admission left them, for
    `with_live_api_calls(known=)`: the request that counted a call knows the total already."""
    if admission.meter_status != METER_COUNTED:
        return {}
    return {(tenant.pk, api_call_store.period_of(tenant)): admission.meter_value}


def with_live_api_calls(tenants, *, known: dict | None = None):
    """Set `api_calls_used` on tenants annotated `with_quota_usage()` from the live counters
    (one round trip, none for tenants whose current period is in `known`, see
    `counted_reading`); returns them."""
    tenants = list(tenants)
    store = api_call_store.store()
    if store is None:
        return tenants
    known = known or {}
    period_of = api_call_store.period_of
    readings = {tenant.pk: known.get((tenant.pk, period_of(tenant))) for tenant in tenants}
    unread = [tenant for tenant in tenants if readings[tenant.pk] is None]
    readings.update(store.live(unread))
    for tenant in tenants:
        if readings[tenant.pk] is not None:
            tenant.api_calls_used = readings[tenant.pk]
    return tenants


def _warn_once(*, tenant: Tenant, resource: str, used: int, limit: int) -> None:
    """Record `quota.warning` if no caller has this period; the flag and the event commit
    together."""
    with transaction.atomic():
        claimed = QuotaCounter.objects.filter(
            tenant=tenant, resource=resource, warned_at__isnull=True
        ).update(warned_at=timezone.now(), updated_at=timezone.now())
        if claimed:
            record(
                tenant=tenant,
                event_type="quota.warning",
                payload={
                    "resource": resource,
                    "used": used,
                    "limit": limit,
                    "warning_threshold": settings.QUOTA_WARNING_THRESHOLD,
                },
            )


def quota_release(*, tenant: Tenant, resource: str, amount: int) -> int:
    """Give back `amount` of a resource (a document deleted, storage freed, tokens of a failed
    call); never below zero. Returns the new total. API calls, once made, stay counted."""
    _check_resource(resource)
    if resource == QuotaResource.API_CALLS:
        raise ValueError("api_calls are not given back")
    if amount < 0:
        raise ValueError("amount must not be negative")
    with connection.cursor() as cursor:
        cursor.execute(
            _RELEASE_SQL, [amount, amount, timezone.now(), raw_uuid(tenant.pk), resource]
        )
        row = cursor.fetchone()
    # No counter: nothing was counted, so nothing to give back.
    return row[0] if row is not None else 0


def quota_adjust(*, tenant: Tenant, resource: str, delta: int) -> int:
    """Settle a reservation made with quota_consume: add `delta` (negative gives back), never
    below zero and never refused, since what it counts was already consumed (an upstream's
    usage above the gateway's estimate). Returns the new total."""
    _check_resource(resource)
    if resource == QuotaResource.API_CALLS:
        raise ValueError("api_calls are counted by quota_consume only")
    if delta < 0:
        return quota_release(tenant=tenant, resource=resource, amount=-delta)
    params = [delta, timezone.now(), raw_uuid(tenant.pk), resource]
    with connection.cursor() as cursor:
        cursor.execute(_ADJUST_SQL, params)
        row = cursor.fetchone()
        if row is None:  # no counter yet: create it, then count
            _ensure_counter(tenant, resource)
            cursor.execute(_ADJUST_SQL, params)
            row = cursor.fetchone()
    used, warned_at = row
    quota_warn_if_due(tenant=tenant, resource=resource, used=used, warned_at=warned_at)
    return used


def annotated_usage(tenant: Tenant) -> dict[str, int]:
    """Usage from a tenant loaded with `Tenant.objects.with_quota_usage()`; `users` from its
    `with_seats_taken()` annotation, else one query."""
    usage = {resource: getattr(tenant, f"{resource}_used") for resource in COUNTED_QUOTA_RESOURCES}
    seats = getattr(tenant, "seats_taken", None)
    if seats is None:
        seats = seats_taken(tenant)
    return {**usage, QuotaResource.USERS: seats}


def seats_taken(tenant: Tenant) -> int:
    """What the `users` quota counts, and what invitations are refused at: active members
    and pending, unexpired invitations."""
    return Membership.objects.filter(tenant=tenant).holding_seats().count()


def annotated_quota_states(tenant: Tenant) -> dict:
    """Every resource's QuotaState, without queries, for a tenant loaded
    `with_member_count().with_quota_usage()` and passed through `with_live_api_calls`."""
    return quota_states(tenant, usage=annotated_usage(tenant))


def quota_states(tenant: Tenant, *, usage: dict[str, int] | None = None) -> dict:
    """Every resource's QuotaState for `tenant`; pass `annotated_usage(tenant)` (of a tenant
    passed through `with_live_api_calls`) to build it without queries."""
    if usage is None:
        used = dict(QuotaCounter.objects.filter(tenant=tenant).values_list("resource", "used"))
        used[QuotaResource.USERS] = seats_taken(tenant)
        store = api_call_store.store()
        live = store.live([tenant]) if store is not None else {}
        if tenant.pk in live:
            used[QuotaResource.API_CALLS] = live[tenant.pk]
    else:
        used = usage
    limits = tenant_limits(tenant)
    threshold = settings.QUOTA_WARNING_THRESHOLD
    return {
        resource: QuotaState(resource, used.get(resource, 0), limits[resource], threshold)
        for resource in QuotaResource.values
    }


def _reset_counters(
    tenant: Tenant, now: datetime, live_api_calls: int | None, *, period_start: datetime, period_end
) -> dict[str, int]:
    """Restart the periodic counters, keeping what the ended period used as a UsageRecord."""
    counters = list(
        QuotaCounter.objects.select_for_update().filter(tenant=tenant).order_by("resource")
    )
    used = {c.resource: c.used for c in counters}
    if live_api_calls is not None:
        used[QuotaResource.API_CALLS] = live_api_calls
    previous = {resource: used[resource] for resource in PERIODIC_RESOURCES if resource in used}
    UsageRecord.objects.create(
        tenant=tenant,
        period_start=period_start,
        period_end=period_end,
        tokens=used.get(QuotaResource.TOKENS, 0),
        api_calls=used.get(QuotaResource.API_CALLS, 0),
        documents=used.get(QuotaResource.DOCUMENTS, 0),
        storage_bytes=used.get(QuotaResource.STORAGE, 0),
    )
    QuotaCounter.objects.filter(tenant=tenant, resource__in=PERIODIC_RESOURCES).update(
        used=0, warned_at=None, updated_at=now
    )
    # Stock levels keep their usage; their warning may fire again in the new period.
    QuotaCounter.objects.filter(tenant=tenant).exclude(resource__in=PERIODIC_RESOURCES).update(
        warned_at=None, updated_at=now
    )
    return previous


def _live_api_calls(tenant: Tenant) -> int | None:
    store = api_call_store.store()
    return store.live([tenant]).get(tenant.pk) if store is not None else None


def _record_reset(tenant: Tenant, actor, previous: dict, next_reset: datetime, trigger: str):
    record(
        tenant=tenant,
        event_type="quota.reset",
        actor=actor,
        payload={
            "trigger": trigger,
            "previous_usage": previous,
            "next_reset_at": next_reset.isoformat(),
        },
    )


@transaction.atomic
def quota_reset(*, tenant: Tenant, actor) -> Tenant:
    """Restart `tenant`'s periodic counters now (staff action); the next scheduled reset is the
    next month start."""
    now = timezone.now()
    next_reset = first_of_next_month(now)
    current = Tenant.objects.locked(tenant.pk)
    live = _live_api_calls(current)
    Tenant.objects.filter(pk=tenant.pk).update(
        quota_reset_at=next_reset, last_reset_at=now, updated_at=now
    )
    previous = _reset_counters(
        tenant, now, live, period_start=current.last_reset_at, period_end=now
    )
    _record_reset(tenant, actor, previous, next_reset, "manual")
    tenant.quota_reset_at, tenant.last_reset_at = next_reset, now
    return tenant


def quotas_due(*, now: datetime | None = None):
    """Tenants whose quota period has ended."""
    return Tenant.objects.filter(quota_reset_at__lte=now or timezone.now()).order_by(
        "quota_reset_at", "pk"
    )


def quotas_reset_due(*, now: datetime | None = None, tenant: Tenant | None = None) -> list[str]:
    """Reset every tenant whose `quota_reset_at` has passed (the beat job); returns their slugs.

    Each tenant is claimed by one conditional UPDATE that also sets its next reset, in its own
    transaction: a concurrent run finds the row no longer due and skips it, so running twice
    resets once, and one tenant's failure does not undo the others.
    """
    now = now or timezone.now()
    due = quotas_due(now=now)
    if tenant is not None:
        due = due.filter(pk=tenant.pk)
    reset = []
    for candidate in due.only("pk", "slug", "last_reset_at", "quota_reset_at").iterator():
        next_reset = first_of_next_month(now)
        with transaction.atomic():
            # Read before the claim moves the period (the live counter is keyed by it).
            live = _live_api_calls(candidate)
            claimed = Tenant.objects.filter(pk=candidate.pk, quota_reset_at__lte=now).update(
                quota_reset_at=next_reset, last_reset_at=now, updated_at=now
            )
            if not claimed:
                continue
            # The record is the period's as scheduled; usage counted between its end and this
            # run (minutes, normally) is in it too.
            previous = _reset_counters(
                candidate,
                now,
                live,
                period_start=candidate.last_reset_at,
                period_end=candidate.quota_reset_at,
            )
            _record_reset(candidate, None, previous, next_reset, "scheduled")
        reset.append(candidate.slug)
    return reset
