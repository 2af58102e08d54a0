"""playground.providers.transport: httpx requests over aiohttp's pool, against a real local
server (tests.playground.upstream), and aiohttp's exceptions as the httpx ones the adapters
tell apart (timeouts from every other transport failure)."""

import asyncio

import aiohttp
import httpx
import pytest

from playground.providers.transport import AiohttpTransport, _as_httpx_errors

from .upstream import FakeUpstream

REQUEST = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (aiohttp.ConnectionTimeoutError("connect"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (TimeoutError(), httpx.ReadTimeout),
        (
            aiohttp.ClientConnectorError(
                aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 9, False, True, None, None, None),
                ConnectionRefusedError(111, "refused"),
            ),
            httpx.ConnectError,
        ),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut off"), httpx.ReadError),
        (aiohttp.ClientOSError(104, "reset"), httpx.RemoteProtocolError),
    ],
    ids=["connect-timeout", "read-timeout", "timeout", "refused", "disconnected", "payload", "os"],
)
def test_aiohttp_errors_become_the_httpx_errors_the_adapters_classify(raised, expected):
    with pytest.raises(expected) as caught, _as_httpx_errors(REQUEST):
        raise raised
    timeout = issubclass(expected, httpx.TimeoutException)
    assert isinstance(caught.value, httpx.TimeoutException) is timeout
    assert isinstance(caught.value, httpx.TransportError)
    assert caught.value.request is REQUEST


def test_other_exceptions_pass_through_unchanged():
    with pytest.raises(ValueError, match="not a transport failure"), _as_httpx_errors(REQUEST):
        raise ValueError("not a transport failure")


def test_a_request_and_its_streamed_answer_go_through_aiohttp():
    with FakeUpstream(reply="Hello through aiohttp", chunks=3) as upstream:

        async def call():
            client = httpx.AsyncClient(transport=AiohttpTransport(), base_url=upstream.url)
            try:
                plain = await client.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
                )
                lines = []
                async with client.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={
                        "model": "m",
                        "stream": True,
                        "messages": [{"role": "user", "content": "Hi"}],
                    },
                ) as streamed:
                    async for line in streamed.aiter_lines():
                        lines.append(line)
                return plain, streamed, lines
            finally:
                await client.aclose()

        plain, streamed, lines = asyncio.run(call())

    assert plain.status_code == 200
    assert plain.json()["choices"][0]["message"]["content"] == "Hello through aiohttp"
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "data: [DONE]" in lines
    assert sum(line.startswith("data: {") for line in lines) >= 3
    assert len(upstream.requests) == 2
