"""Analytics: ingestion of query events (validation per event, idempotency, body errors,
permissions, parallel resends); the reports (permissions, query parameters, CSV, staff-only
resource usage, tenant isolation); request capture into RequestFact rows; the roll-up job
(cursor and overlap, day rows as the merge of hours, pruning, rebuilds, the management command
and the Celery tasks); the support-desk figures; the admin."""

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from analytics import capture, selectors, services, sketches, streams, tasks
from analytics.models import (
    Granularity,
    QueryEvent,
    RequestFact,
    Rollup,
    RollupState,
    Stream,
    StreamCursor,
)
from analytics.streams import retained_from
from support.models import Escalation, Ticket
from tenants.models import Role
from tenants.services import lifecycle
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, TenantFactory, UserFactory, issue_api_key
from tests.support.factories import EscalationFactory, RepresentativeFactory, TicketFactory

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/analytics/events"
REPORTS = "/api/v1/analytics/"
ORG = "/api/v1/organizations/current/"
ENDPOINTS = (
    "dashboard",
    "usage",
    "queries",
    "performance",
    "performance-metrics",
    "team-performance",
)

# A Wednesday in the past (the callers' tokens are issued at the real time, later).
NOW = datetime(2026, 11, 18, 10, 30, tzinfo=UTC)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def shown(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event(event_id: str, **fields) -> dict:
    """A valid query event of ten minutes before NOW."""
    return {
        "id": event_id,
        "type": "query",
        "timestamp": shown(NOW - timedelta(minutes=10)),
        "query_text": "  How   do I RESET my password ",
        "query_category": "account",
        "response_time": 1.25,
        "success": True,
        "satisfaction": 4,
        "tokens": 120,
        "cost_micros": 3_000,
        "user_ref": "end-user-1",
        "relevance_score": 0.8,
        "confidence_score": 0.6,
        **fields,
    }


def fact(event_id: str, occurred_at: datetime, **fields) -> dict:
    """QueryEvent fields as the view hands them to the service."""
    text = fields.pop("query_text", "how do i reset")
    return {
        "event_id": event_id,
        "occurred_at": occurred_at,
        "query_text": text,
        "normalized_text": text.lower(),
        "query_category": "account",
        "response_time_us": 500_000,
        "success": True,
        "error_category": "",
        "satisfaction": 4,
        "tokens": 10,
        "cost_micros": 1_000,
        "user_ref": "u1",
        "relevance_score": None,
        "confidence_score": None,
        **fields,
    }


def post(client, events):
    return client.post(EVENTS, {"events": events}, format="json")


def report(client, name, **params):
    return client.get(f"{REPORTS}{name}/", params)


def rows_of(tenant=None) -> set:
    rows = Rollup.objects.all() if tenant is None else Rollup.objects.filter(tenant=tenant)
    return {
        (
            str(row.tenant_id),
            row.stream,
            row.granularity,
            row.bucket_start,
            row.dimension,
            row.count,
            repr(sorted(row.measures.items())),
            repr(sorted(row.latency_histogram.items())),
            repr(sorted(row.users.items())),
        )
        for row in rows
    }


def without_generated_at(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "generated_at"}


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def _empty_request_counts():
    """Counted requests (Redis hashes or this process's buffer) start empty each test."""
    capture.request_counts().reset()
    yield
    capture.request_counts().reset()


def key_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw_key)
    return client


# Ingestion -------------------------------------------------------------------------------------


def test_a_valid_batch_is_stored_with_its_normalized_text(owner, clock):
    response = post(owner.client, [event("e-1"), event("e-2", success=False, error_category="x")])

    assert response.status_code == 200, response.content
    assert response.json() == {
        "received": 2,
        "accepted": 2,
        "duplicates": 0,
        "rejected": 0,
        "errors": [],
    }
    stored = {row.event_id: row for row in QueryEvent.objects.filter(tenant=owner.tenant)}
    assert set(stored) == {"e-1", "e-2"}
    first = stored["e-1"]
    assert first.normalized_text == "how do i reset my password"
    assert first.query_text == "How   do I RESET my password"  # trimmed
    assert first.occurred_at == NOW - timedelta(minutes=10)
    assert first.response_time_us == 1_250_000
    assert (first.satisfaction, first.tokens, first.cost_micros) == (4, 120, 3_000)
    assert (first.relevance_score, first.confidence_score) == (0.8, 0.6)
    assert stored["e-2"].success is False and stored["e-2"].error_category == "x"


def _without(name):
    def change(body):
        body.pop(name)
        return body

    return change


def _with(**fields):
    def change(body):
        body.update(fields)
        return body

    return change


INVALID = {
    "missing id": (_without("id"), "id"),
    "missing type": (_without("type"), "type"),
    "missing timestamp": (_without("timestamp"), "timestamp"),
    "type not query": (_with(type="click"), "type"),
    "satisfaction 0": (_with(satisfaction=0), "satisfaction"),
    "satisfaction 6": (_with(satisfaction=6), "satisfaction"),
    "negative tokens": (_with(tokens=-1), "tokens"),
    "cost over 2**53-1": (_with(cost_micros=2**53), "cost_micros"),
    "relevance over 1": (_with(relevance_score=1.01), "relevance_score"),
    "negative response time": (_with(response_time=-0.5), "response_time"),
    "future beyond 5 min": (
        _with(timestamp=shown(NOW + timedelta(minutes=5, seconds=1))),
        "timestamp",
    ),
    "older than retention": (
        _with(
            timestamp=shown(NOW - timedelta(days=settings.ANALYTICS_RAW_RETENTION_DAYS, seconds=1))
        ),
        "timestamp",
    ),
    "error category on success": (_with(error_category="timeout"), "error_category"),
    "control character": (_with(query_text="bell\x07"), "query_text"),
    "unknown field": (_with(colour="blue"), None),
}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_an_invalid_event_is_listed_and_the_valid_ones_stored(owner, clock, case):
    change, field = INVALID[case]
    bad = change(event("bad-1"))

    response = post(owner.client, [event("ok-1"), bad, event("ok-2")])

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["received"], body["accepted"], body["duplicates"], body["rejected"]) == (
        3,
        2,
        0,
        1,
    )
    [error] = body["errors"]
    assert error["index"] == 1
    assert error["id"] == bad.get("id")
    if field is not None:
        assert field in error["errors"], error
    assert set(
        QueryEvent.objects.filter(tenant=owner.tenant).values_list("event_id", flat=True)
    ) == {
        "ok-1",
        "ok-2",
    }


@pytest.mark.parametrize(
    "raw",
    [
        42,
        "event",
        ["a"],
        None,
    ],
)
def test_an_event_that_is_not_an_object_is_rejected(owner, clock, raw):
    response = post(owner.client, [raw, event("ok-1")])

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["errors"] == [{"index": 0, "id": None, "errors": {"event": ["Must be an object."]}}]


def test_the_edges_of_the_valid_ranges_are_accepted(owner, clock):
    edges = [
        event("a", timestamp=shown(NOW + timedelta(minutes=4, seconds=59))),
        # The oldest hour accepted is the first whose raw facts are all kept.
        event("b", timestamp=shown(retained_from(NOW))),
        event("c", satisfaction=1, relevance_score=1, confidence_score=0, response_time=0),
        event("d", satisfaction=5, cost_micros=2**53 - 1, tokens=0),
        event("e", satisfaction=None, success=False, error_category="timeout"),
    ]

    response = post(owner.client, edges)

    assert response.json()["accepted"] == 5, response.json()


def test_a_resent_batch_changes_nothing(owner, clock):
    post(owner.client, [event("e-1"), event("e-2")])
    before = list(QueryEvent.objects.values_list("id", "event_id", "query_text", "created_at"))

    response = post(owner.client, [event("e-1", query_text="other"), event("e-2"), event("e-3")])

    assert response.json() == {
        "received": 3,
        "accepted": 1,
        "duplicates": 2,
        "rejected": 0,
        "errors": [],
    }
    after = QueryEvent.objects.values_list("id", "event_id", "query_text", "created_at")
    assert set(before) < set(after)
    assert QueryEvent.objects.get(event_id="e-1").query_text == "How   do I RESET my password"
    assert QueryEvent.objects.count() == 3


def test_an_id_twice_in_one_batch_is_stored_once(owner, clock):
    response = post(owner.client, [event("e-1"), event("e-1", query_text="second")])

    assert response.json() == {
        "received": 2,
        "accepted": 1,
        "duplicates": 1,
        "rejected": 0,
        "errors": [],
    }
    assert QueryEvent.objects.get(event_id="e-1").query_text == "How   do I RESET my password"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"events": []},
        {"events": "e-1"},
        {"events": {"id": "e-1"}},
        {"events": None},
        [{"id": "e-1"}],
    ],
    ids=["no events", "empty", "string", "object", "null", "top-level list"],
)
def test_a_malformed_body_is_a_validation_error(owner, clock, body):
    response = owner.client.post(EVENTS, body, format="json")

    assert_envelope(response, 400, "VALIDATION_ERROR")
    assert not QueryEvent.objects.exists()


def test_a_batch_of_1001_events_is_refused_whole(owner, clock):
    response = post(owner.client, [event(f"e-{n}") for n in range(1001)])

    assert_envelope(response, 400, "VALIDATION_ERROR")
    assert not QueryEvent.objects.exists()


def test_a_batch_of_1000_events_is_accepted(owner, clock):
    response = post(owner.client, [event(f"e-{n}") for n in range(1000)])

    assert response.json()["accepted"] == 1000
    assert QueryEvent.objects.filter(tenant=owner.tenant).count() == 1000


def test_another_tenants_same_event_id_is_independent(owner, make_caller, clock):
    other = make_caller(Role.OWNER)
    post(owner.client, [event("shared", query_text="mine")])

    response = post(other.client, [event("shared", query_text="theirs")])

    assert response.json()["accepted"] == 1
    assert QueryEvent.objects.get(tenant=owner.tenant).query_text == "mine"
    assert QueryEvent.objects.get(tenant=other.tenant).query_text == "theirs"


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER, Role.BILLING, Role.DPO])
def test_roles_without_analytics_write_cannot_ingest(make_caller, clock, role):
    caller = make_caller(role)

    assert_envelope(post(caller.client, [event("e-1")]), 403, "INSUFFICIENT_PERMISSIONS")
    assert not QueryEvent.objects.exists()


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owner_and_admin_can_ingest(make_caller, clock, role):
    caller = make_caller(role)

    assert post(caller.client, [event("e-1")]).json()["accepted"] == 1


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [(("write",), True), (("analytics.write",), True), (("read",), False)],
)
def test_an_api_key_needs_a_write_scope_to_ingest(owner, clock, scopes, allowed):
    _, raw = issue_api_key(owner.membership, scopes=scopes)

    response = post(key_client(raw), [event("e-1")])

    if allowed:
        assert response.status_code == 200, response.content
        assert QueryEvent.objects.get().tenant_id == owner.tenant.pk
    else:
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
        assert not QueryEvent.objects.exists()


def test_ingestion_needs_authentication(owner, clock):
    client = APIClient()
    client.credentials(HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk))

    assert_envelope(post(client, [event("e-1")]), 401)
    assert not QueryEvent.objects.exists()


def _fire_in_parallel(caller, batch, threads):
    start = threading.Barrier(threads)
    results, failures = [], []

    def send():
        try:
            client = caller.client_for(caller.tenant.pk)
            start.wait(timeout=10)
            response = post(client, batch)
            results.append((response.status_code, response.json()))
        except Exception as error:
            failures.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not failures, failures
    assert [status for status, _ in results] == [200] * threads, results
    return [body for _, body in results]


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_batch_sent_in_parallel_stores_each_event_once(make_caller):
    caller = make_caller(Role.OWNER)
    batch = [event(f"p-{n}", timestamp=shown(datetime.now(UTC))) for n in range(20)]

    bodies = _fire_in_parallel(caller, batch, threads=5)

    stored = list(
        QueryEvent.objects.filter(tenant=caller.tenant).values_list("event_id", flat=True)
    )
    assert sorted(stored) == sorted(e["id"] for e in batch)
    for body in bodies:
        assert body["accepted"] + body["duplicates"] == len(batch), body


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_racing_copies_of_a_batch_accept_each_event_once_in_total(make_caller, monkeypatch):
    caller = make_caller(Role.OWNER)
    batch = [event(f"p-{n}", timestamp=shown(datetime.now(UTC))) for n in range(10)]
    threads = 4
    # Every copy has read which ids exist before any inserts: the race, made certain.
    checked = threading.Barrier(threads)
    manager = QueryEvent.objects
    original = manager.bulk_create

    def bulk_create(*args, **kwargs):
        with contextlib.suppress(threading.BrokenBarrierError):
            checked.wait(timeout=10)
        return original(*args, **kwargs)

    monkeypatch.setattr(manager, "bulk_create", bulk_create)

    bodies = _fire_in_parallel(caller, batch, threads=threads)

    assert QueryEvent.objects.filter(tenant=caller.tenant).count() == len(batch)
    assert sum(body["accepted"] for body in bodies) == len(batch), bodies
    assert sum(body["duplicates"] for body in bodies) == len(batch) * (threads - 1), bodies


# Reports ---------------------------------------------------------------------------------------


def test_a_billing_member_reads_every_report(make_caller, clock):
    caller = make_caller(Role.BILLING)

    for name in ENDPOINTS:
        response = report(caller.client, name)
        assert response.status_code == 200, (name, response.content[:300])


def test_a_member_whose_override_removes_analytics_read_is_refused(make_caller, clock):
    caller = make_caller(Role.MEMBER, permissions={"analytics": {"read": False}})

    for name in ENDPOINTS:
        assert_envelope(report(caller.client, name), 403, "INSUFFICIENT_PERMISSIONS")


def test_reports_need_authentication(owner, clock):
    client = APIClient()
    client.credentials(HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk))

    assert_envelope(report(client, "dashboard"), 401)


BAD_PARAMS = [
    ("dashboard", {"period": "2d"}),
    ("usage", {"days": "0"}),
    ("usage", {"days": "366"}),
    ("usage", {"granularity": "yearly"}),
    ("usage", {"granularity": "hourly", "days": "32"}),
    ("queries", {"limit": "101"}),
    ("queries", {"days": "abc"}),
    ("performance", {"tz": "Not/AZone"}),
    ("performance", {"tz": "Asia/Kolkata"}),
    ("dashboard", {"tz": "Asia/Kathmandu"}),
    ("performance-metrics", {"period": "WEEKLY"}),
    ("performance-metrics", {"offset": "-1"}),
    ("performance-metrics", {"limit": "0"}),
    ("team-performance", {"period": "day"}),
]


@pytest.mark.parametrize(
    ("name", "params"), BAD_PARAMS, ids=[f"{n}-{'-'.join(p.values())}" for n, p in BAD_PARAMS]
)
def test_bad_query_parameters_are_validation_errors(owner, clock, name, params):
    assert_envelope(report(owner.client, name, **params), 400, "VALIDATION_ERROR")


def test_an_hourly_usage_series_over_31_days_is_accepted(owner, clock):
    response = report(owner.client, "usage", granularity="hourly", days="31")

    assert response.status_code == 200, response.content[:300]
    assert len(response.json()["data"]) == 30 * 24 + 11


def test_a_whole_hour_zone_sets_where_days_begin(owner, clock):
    services.query_events_ingest(
        tenant=owner.tenant,
        events=[fact("late", utc(2026, 11, 17, 23, 30)), fact("early", utc(2026, 11, 17, 14))],
    )
    services.rollups_build()

    utc_days = report(owner.client, "usage", days="2").json()["data"]
    tokyo_days = report(owner.client, "usage", days="2", tz="Asia/Tokyo").json()["data"]

    assert [(d["date"], d["total_queries"]) for d in utc_days] == [
        ("2026-11-17", 2),
        ("2026-11-18", 0),
    ]
    # 14:00 UTC is 23:00 on the 17th in Tokyo; 23:30 UTC is 08:30 on the 18th.
    assert [(d["date"], d["total_queries"]) for d in tokyo_days] == [
        ("2026-11-17", 1),
        ("2026-11-18", 1),
    ]


def test_usage_as_csv_has_a_header_and_a_line_per_bucket(owner, clock):
    post(owner.client, [event("e-1"), event("e-2", user_ref="end-user-2")])

    response = report(owner.client, "usage", days="3", format="csv")

    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    lines = response.content.decode().splitlines()
    assert lines[0] == (
        "date,total_queries,unique_users,avg_response_time,requests,avg_request_time_ms,"
        "gateway_calls,tokens,cost_cents"
    )
    assert [line.split(",")[0] for line in lines[1:]] == ["2026-11-16", "2026-11-17", "2026-11-18"]
    today = lines[3].split(",")
    assert today[1:3] == ["2", "2"]
    assert today[3] == "1.25"
    assert today[8] == "1"  # 6,000 micros: 0.6 cent, rounded half-up


def test_queries_as_csv_has_a_header_and_a_line_per_query(owner, clock):
    post(
        owner.client,
        [
            event("e-1"),
            event("e-2", query_text="how do i reset my PASSWORD"),
            event("e-3", query_text="Billing address", query_category="billing"),
        ],
    )

    response = report(owner.client, "queries", format="csv")

    assert response["Content-Type"].startswith("text/csv")
    lines = response.content.decode().splitlines()
    assert lines[0] == (
        "query_text,query_category,execution_count,avg_response_time,avg_satisfaction,last_executed"
    )
    assert len(lines) == 3
    assert lines[1].startswith("how do i reset my password,account,2,1.25,4.0,")
    assert lines[2].startswith("billing address,billing,1,")


def test_the_queries_report_shows_failures_and_categories(owner, clock):
    post(
        owner.client,
        [
            event("e-1"),
            event("e-2", success=False, error_category="timeout", query_text="Slow one"),
            event("e-3", success=False, query_text="slow ONE", query_category=""),
        ],
    )

    body = report(owner.client, "queries", include_failed="true").json()
    plain = report(owner.client, "queries").json()

    assert body["failure_analysis"]["total_failures"] == 2
    assert body["failure_analysis"]["error_categories"] == {"other": 1, "timeout": 1}
    assert {f["id"] for f in body["failure_analysis"]["recent_failures"]} == {"e-2", "e-3"}
    assert body["categories"] == {"account": 2, "uncategorised": 1}
    assert {(q["query_text"], q["execution_count"]) for q in body["top_queries"]} == {
        ("how do i reset my password", 1),
        ("slow one", 2),
    }
    assert [q["query_text"] for q in plain["top_queries"]] == ["how do i reset my password"]


def test_resource_usage_is_for_staff_only(owner, staff_client, clock):
    mine = report(owner.client, "performance").json()
    staff = staff_client.get(f"{REPORTS}performance/", HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk))

    assert mine["resource_usage"] is None
    assert staff.status_code == 200, staff.content[:300]
    usage = staff.json()["resource_usage"]
    assert set(usage) == {"cpu_utilization", "memory_usage", "disk_usage"}
    assert 0 <= usage["disk_usage"] <= 100
    assert staff.json()["organization_id"] == str(owner.tenant.pk)


def test_another_tenants_figures_never_appear(owner, make_caller, clock):
    other = make_caller(Role.OWNER)
    post(other.client, [event("theirs-1"), event("theirs-2", query_text="secret plan")])
    post(owner.client, [event("mine-1", query_text="mine")])
    owner.client.get(ORG)
    other.client.get(ORG)
    capture.flush_request_facts()
    services.rollups_build()

    dashboard = report(owner.client, "dashboard").json()
    queries = report(owner.client, "queries").json()
    performance = report(owner.client, "performance").json()

    assert dashboard["summary"]["total_queries"] == 1
    assert [q["query_text"] for q in dashboard["top_queries"]] == ["mine"]
    assert [q["query_text"] for q in queries["top_queries"]] == ["mine"]
    # The owner's own POST and GET; none of the other tenant's.
    assert performance["requests"] == 2


def test_the_dashboard_merges_summary_costs_and_satisfaction(owner, clock):
    post(
        owner.client,
        [
            event("e-1", satisfaction=5, cost_micros=10_000, user_ref="a"),
            event("e-2", satisfaction=3, cost_micros=5_000, user_ref="b", response_time=0.75),
            event("e-3", satisfaction=None, cost_micros=0, user_ref="a", response_time=None),
            event("old", satisfaction=2, timestamp=shown(NOW - timedelta(days=40))),
        ],
    )
    services.rollups_build()

    body = report(owner.client, "dashboard", period="30d").json()

    assert body["summary"]["total_queries"] == 3
    assert body["summary"]["unique_users"] == 2
    assert body["summary"]["avg_response_time"] == 1.0
    assert body["summary"]["total_cost_cents"] == 2
    assert body["user_satisfaction"] == {
        "average_rating": 4.0,
        "previous_rating": 2.0,
        "trend": "improving",
    }
    assert len(body["daily_data"]) == 30
    assert body["daily_data"][-1]["date"] == "2026-11-18"
    assert body["daily_data"][-1]["usage"]["total_queries"] == 3


# Capture ---------------------------------------------------------------------------------------


def test_a_token_users_requests_are_counted(owner, clock):
    for _ in range(3):
        assert owner.client.get(ORG).status_code == 200

    assert capture.flush_request_facts() == 3

    [row] = RequestFact.objects.all()
    assert row.tenant_id == owner.tenant.pk
    assert row.route == ORG
    assert (row.method, row.status_code, row.count) == ("GET", 200, 3)
    assert row.credential_type == "token"
    assert row.principal == f"user:{owner.user.pk}"
    assert row.minute == utc(2026, 11, 18, 10, 30)
    assert sum(row.latency_histogram.values()) == 3


def test_an_api_keys_requests_are_counted(owner, clock):
    key, raw = issue_api_key(owner.membership, scopes=("read",))

    assert key_client(raw).get(ORG).status_code == 200
    capture.flush_request_facts()

    [row] = RequestFact.objects.all()
    assert (row.route, row.credential_type, row.principal) == (ORG, "api_key", f"key:{key.pk}")
    assert row.tenant_id == owner.tenant.pk


def test_refusals_within_the_tenant_are_counted_with_their_status(owner, make_caller, clock):
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    missing = "/api/v1/budgets/00000000-0000-0000-0000-000000000000/"

    assert owner.client.get(missing).status_code == 404
    assert post(member.client, [event("e-1")]).status_code == 403
    capture.flush_request_facts()

    found = {
        (row.route, row.method, row.status_code, row.principal)
        for row in RequestFact.objects.filter(tenant=owner.tenant)
    }
    assert ("/api/v1/budgets/{id}/", "GET", 404, f"user:{owner.user.pk}") in found
    [(route, _, status, principal)] = [row for row in found if row[1] == "POST"]
    assert route.startswith("/api/v1/analytics/events")
    assert (status, principal) == (403, f"user:{member.user.pk}")


def test_requests_outside_any_tenant_are_not_counted(owner, clock):
    anonymous = APIClient()
    anonymous.get("/health/")
    anonymous.get(ORG, HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk))
    anonymous.post(EVENTS, {"events": [event("e-1")]}, format="json")

    assert capture.flush_request_facts() == 0
    assert not RequestFact.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_organization_deleted_before_the_flush_does_not_stop_it(owner, make_caller, admin_user):
    """Requests counted for an organization that staff delete before the next flush: its rows
    failed the foreign key at the flush's commit, which put the batch back and failed again on
    every run, for every organization counted with it. (Committed transactions: the key is
    checked at the commit.)"""
    other = make_caller(Role.OWNER)
    assert owner.client.get(ORG).status_code == 200
    assert other.client.get(ORG).status_code == 200
    assert other.client.get(ORG).status_code == 200
    lifecycle.tenant_delete(tenant=owner.tenant, actor=admin_user)

    assert capture.flush_request_facts() == 2
    assert capture.flush_request_facts() == 0
    assert list(RequestFact.objects.values_list("tenant_id", "count")) == [(other.tenant.pk, 2)]


def test_capture_can_be_turned_off(owner, clock):
    with override_settings(ANALYTICS_CAPTURE_REQUESTS=False):
        owner.client.get(ORG)
        post(owner.client, [event("e-1")])

    assert capture.flush_request_facts() == 0
    assert not RequestFact.objects.exists()


def test_captured_requests_show_in_performance_after_the_roll_up(owner, clock):
    for _ in range(3):
        owner.client.get(ORG)
    owner.client.get("/api/v1/budgets/00000000-0000-0000-0000-000000000000/")
    capture.flush_request_facts()
    clock.move_to(NOW + timedelta(hours=2))

    assert services.rollups_build() == 1
    body = report(owner.client, "performance", days="1").json()

    assert body["requests"] == 4
    assert body["error_rates"] == {"4xx": 25.0, "5xx": 0.0}
    assert body["throughput"]["peak_rps"] == round(4 / 60, 3)
    assert body["response_times"]["p50"] is not None
    routes = {route["route"]: route for route in body["routes"]}
    assert routes[f"GET {ORG}"]["requests"] == 3
    assert routes[f"GET {ORG}"]["error_rate"] == 0.0
    assert routes["GET /api/v1/budgets/{id}/"]["error_rate"] == 100.0
    assert [route["requests"] for route in body["routes"]] == [3, 1]
    hour = Rollup.objects.get(
        tenant=owner.tenant,
        stream=Stream.REQUESTS,
        granularity=Granularity.HOUR,
        dimension="",
    )
    assert hour.bucket_start == utc(2026, 11, 18, 10)
    assert hour.count == 4
    assert hour.measures["errors_4xx"] == 1


# Roll-up job -----------------------------------------------------------------------------------


def _hour_rows(tenant) -> dict:
    return {
        row.bucket_start: row.count
        for row in Rollup.objects.filter(
            tenant=tenant, stream=Stream.QUERIES, granularity=Granularity.HOUR, dimension=""
        )
    }


def test_the_jobs_look_for_new_facts_is_served_by_an_index_on_their_time(db):
    """Every minute the job reads the facts recorded (or tickets changed) since its last run,
    across organizations: an index on that time, not the whole table (gateway calls and
    tickets had none: a scan of every call ever made, each minute)."""
    since = NOW
    scans = {
        "request_fact_created": streams._requests_touched(since),
        "query_event_created": streams._queries_touched(since),
        "gateway_call_created": streams._gateway_touched(since),
        "ticket_updated": Ticket.objects.filter(updated_at__gte=since).order_by(),
        "escalation_updated": Escalation.objects.filter(updated_at__gte=since).order_by(),
    }
    with connection.cursor() as cursor:
        # Empty tables read whole are cheapest; what matters is which index serves the scan.
        cursor.execute("SET LOCAL enable_seqscan = off")
    for index, scan in scans.items():
        assert index in scan.explain(), index


def test_the_job_rebuilds_only_hours_touched_since_its_cursor(owner, clock):
    tenant = owner.tenant
    services.query_events_ingest(
        tenant=tenant,
        events=[
            fact("a", utc(2026, 11, 18, 7, 5)),
            fact("b", utc(2026, 11, 18, 7, 50)),
            fact("c", utc(2026, 11, 18, 8, 15)),
        ],
    )

    assert services.rollups_build() == 2
    assert StreamCursor.objects.get(stream=Stream.QUERIES).position == NOW
    # Within the overlap the same facts are looked at again (harmless).
    assert services.rollups_build() == 2
    rows = rows_of(tenant)
    # Past the overlap, the facts recorded before the cursor's last position minus the
    # overlap are left alone: one run still sees them (cursor NOW), the next does not.
    clock.move_to(NOW + services.CURSOR_OVERLAP + timedelta(seconds=1))
    assert services.rollups_build() == 2
    clock.move_to(NOW + 2 * services.CURSOR_OVERLAP + timedelta(seconds=2))
    assert services.rollups_build() == 0
    assert rows_of(tenant) == rows

    services.query_events_ingest(tenant=tenant, events=[fact("d", utc(2026, 11, 18, 9, 40))])
    clock.move_to(NOW + 3 * services.CURSOR_OVERLAP + timedelta(seconds=3))

    assert services.rollups_build() == 1
    assert _hour_rows(tenant) == {
        utc(2026, 11, 18, 7): 2,
        utc(2026, 11, 18, 8): 1,
        utc(2026, 11, 18, 9): 1,
    }
    state = RollupState.objects.get(tenant=tenant)
    assert state.last_built_hour == utc(2026, 11, 18, 9)
    assert state.hours_built == 2 + 2 + 2 + 1


def _reads_of_the_hours_events(client) -> int:
    """How many statements one queries report makes that aggregate the hour's query events
    (those read their normalized text, not their text as the recent failures do)."""
    with CaptureQueriesContext(connection) as captured:
        assert report(client, "queries", days=1).status_code == 200
    return sum(
        1
        for query in captured.captured_queries
        if '"analytics_queryevent"."normalized_text"' in query["sql"]
        and '"analytics_queryevent"."query_text"' not in query["sql"]
    )


def test_the_current_hour_is_aggregated_again_only_once_it_holds_more_events(
    owner, clock, monkeypatch
):
    """A tenant's hour can hold 100,000 events (1,000 a request); each report aggregated them
    all again. A large hour is kept per process until it holds more events than it was made
    of (here from 3 events on, 1,000 in production)."""
    monkeypatch.setattr(selectors, "_KEPT_FROM_EVENTS", 3)
    post(owner.client, [event("e-0"), event("e-1")])
    assert _reads_of_the_hours_events(owner.client) == 1
    assert _reads_of_the_hours_events(owner.client) == 1  # a small hour: on each read

    post(owner.client, [event("e-2")])
    assert _reads_of_the_hours_events(owner.client) == 1
    assert _reads_of_the_hours_events(owner.client) == 0
    post(owner.client, [event("e-3", query_category="billing")])
    assert _reads_of_the_hours_events(owner.client) == 1
    body = report(owner.client, "queries", days=1).json()
    assert body["categories"] == {"account": 3, "billing": 1}
    assert body["top_queries"][0]["execution_count"] == 4


def test_the_hour_under_way_is_built_once_it_has_ended(owner, clock):
    """The reports aggregate the current hour from its raw facts, so the job leaves it until it
    ends rather than re-reading all of it every minute; then it builds it whole, with the
    facts recorded early in the hour that the cursor has long passed."""
    tenant = owner.tenant
    services.query_events_ingest(tenant=tenant, events=[fact("a", NOW - timedelta(minutes=25))])
    assert services.rollups_build() == 0
    cursor = StreamCursor.objects.get(stream=Stream.QUERIES)
    assert (cursor.position, cursor.open_hour) == (NOW, utc(2026, 11, 18, 10))

    clock.move_to(utc(2026, 11, 18, 10, 57))
    services.query_events_ingest(
        tenant=tenant,
        events=[
            fact("b", utc(2026, 11, 18, 10, 56)),
            # Stamped by a client whose clock runs ahead: the next hour, recorded in this one.
            fact("c", utc(2026, 11, 18, 11, 1)),
        ],
    )
    assert services.rollups_build() == 0
    assert _hour_rows(tenant) == {}
    assert StreamCursor.objects.get(stream=Stream.QUERIES).open_hour == utc(2026, 11, 18, 10)

    # Ended, not built yet: the reports read it from its raw facts until the job has run.
    clock.move_to(utc(2026, 11, 18, 11, 0, 30))
    assert report(owner.client, "queries", days=1).json()["categories"] == {"account": 3}
    assert services.rollups_build() == 1
    assert _hour_rows(tenant) == {utc(2026, 11, 18, 10): 2}
    assert StreamCursor.objects.get(stream=Stream.QUERIES).open_hour == utc(2026, 11, 18, 11)
    assert report(owner.client, "queries", days=1).json()["categories"] == {"account": 3}

    # Within the overlap behind its cursor the job builds hour 10 again (harmless); after it,
    # a run that sees nothing new keeps the hour still open.
    clock.move_to(utc(2026, 11, 18, 11, 40))
    assert services.rollups_build() == 1
    clock.move_to(utc(2026, 11, 18, 11, 50))
    assert services.rollups_build() == 0
    assert StreamCursor.objects.get(stream=Stream.QUERIES).open_hour == utc(2026, 11, 18, 11)
    # From 10 minutes before hour 11 began: "c", and "b" again.
    clock.move_to(utc(2026, 11, 18, 12, 0, 30))
    assert services.rollups_build() == 2
    assert _hour_rows(tenant) == {utc(2026, 11, 18, 10): 2, utc(2026, 11, 18, 11): 1}
    assert StreamCursor.objects.get(stream=Stream.QUERIES).open_hour is None
    day = Rollup.objects.get(
        tenant=tenant, stream=Stream.QUERIES, granularity=Granularity.DAY, dimension=""
    )
    assert day.count == 3


def test_a_stopped_job_shows_as_missing_hours_beyond_the_three_read_live(owner, clock):
    """The reports read from raw facts the hours the job has not built, but three at most: a
    job stopped for longer shows its lag in the figures rather than making every report
    aggregate its backlog; its next run brings the hours back."""
    tenant = owner.tenant
    assert services.rollups_build() == 0  # its cursor: hour 10 of NOW
    for hours_later in range(5):
        at = NOW + timedelta(hours=hours_later)
        services.query_events_ingest(tenant=tenant, events=[fact(f"h{hours_later}", at)])
    clock.move_to(NOW + timedelta(hours=4))  # hour 14; the job has not run since hour 10

    assert report(owner.client, "queries", days=1).json()["categories"] == {"account": 3}
    assert services.rollups_build() == 4
    assert report(owner.client, "queries", days=1).json()["categories"] == {"account": 5}


def test_a_late_event_rebuilds_its_own_hour(owner, clock):
    services.query_events_ingest(tenant=owner.tenant, events=[fact("a", utc(2026, 11, 17, 3))])
    services.rollups_build()
    clock.move_to(NOW + services.CURSOR_OVERLAP * 2)
    services.rollups_build()
    services.query_events_ingest(
        tenant=owner.tenant, events=[fact("late", utc(2026, 11, 10, 3, 20))]
    )

    assert services.rollups_build() == 1
    day = Rollup.objects.get(
        tenant=owner.tenant,
        stream=Stream.QUERIES,
        granularity=Granularity.DAY,
        bucket_start=utc(2026, 11, 10),
        dimension="",
    )
    assert day.count == 1


def test_day_rows_are_the_merge_of_their_hours(owner, clock):
    tenant = owner.tenant
    services.query_events_ingest(
        tenant=tenant,
        events=[
            fact("a", utc(2026, 11, 17, 1, 5), user_ref="u1", satisfaction=5),
            fact("b", utc(2026, 11, 17, 1, 6), user_ref="u2", response_time_us=2_000_000),
            fact("c", utc(2026, 11, 17, 13, 0), user_ref="u1", query_text="other"),
            fact("d", utc(2026, 11, 17, 23, 59), success=False, error_category="x"),
            fact("e", utc(2026, 11, 18, 0, 1), user_ref="u3"),
        ],
    )
    services.rollups_build()
    from analytics.aggregates import Aggregate

    days = Rollup.objects.filter(tenant=tenant, granularity=Granularity.DAY)
    assert days.exists()
    for day in days:
        hours = Rollup.objects.filter(
            tenant=tenant,
            stream=day.stream,
            granularity=Granularity.HOUR,
            dimension=day.dimension,
            bucket_start__gte=day.bucket_start,
            bucket_start__lt=day.bucket_start + timedelta(days=1),
        )
        merged = Aggregate()
        for hour in hours:
            merged.merge(Aggregate.of_row(hour))
        assert merged == Aggregate.of_row(day), day
    total = days.get(bucket_start=utc(2026, 11, 17), stream=Stream.QUERIES, dimension="")
    assert total.count == 4
    assert total.measures["succeeded"] == 3 and total.measures["failed"] == 1
    assert Aggregate.of_row(total).distinct_users == 2


def _named_rows(tenant, granularity, kind) -> dict:
    """{bucket_start: {value: count}} of one named kind's roll-up rows."""
    found: dict = {}
    rows = Rollup.objects.filter(
        tenant=tenant,
        stream=Stream.QUERIES,
        granularity=granularity,
        dimension__startswith=kind,
    )
    for row in rows:
        found.setdefault(row.bucket_start, {})[row.dimension[len(kind) :]] = row.count
    return found


@override_settings(ANALYTICS_VALUES_PER_KIND=3)
def test_a_bucket_keeps_only_the_most_frequent_values_the_tenant_names(owner, clock):
    """Query texts, categories and error categories are the tenant's to name, as many as it
    likes: each hour, day and month keeps the most frequent few (ties: the first in order),
    while the totals, and the failures the report counts from them, count every event."""
    tenant = owner.tenant
    first, second = utc(2026, 11, 17, 8, 5), utc(2026, 11, 17, 9, 5)
    facts = []
    # In the first hour: "alpha" 4 times, "bravo" 3, "charlie" and "delta" twice, then 20 texts
    # asked once, each in its own category, the last 10 failed with their own error category.
    for text, times in (("alpha", 4), ("bravo", 3), ("charlie", 2), ("delta", 2)):
        facts += [fact(f"{text}-{n}", first, query_text=text) for n in range(times)]
    for n in range(20):
        failed = {"success": False, "error_category": f"error-{n:02}"} if n >= 10 else {}
        facts.append(
            fact(f"once-{n}", first, query_text=f"once {n:02}", query_category=f"c{n:02}", **failed)
        )
    # In the second hour: "echo" 5 times, "delta" twice.
    facts += [fact(f"echo-{n}", second, query_text="echo") for n in range(5)]
    facts += [fact(f"delta-late-{n}", second, query_text="delta") for n in range(2)]
    services.query_events_ingest(tenant=tenant, events=facts)
    services.rollups_build()

    hours = _named_rows(tenant, Granularity.HOUR, "query:")
    assert hours[utc(2026, 11, 17, 8)] == {
        "account\x1falpha": 4,
        "account\x1fbravo": 3,
        "account\x1fcharlie": 2,
    }
    assert hours[utc(2026, 11, 17, 9)] == {"account\x1fecho": 5, "account\x1fdelta": 2}
    # The day merges what its hours kept: "delta"'s first two were cut in their hour.
    assert _named_rows(tenant, Granularity.DAY, "query:")[utc(2026, 11, 17)] == {
        "account\x1fecho": 5,
        "account\x1falpha": 4,
        "account\x1fbravo": 3,
    }
    for kind in ("query:", "query-failed:", "category:", "error:"):
        for granularity in (Granularity.HOUR, Granularity.DAY, Granularity.MONTH):
            for values in _named_rows(tenant, granularity, kind).values():
                assert len(values) <= 3, (kind, granularity, values)
    assert _named_rows(tenant, Granularity.HOUR, "error:")[utc(2026, 11, 17, 8)] == {
        "error-10": 1,
        "error-11": 1,
        "error-12": 1,
    }
    day = Rollup.objects.get(
        tenant=tenant, stream=Stream.QUERIES, granularity=Granularity.DAY, dimension=""
    )
    assert day.count == len(facts) == 38
    assert day.measures["failed"] == 10

    body = report(owner.client, "queries", days=7, include_failed="true").json()
    assert body["failure_analysis"]["total_failures"] == 10
    assert len(body["failure_analysis"]["error_categories"]) == 3
    assert body["categories"] == {"account": 18, "c00": 1, "c01": 1}
    assert [q["query_text"] for q in body["top_queries"][:3]] == ["echo", "alpha", "bravo"]


@override_settings(ANALYTICS_VALUES_PER_KIND=2)
def test_the_current_hour_keeps_the_same_values_as_its_roll_up_will(owner, clock):
    services.query_events_ingest(
        tenant=owner.tenant,
        events=[
            fact(f"e-{n}", NOW - timedelta(minutes=5), query_category=category)
            for n, category in enumerate(["b", "b", "a", "c", "c", "c", "d"])
        ],
    )

    live = report(owner.client, "queries", days=1).json()
    clock.move_to(NOW + timedelta(hours=1))
    services.rollups_build()
    hour = _named_rows(owner.tenant, Granularity.HOUR, "category:")

    assert live["categories"] == {"c": 3, "b": 2}
    assert hour == {utc(2026, 11, 18, 10): {"c": 3, "b": 2}}
    # A text is counted per category it was asked in: the ones cut with "a" and "d" too.
    assert live["top_queries"][0]["execution_count"] == 5


@override_settings(ANALYTICS_RAW_RETENTION_DAYS=2)
def test_pruning_deletes_old_raw_facts_and_keeps_their_figures(owner, clock):
    tenant = owner.tenant
    old = NOW - timedelta(days=1)
    clock.move_to(old)
    post(owner.client, [event("old", timestamp=shown(old))])
    owner.client.get(ORG)
    capture.flush_request_facts()
    services.rollups_build()
    clock.move_to(NOW)
    post(owner.client, [event("new")])
    services.rollups_build()
    # A day and a half later the first day's raw facts are past the retention of two days.
    clock.move_to(NOW + timedelta(days=1, hours=12))
    services.rollups_build()  # the hour of "new" has ended
    before = report(owner.client, "usage", days="7", granularity="daily").json()
    rollups = rows_of(tenant)

    deleted = services.raw_facts_prune()

    assert deleted == 3  # the old event, the POST's and the GET's request facts
    assert list(QueryEvent.objects.values_list("event_id", flat=True)) == ["new"]
    assert not RequestFact.objects.exists()
    assert rows_of(tenant) == rollups
    after = report(owner.client, "usage", days="7", granularity="daily").json()
    assert without_generated_at(after) == without_generated_at(before)
    assert sum(point["total_queries"] for point in after["data"]) == 2
    assert sum(point["requests"] for point in after["data"]) == 2
    # Neither the job nor a rebuild over the pruned range loses them.
    services.rollups_build()
    services.rollups_rebuild(since=old - timedelta(hours=1), tenant=tenant)
    assert rows_of(tenant) == rollups
    assert without_generated_at(
        report(owner.client, "usage", days="7", granularity="daily").json()
    ) == without_generated_at(before)


def test_an_event_accepted_at_the_edge_of_retention_is_counted(owner, clock):
    edge = retained_from(NOW)
    too_old = edge - timedelta(microseconds=1)
    body = post(
        owner.client, [event("edge", timestamp=shown(edge)), event("old", timestamp=shown(too_old))]
    ).json()
    assert (body["accepted"], body["rejected"]) == (1, 1)

    services.rollups_build()

    assert Rollup.objects.filter(
        tenant=owner.tenant, stream=Stream.QUERIES, granularity=Granularity.HOUR, dimension=""
    ).exists()


def test_a_rebuild_restores_identical_rows(owner, make_caller, clock):
    other = make_caller(Role.OWNER)
    for caller in (owner, other):
        services.query_events_ingest(
            tenant=caller.tenant,
            events=[
                fact("a", utc(2026, 11, 17, 9, 5)),
                fact("b", utc(2026, 11, 17, 22, 5), success=False, error_category="e"),
                fact("c", utc(2026, 11, 18, 10, 1)),
            ],
        )
    owner.client.get(ORG)
    capture.flush_request_facts()
    TicketFactory(tenant=owner.tenant)
    clock.move_to(NOW + timedelta(hours=1))  # the job builds an hour once it has ended
    services.rollups_build()
    everything = rows_of()
    assert everything

    Rollup.objects.all().delete()
    built = services.rollups_rebuild(since=utc(2026, 11, 17, 9, 45))

    # Only the hours holding facts: the owner's three of queries, one of requests and one of
    # the desk (the ticket), the other tenant's three of queries.
    assert built == 8
    assert rows_of() == everything

    Rollup.objects.filter(tenant=owner.tenant).delete()
    assert services.rollups_rebuild(since=utc(2026, 11, 17, 9), tenant=owner.tenant) == 5
    assert rows_of() == everything


# The management command and the tasks ----------------------------------------------------------

JAN_1 = utc(2026, 1, 1, 3, 30)


@pytest.fixture
def january(db):
    """A tenant with events in the first hours of the year, the clock just after them (so a
    rebuild from 1 January stays short)."""
    tenant = TenantFactory(slug="acme")
    with time_machine.travel(JAN_1, tick=False) as traveller:
        services.query_events_ingest(
            tenant=tenant,
            events=[fact("a", utc(2026, 1, 1, 0, 10)), fact("b", utc(2026, 1, 1, 2, 10))],
        )
        yield tenant, traveller


def run(*args) -> str:
    out = StringIO()
    call_command("rollup_analytics", *args, stdout=out)
    return out.getvalue()


def test_the_command_without_arguments_folds_in_new_facts(january):
    output = run()

    assert "2 hour(s) rebuilt from new facts." in output
    assert Rollup.objects.filter(stream=Stream.QUERIES, granularity=Granularity.HOUR).exists()


def test_the_command_since_a_date_rebuilds_every_hour(january):
    tenant, _ = january
    other = TenantFactory()

    output = run("--since", "2026-01-01")

    # The two hours holding the tenant's queries; the other tenant has no facts.
    assert "2 hour(s) rebuilt since 2026-01-01T00:00:00+00:00." in output
    rows = rows_of(tenant)
    Rollup.objects.all().delete()
    assert "2 hour(s) rebuilt" in run("--tenant", "acme", "--since", "2026-01-01T00:00")
    assert rows_of(tenant) == rows
    assert not Rollup.objects.filter(tenant=other).exists()
    assert "2 hour(s) rebuilt" in run("--tenant", str(tenant.pk), "--since", "2026-01-01")


def test_the_command_flushes_counted_requests(january, owner):
    owner.client.get(ORG)

    assert "1 counted request(s) written as facts." in run()
    assert RequestFact.objects.get().tenant_id == owner.tenant.pk


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "not an ISO date"),
        (("--since", "2026-02-01"), "future"),
        (("--tenant", "acme"), "--tenant needs --since"),
        (("--tenant", "nobody", "--since", "2026-01-01"), "No tenant"),
        (("--tenant", "not-a-uuid-or-slug!", "--since", "2026-01-01"), "No tenant"),
    ],
)
def test_the_command_refuses_bad_arguments(january, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not Rollup.objects.exists()


def test_the_tasks_do_what_the_services_do(january, owner):
    tenant, traveller = january
    owner.client.get(ORG)

    assert tasks.flush_request_facts() == 1
    # Two hours of queries; the request's hour is under way.
    assert tasks.build_rollups() == 2
    rows = rows_of(tenant)
    Rollup.objects.filter(tenant=tenant).delete()
    assert tasks.rebuild_rollups(str(tenant.pk), "2026-01-01T00:00:00+00:00") == 2
    assert rows_of(tenant) == rows
    assert tasks.rebuild_rollups("00000000-0000-0000-0000-000000000000", "2026-01-01") == 0

    traveller.move_to(JAN_1 + timedelta(days=settings.ANALYTICS_RAW_RETENTION_DAYS, hours=1))
    assert tasks.prune_raw_facts() == 3
    assert not QueryEvent.objects.exists() and not RequestFact.objects.exists()
    assert rows_of(tenant) == rows


# Support metrics -------------------------------------------------------------------------------


def _ticket(tenant, representative=None, *, created, responded=None, resolved=None, **fields):
    reopened = fields.pop("reopened_count", 0)
    ticket = TicketFactory(
        tenant=tenant,
        status="RESOLVED" if resolved else fields.pop("status", "OPEN"),
        **fields,
    )
    Ticket.objects.filter(pk=ticket.pk).update(
        assignee=representative,
        created_at=created,
        first_responded_at=responded,
        resolved_at=resolved,
        reopened_count=reopened,
    )
    return ticket


@pytest.fixture
def desk(owner, clock):
    """Three representatives with tickets this week (from Monday 16 November) and the last."""
    tenant = owner.tenant

    def representative(email, name):
        user = MembershipFactory(
            tenant=tenant, role=Role.MEMBER, user=UserFactory(email=email, name=name)
        ).user
        return RepresentativeFactory(tenant=tenant, user=user)

    ann = representative("ann@example.org", "Ann A")
    bob = representative("bob@example.org", "")
    cat = representative("cat@example.org", "Cat C")
    # Today, 18 November.
    _ticket(
        tenant,
        ann,
        created=utc(2026, 11, 18, 8),
        responded=utc(2026, 11, 18, 8, 10),
        resolved=utc(2026, 11, 18, 9),
        customer_satisfaction_score=5,
        ai_handled=True,
    )
    _ticket(
        tenant,
        ann,
        created=utc(2026, 11, 18, 8, 30),
        responded=utc(2026, 11, 18, 8, 50),
        resolved=utc(2026, 11, 18, 9, 30),
        customer_satisfaction_score=3,
        reopened_count=1,
    )
    _ticket(tenant, bob, created=utc(2026, 11, 18, 9), status="IN_PROGRESS")
    _ticket(tenant, created=utc(2026, 11, 18, 9, 15))
    escalation = EscalationFactory(tenant=tenant)
    Escalation.objects.filter(pk=escalation.pk).update(created_at=utc(2026, 11, 18, 9, 20))
    # Earlier this week, and last week.
    _ticket(tenant, cat, created=utc(2026, 11, 16, 9), resolved=utc(2026, 11, 17, 9))
    _ticket(tenant, ann, created=utc(2026, 11, 11, 9), resolved=utc(2026, 11, 11, 10))
    _ticket(tenant, bob, created=utc(2026, 11, 10, 9), resolved=utc(2026, 11, 11, 11))
    _ticket(tenant, bob, created=utc(2026, 11, 12, 9), resolved=utc(2026, 11, 12, 11))
    _ticket(tenant, cat, created=utc(2026, 11, 10, 8), resolved=utc(2026, 11, 10, 12))
    # Another tenant's desk never shows.
    _ticket(TenantFactory(), created=utc(2026, 11, 18, 8), resolved=utc(2026, 11, 18, 9))
    # Every ticket was written at NOW: the job rebuilds the hours they touch.
    services.rollups_build()
    return {"ann": ann, "bob": bob, "cat": cat}


def test_performance_metrics_per_day(owner, desk):
    body = report(owner.client, "performance-metrics", period="DAY", limit="3").json()

    assert (body["period"], body["limit"], body["offset"], body["time_zone"]) == (
        "DAY",
        3,
        0,
        "UTC",
    )
    today, yesterday, before = body["data"]
    assert today["period_start"] == "2026-11-18T00:00:00Z"
    assert today["period_end"] == "2026-11-18T23:59:59Z"
    assert {
        key: today[key] for key in today if key not in ("id", "period_start", "period_end")
    } == {
        "period": "DAY",
        "total_chats": 4,
        "active_chats": 2,
        "escalations": 1,
        "escalation_rate": "25.00",
        "avg_response_time": 900,
        "first_contact_resolution": "50.00",
        "customer_satisfaction": "4.00",
        "ai_resolution_rate": "50.00",
        "tickets_resolved": 2,
    }
    assert yesterday["period_start"] == "2026-11-17T00:00:00Z"
    assert (yesterday["total_chats"], yesterday["tickets_resolved"]) == (0, 1)
    assert yesterday["escalation_rate"] is None
    assert yesterday["first_contact_resolution"] == "100.00"
    assert yesterday["customer_satisfaction"] is None
    assert before["tickets_resolved"] == 0 and before["first_contact_resolution"] is None


def test_performance_metrics_per_week_and_offset(owner, desk):
    weeks = report(owner.client, "performance-metrics", period="WEEK", limit="2").json()["data"]
    skipped = report(
        owner.client, "performance-metrics", period="WEEK", limit="1", offset="1"
    ).json()["data"]

    assert [w["period_start"] for w in weeks] == ["2026-11-16T00:00:00Z", "2026-11-09T00:00:00Z"]
    assert [(w["total_chats"], w["tickets_resolved"]) for w in weeks] == [(5, 3), (4, 4)]
    assert skipped == [weeks[1]]


def test_team_performance_this_week_against_the_last(owner, desk):
    body = report(owner.client, "team-performance").json()

    assert body["period"] == "WEEK"
    by_email = {row["representative"]["user"]["email"]: row for row in body["data"]}
    assert list(by_email) == ["ann@example.org", "bob@example.org", "cat@example.org"]
    ann = by_email["ann@example.org"]
    assert ann["representative"] == {
        "id": str(desk["ann"].pk),
        "user": {"name": "Ann A", "email": "ann@example.org"},
    }
    assert ann["representative_id"] == str(desk["ann"].pk)
    assert ann["period_start"] == "2026-11-16T00:00:00Z"
    assert (ann["tickets_handled"], ann["resolution_rate"], ann["trend"]) == (2, "50.00", "UP")
    assert (ann["customer_satisfaction"], ann["avg_response_time"]) == ("4.00", 900)
    bob = by_email["bob@example.org"]
    assert (bob["tickets_handled"], bob["resolution_rate"], bob["trend"]) == (0, None, "DOWN")
    assert bob["representative"]["user"]["name"] == "bob@example.org"
    cat = by_email["cat@example.org"]
    assert (cat["tickets_handled"], cat["trend"]) == (1, "STABLE")


def test_support_figures_of_another_tenant_never_appear(make_caller, desk, clock):
    stranger = make_caller(Role.OWNER)

    body = report(stranger.client, "performance-metrics", limit="1").json()

    assert body["data"][0]["total_chats"] == 0
    assert report(stranger.client, "team-performance").json()["data"] == []


# Admin -----------------------------------------------------------------------------------------


def test_the_roll_up_state_changelist_and_its_rebuild_action(admin_client, owner, monkeypatch):
    with time_machine.travel(datetime.now(UTC).replace(minute=30), tick=False):
        services.query_events_ingest(
            tenant=owner.tenant,
            events=[fact("a", datetime.now(UTC) - timedelta(hours=2))],
        )
        services.rollups_build()
        rows = rows_of(owner.tenant)
        Rollup.objects.all().delete()
        state = RollupState.objects.get(tenant=owner.tenant)
        queued = []

        def delay(*args):
            queued.append(args)
            return tasks.rebuild_rollups.apply(args=args)

        monkeypatch.setattr(tasks.rebuild_rollups, "delay", delay)
        monkeypatch.setattr(settings, "ANALYTICS_RAW_RETENTION_DAYS", 1)

        changelist = admin_client.get("/admin/analytics/rollupstate/")
        assert changelist.status_code == 200
        assert owner.tenant.name in changelist.content.decode()
        assert "rebuild" in changelist.content.decode()

        response = admin_client.post(
            "/admin/analytics/rollupstate/",
            {"action": "rebuild", "_selected_action": [str(state.pk)]},
            follow=True,
        )

    assert response.status_code == 200
    assert "Rebuild queued for 1 tenant(s)." in response.content.decode()
    assert [args[0] for args in queued] == [str(owner.tenant.pk)]
    assert rows_of(owner.tenant) == rows


@pytest.mark.parametrize("model", ["rollup", "queryevent", "rollupstate"])
def test_the_analytics_admin_is_read_only(admin_client, owner, clock, model):
    services.query_events_ingest(tenant=owner.tenant, events=[fact("a", NOW)])
    services.rollups_build()

    changelist = admin_client.get(f"/admin/analytics/{model}/")

    assert changelist.status_code == 200
    assert f"/admin/analytics/{model}/add/" not in changelist.content.decode()
    assert admin_client.get(f"/admin/analytics/{model}/add/").status_code == 403


def test_dimensions_that_share_their_first_255_characters_merge_into_one_row(owner, clock):
    long_route = "/api/v1/" + "x" * 300
    services.request_facts_write(
        facts=[
            {
                "tenant_id": owner.tenant.pk,
                "minute": utc(2026, 11, 18, 9, 5),
                "route": (long_route + suffix)[:255],
                "method": "GET",
                "status_code": 200,
                "credential_type": "token",
                "principal": "user:1",
                "count": 2,
                "latency_us_total": 4000,
                "latency_histogram": {"50": 2},
            }
            for suffix in ("a", "b")
        ]
    )

    assert services.rollups_build() == 1

    routes = Rollup.objects.filter(
        tenant=owner.tenant, granularity=Granularity.HOUR, dimension__startswith="route:"
    )
    assert [(len(row.dimension), row.count) for row in routes] == [(255, 4)]


def test_a_rebuild_drops_the_rows_of_hours_whose_facts_are_gone(owner, clock):
    services.query_events_ingest(
        tenant=owner.tenant,
        events=[fact("gone", utc(2026, 11, 16, 7, 5)), fact("kept", utc(2026, 11, 17, 8, 5))],
    )
    services.rollups_build()
    assert Rollup.objects.filter(tenant=owner.tenant, stream=Stream.QUERIES).count() > 0
    QueryEvent.objects.filter(tenant=owner.tenant, event_id="gone").delete()

    assert services.rollups_rebuild(since=utc(2026, 11, 16), tenant=owner.tenant) == 1

    starts = set(
        Rollup.objects.filter(tenant=owner.tenant, stream=Stream.QUERIES, dimension="").values_list(
            "granularity", "bucket_start"
        )
    )
    assert starts == {
        (Granularity.HOUR, utc(2026, 11, 17, 8)),
        (Granularity.DAY, utc(2026, 11, 17)),
        (Granularity.MONTH, utc(2026, 11, 1)),
    }
    month = Rollup.objects.get(
        tenant=owner.tenant, stream=Stream.QUERIES, dimension="", granularity=Granularity.MONTH
    )
    assert month.count == 1


def test_a_month_row_is_the_merge_of_its_days_and_follows_a_late_fact(owner, clock):
    """Month rows serve the whole months of a long range: each is rebuilt with its days, so
    a late fact in an ended month reaches it."""
    services.query_events_ingest(
        tenant=owner.tenant,
        events=[
            fact("oct-a", utc(2026, 10, 30, 7, 5), user_ref="u1"),
            fact("oct-b", utc(2026, 10, 31, 23, 59), user_ref="u2"),
            fact("nov-a", utc(2026, 11, 1, 0, 0), user_ref="u1"),
        ],
    )
    services.rollups_build()

    def month_and_days(month_start, next_month):
        rows = Rollup.objects.filter(tenant=owner.tenant, stream=Stream.QUERIES)
        month = {
            r.dimension: r
            for r in rows.filter(granularity=Granularity.MONTH, bucket_start=month_start)
        }
        days: dict = {}
        for row in rows.filter(
            granularity=Granularity.DAY,
            bucket_start__gte=month_start,
            bucket_start__lt=next_month,
        ):
            days.setdefault(row.dimension, []).append(row)
        return month, days

    month, days = month_and_days(utc(2026, 10, 1), utc(2026, 11, 1))
    assert set(month) == set(days)
    for dimension, row in month.items():
        assert row.count == sum(day.count for day in days[dimension])
    assert month[""].count == 2
    assert sketches.sketch_count(month[""].users) == 2

    services.query_events_ingest(
        tenant=owner.tenant, events=[fact("oct-late", utc(2026, 10, 2, 9, 0), user_ref="u9")]
    )
    services.rollups_build()
    month, _ = month_and_days(utc(2026, 10, 1), utc(2026, 11, 1))
    assert month[""].count == 3
    assert sketches.sketch_count(month[""].users) == 3


def test_the_month_migration_builds_the_month_rows_the_job_builds(owner, clock):
    """Roll-ups stored before month rows existed get them from their day rows (analytics
    0003), the same rows the job builds."""
    from importlib import import_module

    from django.apps import apps

    migration = import_module("analytics.migrations.0003_rollup_months")
    services.query_events_ingest(
        tenant=owner.tenant,
        events=[
            fact("a", utc(2026, 10, 30, 7, 5), user_ref="u1"),
            fact("b", utc(2026, 10, 31, 23, 59), user_ref="u2", success=False),
            fact("c", utc(2026, 11, 1, 0, 0), user_ref="u1"),
        ],
    )
    services.rollups_build()
    months = Rollup.objects.filter(granularity=Granularity.MONTH)

    def rows():
        return sorted(
            (
                r.stream,
                r.bucket_start,
                r.dimension,
                r.count,
                repr(sorted(r.measures.items())),
                repr(sorted(r.latency_histogram.items())),
                sketches.sketch_count(r.users),
            )
            for r in months
        )

    built = rows()
    assert len(built) > 4
    months.delete()

    migration.build_month_rows(apps, None)

    assert rows() == built
