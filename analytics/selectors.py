"""Reads of the analytics app: every endpoint's figures, merged from roll-up rows.

A range is read as stored rows (UTC day rows for the whole days inside it when the grouping
allows, hour rows for the rest) plus the hours the roll-up job has not built yet, the current
one and, until the job's first run after an hour ends, the hour just ended, aggregated from
their raw facts at read time: a figure is never more than a request old for the streams stored
as rows (queries, gateway, support) and one flush old for requests, and no hour is missing
from a report between its end and its build. The number of SQL statements of a read depends
on the number of streams it shows, never on the range or the data.

Time zones: `tz` (an IANA name, default UTC) sets where days, weeks and months begin. Roll-ups
are hourly, so a zone whose offset from UTC is not a whole number of hours (Asia/Kolkata) is
refused with a clear error rather than answered with days that begin at the wrong hour.
"""

import threading
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Avg, BigIntegerField, Count, Max, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from support.services.budgets import add_months

from .aggregates import Aggregate, merged
from .models import Granularity, QueryEvent, Rollup, Stream, StreamCursor
from .streams import HOUR, QUERY_SEPARATOR, aggregate_hour, hour_of

UTC = ZoneInfo("UTC")
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC, hour-aligned, read in the zone `tz`."""

    start: datetime
    end: datetime
    tz: ZoneInfo

    @property
    def days(self) -> int:
        """The local days the window touches (the current day counts, though it has not ended)."""
        first = self.start.astimezone(self.tz).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(self.tz).date()
        return (last - first).days + 1

    def previous(self) -> "Window":
        return Window(self.start - (self.end - self.start), self.start, self.tz)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def last_days(days: int, tz: ZoneInfo, now: datetime | None = None) -> Window:
    """The last `days` local days, today included, up to the end of the current hour."""
    now = now or timezone.now()
    today = now.astimezone(tz).date()
    return Window(local_midnight(today - timedelta(days=days - 1), tz), hour_of(now) + HOUR, tz)


# Grouping keys of an hour's start, in the window's zone.
def by_hour(moment: datetime, tz: ZoneInfo):
    return moment.astimezone(tz)


def by_day(moment: datetime, tz: ZoneInfo):
    return moment.astimezone(tz).date()


def by_week(moment: datetime, tz: ZoneInfo):
    day = moment.astimezone(tz).date()
    return day - timedelta(days=day.weekday())


def by_month(moment: datetime, tz: ZoneInfo):
    return moment.astimezone(tz).date().replace(day=1)


def by_total(moment: datetime, tz: ZoneInfo):
    return None


GROUPINGS = {"hourly": by_hour, "daily": by_day, "weekly": by_week, "monthly": by_month}


def _dimension_filter(dimension) -> Q:
    """The total is ""; "kind:" is every dimension of that kind; a tuple, those names;
    anything else, exactly that one."""
    if isinstance(dimension, tuple):
        return Q(dimension__in=dimension)
    if dimension.endswith(":"):
        return Q(dimension__startswith=dimension)
    return Q(dimension=dimension)


def _wanted(dimension, candidate: str) -> bool:
    if isinstance(dimension, tuple):
        return candidate in dimension
    return candidate.startswith(dimension) if dimension.endswith(":") else candidate == dimension


def _spans(window: Window, group, live_from: datetime) -> list[tuple[str, datetime, datetime]]:
    """The stored rows of the window before the hours read live: UTC month rows for the whole
    months inside it when the grouping is the total or by month, UTC day rows for the whole
    days around them when the grouping's boundaries are UTC midnights, hour rows for the rest.
    (A day or month is used once it is whole before `live_from`, so all its hours are built.)"""
    stored_end = min(window.end, live_from)
    if window.tz.key in ("UTC", "Etc/UTC") and group is not by_hour:
        first_day = _ceil_day(window.start)
        last_day = stored_end.replace(hour=0, minute=0, second=0, microsecond=0)
        if first_day < last_day:
            first_month, last_month = _ceil_month(first_day), last_day.replace(day=1)
            if group in (by_total, by_month) and first_month < last_month:
                days = [
                    (Granularity.DAY, first_day, first_month),
                    (Granularity.MONTH, first_month, last_month),
                    (Granularity.DAY, last_month, last_day),
                ]
            else:
                days = [(Granularity.DAY, first_day, last_day)]
            spans = [
                (Granularity.HOUR, window.start, first_day),
                *days,
                (Granularity.HOUR, last_day, stored_end),
            ]
            return [span for span in spans if span[1] < span[2]]
    return [(Granularity.HOUR, window.start, stored_end)] if window.start < stored_end else []


def _ceil_month(day: datetime) -> datetime:
    return day if day.day == 1 else add_months(day.replace(day=1), 1)


def _stored(rows, window: Window, group, live_from: datetime, shape=None):
    """`rows` (a Rollup queryset) within the window's stored spans, `shape` applied to each
    span's queryset: one statement, a UNION ALL of one index range per span (an OR of the
    spans would make PostgreSQL read the tenant's whole stream). Unordered: the callers merge
    the rows, and SQLite refuses an ORDER BY (the model's default) inside a UNION's parts."""
    parts = []
    for granularity, start, end in _spans(window, group, live_from):
        part = rows.filter(
            granularity=granularity, bucket_start__gte=start, bucket_start__lt=end
        ).order_by()
        parts.append(shape(part) if shape else part)
    if not parts:
        return rows.none()
    return parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]


# The most hours read from raw facts: the current one and up to two ended ones the roll-up job
# (every minute) has not built yet. A job stopped for longer shows in the figures (and in the
# admin's lag column) rather than making every report aggregate its backlog.
LIVE_HOURS_MAX = 3


def _live_from(stream, current: datetime, memo: dict) -> datetime:
    """The first hour a read takes from raw facts: the hour the roll-up job was in at its last
    run (it builds an hour once that has ended), not before LIVE_HOURS_MAX hours back. Read
    once per stream and report: every build of a run has committed when the run moves its
    cursor, so all the hours before it are in the rows."""
    key = ("live_from", stream)
    if key not in memo:
        oldest = current - (LIVE_HOURS_MAX - 1) * HOUR
        position = (
            StreamCursor.objects.filter(stream=stream).values_list("position", flat=True).first()
        )
        memo[key] = min(current, max(oldest, hour_of(position))) if position else oldest
    return memo[key]


def _live(tenant, stream, window, live_from, current, dimension, memo) -> dict:
    """{hour: {dimension: Aggregate}} of the window's hours from `live_from` to the current
    one, from their raw facts; `memo` (a dict one report shares among its reads) aggregates
    each stream's hour once."""
    found = {}
    hour = max(live_from, hour_of(window.start))
    while hour <= current and hour < window.end:
        if (stream, hour) not in memo:
            memo[stream, hour] = _hour_of_facts(stream, tenant.pk, hour)
        found[hour] = {
            name: Aggregate().merge(aggregate)
            for name, aggregate in memo[stream, hour].items()
            if _wanted(dimension, name)
        }
        hour += HOUR
    return found


# An hour of the queries stream read live, kept per process for the last tenants read whose
# hour holds at least _KEPT_FROM_EVENTS events (fewer take milliseconds to aggregate): (tenant,
# hour, values kept per kind) -> (the hour's events when it was made, its aggregates). One is
# at most 2,001 aggregates, about 2 MB.
_KEPT_HOURS: OrderedDict = OrderedDict()
_KEPT_HOURS_MAX = 16
_KEPT_FROM_EVENTS = 1000
_kept_hours_lock = threading.Lock()


def _hour_of_facts(stream, tenant_id, hour) -> dict[str, Aggregate]:
    """An hour's aggregates from its raw facts (never changed by the caller). A tenant sends
    up to 1,000 query events a request, so its hour can hold 100,000 of them on the free plan,
    and each report aggregated them all again (1.8 s for 50,000): the queries stream's hour is
    kept per process and made again only when the hour holds more events than it did (events
    are only ever added; one count on the (tenant, occurred_at) index says so). The other
    streams' hours hold what the platform records at its own pace and are aggregated on each
    read."""
    if stream != Stream.QUERIES:
        return aggregate_hour(stream, tenant_id, hour)
    events = QueryEvent.objects.filter(
        tenant_id=tenant_id, occurred_at__gte=hour, occurred_at__lt=hour + HOUR
    ).count()
    if not events:
        return {}
    if events < _KEPT_FROM_EVENTS:
        return aggregate_hour(stream, tenant_id, hour)
    key = (str(tenant_id), hour, settings.ANALYTICS_VALUES_PER_KIND)
    with _kept_hours_lock:
        kept = _KEPT_HOURS.get(key)
    if kept is not None and kept[0] == events:
        return kept[1]
    # Counted before it is made: an event stored meanwhile makes the next read count more.
    aggregates = aggregate_hour(stream, tenant_id, hour)
    with _kept_hours_lock:
        _KEPT_HOURS[key] = (events, aggregates)
        _KEPT_HOURS.move_to_end(key)
        while len(_KEPT_HOURS) > _KEPT_HOURS_MAX:
            _KEPT_HOURS.popitem(last=False)
    return aggregates


def read(
    tenant,
    stream: str,
    window: Window,
    *,
    dimension="",
    group=by_total,
    users=True,
    histograms=False,
    now=None,
    memo=None,
) -> dict:
    """{group key: {dimension: Aggregate}} over the window (see the module docstring).
    `users=False` leaves the distinct-users sketches unread (a report that shows none), and
    the latency histograms are read only with `histograms=True` (percentiles are shown)."""
    current = hour_of(now or timezone.now())
    memo = {} if memo is None else memo
    live_from = _live_from(stream, current, memo)
    result: dict = defaultdict(dict)
    rows = Rollup.objects.filter(_dimension_filter(dimension), tenant=tenant, stream=stream)
    # Plain tuples, not model instances: a 90-day report reads some hundreds of rows.
    columns = ["bucket_start", "dimension", "count", "measures"]
    columns += ["latency_histogram"] * histograms + ["users"] * users
    for start, name, count, measures, *rest in _stored(
        rows.values_list(*columns), window, group, live_from
    ):
        histogram = rest.pop(0) if histograms else None
        sketch = rest.pop(0) if users else None
        _add(result, group(start, window.tz), name, Aggregate(count, measures, histogram, sketch))
    live = _live(tenant, stream, window, live_from, current, dimension, memo)
    for hour, aggregates in live.items():
        for name, aggregate in aggregates.items():
            _add(result, group(hour, window.tz), name, aggregate)
    return result


def _ceil_day(moment: datetime) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if day == moment else day + DAY


def _add(result, key, dimension, aggregate) -> None:
    found = result[key].get(dimension)
    if found is None:
        result[key][dimension] = aggregate
    else:
        found.merge(aggregate)


def total(
    tenant, stream, window, *, dimension="", users=True, histograms=False, now=None, memo=None
) -> Aggregate:
    return (
        read(
            tenant,
            stream,
            window,
            dimension=dimension,
            users=users,
            histograms=histograms,
            now=now,
            memo=memo,
        )
        .get(None, {})
        .get(dimension, Aggregate())
    )


def per_dimension(
    tenant, stream, window, prefix: str, *, measures=(), names=None, now=None, memo=None
) -> dict[str, Aggregate]:
    """{value: Aggregate with its count and `measures`} of every dimension of one kind (the
    prefix stripped), added up by the database: a range holds one row per value and hour or
    day, which is never read into Python (no histograms or sketches: see streams). `names`
    limits it to those values (the measures of the top ten of hundreds)."""
    current = hour_of(now or timezone.now())
    memo = {} if memo is None else memo
    live_from = _live_from(stream, current, memo)
    rows = Rollup.objects.filter(tenant=tenant, stream=stream)
    if names is None:
        rows = rows.filter(dimension__startswith=prefix)
        live = _live(tenant, stream, window, live_from, current, prefix, memo)
    else:
        wanted = tuple(prefix + name for name in names)
        rows = rows.filter(dimension__in=wanted)
        live = _live(tenant, stream, window, live_from, current, wanted, memo)
    sums = {
        name: (Max if name.startswith("max_") else Sum)(
            Cast(KT(f"measures__{name}"), BigIntegerField())
        )
        for name in measures
    }

    def grouped(part):
        return part.values("dimension").annotate(_count=Sum("count"), **sums).order_by()

    found: dict[str, Aggregate] = {}
    # One row per span and value: the spans' figures are merged here.
    for row in _stored(rows, window, by_total, live_from, shape=grouped):
        found.setdefault(row["dimension"][len(prefix) :], Aggregate()).merge(
            Aggregate(
                count=row["_count"] or 0,
                measures={name: row[name] for name in measures if row[name] is not None},
            )
        )
    for aggregates in live.values():
        for name, aggregate in aggregates.items():
            kept = Aggregate(
                count=aggregate.count,
                measures={m: aggregate.measures[m] for m in measures if m in aggregate.measures},
            )
            found.setdefault(name[len(prefix) :], Aggregate()).merge(kept)
    return found


def series(tenant, stream, window, group, *, users=True, now=None, memo=None) -> dict:
    """{group key: Aggregate} of the stream's total."""
    found = read(tenant, stream, window, group=group, users=users, now=now, memo=memo)
    return {key: dimensions.get("", Aggregate()) for key, dimensions in found.items()}


def buckets(window: Window, group) -> list:
    """Every group key of the window in order, so a series shows its empty buckets too."""
    keys, seen = [], set()
    moment = window.start
    while moment < window.end:
        key = group(moment, window.tz)
        if key not in seen:
            seen.add(key)
            keys.append(key)
        moment += HOUR
    return keys


# Figures ---------------------------------------------------------------------------------------


def rounded(value, digits=2):
    return None if value is None else round(value, digits)


def micros_to_cents(micros: int) -> int:
    """Rounded half-up once, where money is shown."""
    return (micros + 5_000) // 10_000


def percent_change(current: float | None, previous: float | None) -> float | None:
    if current is None or previous in (None, 0):
        return None
    return round((current - previous) / previous * 100, 1)


def avg_seconds(aggregate: Aggregate, total_us="response_us", count="response_count"):
    ratio = aggregate.ratio(total_us, count)
    return None if ratio is None else round(ratio / 1e6, 3)


def avg_satisfaction(aggregate: Aggregate):
    return rounded(aggregate.ratio("satisfaction_sum", "satisfaction_count"))


def trend_word(current, previous, *, threshold, words=("improving", "stable", "declining")):
    if current is None or previous is None:
        return "insufficient_data"
    if current - previous > threshold:
        return words[0]
    if previous - current > threshold:
        return words[2]
    return words[1]


def usage_point(queries: Aggregate) -> dict:
    return {
        "total_queries": queries.count,
        "unique_users": queries.distinct_users,
        "avg_response_time": avg_seconds(queries),
        "successful_queries": queries.m("succeeded"),
        "failed_queries": queries.m("failed"),
        "avg_satisfaction": avg_satisfaction(queries),
    }


def query_rows(aggregates: dict[str, Aggregate], limit: int) -> list[dict]:
    ranked = sorted(aggregates.items(), key=lambda item: (-item[1].count, item[0]))[:limit]
    return [
        {
            "query_text": text,
            "execution_count": aggregate.count,
            "avg_response_time": avg_seconds(aggregate),
            "avg_satisfaction": avg_satisfaction(aggregate),
            "last_executed": datetime.fromtimestamp(aggregate.m("max_last_at"), tz=UTC)
            if aggregate.m("max_last_at")
            else None,
        }
        for text, aggregate in ranked
    ]


QUERY_MEASURES = (
    "response_us",
    "response_count",
    "satisfaction_sum",
    "satisfaction_count",
    "max_last_at",
)


def top_queries(
    tenant, window, *, limit: int, include_failed: bool, now=None, memo=None
) -> list[dict]:
    kinds = ["query:", "query-failed:"] if include_failed else ["query:"]

    def text_of(key: str) -> str:
        return key.partition(QUERY_SEPARATOR)[2]

    # The top texts by count over their categories (and, with failures, both kinds) come
    # from the counts alone; the measures are summed for their rows only.
    counts: dict[str, int] = defaultdict(int)
    asked: dict[tuple[str, str], int] = defaultdict(int)
    counted = {
        kind: per_dimension(tenant, Stream.QUERIES, window, kind, now=now, memo=memo)
        for kind in kinds
    }
    for kind in kinds:
        for key, aggregate in counted[kind].items():
            category, _, text = key.partition(QUERY_SEPARATOR)
            counts[text] += aggregate.count
            asked[text, category] += aggregate.count
    top = set(sorted(counts, key=lambda text: (-counts[text], text))[:limit])
    # Each text is named after the category it was asked in most (ties: alphabetically first).
    asked_in: dict[str, str] = {}
    ranked = sorted(asked.items(), key=lambda item: (-item[1], item[0][1]))
    for (text, category), _ in ranked:
        if text in top:
            asked_in.setdefault(text, category)

    # The measures are summed for the chosen texts' rows only.
    texts: dict[str, Aggregate] = {}
    for kind in kinds:
        measured = per_dimension(
            tenant,
            Stream.QUERIES,
            window,
            kind,
            measures=QUERY_MEASURES,
            names=[key for key in counted[kind] if text_of(key) in top],
            now=now,
            memo=memo,
        )
        for key, aggregate in measured.items():
            texts.setdefault(text_of(key), Aggregate()).merge(aggregate)
    rows = query_rows(texts, limit)
    for row in rows:
        row["query_category"] = asked_in[row["query_text"]]
    return rows


def dashboard(tenant, *, days: int, period: str, tz: ZoneInfo, now=None) -> dict:
    now = now or timezone.now()
    window = last_days(days, tz, now)
    memo: dict = {}
    daily_queries = series(tenant, Stream.QUERIES, window, by_day, now=now, memo=memo)
    daily_gateway = series(tenant, Stream.GATEWAY, window, by_day, users=False, now=now, memo=memo)
    # The range's totals are the merge of its days (the same rows, read once).
    queries, gateway = merged(daily_queries.values()), merged(daily_gateway.values())
    previous_queries = total(
        tenant, Stream.QUERIES, window.previous(), users=False, now=now, memo=memo
    )
    models = per_dimension(
        tenant, Stream.GATEWAY, window, "model:", measures=("cost_micros",), now=now
    )
    daily_data = []
    for day in buckets(window, by_day):
        day_queries = daily_queries.get(day, Aggregate())
        day_gateway = daily_gateway.get(day, Aggregate())
        gateway_cents = micros_to_cents(day_gateway.m("cost_micros"))
        product_cents = micros_to_cents(day_queries.m("cost_micros"))
        daily_data.append(
            {
                "date": day,
                "usage": usage_point(day_queries),
                "costs": {
                    "total_cost_cents": gateway_cents + product_cents,
                    "gateway_cost_cents": gateway_cents,
                    "query_cost_cents": product_cents,
                },
                "quality": {
                    "avg_relevance_score": rounded(
                        _scaled(day_queries.ratio("relevance_e6", "relevance_count")), 3
                    ),
                    "avg_confidence_score": rounded(
                        _scaled(day_queries.ratio("confidence_e6", "confidence_count")), 3
                    ),
                },
            }
        )
    gateway_cents = micros_to_cents(gateway.m("cost_micros"))
    product_cents = micros_to_cents(queries.m("cost_micros"))
    rating, previous_rating = avg_satisfaction(queries), avg_satisfaction(previous_queries)
    return {
        "organization_id": tenant.pk,
        "period": period,
        "time_zone": tz.key,
        "summary": {
            "total_queries": queries.count,
            "unique_users": queries.distinct_users,
            "avg_response_time": avg_seconds(queries),
            "total_cost_cents": gateway_cents + product_cents,
            "gateway_calls": gateway.count,
            "gateway_tokens": gateway.m("total_tokens"),
        },
        "daily_data": daily_data,
        "top_queries": top_queries(
            tenant, window, limit=10, include_failed=False, now=now, memo=memo
        ),
        "user_satisfaction": {
            "average_rating": rating,
            "previous_rating": previous_rating,
            "trend": trend_word(rating, previous_rating, threshold=0.1),
        },
        "cost_breakdown": {
            "total_cents": gateway_cents + product_cents,
            "breakdown": {"gateway": gateway_cents, "queries": product_cents},
            "by_model": {
                name: micros_to_cents(aggregate.m("cost_micros"))
                for name, aggregate in sorted(models.items())
            },
        },
        "generated_at": now,
    }


def _scaled(value):
    return None if value is None else value / 1e6


def usage(tenant, *, days: int, granularity: str, tz: ZoneInfo, now=None) -> dict:
    from playground.models import IntegrationOperation, JobStatus, OrchestrationRun

    now = now or timezone.now()
    memo: dict = {}
    window = last_days(days, tz, now)
    group = GROUPINGS[granularity]
    per_bucket = {
        stream: series(
            tenant, stream, window, group, users=stream == Stream.QUERIES, now=now, memo=memo
        )
        for stream in (Stream.QUERIES, Stream.REQUESTS, Stream.GATEWAY)
    }
    data = []
    for key in buckets(window, group):
        queries = per_bucket[Stream.QUERIES].get(key, Aggregate())
        requests = per_bucket[Stream.REQUESTS].get(key, Aggregate())
        gateway = per_bucket[Stream.GATEWAY].get(key, Aggregate())
        data.append(
            {
                "date": key.isoformat(),
                "total_queries": queries.count,
                "unique_users": queries.distinct_users,
                "avg_response_time": avg_seconds(queries),
                "requests": requests.count,
                "avg_request_time_ms": _avg_ms(requests),
                "gateway_calls": gateway.count,
                "tokens": gateway.m("total_tokens"),
                "cost_cents": micros_to_cents(gateway.m("cost_micros") + queries.m("cost_micros")),
            }
        )
    now_totals = {s: merged(per_bucket[s].values()) for s in per_bucket}
    before = {
        s: total(tenant, s, window.previous(), users=s == Stream.QUERIES, now=now, memo=memo)
        for s in per_bucket
    }
    runs = OrchestrationRun.objects.filter(
        tenant=tenant, created_at__gte=window.start, created_at__lt=window.end
    )
    summary = runs.aggregate(
        total=Count("id"),
        completed=Count("id", filter=Q(status=JobStatus.COMPLETED)),
        failed=Count("id", filter=Q(status=JobStatus.FAILED)),
        avg_time=Avg("execution_time_ms", filter=Q(status=JobStatus.COMPLETED)),
    )
    finished = summary["completed"] + summary["failed"]
    projects = (
        runs.values("project_id", "project__name")
        .annotate(
            run_count=Count("id"),
            completed=Count("id", filter=Q(status=JobStatus.COMPLETED)),
            finished=Count("id", filter=Q(status__in=[JobStatus.COMPLETED, JobStatus.FAILED])),
        )
        .order_by("-run_count", "project__name")[:5]
    )
    operations = (
        IntegrationOperation.objects.filter(
            tenant=tenant, created_at__gte=window.start, created_at__lt=window.end
        )
        .values("operation_type")
        .annotate(n=Count("id"))
    )
    return {
        "organization_id": tenant.pk,
        "period": _period(window),
        "granularity": granularity,
        "time_zone": tz.key,
        "data": data,
        "trends": {
            "queries": percent_change(
                now_totals[Stream.QUERIES].count, before[Stream.QUERIES].count
            ),
            "users": percent_change(
                now_totals[Stream.QUERIES].distinct_users, before[Stream.QUERIES].distinct_users
            ),
            "response_time": percent_change(
                avg_seconds(now_totals[Stream.QUERIES]), avg_seconds(before[Stream.QUERIES])
            ),
            "requests": percent_change(
                now_totals[Stream.REQUESTS].count, before[Stream.REQUESTS].count
            ),
            "tokens": percent_change(
                now_totals[Stream.GATEWAY].m("total_tokens"),
                before[Stream.GATEWAY].m("total_tokens"),
            ),
        },
        "runs_summary": {
            "total_runs": summary["total"],
            "completed_runs": summary["completed"],
            "failed_runs": summary["failed"],
            "avg_execution_time": round(summary["avg_time"]) if summary["avg_time"] else None,
            "success_rate": rounded(summary["completed"] / finished * 100, 1) if finished else None,
        },
        "top_projects": [
            {
                "project_id": row["project_id"],
                "project_name": row["project__name"],
                "run_count": row["run_count"],
                "success_rate": rounded(row["completed"] / row["finished"] * 100, 1)
                if row["finished"]
                else None,
            }
            for row in projects
        ],
        "integration_usage": {row["operation_type"]: row["n"] for row in operations},
        "generated_at": now,
    }


def _avg_ms(aggregate: Aggregate):
    return round(aggregate.m("latency_us") / aggregate.count / 1000, 2) if aggregate.count else None


def _period(window: Window) -> dict:
    return {
        "start": window.start.astimezone(window.tz).date(),
        "end": (window.end - timedelta(seconds=1)).astimezone(window.tz).date(),
        "days": window.days,
    }


def queries_report(tenant, *, days: int, limit: int, include_failed: bool, tz, now=None) -> dict:
    now = now or timezone.now()
    memo: dict = {}
    window = last_days(days, tz, now)
    daily = series(tenant, Stream.QUERIES, window, by_day, now=now, memo=memo)
    categories = per_dimension(tenant, Stream.QUERIES, window, "category:", now=now, memo=memo)
    errors = per_dimension(tenant, Stream.QUERIES, window, "error:", now=now, memo=memo)
    recent = QueryEvent.objects.filter(
        tenant=tenant, success=False, occurred_at__gte=window.start, occurred_at__lt=window.end
    ).order_by("-occurred_at", "id")[:10]
    return {
        "organization_id": tenant.pk,
        "period": _period(window),
        "time_zone": tz.key,
        "top_queries": top_queries(
            tenant, window, limit=limit, include_failed=include_failed, now=now, memo=memo
        ),
        "categories": {
            (name or "uncategorised"): aggregate.count
            for name, aggregate in sorted(categories.items(), key=lambda i: (-i[1].count, i[0]))
        },
        "performance_trends": {
            "daily_trends": [
                {
                    "date": day,
                    "avg_response_time": avg_seconds(daily.get(day, Aggregate())),
                    "avg_rating": avg_satisfaction(daily.get(day, Aggregate())),
                    "query_count": daily.get(day, Aggregate()).count,
                }
                for day in buckets(window, by_day)
            ]
        },
        "failure_analysis": {
            # From the totals: a bucket names only its most frequent error categories.
            "total_failures": sum(aggregate.m("failed") for aggregate in daily.values()),
            "error_categories": {
                name: aggregate.count
                for name, aggregate in sorted(errors.items(), key=lambda i: (-i[1].count, i[0]))
            },
            "recent_failures": [
                {
                    "id": event.event_id,
                    "query_text": event.query_text,
                    "query_category": event.query_category,
                    "error_category": event.error_category or "other",
                    "timestamp": event.occurred_at,
                }
                for event in recent
            ],
        },
        "generated_at": now,
    }


def performance(tenant, *, days: int, tz, include_resources: bool, now=None) -> dict:
    now = now or timezone.now()
    memo: dict = {}
    window = last_days(days, tz, now)
    requests = total(
        tenant, Stream.REQUESTS, window, users=False, histograms=True, now=now, memo=memo
    )
    gateway = total(
        tenant, Stream.GATEWAY, window, users=False, histograms=True, now=now, memo=memo
    )
    elapsed = max((min(now, window.end) - window.start).total_seconds(), 1)

    def percent(part):
        return round(part / requests.count * 100, 2) if requests.count else 0.0

    def times(aggregate):
        quantiles = {q: aggregate.percentile_ms(q) for q in (0.5, 0.95, 0.99)}
        return {
            "p50": rounded(quantiles[0.5]),
            "p95": rounded(quantiles[0.95]),
            "p99": rounded(quantiles[0.99]),
        }

    routes = per_dimension(
        tenant,
        Stream.REQUESTS,
        window,
        "route:",
        measures=("errors_4xx", "errors_5xx"),
        now=now,
        memo=memo,
    )
    busiest = sorted(routes.items(), key=lambda item: (-item[1].count, item[0]))[:10]
    # The busiest routes' histograms, merged over the range (their rows only).
    histograms = read(
        tenant,
        Stream.REQUESTS,
        window,
        dimension=tuple(f"route:{name}" for name, _ in busiest),
        users=False,
        histograms=True,
        now=now,
        memo=memo,
    ).get(None, {})
    for name, aggregate in busiest:
        aggregate.latency_histogram = histograms.get(f"route:{name}", Aggregate()).latency_histogram
    answer = {
        "organization_id": tenant.pk,
        "period": _period(window),
        "time_zone": tz.key,
        "requests": requests.count,
        "response_times": times(requests),
        "error_rates": {
            "4xx": percent(requests.m("errors_4xx")),
            "5xx": percent(requests.m("errors_5xx")),
        },
        "throughput": {
            "requests_per_second": round(requests.count / elapsed, 3),
            "peak_rps": round(requests.m("max_minute_requests") / 60, 3),
        },
        "gateway": {
            "calls": gateway.count,
            "response_times": times(gateway),
            "error_rate": round(gateway.m("failed") / gateway.count * 100, 2)
            if gateway.count
            else 0.0,
            "avg_time_to_first_token_ms": rounded(
                None
                if not gateway.m("ttft_count")
                else gateway.m("ttft_us") / gateway.m("ttft_count") / 1000
            ),
        },
        "routes": [
            {
                "route": name,
                "requests": aggregate.count,
                "response_times": times(aggregate),
                "error_rate": round(
                    (aggregate.m("errors_4xx") + aggregate.m("errors_5xx")) / aggregate.count * 100,
                    2,
                ),
            }
            for name, aggregate in busiest
        ],
        "resource_usage": resource_usage() if include_resources else None,
        "generated_at": now,
    }
    return answer


def resource_usage() -> dict:
    """This web host's CPU load (1-minute load average over CPUs), memory and disk in use, in
    percent: for platform staff (a tenant's figures never include them)."""
    import os
    import shutil

    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0] / cpus * 100
    except OSError:
        load = None
    memory = None
    try:
        with open("/proc/meminfo") as meminfo:
            fields = {line.split(":")[0]: int(line.split()[1]) for line in meminfo}
        memory = (1 - fields["MemAvailable"] / fields["MemTotal"]) * 100
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        pass
    disk = shutil.disk_usage(settings.BASE_DIR)
    return {
        "cpu_utilization": rounded(load, 1),
        "memory_usage": rounded(memory, 1),
        "disk_usage": rounded(disk.used / disk.total * 100, 1),
    }


# Support-centre metrics ------------------------------------------------------------------------

PERIODS = ("DAY", "WEEK", "MONTH", "QUARTER", "YEAR")


def period_start(day: date, period: str) -> date:
    if period == "DAY":
        return day
    if period == "WEEK":
        return day - timedelta(days=day.weekday())
    if period == "MONTH":
        return day.replace(day=1)
    if period == "QUARTER":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def period_after(start: date, period: str) -> date:
    if period == "DAY":
        return start + timedelta(days=1)
    if period == "WEEK":
        return start + timedelta(days=7)
    return add_months(start, {"MONTH": 1, "QUARTER": 3, "YEAR": 12}[period])


def period_before(start: date, period: str) -> date:
    return period_start(start - timedelta(days=1), period)


def _support_figures(aggregate: Aggregate) -> dict:
    resolved = aggregate.m("tickets_resolved")

    def pct(part, whole):
        return f"{part / whole * 100:.2f}" if whole else None

    csat = aggregate.ratio("csat_sum", "csat_count")
    responses = aggregate.m("first_responses")
    return {
        "avg_response_time": round(aggregate.m("first_response_us") / responses / 1e6)
        if responses
        else None,
        "first_contact_resolution": pct(aggregate.m("first_contact_resolved"), resolved),
        "customer_satisfaction": None if csat is None else f"{csat:.2f}",
        "ai_resolution_rate": pct(aggregate.m("ai_resolved"), resolved),
        "tickets_resolved": resolved,
    }


def performance_metrics(tenant, *, period: str, limit: int, offset: int, tz, now=None) -> dict:
    """Support-centre figures for the latest `limit` periods (after skipping `offset`)."""
    from support.models import OPEN_TICKET_STATUSES, Ticket

    now = now or timezone.now()
    memo: dict = {}
    starts = [period_start(now.astimezone(tz).date(), period)]
    for _ in range(offset + limit - 1):
        starts.append(period_before(starts[-1], period))
    starts = starts[offset : offset + limit]
    if not starts:
        return {"period": period, "time_zone": tz.key, "limit": limit, "offset": offset, "data": []}
    window = Window(
        local_midnight(starts[-1], tz), local_midnight(period_after(starts[0], period), tz), tz
    )

    def group(moment, zone):
        return period_start(moment.astimezone(zone).date(), period)

    found = read(tenant, Stream.SUPPORT, window, group=group, users=False, now=now, memo=memo)
    open_now = Ticket.objects.filter(
        tenant=tenant,
        status__in=OPEN_TICKET_STATUSES,
        created_at__gte=window.start,
        created_at__lt=window.end,
    ).values_list("created_at", flat=True)
    still_open: dict = defaultdict(int)
    for created in open_now:
        still_open[group(created, tz)] += 1
    data = []
    for start in starts:
        aggregate = found.get(start, {}).get("", Aggregate())
        created = aggregate.m("tickets_created")
        data.append(
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant.pk}/{period}/{start}/{tz.key}"),
                "period": period,
                "period_start": local_midnight(start, tz),
                "period_end": local_midnight(period_after(start, period), tz)
                - timedelta(seconds=1),
                "total_chats": created,
                "active_chats": still_open.get(start, 0),
                "escalations": aggregate.m("escalations"),
                "escalation_rate": f"{aggregate.m('escalations') / created * 100:.2f}"
                if created
                else None,
                **_support_figures(aggregate),
            }
        )
    return {"period": period, "time_zone": tz.key, "limit": limit, "offset": offset, "data": data}


def team_performance(tenant, *, period: str, tz, now=None) -> dict:
    """Each representative's figures over the current period, with the trend of the tickets
    they resolved against the previous period (UP or DOWN beyond 5 %, else STABLE)."""
    from support.models import Representative

    now = now or timezone.now()
    memo: dict = {}
    start = period_start(now.astimezone(tz).date(), period)
    before = period_before(start, period)
    window = Window(local_midnight(before, tz), local_midnight(period_after(start, period), tz), tz)

    def group(moment, zone):
        return period_start(moment.astimezone(zone).date(), period)

    found = read(
        tenant,
        Stream.SUPPORT,
        window,
        dimension="representative:",
        group=group,
        users=False,
        now=now,
        memo=memo,
    )
    representatives = Representative.objects.filter(tenant=tenant).select_related("user")
    data = []
    for representative in representatives.order_by("user__email"):
        name = f"representative:{representative.pk}"
        current = found.get(start, {}).get(name, Aggregate())
        previous = found.get(before, {}).get(name, Aggregate())
        figures = _support_figures(current)
        handled, handled_before = current.m("tickets_resolved"), previous.m("tickets_resolved")
        if handled_before == 0:
            trend = "UP" if handled else "STABLE"
        else:
            change = (handled - handled_before) / handled_before
            trend = "UP" if change > 0.05 else "DOWN" if change < -0.05 else "STABLE"
        data.append(
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{representative.pk}/{period}/{start}"),
                "representative_id": representative.pk,
                "period": period,
                "period_start": local_midnight(start, tz),
                "tickets_handled": handled,
                "avg_response_time": figures["avg_response_time"],
                "resolution_rate": figures["first_contact_resolution"],
                "customer_satisfaction": figures["customer_satisfaction"],
                "trend": trend,
                "representative": {
                    "id": representative.pk,
                    "user": {
                        "name": representative.user.name or representative.user.email,
                        "email": representative.user.email,
                    },
                },
            }
        )
    return {"period": period, "time_zone": tz.key, "data": data}


# The gateway's token metrics -------------------------------------------------------------------


def gateway_metrics(tenant, *, days: int = 7, now=None) -> dict:
    """`GET gateway/metrics`, in UTC: tokens by model today, this month's tokens (in all and by
    model), cost and calls, and a series of the last `days` days with calls (tokens, calls,
    failed calls, cost). Read from the gateway stream's roll-ups and its live hours like every
    report: six statements whatever the number of calls (two more for each further live
    hour). It aggregated the month's raw calls on every request: 0.3 to 0.5 s for an
    organization with a million calls in 35 days, 0.1 s now, most of it the 30,000 calls of
    its current hour."""
    now = now or timezone.now()
    end = hour_of(now) + HOUR
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    memo: dict = {}

    def by_model(start, measures):
        window = Window(start, end, UTC)
        return per_dimension(
            tenant, Stream.GATEWAY, window, "model:", measures=measures, now=now, memo=memo
        )

    month = by_model(today.replace(day=1), ("total_tokens", "cost_micros"))
    daily = by_model(today, ("total_tokens",))
    days_window = Window(today - (days - 1) * DAY, end, UTC)
    per_day = series(tenant, Stream.GATEWAY, days_window, by_day, users=False, now=now, memo=memo)
    return {
        "organization_id": tenant.pk,
        "date": today.date(),
        "daily": {
            name: model.m("total_tokens")
            for name, model in sorted(daily.items())
            if model.m("total_tokens")
        },
        "monthly": {
            "total": sum(model.m("total_tokens") for model in month.values()),
            "by_model": {name: model.m("total_tokens") for name, model in sorted(month.items())},
            "cost_micros": sum(model.m("cost_micros") for model in month.values()),
            "calls": sum(model.count for model in month.values()),
        },
        "daily_series": [
            {
                "date": day.isoformat(),
                "tokens": calls.m("total_tokens"),
                "calls": calls.count,
                "failed": calls.m("failed"),
                "cost_micros": calls.m("cost_micros"),
            }
            for day, calls in sorted(per_day.items())
            if calls.count
        ],
    }
