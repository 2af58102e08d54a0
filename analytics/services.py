"""State changes of the analytics app: ingestion, the roll-up job, rebuilds and pruning.

None of them is audited: they record facts about usage and derive figures from them, and the
audit chain is for changes people make (tests/audit/test_service_coverage.py lists them as
exempt). Each is safe to run twice at once:

- `query_events_ingest` inserts with ON CONFLICT DO NOTHING on (tenant, event_id), so a resent
  batch, or two copies of one racing, store each event once;
- `rollups_build` (beat, every minute) rebuilds the ended hours that facts recorded since its
  last run touched, each under its tenant's RollupState row lock, by replacing the hour's rows
  with a fresh aggregate of its raw facts and the day's row with the merge of its hours: a
  doubled run computes the same rows twice.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.db import advisory_xact_lock
from support.services.budgets import add_months
from tenants.models import Tenant

from .aggregates import Aggregate
from .models import Granularity, QueryEvent, RequestFact, Rollup, RollupState, Stream, StreamCursor
from .streams import (
    FUTURE_TOLERANCE,
    PRUNED_STREAMS,
    aggregate_hour,
    hour_of,
    most_frequent,
    occurrence_hours,
    retained_from,
    touched_hours,
)

# Facts committed up to this long after their row's timestamp are still picked up: the job
# looks back this far behind its cursor (rebuilding twice is harmless).
CURSOR_OVERLAP = timedelta(minutes=5)
DAY = timedelta(days=1)


def request_facts_write(*, facts: list[dict]) -> int:
    """Store flushed request counts as RequestFact rows; returns how many requests.

    The counts of an organization deleted since its requests were counted (up to a flush
    interval, or longer when flushes fail) go with it: their rows would break the foreign key
    at the commit, and the flush would fail on every run for every organization in its batch,
    which it puts back whole. An organization deleted after this read and before the commit
    fails one run; the next one leaves it out."""
    rows = [RequestFact(**fact) for fact in facts if fact["count"]]
    named = {str(row.tenant_id) for row in rows}
    existing = {str(pk) for pk in Tenant.objects.filter(pk__in=named).values_list("pk", flat=True)}
    rows = [row for row in rows if str(row.tenant_id) in existing]
    RequestFact.objects.bulk_create(rows, batch_size=1000)
    return sum(row.count for row in rows)


def query_events_ingest(*, tenant, events: list[dict]) -> list[str]:
    """Store validated query events, each once; returns the ids that were new."""
    if not events:
        return []
    ids = [event["event_id"] for event in events]
    with transaction.atomic():
        _serialize_ingestion(tenant)
        existing = set(
            QueryEvent.objects.filter(tenant=tenant, event_id__in=ids).values_list(
                "event_id", flat=True
            )
        )
        fresh = [QueryEvent(tenant=tenant, **e) for e in events if e["event_id"] not in existing]
        QueryEvent.objects.bulk_create(fresh, ignore_conflicts=True, batch_size=1000)
    return [row.event_id for row in fresh]


def _serialize_ingestion(tenant) -> None:
    """One batch of a tenant at a time (a transaction-scoped advisory lock on PostgreSQL;
    SQLite has one writer anyway): so which events were new, and the counts a batch answers,
    are exact when copies of a batch race."""
    advisory_xact_lock(f"analytics-ingest:{tenant.pk}")


def _state_locked(tenant_id) -> RollupState:
    RollupState.objects.bulk_create([RollupState(tenant_id=tenant_id)], ignore_conflicts=True)
    return RollupState.objects.select_for_update().get(tenant_id=tenant_id)


def _replace_rows(tenant_id, stream, granularity, bucket_start, aggregates: dict) -> None:
    Rollup.objects.filter(
        tenant_id=tenant_id, stream=stream, granularity=granularity, bucket_start=bucket_start
    ).delete()
    Rollup.objects.bulk_create(
        [
            Rollup(
                tenant_id=tenant_id,
                stream=stream,
                granularity=granularity,
                bucket_start=bucket_start,
                dimension=dimension[:255],
                count=aggregate.count,
                measures=aggregate.measures,
                latency_histogram=aggregate.latency_histogram,
                users=aggregate.users,
            )
            for dimension, aggregate in aggregates.items()
        ],
        batch_size=1000,
    )


def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(moment: datetime) -> datetime:
    return _day_start(moment).replace(day=1)


def _merge_rows(tenant_id, stream, granularity, start, end, into) -> None:
    """The rows of `granularity` in [start, end), merged into one row per dimension stored as
    the `into` bucket at `start` (a day from its hours, a month from its days)."""
    per_dimension: dict[str, Aggregate] = {}
    rows = Rollup.objects.filter(
        tenant_id=tenant_id,
        stream=stream,
        granularity=granularity,
        bucket_start__gte=start,
        bucket_start__lt=end,
    ).values_list("dimension", "count", "measures", "latency_histogram", "users")
    for dimension, count, measures, histogram, users in rows.iterator(chunk_size=2000):
        per_dimension.setdefault(dimension, Aggregate()).merge(
            Aggregate(count, measures, histogram, users)
        )
    _replace_rows(tenant_id, stream, into, start, most_frequent(per_dimension))


def _rebuild_day(tenant_id, stream, day: datetime) -> None:
    _merge_rows(tenant_id, stream, Granularity.HOUR, day, day + DAY, Granularity.DAY)


def _rebuild_month(tenant_id, stream, month: datetime) -> None:
    """Month rows let a long range read a dozen rows per value instead of one per day; like a
    day, a month is rebuilt whenever one of its days is, so it is exact once it has ended
    (reads use only months that have)."""
    _merge_rows(tenant_id, stream, Granularity.DAY, month, add_months(month, 1), Granularity.MONTH)


def rollup_hours_rebuild(*, tenant_id, stream: str, hours) -> int:
    """Rebuild the given hours of one tenant's stream from its raw facts, then their days."""
    hours = sorted({hour_of(hour) for hour in hours})
    if not hours:
        return 0
    with transaction.atomic():
        state = _state_locked(tenant_id)
        for hour in hours:
            _replace_rows(
                tenant_id, stream, Granularity.HOUR, hour, aggregate_hour(stream, tenant_id, hour)
            )
        for day in sorted({_day_start(hour) for hour in hours}):
            _rebuild_day(tenant_id, stream, day)
        for month in sorted({_month_start(hour) for hour in hours}):
            _rebuild_month(tenant_id, stream, month)
        state.last_built_hour = max(hours[-1], state.last_built_hour or hours[-1])
        state.last_built_at = timezone.now()
        state.hours_built += len(hours)
        state.save(update_fields=["last_built_hour", "last_built_at", "hours_built", "updated_at"])
    return len(hours)


def rollups_build(*, now: datetime | None = None) -> int:
    """The roll-up job: fold in every fact recorded since the last run; returns hours built.

    An hour is built once it has ended: the reports aggregate the current hour from its raw
    facts at read time and never read its rows (nor the current day's or month's), so
    building it each minute only re-read, every minute, all the facts it had so far (60,000
    events sent over an hour were aggregated some thirty times over). The cursor keeps the
    first hour the job saw facts of before it ended; the first run after it ends looks at
    every fact recorded since that hour could first receive one, and builds each ended hour
    they touched. Facts for an hour that has ended (late ones) are built on the next run.
    The stream's cursor moves once all of a run's builds have committed: the reports read
    from raw facts every hour from the cursor's on (analytics.selectors)."""
    now = now or timezone.now()
    current = hour_of(now)
    built = 0
    for stream in Stream.values:
        cursor = StreamCursor.objects.filter(stream=stream).first()
        since = (cursor.position if cursor else now - DAY) - CURSOR_OVERLAP
        open_hour = cursor.open_hour if cursor else None
        if open_hour is not None and open_hour < current:
            since = min(since, open_hour - FUTURE_TOLERANCE - CURSOR_OVERLAP)
            open_hour = None
        oldest = retained_from(now) if stream in PRUNED_STREAMS else None
        per_tenant: dict[str, set] = {}
        for tenant_id, hour in touched_hours(stream, since):
            if oldest is not None and hour < oldest:
                continue  # its raw facts are (being) pruned: its roll-up is the record
            if hour >= current:
                open_hour = hour if open_hour is None else min(open_hour, hour)
                continue
            per_tenant.setdefault(tenant_id, set()).add(hour)
        for tenant_id, hours in sorted(per_tenant.items()):
            built += rollup_hours_rebuild(tenant_id=tenant_id, stream=stream, hours=hours)
        StreamCursor.objects.update_or_create(
            stream=stream, defaults={"position": now, "open_hour": open_hour}
        )
    return built


def rollups_rebuild(*, since: datetime, tenant=None, now: datetime | None = None) -> int:
    """Rebuild every hour from `since` (all tenants, or one) from the raw facts: the rows of
    the range are replaced by those of the ended hours that hold facts (the hour under way is
    the job's once it ends, as in `rollups_build`). Hours older than the raw retention keep
    their roll-ups for the streams whose raw facts are pruned."""
    now = now or timezone.now()
    current = hour_of(now)
    oldest = retained_from(now)
    tenants = [tenant] if tenant is not None else list(Tenant.objects.only("pk"))
    built = 0
    for stream in Stream.values:
        start = hour_of(since)
        if stream in PRUNED_STREAMS:
            start = max(start, oldest)
        for each in tenants:
            with transaction.atomic():
                _state_locked(each.pk)
                stale = Rollup.objects.filter(
                    tenant_id=each.pk, stream=stream, bucket_start__gte=start
                )
                days = {
                    _day_start(moment) for moment in stale.values_list("bucket_start", flat=True)
                }
                stale.filter(granularity=Granularity.HOUR).delete()
                hours = {
                    hour for hour in occurrence_hours(stream, each.pk, start) if hour < current
                }
                built += rollup_hours_rebuild(tenant_id=str(each.pk), stream=stream, hours=hours)
                # Days whose every hour lost its facts: their day rows go too, and their
                # months are rebuilt without them.
                emptied = days - {_day_start(hour) for hour in hours}
                for day in emptied:
                    _rebuild_day(each.pk, stream, day)
                for month in {_month_start(day) for day in emptied}:
                    _rebuild_month(each.pk, stream, month)
    return built


def raw_facts_prune(*, now: datetime | None = None) -> int:
    """Delete the raw facts older than ANALYTICS_RAW_RETENTION_DAYS (their roll-ups stay)."""
    now = now or timezone.now()
    cutoff = hour_of(now - timedelta(days=settings.ANALYTICS_RAW_RETENTION_DAYS))
    deleted, _ = RequestFact.objects.filter(minute__lt=cutoff).delete()
    events, _ = QueryEvent.objects.filter(occurred_at__lt=cutoff).delete()
    return deleted + events
