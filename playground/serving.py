"""How the gateway is served under ASGI (config/asgi.py; docs/gateway.md, "Serving model").

`GatewayFront` sits in front of Django's ASGI handler and takes `POST /api/v1/chat/completions`
(with or without the trailing slash); every other request goes to Django's handler unchanged.
For the gateway it runs the same request path as every view, in fewer steps:

1. the body is read and the request built by Django's own ASGI handler (`read_body`,
   `create_request`), so limits and request parsing are Django's;
2. the platform's request path (every middleware of MIDDLEWARE, then the viewset:
   authentication, tenant, permission, throttle, api_calls quota, validation, the reservation)
   runs in **one** hop to a thread, on a pool of long-lived threads, through a handler that
   loads MIDDLEWARE in sync mode, as a WSGI server would;
3. the upstream call and the answer (JSON or the event stream) run on the event loop, as under
   Django's handler; the settlement runs on the gateway's settlement threads;
4. the response goes out through Django's handler (`send_response`), watching for the client
   going away as Django's handler does.

Why not Django's ASGI handler for this one path: it gives each request a thread of its own and
crosses between the loop and a thread for every sync middleware hook (two per MIDDLEWARE entry,
plus the signals and the view), a few milliseconds of CPU per request before any work (a bare
probe under it answers about a fifth as many requests per second as under WSGI on the same
machine); the gateway's throughput is bounded by exactly that. The request path itself is the
same code, so the answer, its headers and its errors are the same as through Django's handler
(tests/playground/test_gateway_serving.py runs both).

Every other HTTP request is served the same way, minus the event loop part: the body read and
the request built by Django's handler, then the whole request (MIDDLEWARE, URL resolution, the
view) in one hop to the same long-lived threads, through a handler loaded in sync mode, as a
WSGI server runs it. The response is closed on that thread, so `request_finished`
(`close_old_connections`) sees to the thread's connection where it was used: kept for the
thread's next request, closed if it failed or outlived CONN_MAX_AGE (with DATABASE_POOL, given
back to the pool). A whole answer comes back to the loop with the thread's result and is sent
from there; a streamed one (the audit export, static files) is sent from the thread, piece by
piece, each piece handed to the loop, so it reads the database on the thread that holds its
connection; a client that takes no piece for STREAM_SEND_TIMEOUT_SECONDS ends it (_Sender).
Websockets and lifespan events go to Django's handler unchanged.
"""

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module

from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import close_old_connections
from django.urls import ResolverMatch, resolve, reverse, set_script_prefix

from config import request_context
from config.middleware import request_context_of

logger = logging.getLogger(__name__)

GATEWAY_ROUTE = "chat-completion-list"


class _RequestPathHandler(BaseHandler):
    """MIDDLEWARE in sync mode around one view: Django's WSGI handler without WSGI."""

    def __init__(self, match: ResolverMatch):
        super().__init__()
        self.match = match
        self.load_middleware(is_async=False)

    def resolve_request(self, request):
        request.resolver_match = self.match
        return self.match


class _SyncHandler(BaseHandler):
    """MIDDLEWARE in sync mode around URL resolution and the view: Django's WSGI handler
    without WSGI."""

    def __init__(self):
        super().__init__()
        self.load_middleware(is_async=False)


class GatewayFront:
    """The ASGI application: the gateway's path and every other HTTP request served as the
    module docstring says; websockets and lifespan events by Django's ASGI handler."""

    def __init__(self, django: ASGIHandler, *, threads: int | None = None):
        self.django = django
        path = reverse(GATEWAY_ROUTE)
        self.paths = frozenset({path.rstrip("/"), path.rstrip("/") + "/"})
        match = resolve(path)
        # The viewset's sync request path (ChatCompletionViewSet.as_view keeps it on the async
        # view it builds), under the route's own name, for logs and usage by endpoint.
        self.handler = _RequestPathHandler(
            ResolverMatch(
                match.func.request_path,
                (),
                {},
                url_name=match.url_name,
                app_names=match.app_names,
                namespaces=match.namespaces,
                route=match.route,
            )
        )
        self.sync_handler = _SyncHandler()
        # The upstream adapters' HTTP transport (aiohttp) is loaded here, with the application,
        # not by the first call to an upstream in each worker (about 150 ms on that call); so
        # it is also frozen out of the collector's walks with the rest (config/asgi.py).
        import_module("playground.providers.transport")
        self.threads = ThreadPoolExecutor(
            max_workers=threads or settings.GATEWAY_REQUEST_THREADS,
            thread_name_prefix="request",
        )

    def takes(self, scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path in self.paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.django(scope, receive, send)
        try:
            body = await self.django.read_body(receive)
        except RequestAborted:
            return
        try:
            if self.takes(scope):
                await self._serve(scope, receive, send, body)
            else:
                await self._serve_on_thread(scope, send, body)
        finally:
            body.close()

    async def _serve_on_thread(self, scope, send, body) -> None:
        request, error_response = self.django.create_request(scope, body)
        if request is None:
            await self.django.send_response(error_response, send)
            return
        loop = asyncio.get_running_loop()
        messages = await loop.run_in_executor(
            self.threads,
            contextvars.copy_context().run,
            self._respond,
            scope,
            request,
            _Sender(send, loop),
        )
        # A whole answer comes back with the thread's result and is sent here: one hop
        # between the loop and the thread per request, not one more to hand it over.
        with contextlib.suppress(OSError):  # the client went away (uvicorn's ClientDisconnected)
            for message in messages:
                await send(message)

    def _respond(self, scope, request, sender: "_Sender") -> list[dict]:
        """On a request thread: the request through MIDDLEWARE and its view, the response
        closed (request_finished: the thread's connection seen to). A whole answer is returned
        as its ASGI messages, for the loop to send; a streamed one is sent from here, piece by
        piece (it reads as it goes, on this thread's connection), and nothing is returned."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        response = self.sync_handler.get_response(request)
        try:
            if not response.streaming:
                return _messages(response)
            sender.stream(response)
            return []
        finally:
            response.close()

    async def _serve(self, scope, receive, send, body) -> None:
        request, error_response = self.django.create_request(scope, body)
        if request is None:
            await self.django.send_response(error_response, send)
            return
        # Django's handler, step for step: the answer is made while a second task watches
        # for the client going away, which cancels the first (the gateway then settles the
        # call at what was consumed).
        tasks = [
            asyncio.create_task(self.django.listen_for_disconnect(receive)),
            asyncio.create_task(self._answer(scope, request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                with contextlib.suppress(RequestAborted):  # the client went away
                    task.result()
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if tasks[1].cancelled():
            # No response to close: request_finished is sent here, as Django's handler does.
            await asyncio.get_running_loop().run_in_executor(
                self.threads, functools.partial(signals.request_finished.send, self.__class__)
            )

    async def _answer(self, scope, request, send):
        from .views import complete_if_pending, reserved_response

        loop = asyncio.get_running_loop()
        # The body stays open until this returns (__call__ closes it), even when the client
        # went away while the request path was still reading it on its thread.
        response = await reserved_response(
            loop.run_in_executor(
                self.threads, contextvars.copy_context().run, self._request_path, scope, request
            )
        )
        # The request's context (its id, for logs and audit events) for the async part, as
        # RequestIDMiddleware keeps it under Django's handler.
        token = request_context.activate(request_context_of(request))
        try:
            response = await complete_if_pending(response)
            with contextlib.suppress(asyncio.CancelledError):  # the client went away meanwhile
                await self.django.send_response(response, send)
        finally:
            request_context.deactivate(token)
        # Closing sends request_finished, whose receivers are sync.
        await loop.run_in_executor(self.threads, response.close)

    def _request_path(self, scope, request):
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        try:
            return self.handler.get_response(request)
        finally:
            # The thread's connection seen to as at a request's end, before the upstream
            # call, while the thread goes on to other requests. (With DATABASE_POOL it goes
            # back to the pool here: held for the call, the pool would cap the calls in
            # flight.)
            close_old_connections()


def _messages(response) -> list[dict]:
    """A whole response as its ASGI messages: the start, then the body in chunks."""
    return [
        _start(response),
        *(
            {"type": "http.response.body", "body": chunk, "more_body": not last}
            for chunk, last in ASGIHandler.chunk_bytes(response.content)
        ),
    ]


def _start(response) -> dict:
    headers = [
        (_latin1(header, "ascii"), _latin1(value, "latin1")) for header, value in response.items()
    ]
    headers += [
        (b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
        for cookie in response.cookies.values()
    ]
    return {"type": "http.response.start", "status": response.status_code, "headers": headers}


class ClientStoppedReading(OSError):
    """A piece of a streamed response was not taken within STREAM_SEND_TIMEOUT_SECONDS."""


class _Sender:
    """Sends a streamed response from a request thread through the event loop's `send`, piece
    by piece, waiting for each to be taken, as a WSGI server writes to its socket.

    A piece not taken within `timeout` seconds (STREAM_SEND_TIMEOUT_SECONDS) ends the stream,
    as nginx's send_timeout does: the thread is one of the worker's few request threads, and a
    client that opens an export and stops reading would otherwise hold it for ever."""

    def __init__(self, send, loop, *, timeout: float | None = None):
        self._send = send
        self._loop = loop
        self._timeout = settings.STREAM_SEND_TIMEOUT_SECONDS if timeout is None else timeout

    def _put(self, message) -> None:
        future = asyncio.run_coroutine_threadsafe(self._send_one(message), self._loop)
        try:
            future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # the send waiting for the client's socket to drain
            raise ClientStoppedReading from None

    async def _send_one(self, message) -> None:
        # A coroutine of our own: ASGI's `send` need only return an awaitable.
        await self._send(message)

    def stream(self, response) -> None:
        try:
            self._put(_start(response))
            if response.is_async:
                # An async iterator is consumed on the loop, as Django's handler does.
                asyncio.run_coroutine_threadsafe(self._stream_async(response), self._loop).result()
            else:
                for part in response.streaming_content:
                    for chunk, _ in ASGIHandler.chunk_bytes(part):
                        self._put({"type": "http.response.body", "body": chunk, "more_body": True})
            self._put({"type": "http.response.body"})
        except ClientStoppedReading:
            # The response is closed by the caller, so what it held (a cursor, a walk slot)
            # is given back; the server drops the connection, the answer unfinished.
            logger.warning(
                "Streamed response to %s ended: the client stopped reading for %s s.",
                response.get("Content-Type", "?"),
                self._timeout,
            )
        except OSError:
            # The client went away (uvicorn's ClientDisconnected): nothing more to send.
            return

    async def _stream_async(self, response) -> None:
        async for part in response.streaming_content:
            for chunk, _ in ASGIHandler.chunk_bytes(part):
                message = {"type": "http.response.body", "body": chunk, "more_body": True}
                try:
                    await asyncio.wait_for(self._send(message), self._timeout)
                except TimeoutError:
                    raise ClientStoppedReading from None


def _latin1(value, encoding: str) -> bytes:
    return bytes(value.encode(encoding) if isinstance(value, str) else value)
