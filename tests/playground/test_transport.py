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


def test_a_retired_transport_closes_once_its_request_in_flight_ends():
    """A provider edited during a streamed call: its old transport is retired while the
    answer is still coming; the answer ends whole, then the session is closed."""
    with FakeUpstream(reply="Still streaming after the edit", chunks=4, chunk_delay=0.05) as up:

        async def call():
            transport = AiohttpTransport()
            client = httpx.AsyncClient(transport=transport, base_url=up.url)
            body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
            lines = []
            async with client.stream("POST", "/v1/chat/completions", json=body) as streamed:
                transport.close_when_idle()
                await asyncio.sleep(0.01)
                open_during = transport._session is not None and not transport._session.closed
                async for line in streamed.aiter_lines():
                    lines.append(line)
            await transport._closing
            return transport, open_during, lines

        transport, open_during, lines = asyncio.run(call())

    assert open_during
    assert "data: [DONE]" in lines
    assert transport._session is None and transport._in_flight == 0


def test_an_idle_retired_transport_closes_at_once_and_a_late_request_is_closed_after_it():
    """Retired with nothing in flight: closed at once. A call that took its route before the
    retirement and retries afterwards still gets its answer, on a session closed after it."""
    with FakeUpstream(reply="Late retry", chunks=2) as upstream:

        async def call():
            transport = AiohttpTransport()
            client = httpx.AsyncClient(transport=transport, base_url=upstream.url)
            body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
            await client.post("/v1/chat/completions", json=body)
            transport.close_when_idle()
            await transport._closing
            closed_at_once = transport._session is None
            late = await client.post("/v1/chat/completions", json=body)
            await transport._closing
            return transport, closed_at_once, late

        transport, closed_at_once, late = asyncio.run(call())

    assert closed_at_once
    assert late.status_code == 200
    assert late.json()["choices"][0]["message"]["content"] == "Late retry"
    assert transport._session is None and transport._in_flight == 0


def test_a_failed_request_is_not_left_counted_in_flight():
    async def call():
        transport = AiohttpTransport()
        client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9")
        with pytest.raises(httpx.ConnectError):
            await client.post("/v1/chat/completions", json={})
        in_flight = transport._in_flight
        transport.close_when_idle()
        await transport._closing
        return transport, in_flight

    transport, in_flight = asyncio.run(call())

    assert in_flight == 0
    assert transport._session is None
