"""The official `openai` Python SDK against our server (a real threaded HTTP server,
pytest-django's `live_server`), authenticated with one of our API keys: what OpenAI's clients
see of chat/completions, errors included."""

import asyncio

import pytest

from playground.catalogue import seed_catalogue
from playground.models import GatewayCall, LanguageModel, Provider
from tests.factories import issue_api_key

openai = pytest.importorskip("openai")

# The live server commits its rows, so the test database is flushed after each test.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
MESSAGES = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "Hello from the official SDK!"},
]


@pytest.fixture
def catalogue():
    """The seeded models (gpt-4, served by the local provider without OPENAI_API_KEY): an
    earlier transactional test may have flushed the migration's rows."""
    seed_catalogue(Provider, LanguageModel)


@pytest.fixture
def caller(make_caller, catalogue, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # gpt-4 stays on the local provider
    return make_caller()


@pytest.fixture
def raw_key(caller) -> str:
    return issue_api_key(caller.membership, scopes=["write"])[1]


@pytest.fixture
def client(live_server, raw_key):
    sdk = openai.OpenAI(base_url=live_server.url + "/api/v1", api_key=raw_key, max_retries=0)
    yield sdk
    sdk.close()


def test_a_completion_returns_content_and_usage(client, caller):
    completion = client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=50)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4"
    message = completion.choices[0].message
    assert message.role == "assistant"
    assert "Hello from the official SDK!" in message.content
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    call = GatewayCall.objects.get(tenant=caller.tenant)
    assert call.total_tokens == usage.total_tokens


def test_raw_response_carries_openais_rate_limit_headers(client):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4", messages=MESSAGES)

    assert raw.headers["x-ratelimit-limit-requests"] == "60"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) >= 0
    assert raw.parse().choices[0].message.content


def test_a_stream_joins_to_the_content_and_ends_with_usage(client, caller):
    chunks = list(client.chat.completions.create(model="gpt-4", messages=MESSAGES, stream=True))

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "Hello from the official SDK!" in text
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    call = GatewayCall.objects.get(tenant=caller.tenant)
    assert call.streamed
    assert call.total_tokens == last.usage.total_tokens
    # Non-streamed, the same request gets the same words.
    again = client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert again.choices[0].message.content == text


def test_a_quota_refusal_raises_rate_limit_error_with_our_envelope(client, caller):
    caller.tenant.settings = {"maxTokensPerMonth": 10}
    caller.tenant.save()

    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=100)

    error = raised.value
    assert error.status_code == 429
    assert error.code == "QUOTA_EXCEEDED"
    body = error.body.get("error", error.body)  # the SDK unwraps the envelope's `error`
    assert body["code"] == "QUOTA_EXCEEDED"
    assert body["details"]["resource"] == "tokens"
    assert body["request_id"] == error.response.headers["X-Request-ID"]
    assert not GatewayCall.objects.exists()


def test_an_unknown_model_raises_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)

    assert raised.value.status_code == 400
    assert raised.value.code == "VALIDATION_ERROR"
    body = raised.value.body.get("error", raised.value.body)
    assert "model" in body["details"]


def test_a_wrong_key_raises_authentication_error(live_server, caller):
    sdk = openai.OpenAI(base_url=live_server.url + "/api/v1", api_key="cp_not-a-key", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError):
            sdk.chat.completions.create(model="gpt-4", messages=MESSAGES)
    finally:
        sdk.close()


def test_the_async_client_completes_and_streams(live_server, raw_key, caller):
    async def main():
        async with openai.AsyncOpenAI(
            base_url=live_server.url + "/api/v1", api_key=raw_key, max_retries=0
        ) as sdk:
            completion = await sdk.chat.completions.create(model="gpt-4", messages=MESSAGES)
            stream = await sdk.chat.completions.create(
                model="gpt-4", messages=MESSAGES, stream=True
            )
            chunks = [chunk async for chunk in stream]
            return completion, chunks

    completion, chunks = asyncio.run(main())

    content = completion.choices[0].message.content
    assert "Hello from the official SDK!" in content
    assert completion.usage.total_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].usage.total_tokens == completion.usage.total_tokens
    assert GatewayCall.objects.filter(tenant=caller.tenant).count() == 2
