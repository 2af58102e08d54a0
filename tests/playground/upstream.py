"""FakeUpstream: a real local HTTP server that speaks two LLM wire formats, for tests and
benchmarks of the gateway's provider adapters.

- `POST /v1/chat/completions`: OpenAI's chat completions, as JSON or, with `"stream": true`,
  as server-sent events of `chat.completion.chunk`s ending with `data: [DONE]` (a usage chunk
  with empty choices before it when `stream_options.include_usage` is asked for).
- `POST /v1/messages`: Anthropic's Messages API, as JSON or, with `"stream": true`, as its
  event stream (`message_start`, `content_block_start`, `ping`, `content_block_delta`s,
  `content_block_stop`, `message_delta`, `message_stop`), each with `event:` and `data:` lines.

It is the standard library's ThreadingHTTPServer on 127.0.0.1 (a free port), HTTP/1.1 with
keep-alive, one daemon thread per connection, so it serves 100+ concurrent connections.
Nothing here imports Django.

    with FakeUpstream(reply="Hi there", chunks=3) as upstream:
        openai_base_url = upstream.url + "/v1"      # the OpenAI adapter's base_url
        anthropic_base_url = upstream.url           # the Anthropic adapter's base_url
        upstream.script(Status(429, retry_after=1), Delay(0.5))
        ...                                         # 1st call: 429, 2nd: answered late,
        upstream.requests[-1]["headers"]["x-api-key"]   # then the default behaviour

Default answer: `reply` cut into `chunks` pieces of near-equal length (fewer when the reply is
shorter than `chunks` characters), streamed one piece per chunk, the same pieces joined for a
JSON answer. A request's `stop` (or `stop_sequences`) cuts the reply before the first stop
found (finish reason stop / `stop_sequence`); `max_tokens` smaller than the number of pieces
keeps that many (finish reason length / `max_tokens`). Usage: completion tokens = the number
of pieces sent; prompt tokens = `prompt_tokens` when set, else the number of words of the
prompt (messages and system) plus 3 per message. As Anthropic's API does, `message_start`
reports 1 output token until `message_delta` reports them all.

Scripted behaviours (`script(*steps)`) are consumed one per request, in order, whatever the
endpoint, then the default comes back: see the step classes below. Settings (attributes, may
be changed between requests): `reply`, `chunks`, `delay` (seconds before every answer),
`chunk_delay` (seconds before every streamed piece), `prompt_tokens`.

Every request is recorded (`requests`): method, path, headers (lowercased names) and JSON body
(None when it is not JSON).
"""

import contextlib
import itertools
import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_REPLY = (
    "Hello from upstream. This fake answer is deterministic: the same request always gets "
    "the same words, cut into as many pieces as asked."
)
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


# --- Steps: one request's scripted behaviour ---------------------------------------------------


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP status and the endpoint's error body (OpenAI's
    `{"error": {"message", "type", "code"}}` or Anthropic's `{"type": "error", "error": {...}}`)
    whose message, as a careless upstream's might, repeats the API key it was sent. `body`
    replaces it (a dict is sent as JSON, a string as it is). `retry_after` (seconds) and
    `retry_after_ms` set the `Retry-After` and `retry-after-ms` headers. Streamed requests get
    it too, before any event."""

    status: int
    retry_after: float | None = None
    retry_after_ms: float | None = None
    body: dict | str | None = None


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` (on top of the `delay` setting) before answering normally: to make a
    client time out."""

    seconds: float


@dataclass(frozen=True)
class Malformed:
    """A 200 whose body is not JSON; for a streamed request, one good piece then a `data:`
    line that is not JSON (the stream then goes on and ends normally)."""


@dataclass(frozen=True)
class BrokenStream:
    """Stream `after` pieces, then stop without the end marker (`[DONE]`, `message_stop`).
    `abrupt` (default): the connection is closed in the middle of the chunked body; otherwise
    the body ends properly, only the end marker is missing. A JSON request gets a truncated
    body with the connection closed."""

    after: int = 2
    abrupt: bool = True


@dataclass(frozen=True)
class NoUsage:
    """Answer without usage: no `usage` in the JSON, no usage chunk in an OpenAI stream, no
    `usage` objects in an Anthropic stream."""


@dataclass(frozen=True)
class StreamError:
    """Stream `after` pieces, then report an error in the stream and end the body: Anthropic's
    `event: error` with `error.type` = `error_type`; OpenAI-compatible servers' `data:
    {"error": {...}}` chunk. A JSON request gets the matching HTTP error status instead."""

    error_type: str = "overloaded_error"
    after: int = 2


@dataclass(frozen=True)
class Reply:
    """Answer this text instead of the `reply` setting."""

    text: str


@dataclass(frozen=True)
class Raw:
    """Send exactly this body (a dict or list as JSON), status and content type: for any
    answer the other steps do not cover (unexpected shapes, hand-written event streams)."""

    body: dict | list | str | bytes
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Step = Status | Delay | Malformed | BrokenStream | NoUsage | StreamError | Reply | Raw

# In a list of stream items: close the connection here, in the middle of the chunked body.
_CUT = object()


# --- The server --------------------------------------------------------------------------------


class FakeUpstream:
    """The fake upstream server; a context manager (or `start()` / `close()`)."""

    def __init__(
        self,
        *,
        reply: str = DEFAULT_REPLY,
        chunks: int = 5,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        prompt_tokens: int | None = None,
    ):
        self.reply = reply
        self.chunks = chunks
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.prompt_tokens = prompt_tokens
        self._steps: deque[Step] = deque()
        self._requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Life cycle

    def start(self) -> "FakeUpstream":
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},  # so that close() returns at once
                name=f"FakeUpstream:{self._server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving: waiting answers give up, open connections are closed."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> "FakeUpstream":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (the OpenAI adapter's base_url is this plus `/v1`)."""
        if self._server is None:
            raise RuntimeError("FakeUpstream is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # Scripting and records

    def script(self, *steps: Step) -> None:
        """Queue behaviours for the next requests, one each, in order."""
        with self._lock:
            self._steps.extend(steps)

    @property
    def pending(self) -> int:
        """Scripted steps not consumed yet."""
        with self._lock:
            return len(self._steps)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The requests received so far (a copy): dicts with `method`, `path`, `headers`
        (lowercased names), `json` (the parsed body, None when not JSON) and `client_port`
        (the connection's port on the client's side: one per connection)."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget the recorded requests and the steps not consumed."""
        with self._lock:
            self._requests.clear()
            self._steps.clear()

    # Used by the handler threads

    def _take(self, request: dict[str, Any]) -> tuple[Step | None, int]:
        """Record `request`; its scripted step (None: default) and a sequence number."""
        with self._lock:
            self._requests.append(request)
            self._ids += 1
            return (self._steps.popleft() if self._steps else None), self._ids

    def _sleep(self, seconds: float) -> bool:
        """Sleep; True when the server is closing meanwhile (the answer is abandoned)."""
        return seconds > 0 and self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # close() does not wait for the threads of open keep-alive connections (it closes them).
    block_on_close = False
    # Many clients connect at once in benchmarks: a short listen queue would drop their SYNs.
    request_queue_size = 1024

    def __init__(self, upstream: FakeUpstream):
        self.upstream = upstream
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):
        # A client that went away (it timed out, or the test ended) is no error of ours.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError | OSError):
            return
        super().handle_error(request, client_address)


# --- Answers -----------------------------------------------------------------------------------


def split_reply(text: str, chunks: int) -> list[str]:
    """`text` cut into `chunks` non-empty pieces of near-equal length (fewer when `text` is
    shorter than that); [] for an empty text."""
    if not text:
        return []
    count = max(1, min(chunks, len(text)))
    bounds = [index * len(text) // count for index in range(count + 1)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


def _words(content: Any) -> int:
    """Words of a message's content: a string, or a list of text blocks."""
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        return sum(_words(block.get("text")) for block in content if isinstance(block, dict))
    return 0


@dataclass
class _Answer:
    """What to answer a request, in neutral terms."""

    model: str
    number: int
    pieces: list[str]
    finish: str  # "stop", "stop_sequence" or "length"
    stop_sequence: str | None
    prompt_tokens: int
    with_usage: bool

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces)


def _plan(upstream: FakeUpstream, body: dict, step: Step | None, number: int) -> _Answer:
    text = step.text if isinstance(step, Reply) else upstream.reply
    stops = body.get("stop", body.get("stop_sequences")) or []
    if isinstance(stops, str):
        stops = [stops]
    finish, stop_sequence = "stop", None
    found = [(text.index(stop), stop) for stop in stops if isinstance(stop, str) and stop in text]
    if found:
        position, stop_sequence = min(found)
        text, finish = text[:position], "stop_sequence"
    pieces = split_reply(text, upstream.chunks)
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and 0 <= max_tokens < len(pieces):
        pieces, finish, stop_sequence = pieces[:max_tokens], "length", None
    if upstream.prompt_tokens is not None:
        prompt_tokens = upstream.prompt_tokens
    else:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt_tokens = (
            sum(_words(m.get("content")) for m in messages)
            + _words(body.get("system"))
            + 3 * len(messages)
        )
    return _Answer(
        model=str(body.get("model") or "fake-model"),
        number=number,
        pieces=pieces,
        finish=finish,
        stop_sequence=stop_sequence,
        prompt_tokens=prompt_tokens,
        with_usage=not isinstance(step, NoUsage),
    )


def _sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event (data given as JSON-able or as a ready string)."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


class _OpenAI:
    """OpenAI's chat completions wire format."""

    _ERRORS = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "unsupported_country_region_territory"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }

    @classmethod
    def error_body(cls, status: int, key: str) -> dict:
        kind, code = cls._ERRORS.get(status, ("server_error" if status >= 500 else "error", None))
        message = f"Fake upstream error {status}. Incorrect API key provided: {key}."
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    @staticmethod
    def stream_error_body(error_type: str) -> dict:
        return {"error": {"message": "Stream failed", "type": error_type, "code": None}}

    @staticmethod
    def finish(answer: _Answer) -> str:
        return "length" if answer.finish == "length" else "stop"

    @classmethod
    def json(cls, answer: _Answer) -> dict:
        body = {
            "id": f"chatcmpl-fake-{answer.number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": answer.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "logprobs": None,
                    "finish_reason": cls.finish(answer),
                }
            ],
        }
        if answer.with_usage:
            body["usage"] = {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            }
        return body

    @classmethod
    def stream(cls, answer: _Answer, body: dict, step: Step | None) -> list:
        """The stream's items: (bytes, is_piece) tuples and _CUT."""
        options = body.get("stream_options")
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            data = {
                "id": f"chatcmpl-fake-{answer.number}",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": answer.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if include_usage:  # as OpenAI does: `usage: null` on every chunk but the last
                data["usage"] = None
            return _sse(data)

        # A comment first, as some gateways send to keep the connection alive.
        items: list = [(b": fake upstream\n\n", False), (chunk({"role": "assistant"}), False)]
        for index, piece in enumerate(answer.pieces):
            if isinstance(step, BrokenStream | StreamError) and index == step.after:
                break
            items.append((chunk({"content": piece}), True))
            if isinstance(step, Malformed) and index == 0:
                items.append((b'data: {"choices": [{"delta": \n\n', False))
        if isinstance(step, BrokenStream):
            return [*items, _CUT] if step.abrupt else items
        if isinstance(step, StreamError):
            return [*items, (_sse(cls.stream_error_body(step.error_type)), False)]
        items.append((chunk({}, cls.finish(answer)), False))
        if include_usage and answer.with_usage:
            usage = {
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            }
            data = {
                "id": f"chatcmpl-fake-{answer.number}",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": answer.model,
                "choices": [],
                "usage": usage,
            }
            items.append((_sse(data), False))
        items.append((b"data: [DONE]\n\n", False))
        return items


class _Anthropic:
    """Anthropic's Messages wire format."""

    _ERRORS = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }

    @classmethod
    def error_body(cls, status: int, key: str) -> dict:
        kind = cls._ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        message = f"Fake upstream error {status}. Invalid x-api-key: {key}."
        return {"type": "error", "error": {"type": kind, "message": message}}

    @staticmethod
    def stream_error_body(error_type: str) -> dict:
        return {"type": "error", "error": {"type": error_type, "message": "Stream failed"}}

    @staticmethod
    def stop_reason(answer: _Answer) -> str:
        return {"length": "max_tokens", "stop_sequence": "stop_sequence"}.get(
            answer.finish, "end_turn"
        )

    @classmethod
    def json(cls, answer: _Answer) -> dict:
        body = {
            "id": f"msg_fake_{answer.number}",
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": cls.stop_reason(answer),
            "stop_sequence": answer.stop_sequence,
        }
        if answer.with_usage:
            body["usage"] = {
                "input_tokens": answer.prompt_tokens,
                "output_tokens": answer.completion_tokens,
            }
        return body

    @classmethod
    def stream(cls, answer: _Answer, body: dict, step: Step | None) -> list:
        """The stream's items: (bytes, is_piece) tuples and _CUT."""
        message = {
            "id": f"msg_fake_{answer.number}",
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if answer.with_usage:
            message["usage"] = {"input_tokens": answer.prompt_tokens, "output_tokens": 1}
        block_start = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        items: list = [
            (_sse({"type": "message_start", "message": message}, "message_start"), False),
            (_sse(block_start, "content_block_start"), False),
            (_sse({"type": "ping"}, "ping"), False),
        ]
        for index, piece in enumerate(answer.pieces):
            if isinstance(step, BrokenStream | StreamError) and index == step.after:
                break
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            items.append((_sse(delta, "content_block_delta"), True))
            if isinstance(step, Malformed) and index == 0:
                items.append((b'event: content_block_delta\ndata: {"type": \n\n', False))
        if isinstance(step, BrokenStream):
            return [*items, _CUT] if step.abrupt else items
        if isinstance(step, StreamError):
            return [*items, (_sse(cls.stream_error_body(step.error_type), "error"), False)]
        message_delta: dict = {
            "type": "message_delta",
            "delta": {
                "stop_reason": cls.stop_reason(answer),
                "stop_sequence": answer.stop_sequence,
            },
        }
        if answer.with_usage:
            message_delta["usage"] = {"output_tokens": answer.completion_tokens}
        items += [
            (_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), False),
            (_sse(message_delta, "message_delta"), False),
            (_sse({"type": "message_stop"}, "message_stop"), False),
        ]
        return items


_FORMATS = {OPENAI_PATH: _OpenAI, ANTHROPIC_PATH: _Anthropic}
# The HTTP status a StreamError's error type stands for, when the request is not streamed.
_ERROR_STATUSES = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "FakeUpstream/1.0"
    disable_nagle_algorithm = True  # each streamed chunk leaves at once
    server: _Server

    def log_message(self, format, *args):
        pass  # quiet: tests and benchmarks read their own output

    def do_POST(self):
        upstream = self.server.upstream
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = self.path.split("?", 1)[0]
        step, number = upstream._take(
            {
                "method": "POST",
                "path": path,
                "headers": headers,
                "json": body,
                "client_port": self.client_address[1],
            }
        )
        wire = _FORMATS.get(path)
        if wire is None:
            self._send_json(404, {"error": {"message": "Not found", "type": "not_found"}})
            return
        delay = upstream.delay + (step.seconds if isinstance(step, Delay) else 0.0)
        if upstream._sleep(delay):
            self.close_connection = True
            return
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")

        if isinstance(step, Raw):
            payload = step.body
            if not isinstance(payload, str | bytes):
                payload = json.dumps(payload)
            self._send(step.status, payload, step.content_type, step.headers)
            return
        if isinstance(step, Status):
            self._send_status(wire, step, key)
            return
        if not isinstance(body, dict):
            self._send_json(400, wire.error_body(400, key))
            return
        stream = body.get("stream") is True
        if isinstance(step, StreamError) and not stream:
            status = _ERROR_STATUSES.get(step.error_type, 500)
            self._send_json(status, wire.error_body(status, key))
            return
        answer = _plan(upstream, body, step, number)
        if stream:
            self._send_stream(wire.stream(answer, body, step))
        elif isinstance(step, Malformed):
            self._send(200, b'{"id": "broken", "choices": [', "application/json")
        elif isinstance(step, BrokenStream):
            # A truncated JSON body: promise more than is sent, then hang up.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"id": "cut"')
            self.close_connection = True
        else:
            self._send_json(200, wire.json(answer))

    def _send_status(self, wire, step: Status, key: str) -> None:
        extra = {}
        if step.retry_after is not None:
            extra["Retry-After"] = f"{step.retry_after:g}"
        if step.retry_after_ms is not None:
            extra["retry-after-ms"] = f"{step.retry_after_ms:g}"
        body = step.body if step.body is not None else wire.error_body(step.status, key)
        if isinstance(body, dict):
            body = json.dumps(body)
        self._send(step.status, body, "application/json", extra)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload), "application/json")

    def _send(
        self,
        status: int,
        body: str | bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, items: list) -> None:
        """Send a chunked event stream; at _CUT, hang up in the middle of the body."""
        upstream = self.server.upstream
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for item in items:
            if item is _CUT:
                self.close_connection = True
                return
            data, is_piece = item
            if is_piece and upstream._sleep(upstream.chunk_delay):
                self.close_connection = True
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")
