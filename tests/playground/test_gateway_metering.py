"""Exact gateway metering: concurrent calls never pass the organization's tokens quota or an
API key's monthly budget, what is left counted is exactly the usage of the calls that ran;
the tokens-per-minute window, OpenAI's rate-limit headers, the key budget's month and the
release of a failed call's reservation."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
import time_machine
from django.db import connection, connections
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import APIKey
from config.throttling import configured_rate
from playground import tokens
from playground.models import CallStatus, GatewayCall
from tenants.models import QuotaCounter
from tenants.plans import first_of_next_month
from tests.conftest import assert_envelope
from tests.factories import issue_api_key

from .factories import LanguageModelFactory, ProviderFactory
from .upstream import FakeUpstream, Status

URL = "/api/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Count these tokens exactly, please."}]
MAX_TOKENS = 20
# What one call reserves: the prompt's worst case plus max_tokens.
RESERVATION = tokens.estimate_prompt_tokens(MESSAGES) + MAX_TOKENS
CALLS, FITTING = 50, 10


@pytest.fixture(autouse=True)
def _fast_gateway(settings):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0.01


@pytest.fixture
def upstream():
    # 5 pieces: every call's usage (prompt words + 3, and 5) is below its reservation, so
    # settling gives tokens back.
    with FakeUpstream(reply="Exactly metered answer, in pieces.", chunks=5) as server:
        yield server


@pytest.fixture
def model(upstream):
    provider = ProviderFactory(kind="openai", base_url=upstream.url + "/v1", max_retries=1)
    return LanguageModelFactory(provider=provider)


@pytest.fixture
def huge_tokens_per_minute(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "gateway_tokens": "100000000/min"},
    }


def configured_limit(scope: str) -> int:
    """The default per-minute limit of a gateway scope (the free tier keeps the defaults)."""
    return int(configured_rate(scope).partition("/")[0])


def body(model, **extra) -> dict:
    return {"model": model.name, "messages": MESSAGES, "max_tokens": MAX_TOKENS, **extra}


def tokens_used(tenant) -> int:
    row = QuotaCounter.objects.filter(tenant=tenant, resource="tokens").first()
    return row.used if row else 0


def key_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def start_of_next_minute() -> datetime:
    """A moment at which two quick calls are sure to share a one-minute window."""
    return (timezone.now() + timedelta(minutes=1)).replace(second=0, microsecond=0)


def fire_concurrently(clients, upstream, payload) -> list:
    """POST `payload` from every client at once (a thread each). The upstream holds its
    answers until every call was either refused or reached it, so that all reservations are
    made before any is settled: exactly those that fit pass, whatever the scheduling."""
    release = threading.Event()

    def held(seconds):  # replaces the upstream's delay: wait for the release
        release.wait(30)
        return False

    upstream._sleep = held
    start = threading.Barrier(len(clients))

    def post(client):
        try:
            start.wait(30)
            return client.post(URL, payload, format="json")
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        futures = [pool.submit(post, client) for client in clients]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            finished = sum(future.done() for future in futures)
            if finished + len(upstream.requests) >= len(clients):
                break
            time.sleep(0.01)
        release.set()
        return [future.result(timeout=30) for future in futures]


def split_results(responses) -> tuple[list, list]:
    passed = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    return passed, refused


# --- Exact under concurrency ----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_calls_against_a_quota_for_ten_pass_exactly_ten(
    make_caller, upstream, model, huge_tokens_per_minute
):
    caller = make_caller()
    caller.tenant.settings = {"maxTokensPerMonth": FITTING * RESERVATION}
    caller.tenant.save()
    clients = [caller.client_for(caller.tenant.pk) for _ in range(CALLS)]

    responses = fire_concurrently(clients, upstream, body(model))

    passed, refused = split_results(responses)
    assert len(passed) == FITTING, [r.status_code for r in responses]
    assert len(refused) == CALLS - FITTING
    for response in refused:
        error = assert_envelope(response, 429, "QUOTA_EXCEEDED")
        details = error["details"]
        assert details["resource"] == "tokens"
        assert details["requested"] == RESERVATION
        # A real refusal: the quota had no room for it (nothing is settled yet, see above).
        assert details["used"] + RESERVATION > details["limit"] == FITTING * RESERVATION, error
    assert len(upstream.requests) == FITTING
    usage = [r.json()["usage"]["total_tokens"] for r in passed]
    assert all(0 < used < RESERVATION for used in usage)
    assert tokens_used(caller.tenant) == sum(usage)
    calls = GatewayCall.objects.filter(tenant=caller.tenant)
    assert calls.count() == FITTING
    assert sorted(calls.values_list("total_tokens", flat=True)) == sorted(usage)
    assert set(calls.values_list("status", flat=True)) == {CallStatus.SUCCEEDED}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_calls_against_a_key_budget_for_ten_pass_exactly_ten(
    make_caller, upstream, model, huge_tokens_per_minute
):
    caller = make_caller()
    key, raw = issue_api_key(caller.membership, scopes=["write"])
    APIKey.objects.filter(pk=key.pk).update(monthly_token_budget=FITTING * RESERVATION)
    clients = [key_client(raw) for _ in range(CALLS)]

    responses = fire_concurrently(clients, upstream, body(model))

    passed, refused = split_results(responses)
    assert len(passed) == FITTING, [r.status_code for r in responses]
    for response in refused:
        error = assert_envelope(response, 429, "QUOTA_EXCEEDED")
        assert error["details"]["resource"] == "api_key_tokens", error
        assert error["details"]["limit"] == FITTING * RESERVATION
    usage = sum(r.json()["usage"]["total_tokens"] for r in passed)
    key.refresh_from_db()
    assert key.budget_tokens_used == usage
    assert key.budget_period == timezone.now().date().replace(day=1)
    # The organization's quota counts the same calls, and nothing of the refused ones.
    assert tokens_used(caller.tenant) == usage
    calls = GatewayCall.objects.filter(tenant=caller.tenant)
    assert calls.count() == FITTING
    assert set(calls.values_list("api_key_id", flat=True)) == {key.pk}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_call_racing_the_creation_of_the_tokens_counter_is_admitted(owner, model):
    # A tenant made before quotas (or by a fixture) gets its counter on first use. Here
    # another request creates and commits it just after this call's conditional UPDATE found
    # no row: the call must still be counted, not refused with plenty of room left.
    assert not QuotaCounter.objects.filter(tenant=owner.tenant, resource="tokens").exists()
    table = QuotaCounter._meta.db_table
    raced = []

    def create_counter_in_another_request():
        try:
            QuotaCounter.objects.create(tenant=owner.tenant, resource="tokens")
        finally:
            connections.close_all()

    def race(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not raced and f"UPDATE {table}" in sql and "<=" in sql:
            raced.append(sql)
            other = threading.Thread(target=create_counter_in_another_request)
            other.start()
            other.join()
        return result

    with connection.execute_wrapper(race):
        response = owner.client.post(URL, body(model), format="json")

    assert raced
    assert response.status_code == 200, response.content
    assert tokens_used(owner.tenant) == response.json()["usage"]["total_tokens"]


# --- Windows and headers --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_tokens_per_minute_window_refuses_with_429_and_retry_after(owner, model, settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "gateway_tokens": f"{RESERVATION * 3 // 2}/min"},
    }

    with time_machine.travel(start_of_next_minute(), tick=True):
        first = owner.client.post(URL, body(model), format="json")
        second = owner.client.post(URL, body(model), format="json")

    assert first.status_code == 200, first.content
    assert first["x-ratelimit-limit-tokens"] == str(RESERVATION * 3 // 2)
    assert first["x-ratelimit-remaining-tokens"] == str(RESERVATION * 3 // 2 - RESERVATION)
    error = assert_envelope(second, 429, "RATE_LIMIT_EXCEEDED")
    assert error["message"] == "The organization's tokens-per-minute limit is reached."
    assert error["details"]["requested_tokens"] == RESERVATION
    assert 1 <= int(second["Retry-After"]) <= 60
    assert error["details"]["retry_after_seconds"] == int(second["Retry-After"])
    # The refused call reserved nothing and was not recorded.
    assert tokens_used(owner.tenant) == first.json()["usage"]["total_tokens"]
    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 1


@pytest.mark.django_db
def test_a_call_larger_than_the_tokens_per_minute_window_is_refused_counting_nothing(
    owner, model, upstream, settings
):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "gateway_tokens": f"{RESERVATION - 1}/min"},
    }

    response = owner.client.post(URL, body(model), format="json")

    error = assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
    assert "more than the organization's tokens-per-minute limit" in error["message"]
    assert error["details"]["limit_tokens"] == RESERVATION - 1
    assert error["details"]["requested_tokens"] == RESERVATION
    assert response["Retry-After"]
    assert tokens_used(owner.tenant) == 0
    assert not upstream.requests
    assert not GatewayCall.objects.exists()


@pytest.mark.django_db
def test_openai_rate_limit_headers_are_present_and_decrease(owner, model):
    with time_machine.travel(start_of_next_minute(), tick=True):
        first = owner.client.post(URL, body(model), format="json")
        second = owner.client.post(URL, body(model), format="json")

    assert first.status_code == second.status_code == 200
    requests, tokens_limit = configured_limit("gateway"), configured_limit("gateway_tokens")
    for response in (first, second):
        assert response["x-ratelimit-limit-requests"] == str(requests)
        assert response["x-ratelimit-limit-tokens"] == str(tokens_limit)
        assert response["x-ratelimit-reset-requests"].endswith("s")
        assert response["x-ratelimit-reset-tokens"].endswith("s")
    requests_left = [int(r["x-ratelimit-remaining-requests"]) for r in (first, second)]
    tokens_left = [int(r["x-ratelimit-remaining-tokens"]) for r in (first, second)]
    assert requests_left == [requests - 1, requests - 2]
    # Each call counts its reservation in the window.
    assert tokens_left == [tokens_limit - RESERVATION, tokens_limit - 2 * RESERVATION]


@pytest.mark.django_db
def test_a_streamed_call_carries_the_rate_limit_headers_too(owner, model):
    response = owner.client.post(URL, body(model, stream=True), format="json")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["x-ratelimit-limit-requests"] == str(configured_limit("gateway"))
    remaining = int(response["x-ratelimit-remaining-tokens"])
    assert remaining == configured_limit("gateway_tokens") - RESERVATION


# --- The key's month, and failed calls ------------------------------------------------------------


@pytest.mark.django_db
def test_the_key_budget_restarts_with_the_month(owner, model):
    key, raw = issue_api_key(owner.membership, scopes=["write"])
    # Room for one call's reservation, not for another after its usage.
    APIKey.objects.filter(pk=key.pk).update(monthly_token_budget=RESERVATION + 1)
    client = key_client(raw)
    month_start = first_of_next_month()
    next_month_start = first_of_next_month(month_start)

    with time_machine.travel(next_month_start - timedelta(minutes=1), tick=True) as traveller:
        last_minute = client.post(URL, body(model), format="json")
        assert last_minute.status_code == 200, last_minute.content
        refused = client.post(URL, body(model), format="json")
        error = assert_envelope(refused, 429, "QUOTA_EXCEEDED")
        assert error["details"]["resource"] == "api_key_tokens"
        assert error["details"]["resets_at"] == next_month_start.isoformat().replace("+00:00", "Z")
        key.refresh_from_db()
        assert key.budget_tokens_used == last_minute.json()["usage"]["total_tokens"]
        assert key.budget_period == month_start.date()

        traveller.move_to(next_month_start + timedelta(minutes=1))
        first_minute = client.post(URL, body(model), format="json")

    assert first_minute.status_code == 200, first_minute.content
    key.refresh_from_db()
    assert key.budget_period == next_month_start.date()
    assert key.budget_tokens_used == first_minute.json()["usage"]["total_tokens"]


@pytest.mark.django_db
def test_a_failed_call_releases_its_reservation(owner, model, upstream):
    key, raw = issue_api_key(owner.membership, scopes=["write"])
    APIKey.objects.filter(pk=key.pk).update(monthly_token_budget=10_000)
    client = key_client(raw)
    answered = client.post(URL, body(model), format="json")
    assert answered.status_code == 200, answered.content
    before = tokens_used(owner.tenant)
    key.refresh_from_db()
    key_before = key.budget_tokens_used
    assert before == key_before == answered.json()["usage"]["total_tokens"]
    upstream.script(Status(500), Status(500))

    failed = client.post(URL, body(model), format="json")

    assert_envelope(failed, 502, "AI_SERVICE_ERROR")
    assert tokens_used(owner.tenant) == before
    key.refresh_from_db()
    assert key.budget_tokens_used == key_before
    call = GatewayCall.objects.get(tenant=owner.tenant, status=CallStatus.FAILED)
    assert call.total_tokens == 0
    assert call.reserved_tokens == RESERVATION


# --- A refused call counts nothing in the tokens-per-minute window --------------------------------


@pytest.mark.django_db
def test_a_call_refused_by_the_quota_counts_nothing_in_the_tokens_per_minute_window(owner, model):
    owner.tenant.settings = {"maxTokensPerMonth": RESERVATION + 10}
    owner.tenant.save()

    with time_machine.travel(start_of_next_minute(), tick=True):
        refused = owner.client.post(URL, body(model, max_tokens=500), format="json")
        answered = owner.client.post(URL, body(model), format="json")

    assert_envelope(refused, 429, "QUOTA_EXCEEDED")
    assert answered.status_code == 200, answered.content
    # Nothing fits, nothing is counted: the window holds the answered call's reservation only.
    remaining = int(answered["x-ratelimit-remaining-tokens"])
    assert remaining == configured_limit("gateway_tokens") - RESERVATION


@pytest.mark.django_db
def test_calls_refused_by_one_keys_budget_leave_the_tokens_window_to_the_others(owner, model):
    spent, spent_raw = issue_api_key(owner.membership, scopes=["write"], name="Spent")
    APIKey.objects.filter(pk=spent.pk).update(monthly_token_budget=RESERVATION - 1)
    _, other_raw = issue_api_key(owner.membership, scopes=["write"], name="Other")

    with time_machine.travel(start_of_next_minute(), tick=True):
        for _ in range(3):
            refused = key_client(spent_raw).post(URL, body(model), format="json")
            assert_envelope(refused, 429, "QUOTA_EXCEEDED")
        answered = key_client(other_raw).post(URL, body(model), format="json")

    assert answered.status_code == 200, answered.content
    remaining = int(answered["x-ratelimit-remaining-tokens"])
    assert remaining == configured_limit("gateway_tokens") - RESERVATION
