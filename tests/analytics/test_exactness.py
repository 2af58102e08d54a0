"""Exactness checks: every analytics endpoint's figures against a direct computation over the
raw facts they are rolled up from.

Raw facts (QueryEvent, RequestFact, GatewayCall, support tickets and escalations) are generated
with a seeded random source over the last 16 days of a frozen clock (2026-03-02 10:30 UTC, a
Monday: the 7-day range crosses a month boundary and two weeks), with facts placed exactly on
and just before every local midnight of the three zones checked and on hour boundaries, and
some in the current, still partial hour. The roll-ups are rebuilt, then each endpoint is read
through the API and compared with plain Python over the generated records: counts and sums
exactly, percentiles within 2 % of the exact nearest-rank percentile.
"""

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics import services, sketches
from analytics.models import QueryEvent, RequestFact, Rollup
from analytics.serializers import normalized_query
from playground.models import CallStatus, GatewayCall
from support.models import Escalation, Ticket, TicketStatus
from tests.conftest import assert_envelope
from tests.support.factories import (
    CustomerProfileFactory,
    EscalationFactory,
    RepresentativeFactory,
    TicketFactory,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
START = NOW - timedelta(days=8)
ZONES = ["UTC", "America/New_York", "Europe/Paris"]
BASE = "/api/v1/analytics"

TEXTS = [
    "How do I reset my password",
    "Where is my invoice",
    "Cancel subscription",
    "Upgrade plan",
    "API rate limits",
    "Export data to CSV",
    "Delete my account",
    "Change billing email",
    "SSO login loop",
    "Webhook retries",
    "Refund policy",
    "Two factor authentication",
    "Add a team member",
    "Model pricing",
    "Streaming responses",
]
CATEGORIES = ["billing", "account", "technical", ""]
ERRORS = ["timeout", "no_answer", ""]
ROUTES = [("GET", "/api/v1/tickets"), ("POST", "/api/v1/gateway/chat"), ("GET", "/api/v1/me")]
STATUSES = [200, 200, 200, 201, 204, 400, 404, 429, 500, 503]
MODELS = ["gpt-4", "gpt-3.5-turbo", "claude-3"]


@pytest.fixture(autouse=True)
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture(autouse=True)
def _quiet(settings):
    """The reports are not counted as requests of their own (the `requests` stream holds only
    the generated facts), and the analytics rate does not refuse the many reads here."""
    settings.ANALYTICS_CAPTURE_REQUESTS = False
    settings.API_PLAN_RATES = {
        tier: {**rates, "analytics": "100000/min"}
        for tier, rates in settings.API_PLAN_RATES.items()
    }
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "analytics": "100000/min",
        },
    }


# Generated raw facts ---------------------------------------------------------------------------


@dataclass
class QueryRecord:
    event_id: str
    at: datetime
    query_text: str
    text: str
    category: str
    response_us: int | None
    success: bool
    error: str
    satisfaction: int | None
    tokens: int
    cost: int
    user: str
    relevance: float | None
    confidence: float | None


@dataclass
class CallRecord:
    at: datetime
    model: str
    failed: bool
    prompt: int
    completion: int
    cost: int
    latency_ms: int
    ttft_ms: int | None

    @property
    def tokens(self):
        return self.prompt + self.completion


@dataclass
class RequestRecord:
    minute: datetime
    method: str
    route: str
    status: int
    principal: str
    latencies_ms: list[float]

    @property
    def count(self):
        return len(self.latencies_ms)

    @property
    def latency_us(self):
        return sum(round(value * 1000) for value in self.latencies_ms)


@dataclass
class TicketRecord:
    created: datetime
    responded: datetime | None
    resolved: datetime | None
    assignee: object
    reopened: int
    ai: bool
    csat: int | None

    @property
    def is_open(self):
        return self.resolved is None

    @property
    def waited_us(self):
        return max(int((self.responded - self.created).total_seconds() * 1e6), 0)


@dataclass
class World:
    tenant: object
    queries: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    tickets: list = field(default_factory=list)
    escalations: list = field(default_factory=list)
    representatives: list = field(default_factory=list)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def boundary_moments(start=START) -> list[datetime]:
    """Every local midnight (and the microsecond before it) of the three zones in range, the
    month boundary among them, and some UTC hour boundaries."""
    moments = set()
    for name in ZONES:
        zone = ZoneInfo(name)
        day = start.astimezone(zone).date()
        while day <= NOW.astimezone(zone).date():
            midnight = local_midnight(day, zone)
            for moment in (midnight, midnight - timedelta(microseconds=1)):
                if start <= moment < NOW:
                    moments.add(moment)
            day += DAY
    for hours_back in (1, 2, 5, 30, 77, 150, 300):
        hour = NOW.replace(minute=0, second=0, microsecond=0) - hours_back * HOUR
        moments |= {m for m in (hour, hour - timedelta(microseconds=1)) if m >= start}
    return sorted(moments)


def random_moment(rng, start=START, end=NOW) -> datetime:
    return start + timedelta(microseconds=rng.randrange(int((end - start).total_seconds() * 1e6)))


def moments(rng, n, start=START) -> list[datetime]:
    """n moments: the boundaries, some in the current hour, the rest anywhere in range."""
    fixed = boundary_moments(start)
    current_hour = NOW.replace(minute=0, second=0, microsecond=0)
    live = [random_moment(rng, current_hour, NOW) for _ in range(max(3, n // 40))]
    rest = [random_moment(rng, start) for _ in range(max(0, n - len(fixed) - len(live)))]
    return fixed + live + rest


def spelled(rng, text: str) -> str:
    """The same query as a user might type it: other case, extra spaces."""
    words = text.split()
    words = [word.upper() if rng.random() < 0.2 else word for word in words]
    return ("  " if rng.random() < 0.3 else "") + (" " * rng.randint(1, 3)).join(words)


def backdate(model, rows, moments_of) -> None:
    """created_at is auto_now_add: set it to when the fact happened (bulk_update skips
    pre_save), as if each fact had been recorded then."""
    for row, moment in zip(rows, moments_of, strict=True):
        row.created_at = moment
    model.objects.bulk_update(rows, ["created_at"], batch_size=1000)


def add_queries(world: World, rng, n: int, prefix: str = "q", start=START) -> None:
    weights = [len(TEXTS) - i for i in range(len(TEXTS))]
    rows = []
    for index, at in enumerate(moments(rng, n, start)):
        text = rng.choices(TEXTS, weights)[0]
        query_text = spelled(rng, text)
        success = rng.random() < 0.8
        record = QueryRecord(
            event_id=f"{prefix}-{index}",
            at=at,
            query_text=query_text,
            text=normalized_query(query_text),
            category=rng.choice(CATEGORIES),
            response_us=None if rng.random() < 0.1 else rng.randint(20_000, 9_000_000),
            success=success,
            error="" if success else rng.choice(ERRORS),
            satisfaction=None if rng.random() < 0.4 else rng.randint(1, 5),
            tokens=rng.randint(0, 3_000),
            cost=rng.randint(0, 40_000),
            user="" if rng.random() < 0.1 else f"user-{rng.randint(1, 60)}",
            relevance=None if rng.random() < 0.3 else rng.randint(0, 100) / 100,
            confidence=None if rng.random() < 0.3 else rng.randint(0, 1000) / 1000,
        )
        world.queries.append(record)
        rows.append(
            QueryEvent(
                tenant=world.tenant,
                event_id=record.event_id,
                occurred_at=record.at,
                query_text=record.query_text,
                normalized_text=record.text,
                query_category=record.category,
                response_time_us=record.response_us,
                success=record.success,
                error_category=record.error,
                satisfaction=record.satisfaction,
                tokens=record.tokens,
                cost_micros=record.cost,
                user_ref=record.user,
                relevance_score=record.relevance,
                confidence_score=record.confidence,
            )
        )
    QueryEvent.objects.bulk_create(rows, batch_size=1000)
    backdate(QueryEvent, rows, [row.occurred_at for row in rows])


def add_calls(world: World, rng, n: int, start=START) -> None:
    records = []
    for at in moments(rng, n, start):
        records.append(
            CallRecord(
                at=at,
                model=rng.choice(MODELS),
                failed=rng.random() < 0.1,
                prompt=rng.randint(0, 2_000),
                completion=rng.randint(0, 800),
                cost=rng.randint(0, 90_000),
                latency_ms=max(1, round(rng.lognormvariate(6, 1))),
                ttft_ms=None if rng.random() < 0.5 else rng.randint(10, 2_000),
            )
        )
    rows = GatewayCall.objects.bulk_create(
        [
            GatewayCall(
                tenant=world.tenant,
                requested_model=record.model,
                model=record.model,
                provider="local",
                status=CallStatus.FAILED if record.failed else CallStatus.SUCCEEDED,
                prompt_tokens=record.prompt,
                completion_tokens=record.completion,
                total_tokens=record.tokens,
                cost_micros=record.cost,
                latency_ms=record.latency_ms,
                time_to_first_token_ms=record.ttft_ms,
            )
            for record in records
        ],
        batch_size=1000,
    )
    backdate(GatewayCall, rows, [record.at for record in records])
    world.calls += records


def add_requests(world: World, rng, n: int, start=START) -> None:
    records = []
    for at in moments(rng, n, start):
        method, route = rng.choice(ROUTES)
        records.append(
            RequestRecord(
                minute=at.replace(second=0, microsecond=0),
                method=method,
                route=route,
                status=rng.choice(STATUSES),
                principal=f"user:{rng.randint(1, 9)}",
                latencies_ms=[
                    min(max(rng.lognormvariate(4, 1.2), 0.5), 60_000)
                    for _ in range(rng.randint(1, 6))
                ],
            )
        )
    rows = RequestFact.objects.bulk_create(
        [
            RequestFact(
                tenant=world.tenant,
                minute=record.minute,
                route=record.route,
                method=record.method,
                status_code=record.status,
                credential_type="token",
                principal=record.principal,
                count=record.count,
                latency_us_total=record.latency_us,
                latency_histogram=sketches.histogram_of(record.latencies_ms),
            )
            for record in records
        ],
        batch_size=1000,
    )
    backdate(RequestFact, rows, [record.minute for record in records])
    world.requests += records


def add_support(world: World, rng, n_tickets: int, n_escalations: int, start=START) -> None:
    if not world.representatives:
        world.representatives = [RepresentativeFactory(tenant=world.tenant) for _ in range(3)]
    customer = CustomerProfileFactory(tenant=world.tenant)
    records, rows = [], []
    for at in moments(rng, n_tickets, start):
        responded = resolved = None
        if rng.random() < 0.8:
            responded = at + timedelta(seconds=rng.randint(30, 40 * 3600))
            responded = responded if responded < NOW else None
        if responded is not None and rng.random() < 0.75:
            resolved = responded + timedelta(seconds=rng.randint(0, 50 * 3600))
            resolved = resolved if resolved < NOW else None
        record = TicketRecord(
            created=at,
            responded=responded,
            resolved=resolved,
            assignee=rng.choice([*world.representatives, None]),
            reopened=rng.choice([0, 0, 0, 1, 2]),
            ai=rng.random() < 0.3,
            csat=rng.randint(1, 5) if resolved is not None and rng.random() < 0.7 else None,
        )
        ticket = TicketFactory(tenant=world.tenant, customer=customer)
        ticket.created_at = ticket.updated_at = record.created
        ticket.first_responded_at = record.responded
        ticket.resolved_at = record.resolved
        ticket.status = TicketStatus.OPEN if record.is_open else TicketStatus.RESOLVED
        ticket.assignee = record.assignee
        ticket.reopened_count = record.reopened
        ticket.ai_handled = record.ai
        ticket.customer_satisfaction_score = record.csat
        records.append(record)
        rows.append(ticket)
    Ticket.objects.bulk_update(
        rows,
        [
            "created_at",
            "updated_at",
            "first_responded_at",
            "resolved_at",
            "status",
            "assignee",
            "reopened_count",
            "ai_handled",
            "customer_satisfaction_score",
        ],
    )
    world.tickets += records
    escalations = [
        EscalationFactory(tenant=world.tenant, customer=customer) for _ in range(n_escalations)
    ]
    times = [random_moment(rng, start) for _ in escalations]
    march = local_midnight(date(2026, 3, 1), UTC)
    if start < march - DAY:
        times[:2] = [march, march - timedelta(microseconds=1)][: len(times)]
    for escalation, at in zip(escalations, times, strict=True):
        escalation.created_at = escalation.updated_at = at
    Escalation.objects.bulk_update(escalations, ["created_at", "updated_at"])
    world.escalations += times


def generate(tenant, seed=1, sizes=(400, 200, 200, 60, 20), world=None, start=START) -> World:
    """Queries, gateway calls, request facts, tickets and escalations, `sizes` of each."""
    world = world or World(tenant=tenant)
    rng = random.Random(seed)
    queries, calls, requests, tickets, escalations = sizes
    add_queries(world, rng, queries, prefix=f"s{seed}", start=start)
    add_calls(world, rng, calls, start)
    add_requests(world, rng, requests, start)
    add_support(world, rng, tickets, escalations, start)
    return world


def rebuild(tenant, since=START):
    return services.rollups_rebuild(since=since, tenant=tenant, now=NOW)


# The expected figures, computed directly -------------------------------------------------------


def hour_of(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def window(days: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The last `days` local days, today included, up to the end of the current hour."""
    today = NOW.astimezone(zone).date()
    return local_midnight(today - timedelta(days=days - 1), zone), hour_of(NOW) + HOUR


def previous(start, end):
    return start - (end - start), start


def within(records, start, end, key=lambda record: record.at):
    return [record for record in records if start <= key(record) < end]


def cents(micros: int) -> int:
    """Half-up to whole cents."""
    return (micros + 5_000) // 10_000


def mean(total, count, digits):
    return round(total / count, digits) if count else None


def avg_seconds(queries):
    times = [q.response_us for q in queries if q.response_us is not None]
    return round(sum(times) / len(times) / 1e6, 3) if times else None


def avg_rating(queries):
    scores = [q.satisfaction for q in queries if q.satisfaction is not None]
    return mean(sum(scores), len(scores), 2)


def avg_score(values):
    values = [round(value * 1_000_000) for value in values if value is not None]
    return round(sum(values) / len(values) / 1e6, 3) if values else None


def users(queries):
    return len({q.user for q in queries if q.user})


def percent_change(current, before):
    if current is None or before in (None, 0):
        return None
    return round((current - before) / before * 100, 1)


def nearest_rank(values, q):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] if ordered else None


def local_days(start, end, zone):
    days, moment = [], start
    while moment < end:
        day = moment.astimezone(zone).date()
        if day not in days:
            days.append(day)
        moment += HOUR
    return days


def by_local(records, zone, key=lambda record: record.at, group=lambda d: d):
    found = defaultdict(list)
    for record in records:
        found[group(key(record).astimezone(zone).date())].append(record)
    return found


def top_queries(queries, limit, include_failed):
    counted = defaultdict(list)
    for query in queries:
        if query.success or include_failed:
            counted[query.text].append(query)
    ranked = sorted(counted.items(), key=lambda item: (-len(item[1]), item[0]))[:limit]
    rows = []
    for text, asked in ranked:
        # The category the text was asked in most among the counted queries (ties: the
        # alphabetically first).
        per_category = defaultdict(int)
        for q in asked:
            per_category[q.category] += 1
        category = min(per_category, key=lambda name: (-per_category[name], name))
        rows.append(
            {
                "query_text": text,
                "query_category": category,
                "execution_count": len(asked),
                "avg_response_time": avg_seconds(asked),
                "avg_satisfaction": avg_rating(asked),
                "last_executed": datetime.fromtimestamp(
                    int(max(q.at for q in asked).timestamp()), tz=UTC
                ),
            }
        )
    return rows


def parsed_top(rows):
    return [{**row, "last_executed": datetime.fromisoformat(row["last_executed"])} for row in rows]


def expected_dashboard(world, zone, days=7):
    start, end = window(days, zone)
    queries, calls = within(world.queries, start, end), within(world.calls, start, end)
    daily_queries, daily_calls = by_local(queries, zone), by_local(calls, zone)
    daily = []
    for day in local_days(start, end, zone):
        day_queries, day_calls = daily_queries.get(day, []), daily_calls.get(day, [])
        gateway_cents = cents(sum(c.cost for c in day_calls))
        query_cents = cents(sum(q.cost for q in day_queries))
        daily.append(
            {
                "date": day.isoformat(),
                "usage": {
                    "total_queries": len(day_queries),
                    "unique_users": users(day_queries),
                    "avg_response_time": avg_seconds(day_queries),
                    "successful_queries": sum(q.success for q in day_queries),
                    "failed_queries": sum(not q.success for q in day_queries),
                    "avg_satisfaction": avg_rating(day_queries),
                },
                "costs": {
                    "total_cost_cents": gateway_cents + query_cents,
                    "gateway_cost_cents": gateway_cents,
                    "query_cost_cents": query_cents,
                },
                "quality": {
                    "avg_relevance_score": avg_score(q.relevance for q in day_queries),
                    "avg_confidence_score": avg_score(q.confidence for q in day_queries),
                },
            }
        )
    gateway_cents = cents(sum(c.cost for c in calls))
    query_cents = cents(sum(q.cost for q in queries))
    rating = avg_rating(queries)
    before = avg_rating(within(world.queries, *previous(start, end)))
    if rating is None or before is None:
        trend = "insufficient_data"
    else:
        trend = (
            "improving"
            if rating - before > 0.1
            else "declining"
            if before - rating > 0.1
            else "stable"
        )
    per_model = defaultdict(int)
    for call in calls:
        per_model[call.model] += call.cost
    return {
        "summary": {
            "total_queries": len(queries),
            "unique_users": users(queries),
            "avg_response_time": avg_seconds(queries),
            "total_cost_cents": gateway_cents + query_cents,
            "gateway_calls": len(calls),
            "gateway_tokens": sum(c.tokens for c in calls),
        },
        "daily_data": daily,
        "top_queries": top_queries(queries, 10, include_failed=False),
        "user_satisfaction": {"average_rating": rating, "previous_rating": before, "trend": trend},
        "cost_breakdown": {
            "total_cents": gateway_cents + query_cents,
            "breakdown": {"gateway": gateway_cents, "queries": query_cents},
            "by_model": {name: cents(micros) for name, micros in sorted(per_model.items())},
        },
    }


GROUPS = {
    "hourly": None,
    "daily": lambda day: day,
    "weekly": lambda day: day - timedelta(days=day.weekday()),
    "monthly": lambda day: day.replace(day=1),
}


def usage_keys(start, end, zone, granularity):
    keys, moment = [], start
    while moment < end:
        local = moment.astimezone(zone)
        key = local if granularity == "hourly" else GROUPS[granularity](local.date())
        if key not in keys:
            keys.append(key)
        moment += HOUR
    return keys


def usage_key(moment, zone, granularity):
    local = hour_of(moment).astimezone(zone)
    return local if granularity == "hourly" else GROUPS[granularity](local.date())


def expected_usage(world, zone, days, granularity):
    start, end = window(days, zone)
    grouped = {}
    for name, records, key in (
        ("queries", world.queries, lambda r: r.at),
        ("calls", world.calls, lambda r: r.at),
        ("requests", world.requests, lambda r: r.minute),
    ):
        found = defaultdict(list)
        for record in within(records, start, end, key):
            found[usage_key(key(record), zone, granularity)].append(record)
        grouped[name] = found
    data = []
    for key in usage_keys(start, end, zone, granularity):
        queries = grouped["queries"].get(key, [])
        calls = grouped["calls"].get(key, [])
        requests = grouped["requests"].get(key, [])
        count = sum(r.count for r in requests)
        data.append(
            {
                "date": key.isoformat(),
                "total_queries": len(queries),
                "unique_users": users(queries),
                "avg_response_time": avg_seconds(queries),
                "requests": count,
                "avg_request_time_ms": round(sum(r.latency_us for r in requests) / count / 1000, 2)
                if count
                else None,
                "gateway_calls": len(calls),
                "tokens": sum(c.tokens for c in calls),
                "cost_cents": cents(sum(c.cost for c in calls) + sum(q.cost for q in queries)),
            }
        )

    def totals(a, b):
        queries = within(world.queries, a, b)
        requests = within(world.requests, a, b, lambda r: r.minute)
        return {
            "queries": len(queries),
            "users": users(queries),
            "response_time": avg_seconds(queries),
            "requests": sum(r.count for r in requests),
            "tokens": sum(c.tokens for c in within(world.calls, a, b)),
        }

    now_totals, before = totals(start, end), totals(*previous(start, end))
    trends = {name: percent_change(now_totals[name], before[name]) for name in now_totals}
    period = {
        "start": start.astimezone(zone).date().isoformat(),
        "end": (end - timedelta(seconds=1)).astimezone(zone).date().isoformat(),
    }
    return {"data": data, "trends": trends, "period": period}


def expected_queries(world, zone, days, limit, include_failed):
    start, end = window(days, zone)
    queries = within(world.queries, start, end)
    categories = defaultdict(int)
    errors = defaultdict(int)
    for query in queries:
        categories[query.category or "uncategorised"] += 1
        if not query.success:
            errors[query.error or "other"] += 1
    daily = by_local(queries, zone)
    failed = sorted((q for q in queries if not q.success), key=lambda q: q.at, reverse=True)[:10]
    return {
        "top_queries": top_queries(queries, limit, include_failed),
        "categories": sorted(categories.items(), key=lambda item: (-item[1], item[0])),
        "daily_trends": [
            {
                "date": day.isoformat(),
                "avg_response_time": avg_seconds(daily.get(day, [])),
                "avg_rating": avg_rating(daily.get(day, [])),
                "query_count": len(daily.get(day, [])),
            }
            for day in local_days(start, end, zone)
        ],
        "total_failures": sum(errors.values()),
        "error_categories": sorted(errors.items(), key=lambda item: (-item[1], item[0])),
        "recent_failures": [
            {
                "id": q.event_id,
                "query_text": q.query_text,
                "query_category": q.category,
                "error_category": q.error or "other",
                "timestamp": q.at,
            }
            for q in failed
        ],
    }


def expected_performance(world, zone, days):
    start, end = window(days, zone)
    requests = within(world.requests, start, end, lambda r: r.minute)
    calls = within(world.calls, start, end)
    count = sum(r.count for r in requests)
    per_minute = defaultdict(int)
    for request in requests:
        per_minute[request.minute] += request.count
    failed = sum(c.failed for c in calls)
    ttfts = [c.ttft_ms for c in calls if c.ttft_ms is not None]
    return {
        "requests": count,
        "latencies": [value for r in requests for value in r.latencies_ms],
        "error_rates": {
            "4xx": round(sum(r.count for r in requests if 400 <= r.status < 500) / count * 100, 2),
            "5xx": round(sum(r.count for r in requests if r.status >= 500) / count * 100, 2),
        },
        "throughput": {
            "requests_per_second": round(count / (NOW - start).total_seconds(), 3),
            "peak_rps": round(max(per_minute.values()) / 60, 3),
        },
        "gateway_calls": len(calls),
        "gateway_latencies": [c.latency_ms for c in calls],
        "gateway_error_rate": round(failed / len(calls) * 100, 2),
        "ttft": round(sum(t * 1000 for t in ttfts) / len(ttfts) / 1000, 2),
    }


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


def next_period(start: date, period: str) -> date:
    # The first day past the period: the start of the period of a day safely beyond its end.
    span = {"DAY": 1, "WEEK": 7, "MONTH": 32, "QUARTER": 93, "YEAR": 367}[period]
    if period in ("DAY", "WEEK"):
        return start + timedelta(days=span)
    return period_start(start + timedelta(days=span), period)


def support_figures(tickets, start, end):
    responded = [t for t in tickets if t.responded is not None and start <= t.responded < end]
    resolved = [t for t in tickets if t.resolved is not None and start <= t.resolved < end]
    scores = [t.csat for t in resolved if t.csat is not None]

    def pct(part, whole):
        return f"{part / whole * 100:.2f}" if whole else None

    return {
        "avg_response_time": round(sum(t.waited_us for t in responded) / len(responded) / 1e6)
        if responded
        else None,
        "first_contact_resolution": pct(sum(t.reopened == 0 for t in resolved), len(resolved)),
        "customer_satisfaction": f"{sum(scores) / len(scores):.2f}" if scores else None,
        "ai_resolution_rate": pct(sum(t.ai for t in resolved), len(resolved)),
        "tickets_resolved": len(resolved),
    }


def expected_metrics(world, zone, period, limit, offset):
    starts = [period_start(NOW.astimezone(zone).date(), period)]
    while len(starts) < limit + offset:
        starts.append(period_start(starts[-1] - DAY, period))
    data = []
    for first in starts[offset:]:
        start, end = local_midnight(first, zone), local_midnight(next_period(first, period), zone)
        created = within(world.tickets, start, end, lambda t: t.created)
        escalations = [at for at in world.escalations if start <= at < end]
        data.append(
            {
                "period": period,
                "period_start": start,
                "period_end": end - timedelta(seconds=1),
                "total_chats": len(created),
                "active_chats": sum(t.is_open for t in created),
                "escalations": len(escalations),
                "escalation_rate": f"{len(escalations) / len(created) * 100:.2f}"
                if created
                else None,
                **support_figures(world.tickets, start, end),
            }
        )
    return data


def expected_team(world, zone, period):
    first = period_start(NOW.astimezone(zone).date(), period)
    before = period_start(first - DAY, period)
    start, end = local_midnight(first, zone), local_midnight(next_period(first, period), zone)
    prev_start = local_midnight(before, zone)
    data = []
    for representative in sorted(world.representatives, key=lambda r: r.user.email):
        mine = [t for t in world.tickets if t.assignee == representative]
        figures = support_figures(mine, start, end)
        handled = figures["tickets_resolved"]
        handled_before = support_figures(mine, prev_start, start)["tickets_resolved"]
        if handled_before == 0:
            trend = "UP" if handled else "STABLE"
        else:
            change = (handled - handled_before) / handled_before
            trend = "UP" if change > 0.05 else "DOWN" if change < -0.05 else "STABLE"
        data.append(
            {
                "representative_id": str(representative.pk),
                "period": period,
                "period_start": start,
                "tickets_handled": handled,
                "avg_response_time": figures["avg_response_time"],
                "resolution_rate": figures["first_contact_resolution"],
                "customer_satisfaction": figures["customer_satisfaction"],
                "trend": trend,
            }
        )
    return data


# Reading the API -------------------------------------------------------------------------------


def get(client, path, **params):
    response = client.get(f"{BASE}/{path}", params)
    assert response.status_code == 200, (path, params, response.content[:500])
    return response.json()


def assert_percentiles(answer, values):
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = nearest_rank(values, q)
        # Within 2 %, and the half-hundredth of a millisecond the answer is rounded to.
        assert abs(answer[name] - exact) <= 0.02 * exact + 0.005, (name, answer[name], exact)


def check_dashboard(client, world, zone):
    body = get(client, "dashboard", period="7d", tz=zone.key)
    expected = expected_dashboard(world, zone)
    assert body["time_zone"] == zone.key
    assert body["organization_id"] == str(world.tenant.pk)
    assert body["summary"] == expected["summary"]
    assert [day["date"] for day in body["daily_data"]] == [
        day["date"] for day in expected["daily_data"]
    ]
    for got, want in zip(body["daily_data"], expected["daily_data"], strict=True):
        assert got == want, want["date"]
    assert parsed_top(body["top_queries"]) == expected["top_queries"]
    assert body["user_satisfaction"] == expected["user_satisfaction"]
    assert body["cost_breakdown"] == expected["cost_breakdown"]
    return body


def check_usage(client, world, zone, days=7):
    answers = {}
    for granularity in ("hourly", "daily", "weekly", "monthly"):
        body = get(client, "usage", days=days, granularity=granularity, tz=zone.key)
        expected = expected_usage(world, zone, days, granularity)
        assert [point["date"] for point in body["data"]] == [
            point["date"] for point in expected["data"]
        ], granularity
        for got, want in zip(body["data"], expected["data"], strict=True):
            assert got == want, (granularity, want["date"])
        assert body["trends"] == expected["trends"]
        assert {k: body["period"][k] for k in ("start", "end")} == expected["period"]
        assert body["runs_summary"]["total_runs"] == 0
        answers[granularity] = body
    # Every grouping sums to the same totals.
    for name in ("total_queries", "requests", "gateway_calls", "tokens"):
        totals = {g: sum(point[name] for point in b["data"]) for g, b in answers.items()}
        assert len(set(totals.values())) == 1, (name, totals)
    return answers


def check_queries(client, world, zone, days=7):
    answers = {}
    for include_failed in (False, True):
        body = get(
            client,
            "queries",
            days=days,
            limit=50,
            include_failed=str(include_failed).lower(),
            tz=zone.key,
        )
        expected = expected_queries(world, zone, days, 50, include_failed)
        assert parsed_top(body["top_queries"]) == expected["top_queries"]
        assert body["categories"] == dict(expected["categories"])
        assert_ranked(body["categories"])
        assert body["performance_trends"]["daily_trends"] == expected["daily_trends"]
        analysis = body["failure_analysis"]
        assert analysis["total_failures"] == expected["total_failures"]
        assert analysis["error_categories"] == dict(expected["error_categories"])
        assert_ranked(analysis["error_categories"])
        recent = [
            {**row, "timestamp": datetime.fromisoformat(row["timestamp"])}
            for row in analysis["recent_failures"]
        ]
        assert recent == expected["recent_failures"]
        answers[include_failed] = body
    return answers


def assert_ranked(counts: dict):
    """Most frequent first (the order among equal counts is the API's own)."""
    assert list(counts.values()) == sorted(counts.values(), reverse=True), counts


def check_performance(client, world, zone, days=7):
    body = get(client, "performance", days=days, tz=zone.key)
    expected = expected_performance(world, zone, days)
    assert body["requests"] == expected["requests"]
    assert_percentiles(body["response_times"], expected["latencies"])
    assert body["error_rates"] == expected["error_rates"]
    assert body["throughput"] == expected["throughput"]
    assert body["gateway"]["calls"] == expected["gateway_calls"]
    assert_percentiles(body["gateway"]["response_times"], expected["gateway_latencies"])
    assert body["gateway"]["error_rate"] == expected["gateway_error_rate"]
    assert body["gateway"]["avg_time_to_first_token_ms"] == expected["ttft"]
    assert body["resource_usage"] is None
    return body


def check_metrics(client, world, zone, period, limit, offset=0):
    body = get(
        client, "performance-metrics", period=period, limit=limit, offset=offset, tz=zone.key
    )
    expected = expected_metrics(world, zone, period, limit, offset)
    got = [
        {
            **{k: v for k, v in row.items() if k != "id"},
            "period_start": datetime.fromisoformat(row["period_start"]),
            "period_end": datetime.fromisoformat(row["period_end"]),
        }
        for row in body["data"]
    ]
    assert got == expected, period
    return body


def check_team(client, world, zone, period):
    body = get(client, "team-performance", period=period, tz=zone.key)
    expected = expected_team(world, zone, period)
    got = [
        {
            **{k: v for k, v in row.items() if k not in ("id", "representative")},
            "period_start": datetime.fromisoformat(row["period_start"]),
        }
        for row in body["data"]
    ]
    assert got == expected, period
    return body


def check_everything(client, world, zone):
    return {
        "dashboard": check_dashboard(client, world, zone),
        "usage": check_usage(client, world, zone),
        "queries": check_queries(client, world, zone),
        "performance": check_performance(client, world, zone),
        "metrics": [
            check_metrics(client, world, zone, "DAY", 10),
            check_metrics(client, world, zone, "DAY", 5, offset=3),
            check_metrics(client, world, zone, "WEEK", 3),
            check_metrics(client, world, zone, "MONTH", 2),
        ],
    }


# The checks ------------------------------------------------------------------------------------


@pytest.fixture
def world(owner):
    world = generate(owner.tenant)
    assert rebuild(owner.tenant)
    return world


def _without_zone(body):
    """A report without what names its zone (a support period's id does) or the moment it was
    made."""
    if isinstance(body, dict):
        return {
            k: _without_zone(v)
            for k, v in body.items()
            if k not in ("time_zone", "generated_at", "id")
        }
    if isinstance(body, list):
        return [_without_zone(item) for item in body]
    return body


SAME_ZONE_READS = [
    ("dashboard", {"period": "7d"}),
    ("dashboard", {"period": "30d"}),
    ("usage", {"days": 9, "granularity": "daily"}),
    ("usage", {"days": 9, "granularity": "weekly"}),
    ("usage", {"days": 30, "granularity": "monthly"}),
    ("queries", {"days": 9, "include_failed": "true"}),
    ("performance", {"days": 9}),
    ("performance-metrics", {"period": "DAY", "limit": 12}),
    ("performance-metrics", {"period": "MONTH", "limit": 2}),
]


def test_every_endpoint_matches_the_raw_facts_in_every_zone(owner, world):
    client = owner.client
    first_days = {}
    for name in ZONES:
        zone = ZoneInfo(name)
        # The generated data does reach across the boundaries the figures group by.
        start, end = window(7, zone)
        assert start.astimezone(zone).time() == time(0)
        assert {q.at.astimezone(zone).month for q in within(world.queries, start, end)} == {2, 3}
        assert any(q.at == start for q in world.queries)
        assert any(q.at == start - timedelta(microseconds=1) for q in world.queries)
        assert any(hour_of(q.at) == hour_of(NOW) for q in world.queries)  # the live hour

        reports = check_everything(client, world, zone)

        daily = reports["dashboard"]["daily_data"]
        first_days[name] = {day["date"]: day["usage"]["total_queries"] for day in daily}
    # Days begin at local midnight: the same facts fall on other days in other zones.
    assert next(iter(first_days["UTC"])) == "2026-02-24"
    assert first_days["UTC"] != first_days["Europe/Paris"]
    assert first_days["UTC"] != first_days["America/New_York"]

    # Etc/GMT is UTC under another name: it reads the range from hour rows only, where tz=UTC
    # reads whole days from day rows. Every figure must be the same.
    from_days = [_without_zone(get(client, path, tz="UTC", **p)) for path, p in SAME_ZONE_READS]
    from_hours = [
        _without_zone(get(client, path, tz="Etc/GMT", **p)) for path, p in SAME_ZONE_READS
    ]
    for read, day_rows, hour_rows in zip(SAME_ZONE_READS, from_days, from_hours, strict=True):
        assert day_rows == hour_rows, read
    check_performance(client, world, ZoneInfo("UTC"), days=9)
    check_queries(client, world, ZoneInfo("UTC"), days=9)
    check_usage(client, world, ZoneInfo("Europe/Paris"), days=9)

    # And the UTC answers do come from the day rows: without the hour rows of whole past days
    # they do not change.
    deleted, _ = Rollup.objects.filter(
        tenant=owner.tenant, granularity="hour", bucket_start__lt=hour_of(NOW).replace(hour=0)
    ).delete()
    assert deleted
    again = [_without_zone(get(client, path, tz="UTC", **p)) for path, p in SAME_ZONE_READS]
    assert again == from_days


def test_a_zone_whose_offset_is_not_whole_hours_is_refused(owner):
    for path, params in (
        ("dashboard", {"period": "7d"}),
        ("usage", {"days": 7}),
        ("queries", {}),
        ("performance", {}),
        ("performance-metrics", {}),
        ("team-performance", {}),
    ):
        response = owner.client.get(f"{BASE}/{path}", {**params, "tz": "Asia/Kolkata"})
        error = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert "tz" in str(error["details"]), error
    response = owner.client.get(f"{BASE}/dashboard", {"tz": "Mars/Olympus_Mons"})
    assert_envelope(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("zone", ZONES)
def test_period_days_is_the_number_of_local_days(owner, zone):
    for path, params in (
        ("usage", {"days": 7}),
        ("usage", {"days": 30}),
        ("queries", {"days": 7}),
        ("performance", {"days": 7}),
    ):
        period = get(owner.client, path, tz=zone, **params)["period"]
        days = (date.fromisoformat(period["end"]) - date.fromisoformat(period["start"])).days + 1
        assert days == params["days"], (path, period)
        assert period["days"] == params["days"], (path, period)


def _rows(tenant):
    return sorted(
        (
            row.stream,
            row.granularity,
            row.bucket_start,
            row.dimension,
            row.count,
            row.measures,
            sorted(row.latency_histogram.items()),
            row.users,
        )
        for row in Rollup.objects.filter(tenant=tenant)
    )


def late_event(client, at, event_id="late-1"):
    response = client.post(
        f"{BASE}/events",
        {
            "events": [
                {
                    "id": event_id,
                    "type": "query",
                    "timestamp": at.isoformat(),
                    "query_text": "A  LATE question",
                    "query_category": "late",
                    "response_time": 1.25,
                    "satisfaction": 5,
                    "tokens": 77,
                    "cost_micros": 123_456,
                    "user_ref": "late-user",
                    "relevance_score": 0.5,
                }
            ]
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1
    return QueryRecord(
        event_id=event_id,
        at=at,
        query_text="A  LATE question",
        text="a late question",
        category="late",
        response_us=1_250_000,
        success=True,
        error="",
        satisfaction=5,
        tokens=77,
        cost=123_456,
        user="late-user",
        relevance=0.5,
        confidence=None,
    )


def test_builds_are_idempotent_and_a_late_event_reopens_its_hour(owner, world):
    utc = ZoneInfo("UTC")
    before = _rows(owner.tenant)
    assert before
    reports = [_without_zone(get(owner.client, path, tz="UTC", **p)) for path, p in SAME_ZONE_READS]

    # Building again, twice, and rebuilding changes no row and no figure.
    assert services.rollups_build(now=NOW)  # the first run looks a day back
    services.rollups_build(now=NOW)
    rebuild(owner.tenant, since=NOW - timedelta(days=2))
    assert _rows(owner.tenant) == before
    again = [_without_zone(get(owner.client, path, tz="UTC", **p)) for path, p in SAME_ZONE_READS]
    assert again == reports

    # An event ingested now that happened two days ago: its hour is re-opened by the next
    # build, and every figure then includes it.
    late_at = NOW - timedelta(days=2, minutes=17)
    world.queries.append(late_event(owner.client, late_at))
    total = reports[0]["summary"]["total_queries"]

    assert services.rollups_build(now=NOW) >= 1

    body = check_dashboard(owner.client, world, utc)
    assert body["summary"]["total_queries"] == total + 1
    check_dashboard(owner.client, world, ZoneInfo("America/New_York"))
    check_usage(owner.client, world, ZoneInfo("Europe/Paris"))
    answers = check_queries(owner.client, world, utc)
    assert answers[False]["categories"]["late"] == 1
    # And building again changes nothing more.
    after = _rows(owner.tenant)
    services.rollups_build(now=NOW)
    assert _rows(owner.tenant) == after


def test_current_hour_facts_show_without_any_build(owner):
    """Nothing built at all: the facts of the current hour are aggregated at read time."""
    world = World(tenant=owner.tenant)
    current = hour_of(NOW)
    generate(owner.tenant, seed=9, sizes=(40, 10, 10, 5, 2), world=world, start=current)
    assert {hour_of(q.at) for q in world.queries} == {current}
    assert not Rollup.objects.filter(tenant=owner.tenant).exists()

    for name in ZONES:
        zone = ZoneInfo(name)
        body = check_dashboard(owner.client, world, zone)
        assert body["summary"]["total_queries"] == 40
        check_usage(owner.client, world, zone)
        check_queries(owner.client, world, zone)
        check_performance(owner.client, world, zone)
        check_metrics(owner.client, world, zone, "DAY", 3)

    # The job leaves the hour under way until it ends. Rows of it (an earlier version's job
    # built them every minute) are never read: no fact of the current hour is counted twice.
    assert services.rollups_build(now=NOW) == 0
    assert not Rollup.objects.filter(tenant=owner.tenant).exists()
    for stream in ("requests", "gateway", "queries", "support"):
        services.rollup_hours_rebuild(tenant_id=owner.tenant.pk, stream=stream, hours=[current])
    assert Rollup.objects.filter(tenant=owner.tenant, bucket_start=current).exists()
    check_dashboard(owner.client, world, ZoneInfo("UTC"))
    check_performance(owner.client, world, ZoneInfo("Europe/Paris"))
    # A fact arriving after the build shows at once too.
    world.queries.append(late_event(owner.client, NOW - timedelta(minutes=1), "just-now"))
    assert check_dashboard(owner.client, world, ZoneInfo("UTC"))["summary"]["total_queries"] == 41


def test_team_performance_matches_the_raw_tickets(owner):
    world = generate(owner.tenant, seed=4, sizes=(0, 0, 0, 60, 5))
    hours = {
        hour_of(moment)
        for t in world.tickets
        for moment in (t.created, t.responded, t.resolved)
        if moment
    }
    hours |= {hour_of(at) for at in world.escalations}
    services.rollup_hours_rebuild(tenant_id=owner.tenant.pk, stream="support", hours=hours)
    for name in ZONES:
        for period in ("DAY", "WEEK", "MONTH", "QUARTER"):
            check_team(owner.client, world, ZoneInfo(name), period)


def test_dashboard_sql_does_not_grow_with_the_data(owner):
    since = NOW - timedelta(days=2)

    def measure():
        get(owner.client, "dashboard", period="30d", tz="UTC")  # warm: token last use etc.
        counts = []
        for zone in ("UTC", "Europe/Paris"):
            with CaptureQueriesContext(connection) as captured:
                get(owner.client, "dashboard", period="30d", tz=zone)
            counts.append(len(captured))
        return counts

    small_sizes = (60, 30, 30, 6, 2)
    world = generate(owner.tenant, seed=2, sizes=small_sizes, start=since)
    rebuild(owner.tenant, since=since)
    small = measure()
    rows_small = Rollup.objects.filter(tenant=owner.tenant).count()

    # Nine times as much again: ten times the data.
    generate(owner.tenant, seed=3, sizes=[9 * n for n in small_sizes], world=world, start=since)
    rebuild(owner.tenant, since=since)
    assert Rollup.objects.filter(tenant=owner.tenant).count() > rows_small
    large = measure()

    assert large == small, (small, large)
    check_dashboard(owner.client, world, ZoneInfo("UTC"))
