"""POST chat/completions against real upstreams (FakeUpstream, a local HTTP server speaking
OpenAI's and Anthropic's wire formats): what the upstream reports is what is metered and
recorded, Anthropic's translation, streaming (with usage, without it, broken), retries,
fallbacks, cooldown, timeouts, and the upstream's key kept out of every answer and record."""

import json

import pytest

from audit.models import AuditEvent
from playground import cooldown, tokens
from playground.models import CallStatus, GatewayCall, GatewayReservation
from tenants.models import QuotaCounter
from tests.conftest import assert_envelope

from .factories import LanguageModelFactory, ProviderFactory
from .upstream import (
    BrokenStream,
    Delay,
    FakeUpstream,
    NoUsage,
    Status,
    StreamError,
    split_reply,
)

pytestmark = pytest.mark.django_db
URL = "/api/v1/chat/completions"
REPLY = "Hello from upstream, in five pieces."
PIECES = 5
USER = {"role": "user", "content": "Hello there, gateway!"}
SYSTEM = {"role": "system", "content": "You are terse."}
UPSTREAM_KEY = "sk-upstream-SECRET-7f3a9c1e5b2d4f6a"
KEY_ENV = "GATEWAY_TEST_UPSTREAM_KEY"


@pytest.fixture(autouse=True)
def _fast_gateway(settings):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0.01
    settings.GATEWAY_RETRY_AFTER_MAX_SECONDS = 0.05
    settings.GATEWAY_COOLDOWN_FAILURES = 3
    settings.GATEWAY_COOLDOWN_WINDOW_SECONDS = 60
    settings.GATEWAY_COOLDOWN_SECONDS = 30


@pytest.fixture
def upstream():
    with FakeUpstream(reply=REPLY, chunks=PIECES) as server:
        yield server


@pytest.fixture
def upstream_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    return UPSTREAM_KEY


def openai_model(upstream, *, key_env="", max_retries=1, timeout_seconds=60, **fields):
    provider = ProviderFactory(
        kind="openai",
        base_url=upstream.url + "/v1",
        api_key_env=key_env,
        max_retries=max_retries,
        timeout_seconds=timeout_seconds,
    )
    return LanguageModelFactory(provider=provider, **fields)


def anthropic_model(upstream, **fields):
    provider = ProviderFactory(
        kind="anthropic", base_url=upstream.url, api_key_env=KEY_ENV, max_retries=0
    )
    return LanguageModelFactory(provider=provider, **fields)


def chat(model, *messages, **extra) -> dict:
    return {"model": model.name, "messages": list(messages or [USER]), **extra}


def tokens_used(tenant) -> int:
    row = QuotaCounter.objects.filter(tenant=tenant, resource="tokens").first()
    return row.used if row else 0


def sse_events(response) -> list:
    """The `data:` payloads of an event stream (one body under the test client's WSGI)."""
    text = response.content.decode()
    return [event.removeprefix("data: ") for event in text.split("\n\n") if event]


def streamed_text(chunks) -> str:
    return "".join(
        chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk.get("choices")
    )


# --- Metering what the upstream reports -----------------------------------------------------------


def test_openai_upstream_usage_is_what_is_metered_and_recorded(owner, upstream, upstream_key):
    upstream.prompt_tokens = 42  # the upstream's tokenizer, not the gateway's counting rule
    upstream.delay = 0.05
    model = openai_model(
        upstream, key_env=KEY_ENV, input_price_micros=2_500_000, output_price_micros=10_000_000
    )
    body = chat(model, SYSTEM, USER, max_tokens=100)

    response = owner.client.post(URL, body, format="json")

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["model"] == model.name
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 42, "completion_tokens": 5, "total_tokens": 47}
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent["json"]["model"] == model.upstream_model
    assert sent["json"]["max_tokens"] == 100
    assert sent["json"]["messages"] == [SYSTEM, USER]
    # Metered: the reservation (estimate + max_tokens) settled to the upstream's usage.
    assert tokens_used(owner.tenant) == 47
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.provider == model.provider.name
    assert call.model == call.requested_model == model.name
    assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (42, 5, 47)
    assert call.reserved_tokens == tokens.estimate_prompt_tokens([SYSTEM, USER]) + 100
    assert call.cost_micros == tokens.cost_micros(
        prompt_tokens=42, completion_tokens=5, input_price=2_500_000, output_price=10_000_000
    )
    assert call.status == CallStatus.SUCCEEDED
    assert call.error_type == ""
    assert call.attempts == 1
    assert call.latency_ms >= 50
    assert not call.streamed and not call.usage_estimated


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("reported", [10**30, 2**62], ids=["past-any-counter", "past-the-sum"])
def test_usage_past_the_context_window_is_not_believed(owner, upstream, caplog, stream, reported):
    # A broken or hostile upstream's count: metered by the counting rule and flagged, never
    # an overflow (the call would be lost, its reservation held until its lease ran out).
    upstream.prompt_tokens = reported
    model = openai_model(upstream)

    response = owner.client.post(URL, chat(model, stream=stream), format="json")

    assert response.status_code == 200, response.content
    expected = tokens.prompt_tokens([USER]) + tokens.count_tokens(REPLY)
    usage = json.loads(sse_events(response)[-2])["usage"] if stream else response.json()["usage"]
    assert usage["total_tokens"] == expected
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.SUCCEEDED
    assert call.usage_estimated
    assert call.total_tokens == tokens_used(owner.tenant) == expected
    assert f"Model {model.name}: the upstream reported {reported} prompt" in caplog.text
    assert not GatewayReservation.objects.exists()


def test_usage_up_to_the_context_window_is_metered_as_reported(owner, upstream):
    model = openai_model(upstream)
    upstream.prompt_tokens = model.context_window - PIECES

    response = owner.client.post(URL, chat(model, max_tokens=10), format="json")

    assert response.status_code == 200, response.content
    assert response.json()["usage"]["total_tokens"] == model.context_window
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert not call.usage_estimated
    assert tokens_used(owner.tenant) == model.context_window


def test_an_answer_without_usage_is_metered_by_the_counting_rule(owner, upstream):
    upstream.script(NoUsage())
    model = openai_model(upstream)

    response = owner.client.post(URL, chat(model), format="json")

    assert response.status_code == 200, response.content
    expected = tokens.prompt_tokens([USER]) + tokens.count_tokens(REPLY)
    assert response.json()["usage"]["total_tokens"] == expected
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.usage_estimated
    assert tokens_used(owner.tenant) == expected


# --- Anthropic ------------------------------------------------------------------------------------


def test_anthropic_translation_end_to_end(owner, upstream, upstream_key):
    upstream.prompt_tokens = 30
    model = anthropic_model(upstream, upstream_model="claude-test-20240229")
    body = chat(model, SYSTEM, USER, max_tokens=64, stop=["never"])

    response = owner.client.post(URL, body, format="json")

    assert response.status_code == 200, response.content
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == UPSTREAM_KEY
    assert sent["headers"]["anthropic-version"]
    assert "authorization" not in sent["headers"]
    assert sent["json"]["model"] == "claude-test-20240229"
    assert sent["json"]["system"] == SYSTEM["content"]
    assert sent["json"]["messages"] == [USER]
    assert sent["json"]["max_tokens"] == 64
    assert sent["json"]["stop_sequences"] == ["never"]
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
    assert answer["choices"][0]["finish_reason"] == "stop"  # end_turn
    assert answer["usage"] == {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.provider == model.provider.name
    assert call.total_tokens == tokens_used(owner.tenant) == 35


def test_anthropic_stream_is_relayed_as_openai_chunks(owner, upstream, upstream_key):
    upstream.prompt_tokens = 30
    model = anthropic_model(upstream)

    response = owner.client.post(URL, chat(model, SYSTEM, USER, stream=True), format="json")

    assert response.status_code == 200, response.content
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert streamed_text(chunks) == REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "total_tokens": 35,
    }
    assert upstream.requests[-1]["json"]["system"] == SYSTEM["content"]
    assert tokens_used(owner.tenant) == 35


def test_max_tokens_cut_is_mapped_back_to_length(owner, upstream, upstream_key):
    model = anthropic_model(upstream)

    response = owner.client.post(URL, chat(model, max_tokens=2), format="json")

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 2


# --- Streaming ------------------------------------------------------------------------------------


def test_streaming_through_an_upstream_relays_chunks_then_usage_then_done(owner, upstream):
    upstream.prompt_tokens = 21
    model = openai_model(upstream)

    response = owner.client.post(URL, chat(model, stream=True), format="json")

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/event-stream"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content_chunks) == PIECES
    assert streamed_text(chunks) == REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 21, "completion_tokens": 5, "total_tokens": 26}
    sent = upstream.requests[-1]["json"]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.SUCCEEDED
    assert call.streamed and not call.usage_estimated
    assert call.time_to_first_token_ms is not None
    assert tokens_used(owner.tenant) == 26


def test_a_stream_without_usage_is_estimated_by_the_counting_rule_and_flagged(owner, upstream):
    upstream.script(NoUsage())
    model = openai_model(upstream)

    response = owner.client.post(URL, chat(model, stream=True), format="json")

    assert response.status_code == 200, response.content
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])["usage"]
    expected = {
        "prompt_tokens": tokens.prompt_tokens([USER]),
        "completion_tokens": tokens.count_tokens(REPLY),
    }
    assert usage == {**expected, "total_tokens": sum(expected.values())}
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.usage_estimated
    assert call.status == CallStatus.SUCCEEDED
    assert tokens_used(owner.tenant) == usage["total_tokens"]


@pytest.mark.parametrize("step", [BrokenStream(after=2), BrokenStream(after=2, abrupt=False)])
def test_a_broken_stream_ends_with_an_error_event_and_is_metered_at_what_was_relayed(
    owner, upstream, step
):
    upstream.script(step)
    model = openai_model(upstream)
    body = chat(model, stream=True, max_tokens=200)

    response = owner.client.post(URL, body, format="json")

    assert response.status_code == 200  # the stream had started
    events = [json.loads(event) for event in sse_events(response)]
    relayed = streamed_text(events[:-1])
    assert relayed == "".join(split_reply(REPLY, PIECES)[:2])
    error = events[-1]["error"]
    assert error["code"] == "AI_SERVICE_ERROR"
    assert error["details"] == {"reason": "bad_response"}
    assert not any(e.get("usage") for e in events)
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.FAILED
    assert call.error_type == "bad_response"
    assert call.usage_estimated
    assert call.prompt_tokens == tokens.prompt_tokens([USER])
    assert call.completion_tokens == tokens.count_tokens(relayed)
    assert call.reserved_tokens == tokens.estimate_prompt_tokens([USER]) + 200
    # The reservation is released: only what was relayed stays counted.
    assert tokens_used(owner.tenant) == call.total_tokens < call.reserved_tokens


def test_an_error_event_mid_stream_is_passed_on_as_ours(owner, upstream):
    upstream.script(StreamError(after=1))
    model = openai_model(upstream)

    response = owner.client.post(URL, chat(model, stream=True), format="json")

    events = [json.loads(event) for event in sse_events(response)]
    assert events[-1]["error"]["code"] == "AI_SERVICE_ERROR"
    assert b"Stream failed" not in response.content
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.FAILED
    assert tokens_used(owner.tenant) == call.total_tokens


# --- Retries, failures, fallbacks -----------------------------------------------------------------


def test_an_upstream_429_is_retried_once_and_recorded_as_one_call(owner, upstream):
    upstream.script(Status(429))
    model = openai_model(upstream, max_retries=1)

    response = owner.client.post(URL, chat(model), format="json")

    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    assert len(upstream.requests) == 2
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.SUCCEEDED
    assert call.attempts == 2
    assert call.model == model.name


def test_a_retry_waits_the_upstreams_retry_after_up_to_the_cap(owner, upstream, settings):
    settings.GATEWAY_RETRY_AFTER_MAX_SECONDS = 0.3
    model = openai_model(upstream, max_retries=1)
    upstream.script(Status(429, retry_after_ms=200))

    waited = owner.client.post(URL, chat(model), format="json")

    upstream.script(Status(429, retry_after=3600))  # capped at 0.3 s
    capped = owner.client.post(URL, chat(model), format="json")

    assert waited.status_code == capped.status_code == 200
    first, second = GatewayCall.objects.filter(tenant=owner.tenant).order_by("created_at")
    assert first.attempts == second.attempts == 2
    assert 200 <= first.latency_ms < 1000
    assert 300 <= second.latency_ms < 1000


def test_repeated_500s_answer_502_without_the_upstreams_body_or_key(owner, upstream, upstream_key):
    upstream.script(Status(500), Status(500))
    model = openai_model(upstream, key_env=KEY_ENV, max_retries=1)

    response = owner.client.post(URL, chat(model), format="json")

    error = assert_envelope(response, 502, "AI_SERVICE_ERROR")
    assert error["details"] == {"reason": "server_error"}
    assert len(upstream.requests) == 2
    assert UPSTREAM_KEY.encode() not in response.content
    assert b"Fake upstream error" not in response.content
    assert b"Incorrect API key" not in response.content
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.FAILED
    assert call.error_type == "server_error"
    assert call.attempts == 2
    assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (0, 0, 0)
    assert call.cost_micros == 0
    assert call.reserved_tokens > 0
    assert tokens_used(owner.tenant) == 0


def test_a_rejection_is_not_retried(owner, upstream, upstream_key):
    upstream.script(Status(401))
    model = openai_model(upstream, key_env=KEY_ENV, max_retries=2)

    response = owner.client.post(URL, chat(model), format="json")

    assert_envelope(response, 502, "AI_SERVICE_ERROR")
    assert len(upstream.requests) == 1
    assert GatewayCall.objects.get(tenant=owner.tenant).attempts == 1
    assert tokens_used(owner.tenant) == 0


def test_a_fallback_model_answers_when_the_first_upstream_fails(owner, upstream):
    fallback = openai_model(upstream, upstream_model="fallback-upstream")
    first = openai_model(upstream, max_retries=0, fallbacks=[fallback.name])
    upstream.script(Status(503))

    response = owner.client.post(URL, chat(first), format="json")

    assert response.status_code == 200, response.content
    assert response.json()["model"] == fallback.name
    assert [r["json"]["model"] for r in upstream.requests] == [
        first.upstream_model,
        "fallback-upstream",
    ]
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.requested_model == first.name
    assert call.model == fallback.name
    assert call.provider == fallback.provider.name
    assert call.attempts == 2
    assert call.status == CallStatus.SUCCEEDED


def test_a_fallback_serves_a_stream_that_failed_before_its_first_chunk(owner, upstream):
    fallback = openai_model(upstream)
    first = openai_model(upstream, max_retries=0, fallbacks=[fallback.name])
    upstream.script(Status(500))

    response = owner.client.post(URL, chat(first, stream=True), format="json")

    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["model"] for chunk in chunks} == {fallback.name}
    assert streamed_text(chunks) == REPLY
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert (call.requested_model, call.model) == (first.name, fallback.name)


def test_the_timeout_of_a_provider_answers_502(owner, upstream):
    upstream.script(Delay(2))
    model = openai_model(upstream, max_retries=0, timeout_seconds=1)

    response = owner.client.post(URL, chat(model), format="json")

    error = assert_envelope(response, 502, "AI_SERVICE_ERROR")
    assert error["details"] == {"reason": "timeout"}
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.FAILED
    assert call.error_type == "timeout"
    assert tokens_used(owner.tenant) == 0


# --- Cooldown -------------------------------------------------------------------------------------


def test_a_failing_model_cools_down_then_clear_ends_it(owner, upstream, settings):
    settings.GATEWAY_COOLDOWN_FAILURES = 2
    model = openai_model(upstream, max_retries=1)
    upstream.script(Status(500), Status(500))

    failed = owner.client.post(URL, chat(model), format="json")
    assert_envelope(failed, 502, "AI_SERVICE_ERROR")
    assert len(upstream.requests) == 2
    assert cooldown.cooling_down([model.name]).names == {model.name}

    skipped = owner.client.post(URL, chat(model), format="json")

    error = assert_envelope(skipped, 503, "AI_SERVICE_ERROR")
    assert error["details"]["model"] == model.name
    assert len(upstream.requests) == 2  # nothing reached the upstream
    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 1
    assert tokens_used(owner.tenant) == 0

    cooldown.clear(model.name)
    served = owner.client.post(URL, chat(model), format="json")

    assert served.status_code == 200, served.content
    assert len(upstream.requests) == 3


def test_a_cooling_model_is_skipped_for_its_fallback(owner, upstream, settings):
    settings.GATEWAY_COOLDOWN_FAILURES = 2
    fallback = openai_model(upstream, upstream_model="the-fallback")
    model = openai_model(upstream, max_retries=1, fallbacks=[fallback.name])
    upstream.script(Status(500), Status(500))
    first = owner.client.post(URL, chat(model), format="json")
    assert first.status_code == 200, first.content  # the fallback answered the third attempt
    assert cooldown.cooling_down([model.name, fallback.name]).names == {model.name}
    upstream.reset()

    response = owner.client.post(URL, chat(model), format="json")

    assert response.status_code == 200, response.content
    assert [r["json"]["model"] for r in upstream.requests] == ["the-fallback"]
    call = GatewayCall.objects.filter(tenant=owner.tenant).first()  # the newest
    assert (call.requested_model, call.model, call.attempts) == (model.name, fallback.name, 1)


# --- The upstream's key ---------------------------------------------------------------------------


def test_the_upstream_key_never_reaches_answers_call_records_or_audit(
    owner, upstream, upstream_key, settings
):
    settings.GATEWAY_COOLDOWN_FAILURES = 100
    owner.tenant.settings = {"maxTokensPerMonth": 1000}
    owner.tenant.save()
    openai = openai_model(upstream, key_env=KEY_ENV, max_retries=0)
    anthropic = anthropic_model(upstream)
    upstream.script(
        Status(401),  # both error bodies repeat the key they were sent
        Status(401),
        Status(429),
        Status(400, body={"error": {"type": UPSTREAM_KEY.lower(), "code": UPSTREAM_KEY}}),
        StreamError(after=1),
    )
    calls = [
        chat(openai, max_tokens=20),
        chat(anthropic, max_tokens=20),
        chat(openai, stream=True, max_tokens=20),
        chat(openai, max_tokens=20),
        chat(anthropic, stream=True, max_tokens=20),
        chat(openai, max_tokens=900),  # reserves past 80 % of the quota: a quota.warning event
        chat(anthropic, stream=True, max_tokens=20),
    ]
    bodies = [owner.client.post(URL, body, format="json") for body in calls]
    assert [r.status_code for r in bodies] == [502, 502, 502, 502, 200, 200, 200]
    assert all(
        UPSTREAM_KEY in r["headers"].get("authorization", r["headers"].get("x-api-key", ""))
        for r in upstream.requests
    )

    for response in bodies:
        assert UPSTREAM_KEY.encode() not in response.content
        assert UPSTREAM_KEY.lower().encode() not in response.content.lower()
        assert all(UPSTREAM_KEY not in value for value in response.headers.values())
    records = list(GatewayCall.objects.filter(tenant=owner.tenant).values())
    assert len(records) == 7
    assert UPSTREAM_KEY not in json.dumps(records, default=str)
    events = list(AuditEvent.objects.values("event_type", "payload"))
    assert any(event["event_type"] == "quota.warning" for event in events)
    assert UPSTREAM_KEY not in json.dumps(events, default=str)


@pytest.mark.parametrize("step", [BrokenStream(after=3), StreamError(after=3)])
def test_a_broken_anthropic_stream_is_metered_at_least_at_what_was_relayed(
    owner, upstream, upstream_key, step
):
    upstream.prompt_tokens = 30
    upstream.script(step)
    model = anthropic_model(upstream)

    response = owner.client.post(URL, chat(model, stream=True, max_tokens=200), format="json")

    events = [json.loads(event) for event in sse_events(response)]
    assert events[-1]["error"]["code"] == "AI_SERVICE_ERROR"
    relayed = streamed_text(events[:-1])
    assert relayed == "".join(split_reply(REPLY, PIECES)[:3])
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.status == CallStatus.FAILED
    assert call.prompt_tokens == 30  # what the upstream said of the prompt
    # Its message_start said 1 output token; three pieces were relayed all the same.
    assert call.completion_tokens >= tokens.count_tokens(relayed), (
        call.completion_tokens,
        call.usage_estimated,
    )
    assert tokens_used(owner.tenant) == call.total_tokens
