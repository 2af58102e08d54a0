"""GET gateway/metrics: the gateway's tokens by model today and this month, cost, calls and a
daily series, read from the analytics roll-ups of the calls: checked against a direct
computation over generated call records (month and day boundaries, the hour under way, an hour
that has ended but is not built yet, another organization's calls), against a real call
through the gateway, with a number of statements that does not grow with the calls; its
validation and permission."""

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics import services
from analytics.models import Rollup
from playground.models import CallStatus, GatewayCall
from tenants.models import Role
from tests.conftest import assert_envelope, rows_read
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/gateway/metrics/"
# A Monday, the day after a month began: a week's series reaches into the previous month.
NOW = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MODELS = ["gpt-4", "gpt-3.5-turbo", "claude-3-opus"]
STATUSES = [CallStatus.SUCCEEDED] * 8 + [CallStatus.FAILED, CallStatus.CANCELLED]


def hour_of(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def moments(rng, n, start):
    """Each UTC midnight and hour boundary in range and the microsecond before it, some in
    the hour under way, the rest anywhere from `start` to NOW."""
    fixed = []
    moment = hour_of(start) + HOUR
    while moment < NOW:
        if moment.hour in (0, 9, 10) or moment == hour_of(NOW):
            fixed += [moment, moment - timedelta(microseconds=1)]
        moment += HOUR
    span = int((NOW - start).total_seconds() * 1e6)
    live = [hour_of(NOW) + timedelta(seconds=rng.randrange(1, 1800)) for _ in range(5)]
    rest = [start + timedelta(microseconds=rng.randrange(span)) for _ in range(n)]
    return fixed + live + rest


def add_calls(tenant, rng, n, start, *, model=None, tokens=True) -> list[GatewayCall]:
    rows, times = [], moments(rng, n, start)
    for _ in times:
        prompt = rng.randint(0, 2_000) if tokens else 0
        completion = rng.randint(0, 800) if tokens else 0
        rows.append(
            GatewayCall(
                tenant=tenant,
                requested_model=model or rng.choice(MODELS),
                model=model or rng.choice(MODELS),
                provider="local",
                status=CallStatus.FAILED if not tokens else rng.choice(STATUSES),
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cost_micros=rng.randint(0, 90_000) if tokens else 0,
                latency_ms=rng.randint(1, 9_000),
                time_to_first_token_ms=rng.choice([None, rng.randint(5, 900)]),
            )
        )
    created = GatewayCall.objects.bulk_create(rows)
    # created_at is auto_now_add: set it to when each call happened.
    for row, at in zip(created, times, strict=True):
        row.created_at = at
    GatewayCall.objects.bulk_update(created, ["created_at"])
    return created


def expected(calls, days: int, now=NOW) -> dict:
    """The metrics computed directly from the call records (UTC days)."""
    today = now.date()
    month = [c for c in calls if c.created_at < now and c.created_at.date() >= today.replace(day=1)]
    daily, by_model = defaultdict(int), defaultdict(int)
    for call in month:
        by_model[call.model] += call.total_tokens
        if call.created_at.date() == today:
            daily[call.model] += call.total_tokens
    series = defaultdict(lambda: {"tokens": 0, "calls": 0, "failed": 0, "cost_micros": 0})
    first = today - timedelta(days=days - 1)
    for call in calls:
        if first <= call.created_at.date() and call.created_at < now:
            day = series[call.created_at.date().isoformat()]
            day["tokens"] += call.total_tokens
            day["calls"] += 1
            day["failed"] += call.status == CallStatus.FAILED
            day["cost_micros"] += call.cost_micros
    return {
        "date": today.isoformat(),
        "daily": {name: tokens for name, tokens in sorted(daily.items()) if tokens},
        "monthly": {
            "total": sum(c.total_tokens for c in month),
            "by_model": dict(sorted(by_model.items())),
            "cost_micros": sum(c.cost_micros for c in month),
            "calls": len(month),
        },
        "daily_series": [{"date": day, **series[day]} for day in sorted(series)],
    }


def metrics(client, **params) -> dict:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body.pop("currency") == "USD"
    return body


def check(client, tenant, calls, days_list=(1, 7, 30, 90), now=NOW):
    for days in days_list:
        body = metrics(client, days=days)
        assert body.pop("organization_id") == str(tenant.pk)
        assert body == expected(calls, days, now), days


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def test_the_metrics_match_the_raw_calls_before_and_after_the_job_runs(owner, clock):
    rng = random.Random(7)
    calls = add_calls(owner.tenant, rng, 300, NOW - timedelta(days=95))
    # A model whose calls this month all failed before any token: in the month, not today's.
    calls += add_calls(owner.tenant, rng, 3, NOW - DAY, model="o1-mini", tokens=False)
    other = TenantFactory()
    add_calls(other, rng, 50, NOW - timedelta(days=10))
    assert {c.created_at.month for c in calls} >= {12, 1, 2, 3}
    assert any(hour_of(c.created_at) == hour_of(NOW) for c in calls)

    # Nothing built: the roll-ups are empty, the last three hours are read from the calls.
    recent = [c for c in calls if c.created_at >= hour_of(NOW) - 2 * HOUR]
    assert len(recent) < len([c for c in calls if c.created_at.date() == NOW.date()])
    check(owner.client, owner.tenant, recent, (1,))
    # Built from the calls (the rebuild command), then by the job, which moves its cursor.
    services.rollups_rebuild(since=NOW - timedelta(days=100), now=NOW)
    check(owner.client, owner.tenant, calls)
    assert services.rollups_build(now=NOW) >= 0
    check(owner.client, owner.tenant, calls)

    # A call recorded now shows at once (its hour is read live).
    calls += add_calls(owner.tenant, rng, 0, hour_of(NOW))
    check(owner.client, owner.tenant, calls, (1,))


def test_an_hour_that_ended_shows_before_the_job_builds_it(owner, clock):
    rng = random.Random(11)
    calls = add_calls(owner.tenant, rng, 40, NOW - timedelta(days=3))
    services.rollups_rebuild(since=NOW - timedelta(days=4), now=NOW)
    services.rollups_build(now=NOW)
    # Calls late in hour 10, then the hour ends; the job's next run is still to come.
    late = NOW.replace(minute=59)
    clock.move_to(late)
    calls += add_calls(owner.tenant, rng, 0, hour_of(late))
    calls += [
        GatewayCall.objects.create(
            tenant=owner.tenant,
            requested_model="gpt-4",
            model="gpt-4",
            provider="local",
            status=CallStatus.SUCCEEDED,
            prompt_tokens=1_000,
            completion_tokens=234,
            total_tokens=1_234,
            cost_micros=5_000,
        )
    ]
    after = hour_of(NOW) + HOUR + timedelta(seconds=20)
    clock.move_to(after)
    check(owner.client, owner.tenant, calls, (1, 7), now=after)
    # Built by the job: the same figures, now from the rows.
    assert services.rollups_build(now=after) >= 1
    check(owner.client, owner.tenant, calls, (1, 7), now=after)


def test_a_call_through_the_gateway_shows_in_the_metrics_at_once(owner):
    before = metrics(owner.client)
    response = owner.client.post(
        "/api/v1/chat/completions",
        {"model": "gpt-4", "messages": [{"role": "user", "content": "Count my tokens, please."}]},
        format="json",
    )
    assert response.status_code == 200, response.content
    usage = response.json()["usage"]
    call = GatewayCall.objects.get(tenant=owner.tenant)

    body = metrics(owner.client)
    assert before["monthly"]["calls"] == 0
    assert call.total_tokens == usage["total_tokens"] > 0
    assert body.pop("organization_id") == str(owner.tenant.pk)
    # The same direct computation as for generated calls, at the read's moment (one made just
    # before a UTC midnight is yesterday's by then).
    assert body == expected([call], 7, now=timezone.now())


def _statements(client) -> int:
    with CaptureQueriesContext(connection) as captured:
        metrics(client, days=90)
    return len(captured.captured_queries)


def test_the_statements_of_a_read_do_not_grow_with_the_calls(make_caller, clock):
    small, large = make_caller(Role.OWNER), make_caller(Role.OWNER)
    rng = random.Random(3)
    add_calls(small.tenant, rng, 2, NOW - timedelta(days=2))
    add_calls(large.tenant, rng, 600, NOW - timedelta(days=89))
    services.rollups_rebuild(since=NOW - timedelta(days=91), now=NOW)
    services.rollups_build(now=NOW)
    _statements(small.client), _statements(large.client)  # sessions and caches warmed
    assert _statements(large.client) == _statements(small.client)


@pytest.mark.postgres
def test_a_read_takes_the_range_from_roll_up_rows_and_only_the_live_hour_from_the_calls(
    owner, clock
):
    """What keeps a read's cost from growing with the calls, in the plans: the calls table is
    read for the hour under way alone, and the roll-ups for one row per day (or hour of today)
    and value at most, never every hour of the range."""
    rng = random.Random(5)
    calls = add_calls(owner.tenant, rng, 400, NOW - timedelta(days=89))
    services.rollups_rebuild(since=NOW - timedelta(days=91), now=NOW)
    services.rollups_build(now=NOW)
    with CaptureQueriesContext(connection) as captured:
        metrics(owner.client, days=90)
    statements = [q["sql"] for q in captured.captured_queries]

    live = sum(1 for call in calls if call.created_at >= hour_of(NOW))
    calls_table = GatewayCall._meta.db_table
    read = [rows_read(sql, calls_table) for sql in statements if calls_table in sql]
    assert read and sum(read) == live, (read, live)

    rollups_table = Rollup._meta.db_table
    read = [rows_read(sql, rollups_table) for sql in statements if rollups_table in sql]
    hour_rows = Rollup.objects.filter(tenant=owner.tenant, granularity="hour").count()
    # At most two rows per day of the range or hour of today (the series reads its total's;
    # the month's and today's, this month's rows of every dimension, through the range index)
    # where the range's hour rows alone are over ten times that.
    bound = 2 * (90 + hour_of(NOW).hour)
    assert len(read) == 3 and max(read) <= bound, (read, bound)
    assert hour_rows > 10 * bound, hour_rows


@pytest.mark.parametrize("days", ["0", "91", "-1", "seven", "1.5", "9" * 40])
def test_days_out_of_range_is_a_clear_error(owner, days):
    response = owner.client.get(URL, {"days": days})
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "days" in str(error["details"])


def test_reading_the_metrics_needs_the_gateway_read_permission(make_caller):
    billing = make_caller(Role.BILLING)  # analytics.read, not playground.read
    assert_envelope(billing.client.get(URL), 403, "INSUFFICIENT_PERMISSIONS")
    viewer = make_caller(Role.VIEWER)
    assert viewer.client.get(URL).status_code == 200


def test_the_calls_templates_of_an_hour_are_read_unsorted(owner):
    """The executions' own order (newest first) would sort the hour's executions for a dict."""
    from analytics import streams
    from playground.models import PromptExecution

    with CaptureQueriesContext(connection) as captured:
        streams._gateway_hour(owner.tenant.pk, hour_of(NOW), hour_of(NOW) + timedelta(hours=1))

    table = PromptExecution._meta.db_table
    [statement] = [q["sql"] for q in captured.captured_queries if f'FROM "{table}"' in q["sql"]]
    assert "ORDER BY" not in statement
