"""playground.services.ledger: a gateway call's tokens in the database. The reservation counts on
the organization's tokens quota and the API key's monthly budget together or on neither, and
names the one that did not fit; the settlement moves both by the difference (never below zero)
and inserts the call in the same step; the release gives a reservation back. The same rules on
PostgreSQL's one-statement path and on the portable one (a transaction of the quota and key
services), and exact counters under concurrent calls."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from accounts.models import APIKey
from accounts.services import budget_month
from audit.models import AuditEvent
from config.exceptions import QuotaExceeded
from playground import tokens
from playground.models import CallStatus, GatewayCall, GatewayReservation
from playground.services import ledger
from playground.services.ledger import (
    gateway_tokens_release,
    gateway_tokens_reserve,
    gateway_tokens_settle,
)
from tenants.models import QuotaCounter, Tenant
from tenants.plans import first_of_next_month
from tests.conftest import assert_envelope
from tests.factories import APIKeyFactory, TenantFactory, issue_api_key

pytestmark = pytest.mark.django_db

LIMIT = 1_000
BUDGET = 500
AMOUNT = 30


@pytest.fixture(
    params=[
        pytest.param("one statement", marks=pytest.mark.postgres, id="one-statement"),
        pytest.param("portable", id="portable"),
    ]
)
def path(request, monkeypatch):
    """Each rule on both paths: PostgreSQL's data-modifying statements, and the transaction of
    the quota and key services that runs elsewhere (forced here on any database)."""
    if request.param == "portable":
        monkeypatch.setattr(ledger, "_one_statement", lambda: False)
    return request.param


@pytest.fixture
def tenant():
    return TenantFactory(settings={"maxTokensPerMonth": LIMIT})


@pytest.fixture
def key(tenant):
    return APIKeyFactory(tenant=tenant, monthly_token_budget=BUDGET)


def counter(tenant, used: int = 0, **fields) -> QuotaCounter:
    return QuotaCounter.objects.create(tenant=tenant, resource="tokens", used=used, **fields)


def spend(key, used: int, period=None) -> None:
    """Set what `key` has counted, in `period` (default: this month)."""
    APIKey.objects.filter(pk=key.pk).update(
        budget_tokens_used=used, budget_period=period or budget_month()
    )


def quota_used(tenant) -> int | None:
    row = QuotaCounter.objects.filter(tenant=tenant, resource="tokens").first()
    return row.used if row else None


def key_state(key) -> tuple[int, object]:
    row = APIKey.objects.get(pk=key.pk)
    return row.budget_tokens_used, row.budget_period


def previous_month():
    return (budget_month() - timedelta(days=1)).replace(day=1)


def unsaved_call(tenant, api_key=None, *, total: int = 25, **fields) -> GatewayCall:
    values = {
        "requested_model": "gpt-4",
        "model": "gpt-4",
        "provider": "local",
        "status": CallStatus.SUCCEEDED,
        "prompt_tokens": total - 10,
        "completion_tokens": 10,
        "total_tokens": total,
        "reserved_tokens": AMOUNT,
        "cost_micros": 1_200,
        "latency_ms": 250,
        "request_id": "ledger-req-1",
        **fields,
    }
    return GatewayCall(tenant=tenant, api_key=api_key, **values)


def noted(tenant, api_key=None, reserved: int = AMOUNT):
    """The id of the gateway's note of a reservation of `reserved` tokens, which the call's
    settlement deletes (the reservation's statement writes it for every call)."""
    note = GatewayReservation.objects.create(
        tenant=tenant,
        api_key=api_key,
        tokens=reserved,
        expires_at=timezone.now() + timedelta(minutes=15),
    )
    return note.pk


def settle(*, tenant, api_key, delta: int, call: GatewayCall, reserved: int = AMOUNT):
    """Settle `call`, whose reservation of `reserved` tokens the gateway noted."""
    return gateway_tokens_settle(
        tenant=tenant,
        api_key=api_key,
        delta=delta,
        call=call,
        noted_as=noted(tenant, api_key, reserved),
        reserved=reserved,
    )


def warnings_of(tenant):
    return AuditEvent.objects.filter(tenant=tenant, event_type="quota.warning")


# --- Reserve ---------------------------------------------------------------------------------


def test_a_reservation_with_a_key_moves_the_quota_and_the_keys_budget(path, tenant, key):
    counter(tenant, used=100)
    spend(key, 50)

    gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    assert quota_used(tenant) == 100 + AMOUNT
    assert key_state(key) == (50 + AMOUNT, budget_month())


def test_a_key_without_a_budget_counts_its_tokens_too(path, tenant):
    unlimited = APIKeyFactory(tenant=tenant, monthly_token_budget=None)
    counter(tenant)

    gateway_tokens_reserve(tenant=tenant, api_key=unlimited, amount=AMOUNT)
    gateway_tokens_reserve(tenant=tenant, api_key=unlimited, amount=AMOUNT)

    assert quota_used(tenant) == 2 * AMOUNT
    assert key_state(unlimited) == (2 * AMOUNT, budget_month())


def test_a_reservation_over_the_keys_budget_moves_nothing(path, tenant, key):
    counter(tenant, used=100)
    spend(key, BUDGET - AMOUNT + 1)

    with pytest.raises(QuotaExceeded) as refused:
        gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    assert refused.value.status_code == 429
    assert refused.value.details == {
        "resource": "api_key_tokens",
        "limit": BUDGET,
        "used": BUDGET - AMOUNT + 1,
        "requested": AMOUNT,
        "resets_at": first_of_next_month(),
    }
    assert quota_used(tenant) == 100
    assert key_state(key) == (BUDGET - AMOUNT + 1, budget_month())


def test_a_reservation_over_the_quota_moves_nothing_even_when_the_key_fits(path, tenant, key):
    counter(tenant, used=LIMIT - AMOUNT + 1)
    spend(key, 10)

    with pytest.raises(QuotaExceeded) as refused:
        gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    assert refused.value.details == {
        "resource": "tokens",
        "limit": LIMIT,
        "used": LIMIT - AMOUNT + 1,
        "requested": AMOUNT,
        "resets_at": Tenant.objects.get(pk=tenant.pk).quota_reset_at,
    }
    assert quota_used(tenant) == LIMIT - AMOUNT + 1
    assert key_state(key) == (10, budget_month())


def test_a_reservation_that_just_fits_both_is_admitted(path, tenant, key):
    counter(tenant, used=LIMIT - AMOUNT)
    spend(key, BUDGET - AMOUNT)

    gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    assert quota_used(tenant) == LIMIT
    assert key_state(key)[0] == BUDGET


def test_a_reservation_without_a_key_moves_only_the_quota(path, tenant, key):
    counter(tenant, used=100)
    spend(key, 50)

    gateway_tokens_reserve(tenant=tenant, api_key=None, amount=AMOUNT)

    assert quota_used(tenant) == 100 + AMOUNT
    assert key_state(key) == (50, budget_month())


def test_a_reservation_without_a_key_over_the_quota_moves_nothing(path, tenant):
    counter(tenant, used=LIMIT)

    with pytest.raises(QuotaExceeded) as refused:
        gateway_tokens_reserve(tenant=tenant, api_key=None, amount=1)

    assert refused.value.details["resource"] == "tokens"
    assert quota_used(tenant) == LIMIT


def test_a_key_budget_of_an_earlier_month_restarts_at_the_amount(path, tenant, key):
    counter(tenant)
    # Last month's count would refuse the call if it were added to.
    spend(key, BUDGET - 1, period=previous_month())

    gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    assert key_state(key) == (AMOUNT, budget_month())
    assert quota_used(tenant) == AMOUNT


def test_a_refusal_by_a_budget_of_an_earlier_month_keeps_that_months_count(path, tenant, key):
    counter(tenant)
    spend(key, 123, period=previous_month())

    with pytest.raises(QuotaExceeded) as refused:
        gateway_tokens_reserve(tenant=tenant, api_key=key, amount=BUDGET + 1)

    # This month has counted nothing yet, and last month's count is left as it was.
    assert refused.value.details["used"] == 0
    assert refused.value.details["resource"] == "api_key_tokens"
    assert key_state(key) == (123, previous_month())
    assert quota_used(tenant) == 0


def test_an_organizations_first_call_is_admitted_and_creates_its_counter(path, tenant, key):
    assert quota_used(tenant) is None

    gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    assert QuotaCounter.objects.filter(tenant=tenant, resource="tokens").count() == 1
    assert quota_used(tenant) == AMOUNT
    assert key_state(key) == (AMOUNT, budget_month())


def test_an_organizations_first_call_without_a_key_creates_its_counter(path, tenant):
    gateway_tokens_reserve(tenant=tenant, api_key=None, amount=AMOUNT)

    assert quota_used(tenant) == AMOUNT


def test_a_first_call_over_the_quota_is_refused_counting_nothing(path, tenant, key):
    with pytest.raises(QuotaExceeded) as refused:
        gateway_tokens_reserve(tenant=tenant, api_key=key, amount=LIMIT + 1)

    assert refused.value.details["resource"] == "tokens"
    assert refused.value.details["used"] == 0
    # Counted nothing: the counter is made at zero (the portable path rolls it back too).
    assert quota_used(tenant) in (0, None)
    assert key_state(key) == (0, None)


def test_a_reservation_crossing_the_warning_threshold_records_one_warning(path, tenant, key):
    counter(tenant, used=LIMIT * 8 // 10 - AMOUNT - 1)

    gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)
    assert not warnings_of(tenant).exists()
    gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)
    gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    assert warnings_of(tenant).count() == 1
    assert warnings_of(tenant).get().payload["used"] == LIMIT * 8 // 10 - 1 + AMOUNT


@pytest.mark.postgres
def test_a_key_gone_since_authentication_is_refused_counting_nothing(tenant, key):
    counter(tenant, used=100)
    gone = APIKey.objects.get(pk=key.pk)
    APIKey.objects.filter(pk=key.pk).delete()

    with pytest.raises(AuthenticationFailed):
        gateway_tokens_reserve(tenant=tenant, api_key=gone, amount=AMOUNT)

    assert quota_used(tenant) == 100


@pytest.mark.postgres
def test_a_reservation_is_one_statement_on_postgresql(tenant, key):
    counter(tenant)

    with CaptureQueriesContext(connection) as queries:
        gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    assert len(queries) == 1, [query["sql"] for query in queries]


# --- Settle ----------------------------------------------------------------------------------


def test_settling_below_the_reservation_gives_back_on_both(path, tenant, key):
    counter(tenant, used=100)
    spend(key, 50)

    settle(tenant=tenant, api_key=key, delta=-20, call=unsaved_call(tenant, key))

    assert quota_used(tenant) == 80
    assert key_state(key) == (30, budget_month())


def test_settling_never_moves_either_below_zero(path, tenant, key):
    counter(tenant, used=100)
    spend(key, 50)

    settle(tenant=tenant, api_key=key, delta=-70, call=unsaved_call(tenant, key))

    assert quota_used(tenant) == 30
    assert key_state(key)[0] == 0
    settle(tenant=tenant, api_key=key, delta=-500, call=unsaved_call(tenant, key))
    assert quota_used(tenant) == 0
    assert key_state(key)[0] == 0


def test_settling_above_the_reservation_moves_both_up_past_their_limits(path, tenant, key):
    # The tokens were consumed upstream: a settlement is never refused.
    counter(tenant, used=LIMIT - 10)
    spend(key, BUDGET - 10)

    settle(tenant=tenant, api_key=key, delta=40, call=unsaved_call(tenant, key))

    assert quota_used(tenant) == LIMIT + 30
    assert key_state(key) == (BUDGET + 30, budget_month())


def test_settling_a_call_reserved_last_month_counts_in_this_month(path, tenant, key):
    counter(tenant, used=100)
    spend(key, 400, period=previous_month())

    settle(tenant=tenant, api_key=key, delta=15, call=unsaved_call(tenant, key))

    assert key_state(key) == (15, budget_month())


def test_settling_without_a_key_moves_only_the_quota(path, tenant, key):
    counter(tenant, used=100)
    spend(key, 50)

    call = settle(tenant=tenant, api_key=None, delta=-20, call=unsaved_call(tenant))

    assert quota_used(tenant) == 80
    assert key_state(key) == (50, budget_month())
    assert GatewayCall.objects.get(pk=call.pk).api_key_id is None


def test_settling_inserts_the_call_as_given(path, tenant, key):
    counter(tenant, used=100)
    call = unsaved_call(
        tenant, key, total=27, status=CallStatus.FAILED, error_type="timeout", attempts=3
    )

    saved = settle(tenant=tenant, api_key=key, delta=-3, call=call)

    assert saved is call
    assert not call._state.adding
    assert call._state.db == "default"
    assert call.created_at is not None
    row = GatewayCall.objects.get(pk=call.pk)
    assert row.created_at == call.created_at
    fields = (
        "tenant_id", "api_key_id", "user_id", "source", "requested_model", "model", "provider",
        "status", "error_type", "prompt_tokens", "completion_tokens", "total_tokens",
        "reserved_tokens", "cost_micros", "latency_ms", "time_to_first_token_ms", "streamed",
        "usage_estimated", "attempts", "request_id",
    )  # fmt: skip
    assert {name: getattr(row, name) for name in fields} == {
        name: getattr(call, name) for name in fields
    }
    assert (row.status, row.error_type, row.attempts, row.total_tokens) == (
        CallStatus.FAILED,
        "timeout",
        3,
        27,
    )
    # Saved as a row: saving it again updates it, it does not insert another.
    call.latency_ms = 999
    call.save()
    assert GatewayCall.objects.count() == 1
    assert GatewayCall.objects.get(pk=call.pk).latency_ms == 999


@pytest.mark.postgres
def test_the_insert_written_once_is_the_orms_for_every_call(tenant, key, time_machine):
    from django.db.models.sql import InsertQuery

    def orms(call):
        query = InsertQuery(GatewayCall)
        query.insert_values(GatewayCall._meta.local_concrete_fields, [call])
        [(sql, params)] = query.get_compiler(using="default").as_sql()
        return sql, list(params)

    time_machine.move_to("2026-05-04 10:00:00+00:00", tick=False)  # auto_now_add alike
    first = unsaved_call(tenant, key, total=15)
    second = unsaved_call(tenant, total=19, status=CallStatus.FAILED, error_type="timeout")

    assert ledger._insert(first) == orms(first)
    assert ledger._insert(second) == orms(second)

    settle(tenant=tenant, api_key=key, delta=0, call=first)
    settle(tenant=tenant, api_key=None, delta=0, call=second)
    assert GatewayCall.objects.get(pk=second.pk).error_type == "timeout"
    assert GatewayCall.objects.get(pk=first.pk).api_key_id == key.pk


@pytest.mark.django_db(transaction=True)
def test_a_call_that_cannot_be_inserted_moves_neither(path, tenant, key):
    # All or nothing: the counters move with the call's row or not at all.
    counter(tenant, used=100)
    spend(key, 50)
    broken = unsaved_call(tenant, key, total=-1)  # violates the column's CHECK (>= 0)

    with pytest.raises(IntegrityError):
        settle(tenant=tenant, api_key=key, delta=-20, call=broken)

    assert quota_used(tenant) == 100
    assert key_state(key) == (50, budget_month())
    assert not GatewayCall.objects.exists()


def test_settling_across_the_warning_threshold_records_one_warning(path, tenant, key):
    counter(tenant, used=700)

    settle(tenant=tenant, api_key=key, delta=150, call=unsaved_call(tenant, key))
    settle(tenant=tenant, api_key=key, delta=50, call=unsaved_call(tenant, key))

    warning = warnings_of(tenant).get()
    assert warning.payload == {
        "resource": "tokens",
        "used": 850,
        "limit": LIMIT,
        "warning_threshold": 80.0,
    }
    assert QuotaCounter.objects.get(tenant=tenant, resource="tokens").warned_at is not None


def test_settling_below_the_reservation_records_no_warning(path, tenant, key):
    counter(tenant, used=900)

    settle(tenant=tenant, api_key=key, delta=-5, call=unsaved_call(tenant, key))

    assert not warnings_of(tenant).exists()


@pytest.mark.postgres
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_a_settlement_is_one_statement_on_postgresql(tenant, key, with_key):
    counter(tenant, used=100)
    api_key = key if with_key else None
    note = noted(tenant, api_key)

    with CaptureQueriesContext(connection) as queries:
        gateway_tokens_settle(
            tenant=tenant,
            api_key=api_key,
            delta=-10,
            call=unsaved_call(tenant, api_key),
            noted_as=note,
            reserved=AMOUNT,
        )

    assert len(queries) == 1, [query["sql"] for query in queries]
    assert GatewayCall.objects.count() == 1
    assert quota_used(tenant) == 90


# --- Release ---------------------------------------------------------------------------------


def test_a_release_gives_the_amount_back_on_both(path, tenant, key):
    counter(tenant, used=100)
    spend(key, 50)
    gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)

    gateway_tokens_release(tenant=tenant, api_key=key, amount=AMOUNT)

    assert quota_used(tenant) == 100
    assert key_state(key) == (50, budget_month())
    assert not GatewayCall.objects.exists()


def test_a_release_without_a_key_gives_back_on_the_quota_only(path, tenant, key):
    counter(tenant, used=100)
    spend(key, 50)

    gateway_tokens_release(tenant=tenant, api_key=None, amount=AMOUNT)

    assert quota_used(tenant) == 100 - AMOUNT
    assert key_state(key) == (50, budget_month())


def test_a_release_never_moves_either_below_zero(path, tenant, key):
    counter(tenant, used=10)
    spend(key, 5)

    gateway_tokens_release(tenant=tenant, api_key=key, amount=AMOUNT)

    assert quota_used(tenant) == 0
    assert key_state(key)[0] == 0


# --- Concurrent calls (PostgreSQL) -----------------------------------------------------------

THREADS = 20
# Each thread's usage, all different (below and above the reservation), so a lost update
# shows in the sum.
USAGES = [AMOUNT - 12 + index * 2 for index in range(THREADS)]


def run_in_threads(work, count: int) -> list:
    """Run `work(index)` in `count` threads started together; each closes its connection."""
    start = threading.Barrier(count)

    def run(index):
        try:
            start.wait(30)
            return work(index)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(run, index) for index in range(count)]
        return [future.result(timeout=60) for future in futures]


def fresh(tenant, key):
    """Each thread's own instances, as each request loads them."""
    return Tenant.objects.get(pk=tenant.pk), APIKey.objects.get(pk=key.pk)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counter_exists", [True, False], ids=["counter", "first-calls"])
def test_twenty_threads_reserving_and_settling_end_with_the_sum_of_their_usages(counter_exists):
    tenant = TenantFactory(settings={"maxTokensPerMonth": 1_000_000})
    key = APIKeyFactory(tenant=tenant, monthly_token_budget=1_000_000)
    if counter_exists:
        counter(tenant)

    def reserve_and_settle(index):
        own_tenant, own_key = fresh(tenant, key)
        gateway_tokens_reserve(tenant=own_tenant, api_key=own_key, amount=AMOUNT)
        usage = USAGES[index]
        settle(
            tenant=own_tenant,
            api_key=own_key,
            delta=usage - AMOUNT,
            call=unsaved_call(own_tenant, own_key, total=usage, request_id=f"thread-{index}"),
        )
        return usage

    settled = run_in_threads(reserve_and_settle, THREADS)

    assert sorted(settled) == sorted(USAGES)
    assert quota_used(tenant) == sum(USAGES)
    assert key_state(key) == (sum(USAGES), budget_month())
    assert QuotaCounter.objects.filter(tenant=tenant, resource="tokens").count() == 1
    calls = GatewayCall.objects.filter(tenant=tenant)
    assert calls.count() == THREADS
    assert sorted(calls.values_list("total_tokens", flat=True)) == sorted(USAGES)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_interleaved_reservations_settlements_and_releases_end_exact():
    tenant = TenantFactory(settings={"maxTokensPerMonth": 1_000_000})
    key = APIKeyFactory(tenant=tenant, monthly_token_budget=1_000_000)
    counter(tenant)
    # Ten calls reserved already, settled below while new calls reserve.
    pending = 10
    for _ in range(pending):
        gateway_tokens_reserve(tenant=tenant, api_key=key, amount=AMOUNT)
    assert quota_used(tenant) == pending * AMOUNT

    def work(index):
        own_tenant, own_key = fresh(tenant, key)
        usage = USAGES[index]
        if index < pending:  # settle a reservation made before
            call = unsaved_call(own_tenant, own_key, total=usage)
            settle(tenant=own_tenant, api_key=own_key, delta=usage - AMOUNT, call=call)
            return usage
        gateway_tokens_reserve(tenant=own_tenant, api_key=own_key, amount=AMOUNT)
        if index % 2:  # refused afterwards (the tokens-per-minute window): given back
            gateway_tokens_release(tenant=own_tenant, api_key=own_key, amount=AMOUNT)
            return 0
        call = unsaved_call(own_tenant, own_key, total=usage)
        settle(tenant=own_tenant, api_key=own_key, delta=usage - AMOUNT, call=call)
        return usage

    counted = run_in_threads(work, THREADS)

    assert quota_used(tenant) == sum(counted)
    assert key_state(key)[0] == sum(counted)
    assert GatewayCall.objects.filter(tenant=tenant).count() == sum(1 for c in counted if c)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("binding", ["quota", "key"])
def test_concurrent_reservations_admit_exactly_what_fits_and_count_it_on_both(binding):
    fitting = 7
    tenant = TenantFactory(
        settings={"maxTokensPerMonth": fitting * AMOUNT if binding == "quota" else 1_000_000}
    )
    key = APIKeyFactory(
        tenant=tenant, monthly_token_budget=fitting * AMOUNT if binding == "key" else None
    )
    counter(tenant)

    def reserve(index):
        own_tenant, own_key = fresh(tenant, key)
        try:
            gateway_tokens_reserve(tenant=own_tenant, api_key=own_key, amount=AMOUNT)
        except QuotaExceeded as refused:
            return refused.details["resource"]
        return "admitted"

    outcomes = run_in_threads(reserve, THREADS)

    refused_resource = "tokens" if binding == "quota" else "api_key_tokens"
    assert outcomes.count("admitted") == fitting
    assert outcomes.count(refused_resource) == THREADS - fitting
    # Both moved for each admitted call, neither for a refused one.
    assert quota_used(tenant) == fitting * AMOUNT
    assert key_state(key)[0] == fitting * AMOUNT


# --- Through the API -------------------------------------------------------------------------

URL = "/api/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Count my tokens, please."}]
MAX_TOKENS = 20
RESERVATION = tokens.estimate_prompt_tokens(MESSAGES) + MAX_TOKENS


def key_client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def completion() -> dict:
    return {"model": "gpt-4", "messages": MESSAGES, "max_tokens": MAX_TOKENS}


def test_a_call_through_the_api_is_settled_on_the_quota_and_the_keys_budget(path, owner):
    key, raw = issue_api_key(owner.membership, scopes=["write"])

    response = key_client(raw).post(URL, completion(), format="json")

    assert response.status_code == 200, response.content
    usage = response.json()["usage"]["total_tokens"]
    assert 0 < usage < RESERVATION
    call = GatewayCall.objects.get()
    assert (call.total_tokens, call.reserved_tokens, call.api_key_id) == (
        usage,
        RESERVATION,
        key.pk,
    )
    assert quota_used(owner.tenant) == usage
    assert key_state(key) == (usage, budget_month())


def test_a_call_through_the_api_over_the_keys_budget_moves_neither(path, owner):
    key, raw = issue_api_key(owner.membership, scopes=["write"])
    APIKey.objects.filter(pk=key.pk).update(monthly_token_budget=RESERVATION - 1)
    counter(owner.tenant, used=5)

    response = key_client(raw).post(URL, completion(), format="json")

    error = assert_envelope(response, 429, "QUOTA_EXCEEDED")
    assert error["details"]["resource"] == "api_key_tokens"
    assert error["details"]["limit"] == RESERVATION - 1
    assert error["details"]["requested"] == RESERVATION
    assert quota_used(owner.tenant) == 5
    assert key_state(key) == (0, None)
    assert not GatewayCall.objects.exists()


def test_a_call_through_the_api_without_a_key_counts_on_the_quota_only(path, owner):
    key, _ = issue_api_key(owner.membership, scopes=["write"])

    response = owner.client.post(URL, completion(), format="json")

    assert response.status_code == 200, response.content
    assert quota_used(owner.tenant) == response.json()["usage"]["total_tokens"]
    assert key_state(key) == (0, None)
    assert GatewayCall.objects.get().api_key_id is None
