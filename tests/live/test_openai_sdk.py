"""OpenAI's official Python SDK, unchanged, against the quick start served by ASGI (uvicorn):
`base_url=<host>/api/v1` and one of our API keys, chat and streaming, sync and async. This is
how users call the gateway."""

import asyncio
import time

import pytest

from .client import DEMO_PASSWORD, call
from .conftest import API_KEY_USAGE_FLUSH_SECONDS

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def created_key(quick_start) -> tuple[str, dict]:
    """(the owner's token, the created key's answer)."""
    login = call(
        quick_start.url,
        "POST",
        "/api/v1/auth/token/",
        body={"username": "owner@acme.example.com", "password": DEMO_PASSWORD},
    )
    assert login.status == 200, login.body
    created = call(
        quick_start.url,
        "POST",
        "/api/v1/api-keys/",
        token=login.body["token"],
        organization="acme",
        body={"name": "OpenAI SDK test", "scopes": ["write"]},
    )
    assert created.status == 201, created.body
    return login.body["token"], created.body


@pytest.fixture(scope="module")
def api_key(created_key) -> str:
    return created_key[1]["key"]


def _client(quick_start, api_key):
    return openai.OpenAI(base_url=f"{quick_start.url}/api/v1", api_key=api_key, max_retries=0)


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three colours of the rainbow."},
]


def test_the_sdk_chats_and_reads_usage(quick_start, api_key):
    completion = _client(quick_start, api_key).chat.completions.create(
        model="gpt-4", messages=MESSAGES, max_tokens=50
    )

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4"
    assert "Name three colours of the rainbow." in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def test_the_sdk_streams_to_the_same_answer_with_usage_last(quick_start, api_key):
    client = _client(quick_start, api_key)
    whole = client.chat.completions.create(model="claude-3-haiku", messages=MESSAGES)

    chunks = list(
        client.chat.completions.create(model="claude-3-haiku", messages=MESSAGES, stream=True)
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len(chunks) > 5  # one chunk per token, not one body
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_the_async_sdk_streams_concurrently(quick_start, api_key):
    async def run():
        client = openai.AsyncOpenAI(
            base_url=f"{quick_start.url}/api/v1", api_key=api_key, max_retries=0
        )

        async def one(index):
            stream = await client.chat.completions.create(
                model="gpt-3.5-turbo",
                messages=[{"role": "user", "content": f"Question {index}"}],
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        answers = await asyncio.gather(*(one(index) for index in range(5)))
        await client.close()
        return answers

    answers = asyncio.run(run())

    assert [f"Question {index}" in answer for index, answer in enumerate(answers)] == [True] * 5


def test_the_sdk_raises_our_errors_as_its_own(quick_start, api_key):
    client = _client(quick_start, api_key)

    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{quick_start.url}/api/v1", api_key="cp_" + "0" * 32 + "_" + "x" * 43
        ).chat.completions.create(model="gpt-4", messages=MESSAGES)

    assert unknown.value.body["code"] == "VALIDATION_ERROR"
    assert "model" in unknown.value.body["details"]


def test_calls_across_the_keys_usage_flushes_answer_and_are_counted(quick_start, created_key):
    """Without Redis the web process writes its keys' usage itself, from the answer that finds
    the flush due; the gateway's answers are made on the event loop, where the database is
    refused, and each call across a flush must still answer."""
    token, key = created_key
    client = _client(quick_start, key["key"])

    def requests_counted() -> int:
        usage = call(
            quick_start.url, "GET", f"/api/v1/api-keys/{key['id']}/usage/", token=token,
            organization="acme",
        )  # fmt: skip
        assert usage.status == 200, usage.body
        return usage.body["total_requests"]

    before = requests_counted()
    for streamed in (False, True, False):
        time.sleep(API_KEY_USAGE_FLUSH_SECONDS + 0.2)
        answer = client.chat.completions.create(
            model="gpt-4", messages=MESSAGES, max_tokens=5, stream=streamed
        )
        if streamed:
            assert list(answer)[-1].usage.total_tokens > 0

    # A flush running on its thread holds what it claimed until it has written it: read again
    # until it is done.
    for _ in range(50):
        counted = requests_counted() - before
        if counted == 3:
            break
        time.sleep(0.2)
    assert counted == 3
    quick_start.assert_healthy()
