"""The provider adapters against a real local HTTP server (FakeUpstream), and the local
provider. No database: the adapters know nothing of Django.

Async calls run in `asyncio.run` inside plain tests; each run closes the provider's HTTP
client of its event loop before the loop ends.
"""

import asyncio
import gzip
import json
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from playground import tokens
from playground.providers import (
    ChatRequest,
    ChatResult,
    ErrorKind,
    Provider,
    ProviderConfig,
    StreamDelta,
    UpstreamError,
    Usage,
    build_provider,
)
from playground.providers.anthropic import AnthropicProvider
from playground.providers.local import LocalProvider
from playground.providers.openai import OpenAIProvider

from .upstream import (
    BrokenStream,
    Delay,
    FakeUpstream,
    Malformed,
    NoUsage,
    Raw,
    Reply,
    Status,
    StreamError,
    split_reply,
)

OPENAI_KEY = "sk-test-openai-7f3a9c1e5b2d4f6a8c0e"
ANTHROPIC_KEY = "sk-ant-test-4b8d2f6a0c3e5a7b9d1f"
SECRET = "sk-live-SECRET-do-not-leak-123456"
REPLY = "Hello from upstream, in five pieces."

HELLO = ChatRequest(
    model="test-model", messages=({"role": "user", "content": "Hi there"},), max_tokens=100
)


# --- Helpers -----------------------------------------------------------------------------------


def run(provider: Provider, call: Callable[[], Awaitable]):
    """Run `call()` in a fresh event loop, closing the provider's clients of that loop after."""

    async def main():
        try:
            return await call()
        finally:
            await provider.aclose()

    return asyncio.run(main())


def complete(provider: Provider, request: ChatRequest = HELLO) -> ChatResult:
    return run(provider, lambda: provider.complete(request))


def stream(provider: Provider, request: ChatRequest = HELLO) -> list[StreamDelta]:
    async def collect():
        return [delta async for delta in provider.stream(request)]

    return run(provider, collect)


def call(provider: Provider, mode: str, request: ChatRequest = HELLO):
    return complete(provider, request) if mode == "complete" else stream(provider, request)


def failure(provider: Provider, mode: str = "complete", request: ChatRequest = HELLO):
    """The UpstreamError of a call, checked to leak neither the key nor the upstream's body."""
    with pytest.raises(UpstreamError) as caught:
        call(provider, mode, request)
    error = caught.value
    shown = f"{error} {error!r} {error.message} {provider!r} {provider.config!r}"
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, SECRET, "Fake upstream error", "Stream failed"):
        assert secret not in shown
    assert error.__cause__ is None  # no transport exception rides along
    return error


def openai(upstream: FakeUpstream, **config) -> OpenAIProvider:
    config = {"base_url": upstream.url + "/v1", "api_key": OPENAI_KEY, **config}
    return OpenAIProvider(ProviderConfig(name="openai-test", kind="openai", **config))


def anthropic(upstream: FakeUpstream, **config) -> AnthropicProvider:
    config = {"base_url": upstream.url, "api_key": ANTHROPIC_KEY, **config}
    return AnthropicProvider(ProviderConfig(name="anthropic-test", kind="anthropic", **config))


def closed_port_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def text_of(deltas: list[StreamDelta]) -> str:
    return "".join(delta.content for delta in deltas)


@pytest.fixture
def upstream():
    with FakeUpstream(reply=REPLY, chunks=5) as server:
        yield server


ADAPTERS = pytest.mark.parametrize("adapter", [openai, anthropic], ids=["openai", "anthropic"])
MODES = pytest.mark.parametrize("mode", ["complete", "stream"])


# --- build_provider ----------------------------------------------------------------------------


def test_build_provider_picks_the_adapter_of_the_kind():
    for kind, cls in [
        ("local", LocalProvider),
        ("openai", OpenAIProvider),
        ("anthropic", AnthropicProvider),
    ]:
        assert type(build_provider(ProviderConfig(name="p", kind=kind))) is cls
    with pytest.raises(ValueError, match="Unknown provider kind"):
        build_provider(ProviderConfig(name="p", kind="nope"))


# --- Local provider ----------------------------------------------------------------------------


def local() -> LocalProvider:
    return LocalProvider(ProviderConfig(name="local", kind="local"))


def local_request(text: str = "Tell me about the weather today", **options) -> ChatRequest:
    messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": text})
    return ChatRequest(model="echo", messages=messages, **{"max_tokens": 200, **options})


def test_local_provider_answers_the_same_request_with_the_same_text():
    first = asyncio.run(local().complete(local_request()))
    second = asyncio.run(local().complete(local_request()))
    assert first == second
    assert first.content == "[local:echo] You said: Tell me about the weather today"
    assert first.finish_reason == "stop"


def test_local_provider_truncates_at_max_tokens_with_finish_reason_length():
    result = asyncio.run(local().complete(local_request(max_tokens=4)))
    assert result.finish_reason == "length"
    assert tokens.count_tokens(result.content) == 4
    assert result.usage.completion_tokens == 4


def test_local_provider_cuts_the_answer_before_a_stop_sequence():
    result = asyncio.run(local().complete(local_request(stop=("weather",))))
    assert result.content == "[local:echo] You said: Tell me about the "
    assert result.finish_reason == "stop"


def test_local_provider_usage_is_the_playground_token_count():
    request = local_request()
    result = asyncio.run(local().complete(request))
    assert result.usage == Usage(
        tokens.prompt_tokens(request.messages), tokens.count_tokens(result.content)
    )


def test_local_provider_stream_pieces_join_to_the_complete_text():
    request = local_request(max_tokens=7)
    result = asyncio.run(local().complete(request))

    async def collect():
        return [delta async for delta in local().stream(request)]

    deltas = asyncio.run(collect())
    assert text_of(deltas).strip() == result.content.strip()
    assert len([delta for delta in deltas if delta.content]) == 7
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage == result.usage


# --- OpenAI: happy paths and translation -------------------------------------------------------


def test_openai_complete_returns_content_finish_reason_and_usage(upstream):
    upstream.prompt_tokens = 12
    result = complete(openai(upstream))
    assert result == ChatResult(REPLY, "stop", Usage(12, 5))


def test_openai_sends_the_bearer_key_and_the_chat_completions_body(upstream):
    request = ChatRequest(
        model="gpt-test",
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Again"},
        ),
        max_tokens=50,
        temperature=0.3,
        top_p=0.9,
        stop=("END",),
        user="user-42",
    )
    complete(openai(upstream), request)
    [sent] = upstream.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent["json"] == {
        "model": "gpt-test",
        "messages": list(request.messages),
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "user-42",
    }


@ADAPTERS
def test_a_call_goes_out_as_httpx_client_sends_one(upstream, adapter):
    """The adapters send their requests through the transport, without httpx's client: the
    headers and the JSON encoding the upstream sees are still the client's (compact JSON,
    UTF-8 as is), Accept naming the event stream when streaming."""
    request = ChatRequest(
        model="test-model", messages=({"role": "user", "content": "Grüße, 東京"},), max_tokens=20
    )
    complete(adapter(upstream), request)
    stream(adapter(upstream), request)

    raw_body = json.dumps(upstream.requests[0]["json"], ensure_ascii=False, separators=(",", ":"))
    for sent, accept in zip(upstream.requests, ("*/*", "text/event-stream"), strict=True):
        headers = sent["headers"]
        assert headers["content-type"] == "application/json"
        assert headers["accept"] == accept
        assert headers["accept-encoding"] == "gzip, deflate"
        assert headers["user-agent"].startswith("python-httpx/")
        assert headers["host"] == upstream.url.removeprefix("http://")
    assert upstream.requests[0]["headers"]["content-length"] == str(len(raw_body.encode()))
    assert "Grüße, 東京" in json.dumps(upstream.requests[0]["json"], ensure_ascii=False)


def test_openai_leaves_unset_options_out_of_the_body(upstream):
    complete(openai(upstream))
    assert upstream.requests[0]["json"] == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "Hi there"}],
        "max_tokens": 100,
    }


def test_openai_without_a_key_sends_no_authorization_header(upstream):
    # Ollama and vLLM need no key: the base URL is enough.
    result = complete(openai(upstream, api_key=""))
    assert result.content == REPLY
    assert "authorization" not in upstream.requests[0]["headers"]


def test_openai_finish_reason_length_when_max_tokens_is_reached(upstream):
    request = ChatRequest(model="m", messages=HELLO.messages, max_tokens=2)
    result = complete(openai(upstream), request)
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 2


def test_openai_answer_without_usage_has_usage_none(upstream):
    upstream.script(NoUsage())
    assert complete(openai(upstream)).usage is None


def test_openai_stream_yields_pieces_then_finish_reason_then_usage(upstream):
    upstream.prompt_tokens = 9
    deltas = stream(openai(upstream))
    assert [delta.content for delta in deltas[:5]] == split_reply(REPLY, 5)
    assert text_of(deltas) == REPLY
    assert deltas[5:] == [StreamDelta(finish_reason="stop"), StreamDelta(usage=Usage(9, 5))]
    body = upstream.requests[0]["json"]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_openai_stream_without_usage_chunk_yields_no_usage_and_no_error(upstream):
    upstream.script(NoUsage())
    deltas = stream(openai(upstream))
    assert text_of(deltas) == REPLY
    assert deltas[-1] == StreamDelta(finish_reason="stop")
    assert all(delta.usage is None for delta in deltas)


def test_openai_stream_parser_skips_comments_and_other_fields(upstream):
    events = (
        ": keep-alive\r\n\r\n"
        "id: 1\r\nretry: 100\r\nevent: message\r\n"
        'data:{"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]}\r\n'
        "\r\n"
        'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}\n\n'
        'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}\n\n'
        "data: [DONE]"
    )
    upstream.script(Raw(events, content_type="text/event-stream"))
    assert stream(openai(upstream)) == [
        StreamDelta(content="Hi"),
        StreamDelta(finish_reason="length"),
        StreamDelta(usage=Usage(3, 1)),
    ]


def test_openai_keeps_the_connection_after_a_stream(upstream):
    provider = openai(upstream)

    async def twice():
        for _ in range(2):
            assert text_of([delta async for delta in provider.stream(HELLO)]) == REPLY
        return await provider.complete(HELLO)

    assert run(provider, twice).content == REPLY
    assert len(upstream.requests) == 3


# --- Anthropic: happy paths and translation ----------------------------------------------------


def test_anthropic_complete_returns_text_finish_reason_and_usage(upstream):
    upstream.prompt_tokens = 11
    assert complete(anthropic(upstream)) == ChatResult(REPLY, "stop", Usage(11, 5))


def test_anthropic_translates_system_messages_stop_and_user(upstream):
    request = ChatRequest(
        model="claude-test",
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": "Are you there?"},
            {"role": "system", "content": "Answer in English."},
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "Good"},
        ),
        max_tokens=64,
        temperature=0.5,
        top_p=0.8,
        stop=("END", "STOP"),
        user="user-42",
    )
    complete(anthropic(upstream), request)
    [sent] = upstream.requests
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["headers"]["content-type"] == "application/json"
    assert "authorization" not in sent["headers"]
    assert sent["json"] == {
        "model": "claude-test",
        "system": "Be brief.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": "Hi\n\nAre you there?"},
            {"role": "assistant", "content": "Yes."},
            {"role": "user", "content": "Good"},
        ],
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "user-42"},
    }


def test_anthropic_leaves_unset_options_out_of_the_body(upstream):
    complete(anthropic(upstream))
    assert upstream.requests[0]["json"] == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "Hi there"}],
        "max_tokens": 100,
    }


def test_anthropic_puts_a_user_turn_first_when_the_assistant_speaks_first(upstream):
    request = ChatRequest(
        model="m",
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "How can I help?"},
            {"role": "user", "content": "Hi"},
        ),
        max_tokens=10,
    )
    complete(anthropic(upstream), request)
    assert upstream.requests[0]["json"]["messages"] == [
        {"role": "user", "content": "(continue)"},
        {"role": "assistant", "content": "How can I help?"},
        {"role": "user", "content": "Hi"},
    ]


def test_anthropic_clamps_temperature_to_its_range(upstream):
    request = ChatRequest(model="m", messages=HELLO.messages, max_tokens=10, temperature=1.7)
    complete(anthropic(upstream), request)
    assert upstream.requests[0]["json"]["temperature"] == 1.0


def test_anthropic_accepts_a_base_url_with_the_version_path(upstream):
    assert complete(anthropic(upstream, base_url=upstream.url + "/v1/")).content == REPLY
    assert upstream.requests[0]["path"] == "/v1/messages"


def test_anthropic_joins_the_text_blocks_and_skips_the_others(upstream):
    upstream.script(
        Raw(
            {
                "type": "message",
                "content": [
                    {"type": "text", "text": "Part one. "},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
                    {"type": "text", "text": "Part two."},
                ],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 4, "output_tokens": 6},
            }
        )
    )
    assert complete(anthropic(upstream)) == ChatResult("Part one. Part two.", "stop", Usage(4, 6))


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "stop"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_anthropic_stop_reason_maps_to_the_openai_finish_reason(
    upstream, stop_reason, finish_reason
):
    upstream.script(Raw({"content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason}))
    result = complete(anthropic(upstream))
    assert result.finish_reason == finish_reason
    assert result.usage is None  # none reported


def test_anthropic_fake_stop_sequence_and_max_tokens_map_through(upstream):
    stopped = ChatRequest(model="m", messages=HELLO.messages, max_tokens=100, stop=("five",))
    assert complete(anthropic(upstream), stopped) == ChatResult(
        "Hello from upstream, in ", "stop", Usage(5, 5)
    )
    capped = ChatRequest(model="m", messages=HELLO.messages, max_tokens=2)
    assert complete(anthropic(upstream), capped).finish_reason == "length"


def test_anthropic_stream_yields_text_then_finish_reason_with_usage(upstream):
    upstream.prompt_tokens = 8
    deltas = stream(anthropic(upstream))
    assert text_of(deltas) == REPLY
    assert len(deltas) == 6
    assert all(delta.finish_reason is None and delta.usage is None for delta in deltas[:5])
    assert deltas[-1] == StreamDelta(finish_reason="stop", usage=Usage(8, 5))
    assert upstream.requests[0]["json"]["stream"] is True


def test_anthropic_stream_reaching_max_tokens_ends_with_length(upstream):
    upstream.prompt_tokens = 8
    request = ChatRequest(model="m", messages=HELLO.messages, max_tokens=3)
    deltas = stream(anthropic(upstream), request)
    assert deltas[-1] == StreamDelta(finish_reason="length", usage=Usage(8, 3))


def test_anthropic_stream_without_usage_ends_with_usage_none(upstream):
    upstream.script(NoUsage())
    deltas = stream(anthropic(upstream))
    assert text_of(deltas) == REPLY
    assert deltas[-1] == StreamDelta(finish_reason="stop", usage=None)


# --- Errors of both adapters -------------------------------------------------------------------


@ADAPTERS
@MODES
def test_upstream_429_is_rate_limited_with_retry_after(upstream, adapter, mode):
    upstream.script(Status(429, retry_after=2))
    error = failure(adapter(upstream), mode)
    assert error.kind == ErrorKind.RATE_LIMITED
    assert (error.status, error.retry_after) == (429, 2.0)
    assert error.retryable


@ADAPTERS
def test_retry_after_ms_is_read_in_seconds(upstream, adapter):
    upstream.script(Status(429, retry_after=5, retry_after_ms=1500))
    assert failure(adapter(upstream)).retry_after == 1.5


@ADAPTERS
@MODES
@pytest.mark.parametrize("status", [500, 503, 529])
def test_upstream_5xx_is_server_error(upstream, adapter, mode, status):
    upstream.script(Status(status))
    error = failure(adapter(upstream), mode)
    assert (error.kind, error.status) == (ErrorKind.SERVER_ERROR, status)
    assert error.retryable


@ADAPTERS
@MODES
def test_upstream_401_is_rejected_and_its_body_is_not_shown(upstream, adapter, mode):
    # The default error body repeats the key sent; this one also carries a secret.
    upstream.script(
        Status(401),
        Status(401, body={"error": {"message": f"Bad key {SECRET}", "type": SECRET}}),
        Status(403, body=f"<html>Forbidden {SECRET}</html>"),
    )
    provider = adapter(upstream)
    first = failure(provider, mode)
    assert (first.kind, first.status) == (ErrorKind.REJECTED, 401)
    assert "401" in first.message
    assert not first.retryable
    assert failure(provider, mode).kind == ErrorKind.REJECTED
    assert failure(provider, mode).status == 403


def test_openai_rejection_names_a_plain_error_type_and_code(upstream):
    upstream.script(
        Status(404, body={"error": {"type": "invalid_request_error", "code": "model_not_found"}}),
        Status(400, body={"error": {"type": "Not An Identifier!", "code": 400}}),
        Status(400, body={"error": {"type": OPENAI_KEY[3:], "code": "bad"}}),
    )
    provider = openai(upstream)
    assert failure(provider).message == (
        "Upstream rejected the call (HTTP 404: invalid_request_error/model_not_found)."
    )
    assert failure(provider).message == "Upstream rejected the call (HTTP 400)."
    # An identifier-looking part of the key is not shown either.
    assert failure(provider).message == "Upstream rejected the call (HTTP 400: bad)."


def test_anthropic_rejection_names_the_error_type(upstream):
    upstream.script(Status(401))
    assert failure(anthropic(upstream)).message == (
        "Upstream rejected the call (HTTP 401: authentication_error)."
    )


@ADAPTERS
@MODES
def test_slow_upstream_is_a_timeout(upstream, adapter, mode):
    upstream.script(Delay(1))
    started = time.monotonic()
    error = failure(adapter(upstream, timeout_seconds=0.2), mode)
    assert error.kind == ErrorKind.TIMEOUT
    assert error.retryable
    assert time.monotonic() - started < 0.8


@ADAPTERS
@MODES
def test_refused_connection_is_a_connection_error(upstream, adapter, mode):
    error = failure(adapter(upstream, base_url=closed_port_url()), mode)
    assert error.kind == ErrorKind.CONNECTION
    assert error.retryable


@ADAPTERS
def test_malformed_json_is_a_bad_response(upstream, adapter):
    upstream.script(Malformed())
    error = failure(adapter(upstream))
    assert error.kind == ErrorKind.BAD_RESPONSE
    assert not error.retryable


DEEP = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit for json.loads


@ADAPTERS
def test_json_nested_past_the_recursion_limit_is_a_bad_response(upstream, adapter):
    upstream.script(Raw(DEEP))
    error = failure(adapter(upstream))
    assert error.kind == ErrorKind.BAD_RESPONSE
    assert not error.retryable


@ADAPTERS
def test_an_error_body_nested_past_the_recursion_limit_is_still_the_status(upstream, adapter):
    upstream.script(Raw(DEEP, status=400))
    error = failure(adapter(upstream))
    assert (error.kind, error.status) == (ErrorKind.REJECTED, 400)


@pytest.mark.parametrize(
    ("adapter", "events"),
    [
        (openai, f"data: {DEEP}\n\n"),
        (anthropic, f"event: content_block_delta\ndata: {DEEP}\n\n"),
    ],
    ids=["openai", "anthropic"],
)
def test_a_stream_event_nested_past_the_recursion_limit_is_a_bad_response(
    upstream, adapter, events
):
    upstream.script(Raw(events, content_type="text/event-stream"))
    assert failure(adapter(upstream), "stream").kind == ErrorKind.BAD_RESPONSE


@ADAPTERS
@pytest.mark.parametrize("body", [[1, 2], {"choices": []}, {"content": "text"}, {"id": "x"}])
def test_json_of_an_unexpected_shape_is_a_bad_response(upstream, adapter, body):
    upstream.script(Raw(body))
    assert failure(adapter(upstream)).kind == ErrorKind.BAD_RESPONSE


@ADAPTERS
def test_json_body_cut_off_is_a_retryable_connection_error(upstream, adapter):
    # Nothing was passed on yet: unlike a broken stream, the call can simply be tried again.
    upstream.script(BrokenStream())
    error = failure(adapter(upstream))
    assert error.kind == ErrorKind.CONNECTION
    assert error.retryable


# --- Answers past the bound --------------------------------------------------------------------

BOUND = 4_000  # GATEWAY_UPSTREAM_MAX_BYTES in these tests


@pytest.fixture
def bounded(settings):
    settings.GATEWAY_UPSTREAM_MAX_BYTES = BOUND


def padded_answer(adapter, size: int) -> dict:
    """A valid JSON answer of `adapter`'s wire format, padded to more than `size` bytes."""
    if adapter is openai:
        answer = {"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}]}
    else:
        answer = {"content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn"}
    return {**answer, "padding": "x" * size}


@ADAPTERS
def test_an_answer_within_the_bound_is_read(upstream, adapter, bounded):
    upstream.script(Raw(padded_answer(adapter, BOUND - 200)))
    assert complete(adapter(upstream)).content == "Hi"


@ADAPTERS
def test_an_answer_past_the_bound_is_a_bad_response(upstream, adapter, bounded):
    upstream.script(Raw(padded_answer(adapter, BOUND)))
    error = failure(adapter(upstream))
    assert error.kind == ErrorKind.BAD_RESPONSE
    assert not error.retryable
    assert f"larger than {BOUND} bytes" in error.message


@ADAPTERS
def test_a_compressed_answer_is_bounded_as_decoded(upstream, adapter, bounded):
    # A few kilobytes on the wire that decode to 50 MB: read no further than the bound.
    body = json.dumps(padded_answer(adapter, 50_000_000)).encode()
    small = gzip.compress(body)
    assert len(small) < 100_000
    upstream.script(Raw(small, headers={"Content-Encoding": "gzip"}))
    error = failure(adapter(upstream))
    assert error.kind == ErrorKind.BAD_RESPONSE
    # Within the bound, a compressed answer is an answer.
    upstream.script(
        Raw(
            gzip.compress(json.dumps(padded_answer(adapter, 100)).encode()),
            headers={"Content-Encoding": "gzip"},
        )
    )
    assert complete(adapter(upstream)).content == "Hi"


@ADAPTERS
def test_an_error_body_past_the_bound_still_gives_its_status(upstream, adapter, bounded):
    # Only its beginning is read for an error identifier: the status decides.
    upstream.script(Raw("x" * (BOUND * 100), status=503))
    error = failure(adapter(upstream))
    assert (error.kind, error.status) == (ErrorKind.SERVER_ERROR, 503)


def openai_events(*contents: str, usage: bool = True) -> str:
    events = [{"choices": [{"delta": {"content": text}}]} for text in contents]
    events.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    if usage:
        events.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    return "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"


def relayed_then_failure(provider: Provider) -> tuple[list[StreamDelta], UpstreamError]:
    """The deltas a stream gave before it failed, and its failure."""
    deltas: list[StreamDelta] = []

    async def collect():
        async for delta in provider.stream(HELLO):
            deltas.append(delta)

    with pytest.raises(UpstreamError) as caught:
        run(provider, collect)
    return deltas, caught.value


def test_a_stream_line_past_the_bound_is_a_bad_response(upstream, bounded):
    # One event whose line never ends within the bound: cut there, not read to its end.
    first = json.dumps({"choices": [{"delta": {"content": "Hi"}}]})
    events = f"data: {first}\n\ndata: " + "x" * (BOUND * 10) + "\n\n"
    upstream.script(Raw(events, content_type="text/event-stream"))
    deltas, error = relayed_then_failure(openai(upstream))
    assert error.kind == ErrorKind.BAD_RESPONSE
    assert f"a line longer than {BOUND} characters" in error.message
    assert deltas[0] == StreamDelta(content="Hi")


def test_a_stream_whose_text_passes_the_bound_is_cut_there(upstream, bounded):
    # An upstream that never stops: the deltas up to the bound are relayed, then the failure.
    piece = "word " * 100  # 500 characters
    upstream.script(Raw(openai_events(*[piece] * 20), content_type="text/event-stream"))
    deltas, error = relayed_then_failure(openai(upstream))
    assert error.kind == ErrorKind.BAD_RESPONSE
    assert f"text is longer than {BOUND} characters" in error.message
    relayed = "".join(delta.content for delta in deltas)
    assert 0 < len(relayed) <= BOUND
    assert set(relayed.split()) == {"word"}


def test_a_stream_within_the_bound_is_relayed_whole(upstream, bounded):
    piece = "word " * 100
    upstream.script(Raw(openai_events(*[piece] * 7), content_type="text/event-stream"))
    deltas = stream(openai(upstream))
    assert "".join(delta.content for delta in deltas) == piece * 7
    assert deltas[-1] == StreamDelta(usage=Usage(3, 1))


# --- Broken streams ----------------------------------------------------------------------------


@pytest.mark.parametrize("abrupt", [True, False], ids=["connection-cut", "no-done"])
def test_openai_stream_ending_without_done_is_a_bad_response(upstream, abrupt):
    upstream.script(BrokenStream(after=2, abrupt=abrupt))
    error = failure(openai(upstream), "stream")
    assert error.kind == ErrorKind.BAD_RESPONSE
    assert error.partial_usage is None


def test_openai_stream_with_an_unparseable_data_line_is_a_bad_response(upstream):
    upstream.script(Malformed())
    error = failure(openai(upstream), "stream")
    assert (error.kind, error.partial_usage) == (ErrorKind.BAD_RESPONSE, None)


def test_openai_stream_error_chunk_is_a_bad_response(upstream):
    upstream.script(StreamError("server_error", after=1))
    assert failure(openai(upstream), "stream").kind == ErrorKind.BAD_RESPONSE


def test_openai_stream_passes_on_the_pieces_before_the_break(upstream):
    upstream.script(BrokenStream(after=2))
    provider = openai(upstream)
    received = []

    async def consume():
        async for delta in provider.stream(HELLO):
            received.append(delta)

    with pytest.raises(UpstreamError):
        run(provider, consume)
    assert text_of(received) == "".join(split_reply(REPLY, 5)[:2])


def test_the_pieces_before_an_unreadable_event_of_the_same_read_are_passed_on(upstream):
    # One body, read at once: two good chunks, then one that is not JSON.
    good = [json.dumps({"choices": [{"delta": {"content": piece}}]}) for piece in ("A", "B")]
    events = "".join(f"data: {data}\n\n" for data in good) + "data: {not json\n\n"
    upstream.script(Raw(events, content_type="text/event-stream"))
    provider = openai(upstream)
    received = []

    async def consume():
        async for delta in provider.stream(HELLO):
            received.append(delta)

    with pytest.raises(UpstreamError) as caught:
        run(provider, consume)
    assert caught.value.kind == ErrorKind.BAD_RESPONSE
    assert text_of(received) == "AB"


async def _collect(iterator) -> list:
    return [item async for item in iterator]


def _batches(provider: Provider, request: ChatRequest = HELLO) -> list[list[StreamDelta]]:
    return run(provider, lambda: _collect(provider.stream_batches(request)))


def test_events_that_arrive_together_come_as_one_batch(upstream):
    pieces = [json.dumps({"choices": [{"delta": {"content": p}}]}) for p in ("a", "b", "c")]
    events = "".join(f"data: {data}\n\n" for data in pieces) + "data: [DONE]\n\n"
    upstream.script(Raw(events, content_type="text/event-stream"))

    assert _batches(openai(upstream)) == [[StreamDelta(content=p) for p in "abc"]]


def test_events_sent_apart_come_in_batches_that_join_to_the_whole_stream(upstream):
    upstream.chunk_delay = 0.02  # each piece in its own read
    provider = openai(upstream)

    batches = _batches(provider)

    assert len(batches) > 3
    assert all(batches)
    assert [delta for batch in batches for delta in batch] == stream(openai(upstream))


def test_the_local_provider_streams_one_delta_per_batch():
    request = ChatRequest(model="m", messages=({"role": "user", "content": "Hi"},), max_tokens=9)
    provider = LocalProvider(ProviderConfig(name="local", kind="local"))

    batches = _batches(provider, request)

    assert all(len(batch) == 1 for batch in batches)
    assert [batch[0] for batch in batches] == stream(provider, request)


@pytest.mark.parametrize("abrupt", [True, False], ids=["connection-cut", "no-message-stop"])
def test_anthropic_broken_stream_is_a_bad_response_with_partial_usage(upstream, abrupt):
    upstream.prompt_tokens = 8
    upstream.script(BrokenStream(after=3, abrupt=abrupt))
    error = failure(anthropic(upstream), "stream")
    assert error.kind == ErrorKind.BAD_RESPONSE
    # Input tokens from message_start; output tokens as reported so far (message_start's 1).
    assert error.partial_usage == Usage(8, 1)


def test_anthropic_stream_with_an_unparseable_event_is_a_bad_response(upstream):
    upstream.prompt_tokens = 8
    upstream.script(Malformed())
    error = failure(anthropic(upstream), "stream")
    assert (error.kind, error.partial_usage) == (ErrorKind.BAD_RESPONSE, Usage(8, 1))


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        ("overloaded_error", ErrorKind.SERVER_ERROR),
        ("rate_limit_error", ErrorKind.RATE_LIMITED),
        ("invalid_request_error", ErrorKind.BAD_RESPONSE),
    ],
)
def test_anthropic_stream_error_event_maps_to_a_kind_with_partial_usage(upstream, error_type, kind):
    upstream.prompt_tokens = 8
    upstream.script(StreamError(error_type, after=2))
    error = failure(anthropic(upstream), "stream")
    assert (error.kind, error.partial_usage) == (kind, Usage(8, 1))


def test_anthropic_error_before_message_start_has_no_partial_usage(upstream):
    upstream.script(
        Raw(
            'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error"}}\n\n',
            content_type="text/event-stream",
        )
    )
    error = failure(anthropic(upstream), "stream")
    assert (error.kind, error.partial_usage) == (ErrorKind.SERVER_ERROR, None)


def anthropic_events(*events: dict) -> Raw:
    """A hand-written Messages event stream (each event named by its type)."""
    text = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events)
    return Raw(text, content_type="text/event-stream")


def test_anthropic_stream_counts_output_tokens_reported_before_the_break(upstream):
    upstream.script(
        anthropic_events(
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 7, "output_tokens": 1}},
            },
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}},
            {
                "type": "message_delta",
                "delta": {"stop_reason": None},
                "usage": {"output_tokens": 4},
            },
        )
    )
    assert failure(anthropic(upstream), "stream").partial_usage == Usage(7, 4)


def test_anthropic_stream_ignores_unknown_events_and_other_deltas(upstream):
    upstream.script(
        anthropic_events(
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 7, "output_tokens": 1}},
            },
            {"type": "content_block_start", "content_block": {"type": "thinking", "thinking": ""}},
            {"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "h"}},
            {"type": "some_future_event"},
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens"},
                "usage": {"output_tokens": 2},
            },
            {"type": "message_stop"},
        )
    )
    assert stream(anthropic(upstream)) == [
        StreamDelta(content="Hi"),
        StreamDelta(finish_reason="length", usage=Usage(7, 2)),
    ]


# --- Configuration -----------------------------------------------------------------------------


@MODES
def test_openai_without_a_base_url_is_not_configured(upstream, mode):
    error = failure(openai(upstream, base_url=""), mode)
    assert error.kind == ErrorKind.NOT_CONFIGURED
    assert not error.retryable


@MODES
def test_anthropic_without_a_key_is_not_configured_and_sends_nothing(upstream, mode):
    error = failure(anthropic(upstream, api_key=""), mode)
    assert error.kind == ErrorKind.NOT_CONFIGURED
    assert upstream.requests == []


@ADAPTERS
def test_a_base_url_that_is_not_http_is_not_configured(upstream, adapter):
    error = failure(adapter(upstream, base_url="127.0.0.1:11434/v1"))
    assert error.kind == ErrorKind.NOT_CONFIGURED
    assert upstream.requests == []


@ADAPTERS
def test_the_api_key_is_in_no_repr(upstream, adapter):
    provider = adapter(upstream)
    for shown in (repr(provider), repr(provider.config), str(provider.config)):
        assert OPENAI_KEY not in shown
        assert ANTHROPIC_KEY not in shown


# --- The fake upstream itself ------------------------------------------------------------------


def test_fake_upstream_goes_back_to_its_default_after_the_script(upstream):
    upstream.script(Reply("Scripted."), Status(500))
    provider = openai(upstream)
    assert complete(provider).content == "Scripted."
    assert failure(provider).kind == ErrorKind.SERVER_ERROR
    assert complete(provider).content == REPLY
    assert upstream.pending == 0


def test_fake_upstream_serves_many_concurrent_calls(upstream):
    upstream.delay = 0.1
    provider = anthropic(upstream)

    async def many():
        return await asyncio.gather(*(provider.complete(HELLO) for _ in range(120)))

    results = run(provider, many)
    assert {result.content for result in results} == {REPLY}
    assert len(upstream.requests) == 120
