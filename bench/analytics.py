"""Analytics: reports from roll-ups against the same answers computed from the raw facts,
ingestion against a bare bulk insert, and the request-path cost of capture.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/analytics.py \
        [--requests 1000000] [--queries 200000] [--rounds 5] [--calls 100] [--capture-rounds 31]

(a) One tenant with `--requests` request facts (one request each) and `--queries` query events
spread over 90 days, built into roll-ups; measured at a tenth of that size and at full size.
The dashboard (90 days) and performance figures from the roll-ups (analytics.selectors, what
the endpoints serve) against a naive computation of the same figures from the raw rows in SQL
(`percentile_cont` for the percentiles, GROUP BY per day, COUNT(DISTINCT) for users), same
database, same run, median of `--rounds`, after a VACUUM ANALYZE of the tables (what
autovacuum does soon after a load this size). Target: roll-ups >= 20x faster, and their time
independent of the number of facts (full/tenth close to 1).
(b) Ingestion: `POST analytics/events` in batches of 1,000 against a bare `bulk_create` of the
same rows. Target: >= 0.5x the events per second.
(c) Capture: `GET organizations/current` with request capture on against off, interleaved in
short rounds. Target: capture costs <= 3 % of a request (ratio >= 0.97).
PostgreSQL only (percentile_cont, generate_series).
"""

import argparse
import statistics
import time
from datetime import timedelta

from common import (
    bench_owner,
    describe_environment,
    interleaved,
    interleaved_samples,
    medians,
    paired_ratio,
    rate_line,
    setup_django,
)

ROUTES = [
    "/api/v1/organizations/current/",
    "/api/v1/tickets/",
    "/api/v1/chat/completions/",
    "/api/v1/audit/events/",
]
TEXTS = [f"question number {n}" for n in range(200)]
CATEGORIES = ["finance", "hr", "legal", "technical"]


def _timed(fn, rounds: int) -> tuple[float, object]:
    times, answer = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        answer = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), answer


def _insert_facts(tenant_id, now, requests: int, queries: int, offset: int) -> None:
    """Generated in the database (generate_series): a lognormal-ish latency around 20 ms."""
    from django.db import connection

    from analytics.sketches import GAMMA

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO analytics_requestfact (id, created_at, updated_at, tenant_id, minute,
                route, method, status_code, credential_type, principal, count,
                latency_us_total, latency_histogram)
            SELECT gen_random_uuid(), %(now)s, %(now)s, %(tenant)s,
                date_trunc('minute', %(now)s::timestamptz - random() * interval '90 days'),
                (%(routes)s::text[])[1 + floor(random() * 4)::int], 'GET',
                CASE WHEN random() < 0.02 THEN 500 WHEN random() < 0.06 THEN 404 ELSE 200 END,
                'token', 'user:' || floor(random() * 50)::int, 1, lat,
                jsonb_build_object(ceil(ln(lat / 1000.0) / ln(%(gamma)s))::int::text, 1)
            FROM (SELECT (exp(3 + 1.2 * (random() + random() + random() - 1.5)) * 1000)::bigint
                  AS lat FROM generate_series(1, %(n)s)) AS generated
            """,
            {"now": now, "tenant": tenant_id, "routes": ROUTES, "gamma": GAMMA, "n": requests},
        )
        cursor.execute(
            """
            INSERT INTO analytics_queryevent (id, created_at, updated_at, tenant_id, event_id,
                occurred_at, query_text, normalized_text, query_category, response_time_us,
                success, error_category, satisfaction, tokens, cost_micros, user_ref,
                relevance_score, confidence_score)
            SELECT gen_random_uuid(), %(now)s, %(now)s, %(tenant)s, 'bench-' || (g + %(offset)s),
                %(now)s::timestamptz - random() * interval '90 days', t, t,
                (%(categories)s::text[])[1 + floor(random() * 4)::int],
                (200000 + random() * 2000000)::bigint, ok, CASE WHEN ok THEN '' ELSE 'timeout' END,
                CASE WHEN random() < 0.4 THEN 1 + floor(random() * 5)::int END,
                floor(random() * 2000)::int, floor(random() * 20000)::int,
                'u' || floor(random() * 5000)::int, random(), random()
            FROM (SELECT g, (%(texts)s::text[])[1 + floor(random() * 200)::int] AS t,
                         random() > 0.05 AS ok FROM generate_series(1, %(n)s) AS g) AS generated
            """,
            {
                "now": now,
                "tenant": tenant_id,
                "texts": TEXTS,
                "categories": CATEGORIES,
                "n": queries,
                "offset": offset,
            },
        )


def _vacuum() -> None:
    """What autovacuum does soon after a bulk load (its insert threshold): statistics for the
    planner and the visibility map that index-only scans need. Both sides get it."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("analytics_requestfact", "analytics_queryevent", "analytics_rollup"):
            cursor.execute(f"VACUUM ANALYZE {table}")


def _naive(tenant, start, now):
    """The dashboard's and performance's figures straight from the raw rows: every figure
    the two reports show (the gateway's too, though the benchmark has no calls)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                   (ORDER BY latency_us_total),
                   count(*) FILTER (WHERE status_code BETWEEN 400 AND 499),
                   count(*) FILTER (WHERE status_code >= 500)
               FROM analytics_requestfact WHERE tenant_id = %s AND minute >= %s""",
            [tenant.pk, start],
        )
        performance = cursor.fetchone()
        cursor.execute(
            """SELECT max(n) FROM (SELECT sum(count) AS n FROM analytics_requestfact
               WHERE tenant_id = %s AND minute >= %s GROUP BY minute) AS per_minute""",
            [tenant.pk, start],
        )
        peak = cursor.fetchone()
        cursor.execute(
            """SELECT date_trunc('day', occurred_at), count(*), count(DISTINCT user_ref),
                   avg(response_time_us), sum(cost_micros), avg(satisfaction),
                   count(*) FILTER (WHERE success), avg(relevance_score), avg(confidence_score)
               FROM analytics_queryevent WHERE tenant_id = %s AND occurred_at >= %s
               GROUP BY 1 ORDER BY 1""",
            [tenant.pk, start],
        )
        daily = cursor.fetchall()
        cursor.execute(
            """SELECT count(*), count(DISTINCT user_ref), avg(response_time_us),
                   sum(cost_micros), avg(satisfaction)
               FROM analytics_queryevent WHERE tenant_id = %s AND occurred_at >= %s""",
            [tenant.pk, start],
        )
        summary = cursor.fetchone()
        cursor.execute(
            """SELECT normalized_text, count(*), avg(response_time_us), avg(satisfaction),
                   max(occurred_at)
               FROM analytics_queryevent WHERE tenant_id = %s AND occurred_at >= %s AND success
               GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10""",
            [tenant.pk, start],
        )
        top = cursor.fetchall()
        # The category each top query was asked in most.
        cursor.execute(
            """SELECT DISTINCT ON (normalized_text) normalized_text, query_category
               FROM analytics_queryevent
               WHERE tenant_id = %s AND occurred_at >= %s AND success
                 AND normalized_text = ANY(%s)
               GROUP BY 1, 2 ORDER BY 1, count(*) DESC, 2""",
            [tenant.pk, start, [row[0] for row in top]],
        )
        cursor.fetchall()
        # The previous period's satisfaction (the trend).
        cursor.execute(
            """SELECT avg(satisfaction) FROM analytics_queryevent
               WHERE tenant_id = %s AND occurred_at >= %s - (%s - %s) AND occurred_at < %s""",
            [tenant.pk, start, now, start, start],
        )
        cursor.fetchone()
        # The busiest routes' percentiles and error rates.
        cursor.execute(
            """SELECT method, route, count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99])
                   WITHIN GROUP (ORDER BY latency_us_total),
                   count(*) FILTER (WHERE status_code >= 400)
               FROM analytics_requestfact WHERE tenant_id = %s AND minute >= %s
               GROUP BY 1, 2 ORDER BY 3 DESC, 2 LIMIT 10""",
            [tenant.pk, start],
        )
        routes = cursor.fetchall()
        # The gateway's calls: counts, tokens, cost per model, percentiles.
        cursor.execute(
            """SELECT model, count(*), sum(total_tokens), sum(cost_micros),
                   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms)
               FROM playground_gatewaycall WHERE tenant_id = %s AND created_at >= %s
               GROUP BY 1""",
            [tenant.pk, start],
        )
        cursor.fetchall()
    return performance, peak, daily, summary, top, routes


def reports(requests: int, queries: int, rounds: int) -> None:
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    from analytics import selectors, services
    from analytics.models import QueryEvent, RequestFact, Rollup

    _, tenant, _ = bench_owner()
    utc = ZoneInfo("UTC")
    now = timezone.now()
    window = selectors.last_days(90, utc, now)
    results = {}
    inserted = (0, 0)
    for label, target in (("tenth", 10), ("full", 1)):
        want = (requests // target, queries // target)
        started = time.perf_counter()
        _insert_facts(tenant.pk, now, want[0] - inserted[0], want[1] - inserted[1], inserted[1])
        inserted = want
        generated = time.perf_counter() - started
        started = time.perf_counter()
        services.rollups_rebuild(since=now - timedelta(days=91), tenant=tenant, now=now)
        built = time.perf_counter() - started
        _vacuum()

        def from_rollups():
            return (
                selectors.dashboard(tenant, days=90, period="90d", tz=utc, now=now),
                selectors.performance(tenant, days=90, tz=utc, include_resources=False, now=now),
            )

        def from_raw():
            return _naive(tenant, window.start, now)

        rolled, (dashboard, performance) = _timed(from_rollups, rounds)
        raw, (naive_performance, _, _, naive_summary, _, naive_routes) = _timed(from_raw, rounds)
        assert dashboard["summary"]["total_queries"] == naive_summary[0], "same queries"
        assert performance["requests"] == naive_performance[0], "same requests"
        assert [route["requests"] for route in performance["routes"]] == [
            row[2] for row in naive_routes
        ], "same busiest routes"
        exact_p95 = naive_performance[1][1] / 1000
        results[label] = rolled
        print(
            f"  {label:5}: {RequestFact.objects.filter(tenant=tenant).count():>9,} request facts,"
            f" {QueryEvent.objects.filter(tenant=tenant).count():>8,} query events,"
            f" {Rollup.objects.filter(tenant=tenant).count():>7,} roll-up rows"
            f" (generated in {generated:.1f} s, rolled up in {built:.1f} s)"
        )
        print(
            f"         roll-ups {rolled * 1000:8.1f} ms   raw SQL {raw * 1000:9.1f} ms"
            f"   raw/roll-ups {raw / rolled:7.1f}x  (target >= 20x)"
        )
        print(
            f"         p95 {performance['response_times']['p95']:.2f} ms from the histogram,"
            f" {exact_p95:.2f} ms exact (percentile_cont, interpolated)"
        )
    print(f"  roll-up time full/tenth: {results['full'] / results['tenth']:.2f} (target ~ 1)")


def ingestion(rounds: int) -> None:
    from django.test import Client

    from analytics.models import QueryEvent
    from analytics.serializers import normalized_query
    from tenants.models import Tenant

    tenant = Tenant.objects.get(slug="bench-org")
    from accounts.services import auth_token_issue

    token = auth_token_issue(user=tenant.memberships.first().user)
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_X_ORGANIZATION_ID=str(tenant.pk))
    from django.utils import timezone

    stamp = timezone.now().isoformat()
    counter = iter(range(10**9))

    def batch():
        return [
            {
                "id": f"ingest-{next(counter)}",
                "type": "query",
                "timestamp": stamp,
                "query_text": TEXTS[n % 200],
                "query_category": "finance",
                "response_time": 0.8,
                "satisfaction": 4,
                "tokens": 100,
                "cost_micros": 1200,
                "user_ref": f"u{n}",
            }
            for n in range(1000)
        ]

    def post():
        response = client.post("/api/v1/analytics/events", {"events": batch()}, "application/json")
        assert response.status_code == 200 and response.json()["accepted"] == 1000

    def bare():
        QueryEvent.objects.bulk_create(
            [
                QueryEvent(
                    tenant=tenant,
                    event_id=e["id"],
                    occurred_at=timezone.now(),
                    query_text=e["query_text"],
                    normalized_text=normalized_query(e["query_text"]),
                    query_category=e["query_category"],
                    response_time_us=800_000,
                    satisfaction=4,
                    tokens=100,
                    cost_micros=1200,
                    user_ref=e["user_ref"],
                )
                for e in batch()
            ],
            batch_size=1000,
        )

    samples = interleaved_samples({"api": post, "bare": bare}, calls=3, rounds=rounds)
    seconds = medians(samples)
    print(
        f"  POST analytics/events: {1000 / seconds['api']:9,.0f} events/s;"
        f" bare bulk_create: {1000 / seconds['bare']:9,.0f} events/s;"
        f" ratio {paired_ratio(samples, 'bare', 'api'):.2f}x (target >= 0.5x)"
    )


def capture(calls: int, rounds: int) -> None:
    from django.conf import settings
    from django.db.models import Sum
    from django.test import Client

    from accounts.services import auth_token_issue
    from analytics.capture import flush_request_facts
    from analytics.models import RequestFact
    from tenants.models import Tenant

    tenant = Tenant.objects.get(slug="bench-org")
    token = auth_token_issue(user=tenant.memberships.first().user)
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_X_ORGANIZATION_ID=str(tenant.pk))
    url = "/api/v1/organizations/current"

    def variant(on: bool):
        def get():
            settings.ANALYTICS_CAPTURE_REQUESTS = on
            response = client.get(url)
            assert response.status_code == 200, response.content

        return get

    variants = {"on": variant(True), "off": variant(False)}
    interleaved(variants, calls=max(calls // 5, 20), rounds=1)  # warm up
    flush_request_facts()
    RequestFact.objects.filter(tenant=tenant, route__startswith="/api/v1/organizations").delete()
    samples = interleaved_samples(variants, calls=calls, rounds=rounds)
    flush_request_facts()
    captured = RequestFact.objects.filter(
        tenant=tenant, route="/api/v1/organizations/current/"
    ).aggregate(n=Sum("count"))["n"]
    seconds = medians(samples)
    ratio = paired_ratio(samples, "off", "on")
    print(rate_line("capture off (baseline)", seconds["off"]))
    print(rate_line("capture on            ", seconds["on"]))
    print(
        f"  capture cost per request: {(seconds['on'] - seconds['off']) * 1e6:6.0f} us;"
        f" ratio on/off (paired) {ratio:.3f} (target >= 0.97);"
        f" captured {captured} of {calls * rounds} requests"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--capture-rounds", type=int, default=31)
    args = parser.parse_args()
    teardown = setup_django(urlconf="bench.urls")
    try:
        from django.conf import settings

        settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["analytics"] = "100000000/min"
        print(f"analytics: {describe_environment()}")
        print("(a) reports: roll-ups against raw SQL")
        reports(args.requests, args.queries, args.rounds)
        print("(b) ingestion")
        ingestion(args.rounds)
        print("(c) request capture")
        capture(args.calls, args.capture_rounds)
    finally:
        teardown()


if __name__ == "__main__":
    main()
