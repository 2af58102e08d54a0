"""POST chat/completions through the platform's request path on the local provider: the
OpenAI shape, metering (reservation settled to the reported usage), the call record, quota
and budget refusals, validation, and streaming."""

import json

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from accounts import usage
from playground import tokens
from playground.models import CallStatus, GatewayCall
from tenants.models import QuotaCounter
from tests.conftest import assert_envelope
from tests.factories import issue_api_key

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]
URL = "/api/v1/chat/completions"
BODY = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello there, gateway!"}]}


def tokens_used(tenant) -> int:
    row = QuotaCounter.objects.filter(tenant=tenant, resource="tokens").first()
    return row.used if row else 0


def sse_events(response) -> list:
    """The `data:` payloads of an event stream (whole, under the test client's WSGI)."""
    text = response.content.decode()
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    return events


def test_completion_answers_openai_shape_and_meters_the_reported_usage(owner):
    response = owner.client.post(URL, BODY, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert "Hello there, gateway!" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == tokens.prompt_tokens(BODY["messages"])
    assert usage["completion_tokens"] == tokens.count_tokens(choice["message"]["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The reservation is settled: the quota holds exactly the reported usage.
    assert tokens_used(owner.tenant) == usage["total_tokens"]
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.SUCCEEDED
    assert call.total_tokens == usage["total_tokens"]
    assert call.provider == "local"
    assert call.cost_micros == tokens.cost_micros(
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        input_price=30_000_000,
        output_price=60_000_000,
    )
    assert call.reserved_tokens > call.total_tokens
    assert call.user_id == owner.user.pk
    assert response["x-ratelimit-limit-requests"] == "60"
    assert int(response["x-ratelimit-remaining-tokens"]) >= 0
    assert response["X-RateLimit-Limit"]


def test_an_api_key_works_as_bearer_and_is_recorded(owner):
    key, raw = issue_api_key(owner.membership, scopes=["write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    response = client.post(URL, {**BODY, "tenant_id": "someone-else"}, format="json")

    assert response.status_code == 200, response.content
    assert GatewayCall.objects.get(tenant=owner.tenant).api_key_id == key.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stream", [False, True])
def test_an_api_keys_usage_flush_due_at_the_answer_runs_beside_it(owner, monkeypatch, stream):
    """Without Redis each process flushes its own API-key usage from the request that finds
    the flush due. The gateway counts its answer on the event loop, where the database is
    refused: the flush goes to a thread, and the answer is the call's."""
    store = usage.LocalUsageStore()
    monkeypatch.setattr(usage, "usage_store", lambda: store)
    key, raw = issue_api_key(owner.membership, scopes=["write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    with override_settings(API_KEY_USAGE_FLUSH_SECONDS=0):
        response = client.post(URL, {**BODY, "stream": stream}, format="json")

    assert response.status_code == 200, response.content
    assert store.flushing is not None
    store.flushing.join(timeout=30)
    key.refresh_from_db()
    assert (key.usage_count, key.success_count) == (1, 1)


def test_streaming_ends_with_usage_and_done(owner):
    response = owner.client.post(URL, {**BODY, "stream": True}, format="json")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "Hello there, gateway!" in text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == tokens.count_tokens(text)
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.streamed and not call.usage_estimated
    assert call.time_to_first_token_ms is not None
    assert tokens_used(owner.tenant) == usage["total_tokens"]


def test_quota_refusal_is_429_naming_the_resource_and_counts_nothing(owner):
    owner.tenant.settings = {"maxTokensPerMonth": 100}
    owner.tenant.save()

    response = owner.client.post(URL, {**BODY, "max_tokens": 200}, format="json")

    error = assert_envelope(response, 429, "QUOTA_EXCEEDED")
    assert error["details"]["resource"] == "tokens"
    assert error["details"]["limit"] == 100
    assert "resets_at" in error["details"]
    assert tokens_used(owner.tenant) == 0
    assert not GatewayCall.objects.exists()


def test_unknown_model_and_bad_parameters_are_400(owner):
    unknown = owner.client.post(URL, {**BODY, "model": "gpt-9"}, format="json")
    assert "model" in assert_envelope(unknown, 400, "VALIDATION_ERROR")["details"]
    too_many = owner.client.post(URL, {**BODY, "max_tokens": 999_999}, format="json")
    assert "max_tokens" in assert_envelope(too_many, 400, "VALIDATION_ERROR")["details"]
    hot = owner.client.post(URL, {**BODY, "temperature": 3}, format="json")
    assert "temperature" in assert_envelope(hot, 400, "VALIDATION_ERROR")["details"]
    assert tokens_used(owner.tenant) == 0


def test_an_api_keys_monthly_budget_is_settled_to_usage_and_refuses_past_it(owner):
    key, raw = issue_api_key(owner.membership, scopes=["write"])
    key.monthly_token_budget = 400
    key.save(update_fields=["monthly_token_budget"])
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)

    first = client.post(URL, {**BODY, "max_tokens": 100}, format="json")
    key.refresh_from_db()
    used_after_first = key.budget_tokens_used
    refused = client.post(URL, {**BODY, "max_tokens": 390}, format="json")

    assert first.status_code == 200
    assert used_after_first == first.json()["usage"]["total_tokens"]
    error = assert_envelope(refused, 429, "QUOTA_EXCEEDED")
    assert error["details"]["resource"] == "api_key_tokens"
    assert error["details"]["limit"] == 400
    assert error["details"]["used"] == used_after_first
    key.refresh_from_db()
    assert key.budget_tokens_used == used_after_first
    # The organization's quota was not charged for the refused call either.
    assert tokens_used(owner.tenant) == used_after_first


def test_a_tenant_id_in_the_body_is_ignored(owner, make_caller):
    other = make_caller()

    response = owner.client.post(URL, {**BODY, "tenant_id": str(other.tenant.pk)}, format="json")

    assert response.status_code == 200
    assert GatewayCall.objects.get().tenant == owner.tenant
    assert tokens_used(other.tenant) == 0


def test_an_api_keys_call_is_counted_once_in_its_usage_with_its_real_status(owner):
    from accounts.services import api_key_usage
    from tests.playground.factories import LanguageModelFactory, ProviderFactory

    key, raw = issue_api_key(owner.membership, scopes=["write"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    # An upstream on a port nothing listens on: the call fails after its request path passed.
    unreachable = ProviderFactory(base_url="http://127.0.0.1:9/v1", max_retries=0)
    broken = LanguageModelFactory(provider=unreachable)

    answered = client.post(URL, BODY, format="json")
    failed = client.post(URL, {**BODY, "model": broken.name}, format="json")

    assert (answered.status_code, failed.status_code) == (200, 502)
    usage = api_key_usage(api_key=key)
    assert usage["total_requests"] == 2
    assert (usage["success_requests"], usage["failed_requests"]) == (1, 1)
