"""Quotas: exact counting in one atomic step, limits from plan and settings, warnings once per
period, resets (service, endpoint, beat task, command), and 50 parallel requests against 10."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from audit.models import AuditEvent
from config.exceptions import QuotaExceeded
from tenants import api_call_store
from tenants.models import MembershipStatus, PlanTier, QuotaCounter, Tenant
from tenants.plans import MIB, first_of_next_month, plan_limits, tenant_limits
from tenants.services.quotas import (
    api_calls_sync,
    quota_consume,
    quota_release,
    quota_reset,
    quota_states,
    quotas_reset_due,
    with_live_api_calls,
)
from tenants.tasks import reset_due_quotas, sync_api_call_counters
from tests.conftest import assert_envelope, token_for
from tests.factories import MembershipFactory, TenantFactory, issue_api_key

pytestmark = pytest.mark.django_db

QUOTAS_URL = "/api/v1/organizations/quotas"
ORG_URL = "/api/v1/organizations/current"


def used(tenant, resource="api_calls") -> int:
    """The live figure (api_calls: Redis, where the suite runs)."""
    return quota_states(Tenant.objects.get(pk=tenant.pk))[resource].current


def stored(tenant, resource="api_calls") -> int:
    row = QuotaCounter.objects.filter(tenant=tenant, resource=resource).first()
    return row.used if row else 0


def events(tenant, event_type):
    return AuditEvent.objects.filter(tenant=tenant, event_type=event_type)


def limited(caller, **settings):
    Tenant.objects.filter(pk=caller.tenant.pk).update(settings=settings)
    caller.tenant.refresh_from_db()


# Counting each request -------------------------------------------------------------------


def test_each_tenant_scoped_request_counts_one_api_call(owner):
    for expected in (1, 2, 3):
        assert owner.client.get(ORG_URL).status_code == 200
        assert used(owner.tenant) == expected


def test_api_key_requests_count_against_the_keys_tenant(owner):
    _, raw = issue_api_key(owner.membership)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)

    assert client.get(ORG_URL).status_code == 200
    assert client.get(QUOTAS_URL).status_code == 200

    assert used(owner.tenant) == 2


def test_platform_requests_and_staff_operators_do_not_count(owner, staff_client):
    owner.client.get("/api/v1/tenants/")
    owner.client.get(f"/api/v1/tenants/{owner.tenant.slug}/quota/")
    staff_client.get(ORG_URL, HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk))

    assert used(owner.tenant) == 0


def test_at_the_limit_the_request_is_refused_and_nothing_more_is_counted(owner):
    limited(owner, maxApiCallsPerMonth=3)
    for _ in range(3):
        assert owner.client.get(ORG_URL).status_code == 200

    refused = owner.client.get(ORG_URL)
    again = owner.client.get(QUOTAS_URL)

    error = assert_envelope(refused, 429, "QUOTA_EXCEEDED")
    resets_at = owner.tenant.quota_reset_at.isoformat().replace("+00:00", "Z")
    assert error["details"] == {
        "resource": "api_calls",
        "limit": 3,
        "used": 3,
        "requested": 1,
        "resets_at": resets_at,
    }
    assert_envelope(again, 429, "QUOTA_EXCEEDED")
    assert used(owner.tenant) == 3


def test_refused_requests_change_nothing(owner):
    limited(owner, maxApiCallsPerMonth=1)
    owner.client.get(ORG_URL)

    response = owner.client.patch(ORG_URL, {"name": "Renamed"}, format="json")

    assert_envelope(response, 429, "QUOTA_EXCEEDED")
    owner.tenant.refresh_from_db()
    assert owner.tenant.name != "Renamed"


def test_a_tenant_without_counters_gets_them_on_first_use(owner):
    QuotaCounter.objects.filter(tenant=owner.tenant).delete()

    assert owner.client.get(ORG_URL).status_code == 200

    assert used(owner.tenant) == 1


@pytest.mark.redis
def test_counting_api_calls_writes_nothing_to_the_database_on_redis(owner):
    assert api_call_store.store() is not None
    owner.client.get(ORG_URL)

    with CaptureQueriesContext(connection) as captured:
        owner.client.get(ORG_URL)

    assert all(q["sql"].lstrip().startswith("SELECT") for q in captured)
    assert used(owner.tenant) == 2


@pytest.mark.redis
def test_the_organization_shows_the_count_its_request_made_without_reading_it_again(
    owner, monkeypatch
):
    reads = []
    live = api_call_store.RedisApiCallStore.live
    monkeypatch.setattr(
        api_call_store.RedisApiCallStore,
        "live",
        lambda store, tenants: reads.append(list(tenants)) or live(store, tenants),
    )
    api_call_store.store().seed(owner.tenant, 41)

    first = owner.client.get(ORG_URL).json()
    second = owner.client.get(ORG_URL).json()

    assert (first["api_quota_used"], second["api_quota_used"]) == (42, 43)
    assert reads == [[], []]


@pytest.mark.redis
def test_a_reading_of_another_period_is_not_used(owner):
    api_call_store.store().seed(owner.tenant, 5)
    tenant = Tenant.objects.with_quota_usage().get(pk=owner.tenant.pk)
    period = api_call_store.period_of(tenant)

    stale = with_live_api_calls([tenant], known={(tenant.pk, period - 1): 99})[0].api_calls_used
    current = with_live_api_calls([tenant], known={(tenant.pk, period): 7})[0].api_calls_used

    assert (stale, current) == (5, 7)


def test_without_redis_api_calls_are_one_conditional_update(owner, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    owner.client.get(ORG_URL)

    with CaptureQueriesContext(connection) as captured:
        owner.client.get(ORG_URL)

    writes = [q["sql"] for q in captured if not q["sql"].lstrip().startswith("SELECT")]
    assert len(writes) == 1
    assert writes[0].split()[:2] == ["UPDATE", QuotaCounter._meta.db_table]
    assert "SET used = used + " in writes[0]
    assert stored(owner.tenant) == 2


@pytest.mark.redis
def test_live_counters_are_copied_to_the_database_by_the_sync(owner):
    for _ in range(3):
        owner.client.get(ORG_URL)
    assert stored(owner.tenant) == 0

    assert sync_api_call_counters() == 1

    assert stored(owner.tenant) == 3
    assert sync_api_call_counters() == 0  # nothing changed since


@pytest.mark.redis
def test_the_sync_command_copies_the_live_counters(owner):
    owner.client.get(ORG_URL)
    out = StringIO()

    call_command("sync_api_call_counters", stdout=out)

    assert "Copied 1 api_calls counter(s)." in out.getvalue()
    assert stored(owner.tenant) == 1


def test_a_lost_live_counter_continues_from_the_database(owner):
    for _ in range(4):
        owner.client.get(ORG_URL)
    api_calls_sync()
    cache.clear()  # Redis restarted or evicted the key

    owner.client.get(ORG_URL)

    assert used(owner.tenant) == 5


def test_the_sync_does_not_write_a_counter_of_a_reset_period(owner):
    for _ in range(4):
        owner.client.get(ORG_URL)
    quota_reset(tenant=owner.tenant, actor=None)

    api_calls_sync()

    assert stored(owner.tenant) == 0
    assert used(owner.tenant) == 0


# The consume service ----------------------------------------------------------------------


def test_consume_adds_and_refuses_past_the_limit_without_counting():
    tenant = TenantFactory(settings={"maxDocuments": 5})

    assert quota_consume(tenant=tenant, resource="documents", amount=3) == 3
    with pytest.raises(QuotaExceeded) as refused:
        quota_consume(tenant=tenant, resource="documents", amount=3)
    assert quota_consume(tenant=tenant, resource="documents", amount=2) == 5

    assert refused.value.details == {
        "resource": "documents",
        "limit": 5,
        "used": 3,
        "requested": 3,
    }
    assert used(tenant, "documents") == 5


def test_consume_rolls_back_with_the_callers_transaction():
    tenant = TenantFactory()

    with pytest.raises(RuntimeError), transaction.atomic():
        quota_consume(tenant=tenant, resource="tokens", amount=500)
        raise RuntimeError("the caller's change failed")

    assert used(tenant, "tokens") == 0


def test_limits_follow_the_plan_and_the_settings():
    free = TenantFactory(plan=PlanTier.FREE)
    pro = TenantFactory(plan=PlanTier.PRO, settings={"maxStorageMB": 10, "maxUsers": 4})

    assert tenant_limits(free) == plan_limits(PlanTier.FREE)
    assert tenant_limits(pro)["storage"] == 10 * MIB
    assert tenant_limits(pro)["users"] == 4
    assert tenant_limits(pro)["tokens"] == plan_limits(PlanTier.PRO)["tokens"]


def test_storage_is_counted_in_bytes_against_the_mb_limit():
    tenant = TenantFactory(settings={"maxStorageMB": 1})

    quota_consume(tenant=tenant, resource="storage", amount=MIB - 1)
    with pytest.raises(QuotaExceeded):
        quota_consume(tenant=tenant, resource="storage", amount=2)
    quota_consume(tenant=tenant, resource="storage", amount=1)

    assert used(tenant, "storage") == MIB


def test_release_gives_back_and_never_goes_below_zero():
    tenant = TenantFactory()
    quota_consume(tenant=tenant, resource="documents", amount=4)

    assert quota_release(tenant=tenant, resource="documents", amount=3) == 1
    assert quota_release(tenant=tenant, resource="documents", amount=5) == 0


def test_api_calls_are_not_given_back():
    with pytest.raises(ValueError, match="api_calls are not given back"):
        quota_release(tenant=TenantFactory(), resource="api_calls", amount=1)


@pytest.mark.parametrize("resource", ["users", "bananas"])
def test_only_counted_resources_can_be_consumed(resource):
    with pytest.raises(ValueError, match="not a counted quota resource"):
        quota_consume(tenant=TenantFactory(), resource=resource)


def test_negative_amounts_are_refused():
    with pytest.raises(ValueError):
        quota_consume(tenant=TenantFactory(), resource="tokens", amount=-1)


# Warnings ---------------------------------------------------------------------------------


def test_crossing_the_warning_threshold_records_one_event_per_period():
    tenant = TenantFactory(settings={"maxTokensPerMonth": 100})

    quota_consume(tenant=tenant, resource="tokens", amount=79)
    assert not events(tenant, "quota.warning").exists()
    quota_consume(tenant=tenant, resource="tokens", amount=1)
    quota_consume(tenant=tenant, resource="tokens", amount=10)

    warnings = list(events(tenant, "quota.warning"))
    assert len(warnings) == 1
    assert warnings[0].payload == {
        "resource": "tokens",
        "used": 80,
        "limit": 100,
        "warning_threshold": 80.0,
    }

    quota_reset(tenant=tenant, actor=None)
    quota_consume(tenant=tenant, resource="tokens", amount=85)
    assert events(tenant, "quota.warning").count() == 2


def test_the_warning_threshold_comes_from_settings(settings):
    settings.QUOTA_WARNING_THRESHOLD = 50.0
    tenant = TenantFactory(settings={"maxDocuments": 10})

    quota_consume(tenant=tenant, resource="documents", amount=5)

    assert events(tenant, "quota.warning").get().payload["warning_threshold"] == 50.0


# What the API shows -----------------------------------------------------------------------


def test_organization_quotas_have_one_object_per_resource(owner):
    MembershipFactory(tenant=owner.tenant)
    MembershipFactory(tenant=owner.tenant, status=MembershipStatus.SUSPENDED)
    limited(owner, maxDocuments=500, maxStorageMB=5000)
    quota_consume(tenant=owner.tenant, resource="documents", amount=127)
    quota_consume(tenant=owner.tenant, resource="storage", amount=2400 * MIB)

    body = owner.client.get(QUOTAS_URL).json()

    assert set(body) == {
        "organization_id", "documents", "users", "tokens", "storage", "api_calls",
        "quota_reset_at", "last_reset_at", "updated_at",
    }  # fmt: skip
    assert body["organization_id"] == str(owner.tenant.pk)
    assert body["documents"] == {
        "resource": "documents",
        "current": 127,
        "limit": 500,
        "percentage": 25.4,
        "warning_threshold": 80.0,
        "exceeded": False,
    }
    assert body["storage"]["current"] == 2400
    assert body["storage"]["limit"] == 5000
    assert body["storage"]["percentage"] == 48.0
    assert body["users"]["current"] == 2  # active members only
    assert body["users"]["limit"] == 3
    assert body["api_calls"]["current"] == 1  # this request
    assert body["quota_reset_at"] == first_of_next_month().isoformat().replace("+00:00", "Z")


def test_exceeded_is_true_at_the_limit():
    tenant = TenantFactory(settings={"maxDocuments": 2})
    quota_consume(tenant=tenant, resource="documents", amount=2)

    state = quota_states(tenant)["documents"]

    assert (state.current, state.limit, state.percentage, state.exceeded) == (2, 2, 100.0, True)


def test_tenant_quota_is_flat(owner):
    Tenant.objects.filter(pk=owner.tenant.pk).update(plan=PlanTier.PRO)
    owner.tenant.refresh_from_db()
    quota_consume(tenant=owner.tenant, resource="tokens", amount=50_000)
    quota_consume(tenant=owner.tenant, resource="storage", amount=1024 * MIB + 512 * MIB)

    body = owner.client.get(f"/api/v1/tenants/{owner.tenant.slug}/quota/").json()

    assert body["ai_tokens_used"] == 50_000
    assert body["ai_tokens_limit"] == 200_000
    assert body["ai_tokens_percentage"] == 25.0
    assert body["storage_used_gb"] == 1.5
    assert body["storage_limit_gb"] == round(5000 / 1024, 2)
    assert body["max_users"] == 10
    assert body["current_users"] == 1
    assert body["api_calls_limit"] == 100_000
    assert {"quota_reset_at", "last_reset_at", "api_calls_used"} <= set(body)


# Resets -----------------------------------------------------------------------------------


def test_reset_restarts_periodic_counters_and_keeps_stock_levels():
    tenant = TenantFactory()
    quota_consume(tenant=tenant, resource="api_calls", amount=7)
    quota_consume(tenant=tenant, resource="tokens", amount=900)
    quota_consume(tenant=tenant, resource="documents", amount=4)

    moment = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    with time_machine.travel(moment, tick=False):
        quota_reset(tenant=tenant, actor=None)

    tenant.refresh_from_db()
    assert (used(tenant, "api_calls"), used(tenant, "tokens"), used(tenant, "documents")) == (
        0,
        0,
        4,
    )
    assert tenant.last_reset_at == moment
    assert tenant.quota_reset_at == datetime(2026, 4, 1, tzinfo=UTC)
    event = events(tenant, "quota.reset").get()
    assert event.payload == {
        "trigger": "manual",
        "previous_usage": {"api_calls": 7, "tokens": 900},
        "next_reset_at": "2026-04-01T00:00:00+00:00",
    }


def test_due_resets_touch_only_due_tenants_and_set_the_next_reset():
    now = datetime(2026, 12, 1, 0, 3, tzinfo=UTC)
    due = TenantFactory(quota_reset_at=datetime(2026, 12, 1, tzinfo=UTC))
    later = TenantFactory(quota_reset_at=datetime(2027, 1, 1, tzinfo=UTC))
    for tenant in (due, later):
        quota_consume(tenant=tenant, resource="api_calls", amount=5)

    assert quotas_reset_due(now=now) == [due.slug]

    due.refresh_from_db()
    assert due.quota_reset_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert due.last_reset_at == now
    assert used(due) == 0
    assert used(later) == 5
    assert events(due, "quota.reset").get().payload["trigger"] == "scheduled"


def test_running_the_due_reset_twice_resets_once():
    now = datetime(2026, 12, 1, 0, 3, tzinfo=UTC)
    tenant = TenantFactory(quota_reset_at=datetime(2026, 12, 1, tzinfo=UTC))
    quota_consume(tenant=tenant, resource="api_calls", amount=5)

    assert quotas_reset_due(now=now) == [tenant.slug]
    tenant.refresh_from_db()  # requests load the tenant, with its new period
    quota_consume(tenant=tenant, resource="api_calls", amount=2)
    assert quotas_reset_due(now=now) == []

    assert used(tenant) == 2
    assert events(tenant, "quota.reset").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_resets_at_once_reset_each_tenant_once():
    now = datetime(2026, 12, 1, 0, 3, tzinfo=UTC)
    tenants = [TenantFactory(quota_reset_at=datetime(2026, 12, 1, tzinfo=UTC)) for _ in range(5)]
    barrier = threading.Barrier(2)

    def run():
        try:
            barrier.wait()
            return quotas_reset_due(now=now)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(run), pool.submit(run)]]

    assert sorted(results[0] + results[1]) == sorted(t.slug for t in tenants)
    assert AuditEvent.objects.filter(event_type="quota.reset").count() == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.redis
def test_a_sync_waiting_on_a_reset_does_not_copy_the_ended_period():
    tenant = TenantFactory()
    for _ in range(4):
        quota_consume(tenant=tenant, resource="api_calls")
    synced = []

    def sync():
        try:
            synced.append(api_calls_sync())
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool, transaction.atomic():
        quota_reset(tenant=tenant, actor=None)
        # The sync claims the old period's counter and waits for the reset's locks.
        waiting = pool.submit(sync)
        with pytest.raises(TimeoutError):
            waiting.result(timeout=0.5)
    waiting.result(timeout=10)

    assert synced == [0]
    assert stored(tenant) == 0


def test_the_beat_task_resets_due_quotas():
    tenant = TenantFactory(quota_reset_at=datetime(2020, 1, 1, tzinfo=UTC))
    quota_consume(tenant=tenant, resource="tokens", amount=10)

    assert reset_due_quotas() == [tenant.slug]

    assert used(tenant, "tokens") == 0


def test_reset_quota_endpoint_is_for_staff(owner, staff_client):
    quota_consume(tenant=owner.tenant, resource="tokens", amount=10)
    url = f"/api/v1/tenants/{owner.tenant.slug}/reset_quota/"

    assert_envelope(owner.client.post(url), 403, "INSUFFICIENT_PERMISSIONS")
    assert used(owner.tenant, "tokens") == 10

    response = staff_client.post(url)

    assert response.status_code == 200
    assert response.json()["ai_tokens_used"] == 0
    event = events(owner.tenant, "quota.reset").get()
    assert event.actor == staff_client.user


def test_reset_command_dry_run_changes_nothing():
    tenant = TenantFactory(slug="due-co", quota_reset_at=datetime(2020, 1, 1, tzinfo=UTC))
    quota_consume(tenant=tenant, resource="tokens", amount=10)
    out = StringIO()

    call_command("reset_quotas", "--dry-run", stdout=out)

    assert "Would reset due-co" in out.getvalue()
    assert "1 tenant(s) due." in out.getvalue()
    assert used(tenant, "tokens") == 10


def test_reset_command_resets_due_tenants():
    tenant = TenantFactory(slug="due-co", quota_reset_at=datetime(2020, 1, 1, tzinfo=UTC))
    quota_consume(tenant=tenant, resource="tokens", amount=10)
    out = StringIO()

    call_command("reset_quotas", stdout=out)

    assert "Reset due-co." in out.getvalue()
    assert used(tenant, "tokens") == 0


def test_reset_command_for_one_tenant_resets_it_now():
    tenant = TenantFactory(slug="acme-q")
    other = TenantFactory()
    for t in (tenant, other):
        quota_consume(tenant=t, resource="tokens", amount=10)

    call_command("reset_quotas", "--tenant", "ACME-Q", stdout=StringIO())

    assert used(tenant, "tokens") == 0
    assert used(other, "tokens") == 10


def test_reset_command_names_an_unknown_tenant():
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        call_command("reset_quotas", "--tenant", "nope", stdout=StringIO())


def test_next_reset_is_the_next_month_start():
    assert first_of_next_month(datetime(2026, 1, 31, 23, 59, tzinfo=UTC)) == datetime(
        2026, 2, 1, tzinfo=UTC
    )
    assert first_of_next_month(datetime(2026, 12, 1, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert first_of_next_month(datetime(2026, 6, 1, 3, tzinfo=UTC) - timedelta(hours=5)) == (
        datetime(2026, 6, 1, tzinfo=UTC)
    )


# Concurrency ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_requests_against_a_limit_of_ten_accept_exactly_ten():
    membership = MembershipFactory(tenant=TenantFactory(settings={"maxApiCallsPerMonth": 10}))
    token = token_for(membership.user)
    barrier = threading.Barrier(50)

    def call():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        try:
            barrier.wait()
            return client.get(ORG_URL).status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(50) as pool:
        statuses = [future.result() for future in [pool.submit(call) for _ in range(50)]]

    assert statuses.count(200) == 10
    assert statuses.count(429) == 40
    assert used(membership.tenant) == 10
