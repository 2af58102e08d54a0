"""The baseline of bench/gateway.py: a minimal async pass-through proxy, as an ASGI app.

    BENCH_UPSTREAM_URL=http://127.0.0.1:PORT \\
        gunicorn bench.passthrough_proxy:app -k config.workers.BalancedUvicornWorker --workers 2

Every request is forwarded as it came (method, path, body, content type) the way the gateway's
provider adapters send theirs (httpx requests through aiohttp's pool, one per process), and
the answer is sent back as it comes: status, content type, and the body's bytes in the chunks
the upstream sent them, so a server-sent event stream goes through event by event. No
authentication, no accounting, no parsing: the floor any gateway on this stack pays.
`GET /health` answers 200 without going upstream.
"""

import os

import httpx

from playground.providers.transport import AiohttpTransport

_transports: list[AiohttpTransport] = []
_TIMEOUTS = httpx.Timeout(60, connect=10).as_dict()
_UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "").rstrip("/")


def _transport() -> AiohttpTransport:
    # As the gateway's adapters (playground.providers.http): httpx requests sent through
    # aiohttp's pool by the transport itself.
    if not _transports:
        _transports.append(AiohttpTransport())
    return _transports[0]


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            while _transports:
                await _transports.pop().aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(k, v) for k, v in scope["headers"] if k in (b"content-type", b"accept")]
    request = httpx.Request(
        scope["method"],
        _UPSTREAM + scope["path"],
        content=body,
        headers=headers,
        extensions={"timeout": _TIMEOUTS},
    )
    response = await _transport().handle_async_request(request)
    try:
        answer_headers = [
            (name.encode(), response.headers[name].encode())
            for name in ("content-type", "content-length", "cache-control")
            if name in response.headers
        ]
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": answer_headers,
            }
        )
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await response.aclose()
