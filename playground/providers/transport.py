"""The adapters' HTTP transport: httpx's API over aiohttp's connection pool.

The adapters speak httpx (requests, responses, streams, exceptions); what moves the bytes is
this transport. httpcore, httpx's own, costs a gateway worker more CPU than the rest of a call:
its pool goes over all its connections several times per request (for each idle one it counts
all of them again; httpcore 1.0.9), and its anyio streams add a cancel scope to every read and
write. aiohttp's pool hands a connection over in constant time and parses HTTP in C. LiteLLM
moved its proxy to aiohttp for the same reason.

aiohttp's exceptions become httpx's, the two kinds the adapters tell apart
(providers/http.py, `transport_error`): timeouts (`httpx.TimeoutException`) and every other
transport failure (`httpx.TransportError`: the upstream unreachable, the connection lost, a
malformed answer). The adapters send their requests through it directly (httpx's client would
add only layers they do not use: providers/http.py, `HTTPProvider._request`). A transport
belongs to one event loop (Provider.transport).
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx

# Seconds an idle upstream connection is kept for the next call.
KEEPALIVE_SECONDS = 30


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx.ConnectTimeout(str(error) or "connect timeout", request=request) from error
    except TimeoutError as error:  # aiohttp's read timeouts are TimeoutErrors
        raise httpx.ReadTimeout(str(error) or "read timeout", request=request) from error
    except aiohttp.ClientConnectorError as error:
        raise httpx.ConnectError(str(error), request=request) from error
    except aiohttp.ClientPayloadError as error:
        raise httpx.ReadError(str(error), request=request) from error
    except aiohttp.ClientError as error:
        raise httpx.RemoteProtocolError(
            str(error) or type(error).__name__, request=request
        ) from error


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(
        self,
        response: aiohttp.ClientResponse,
        request: httpx.Request,
        transport: "AiohttpTransport",
    ):
        self._response = response
        self._request = request
        self._transport = transport
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # Read to the end, the connection goes back to the pool; otherwise it is closed.
        self._response.release()
        if not self._closed:
            self._closed = True
            self._transport._finished()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent by one aiohttp session (its connection pool, no limit on the
    connections: the gateway's calls in flight are bounded by the clients it serves).

    It counts its requests in flight (from sending to the answer's body closed), so that a
    transport being retired (`close_when_idle`: its provider was edited or removed) is closed
    once the calls it carries have ended, never under them."""

    def __init__(self):
        self._session: aiohttp.ClientSession | None = None
        self._in_flight = 0
        self._retiring = False
        self._closing: asyncio.Task | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS),
                # httpx decodes the body, as with its own transport.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        session = self._open_session()
        self._in_flight += 1
        try:
            with _as_httpx_errors(request):
                response = await session.request(
                    request.method,
                    str(request.url),
                    headers=[
                        (name.decode("latin-1"), value.decode("latin-1"))
                        for name, value in request.headers.raw
                    ],
                    data=request.content or None,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(
                        total=None,
                        sock_connect=timeout.get("connect"),
                        sock_read=timeout.get("read"),
                    ),
                )
        except BaseException:
            self._finished()
            raise
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseBody(response, request, self),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _finished(self) -> None:
        self._in_flight -= 1
        if self._retiring and self._in_flight == 0:
            self._close_soon()

    def close_when_idle(self) -> None:
        """On the transport's event loop: close it now if no request is in flight, else when
        the last one ends. A retired provider's adapter is no longer handed out, but a call
        that took its route before may still send a request (a retry): it goes out on a new
        session, closed again when it ends."""
        self._retiring = True
        if self._in_flight == 0:
            self._close_soon()

    def _close_soon(self) -> None:
        if self._closing is None or self._closing.done():
            # Kept on the transport: the loop holds only a weak reference to its tasks.
            self._closing = asyncio.get_running_loop().create_task(self.aclose())

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
