"""What the HTTP adapters (openai, anthropic) share: the base class that posts a call and
maps what can go wrong to `UpstreamError`, `Retry-After` parsing, and a small incremental
server-sent events parser. None of it ever puts an upstream's body, a transport exception's
text or a key into an error message.
"""

import asyncio
import functools
import json
import math
import re
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from django.conf import settings

from .base import (
    ChatRequest,
    ChatResult,
    ErrorKind,
    Provider,
    ProviderConfig,
    StreamDelta,
    UpstreamError,
    Usage,
)

# An error body's `type` or `code` is shown only when it is a plain identifier like this one.
_SAFE_IDENTIFIER = re.compile(r"^[a-z0-9_.-]{1,64}\Z")
# Only the beginning of an error body is parsed: it is read for one short identifier.
_ERROR_BODY_LIMIT = 64 * 1024
# After a stream's end marker the rest of the body is read so that the connection can be
# reused; a server that keeps it open is not waited for longer than this.
_DRAIN_SECONDS = 1.0
# What httpx's client sends with every request (Accept is set per call).
_DEFAULT_HEADERS = {
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": f"python-httpx/{httpx.__version__}",
    "Content-Type": "application/json",
}


def require_http_url(config: ProviderConfig, url: str) -> None:
    """Raise NOT_CONFIGURED unless `url` is an http(s) URL (before any request is sent)."""
    if not url.startswith(("http://", "https://")):
        raise UpstreamError(
            ErrorKind.NOT_CONFIGURED,
            f"Provider {config.name!r} has no valid base URL (http:// or https://).",
        )


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """The wait an upstream asks for: `retry-after-ms` (OpenAI's, more precise) or
    `Retry-After` (seconds or an HTTP date). None when absent or unreadable."""
    milliseconds = _non_negative_float(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative_float(value)
    if seconds is not None:
        return seconds
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


def _non_negative_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


async def error_for_status(response: httpx.Response, *, api_key: str = "") -> UpstreamError:
    """The UpstreamError for a response whose status is not a success. Reads the body of a
    4xx (for a streamed response too) for its error type or code, shown only when it is a
    plain identifier that has nothing of `api_key` in it."""
    status = response.status_code
    retry_after = retry_after_seconds(response.headers)
    if status == 429:
        kind, message = ErrorKind.RATE_LIMITED, "Upstream rate limit reached (HTTP 429)."
    elif status >= 500:
        kind, message = ErrorKind.SERVER_ERROR, f"Upstream server error (HTTP {status})."
    elif status >= 400:
        detail = await _safe_error_detail(response, api_key)
        suffix = f": {detail}" if detail else ""
        kind, message = ErrorKind.REJECTED, f"Upstream rejected the call (HTTP {status}{suffix})."
    else:
        kind, message = ErrorKind.BAD_RESPONSE, f"Unexpected HTTP status {status} from upstream."
    return UpstreamError(kind, message, status=status, retry_after=retry_after)


async def _safe_error_detail(response: httpx.Response, api_key: str) -> str:
    """`type/code` of an `{"error": {"type", "code"}}` body (OpenAI's and Anthropic's shape),
    keeping only plain identifiers; "" when there is none."""
    try:
        payload = loads(await read_body(response, _ERROR_BODY_LIMIT, cut=True))
    except (httpx.HTTPError, ValueError):
        return ""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return ""
    parts: list[str] = []
    for value in (error.get("type"), error.get("code")):
        if not isinstance(value, str) or not _SAFE_IDENTIFIER.match(value) or value in parts:
            continue
        # An identifier-looking value could still be (part of) the key an upstream echoes.
        if api_key and (value in api_key or api_key.lower() in value):
            continue
        parts.append(value)
    return "/".join(parts)


def transport_error(
    error: httpx.HTTPError, *, streaming: bool = False, partial_usage: Usage | None = None
) -> UpstreamError:
    """The UpstreamError for an httpx exception. `streaming` says a streamed response had
    started: a connection lost then is a broken stream (BAD_RESPONSE, not retried, since
    pieces may have been passed on), not a failure to connect. A JSON answer cut off is a
    CONNECTION error: nothing was passed on, the call can be tried again."""
    name = type(error).__name__
    if isinstance(error, httpx.TimeoutException):
        where = "while streaming" if streaming else "before answering"
        return UpstreamError(
            ErrorKind.TIMEOUT,
            f"Upstream timed out {where} ({name}).",
            partial_usage=partial_usage,
        )
    if isinstance(error, httpx.TransportError) and not streaming:
        return UpstreamError(ErrorKind.CONNECTION, f"Could not reach the upstream ({name}).")
    if isinstance(error, httpx.TransportError):
        return UpstreamError(
            ErrorKind.BAD_RESPONSE,
            f"Upstream stream broke off before its end ({name}).",
            partial_usage=partial_usage,
        )
    return UpstreamError(
        ErrorKind.BAD_RESPONSE,
        f"Upstream response could not be read ({name}).",
        partial_usage=partial_usage,
    )


def loads(text: str | bytes):
    """An upstream's JSON. Nesting past Python's recursion limit raises RecursionError from
    `json.loads`, not ValueError: it is a ValueError here, invalid JSON like any other, so that
    an upstream sending it is a bad response, not a crash of the call."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deep to read") from None


async def read_body(response: httpx.Response, limit: int, *, cut: bool = False) -> bytes:
    """The response's body, decoded, read as it arrives and never more than `limit` bytes of
    it: past that, its first `limit` bytes when `cut`, else BAD_RESPONSE. (A compressed body
    is decoded piece by piece, so a small one that decodes to gigabytes stops here too.)"""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        size += len(part)
        if size > limit:
            if not cut:
                raise bad_response(f"Upstream answer is larger than {limit} bytes.")
            parts.append(part[: len(part) - (size - limit)])
            break
        parts.append(part)
    return b"".join(parts)


def json_payload(content: bytes) -> dict:
    """The JSON object of an answer's body; BAD_RESPONSE when it is not one."""
    try:
        payload = loads(content)
    except ValueError:
        raise bad_response("Upstream answered with invalid JSON.") from None
    if not isinstance(payload, dict):
        raise bad_response("Upstream answered with JSON that is not an object.")
    return payload


def bad_response(message: str, partial_usage: Usage | None = None) -> UpstreamError:
    return UpstreamError(ErrorKind.BAD_RESPONSE, message, partial_usage=partial_usage)


def usage_from(payload: Any, prompt_key: str, completion_key: str) -> Usage | None:
    """Usage from `payload[prompt_key]` and `payload[completion_key]`; None unless both are
    non-negative integers."""
    if not isinstance(payload, dict):
        return None
    prompt, completion = payload.get(prompt_key), payload.get(completion_key)
    if not (_is_count(prompt) and _is_count(completion)):
        return None
    return Usage(prompt, completion)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event: its `event:` name ("message" when none) and its data lines
    joined with newlines."""

    event: str
    data: str


_LINE_END = re.compile(r"\r\n|\r|\n")


class LineTooLong(ValueError):
    """A server-sent event stream's line grew past the decoder's limit without ending."""


class SSEDecoder:
    """The events of a server-sent event stream, fed its text as it arrives in pieces.

    Lines end with CRLF, LF or CR (a CR at the end of one piece and the LF starting the next
    are one line end). Events are separated by blank lines; `:` comments and fields other
    than `event` and `data` (`id`, `retry`) are ignored, as are events without data.

    A line may arrive in any number of pieces: they are kept apart until its end comes (so a
    long line costs its length, not its length times its pieces), and one longer than
    `max_line` characters raises LineTooLong (an event's data lines are bounded together):
    after the events before it, when the same piece completed some, by the next call."""

    def __init__(self, max_line: int | None = None):
        self._max_line = max_line
        self._line: list[str] = []  # the pieces of the unfinished last line of what was fed
        self._line_size = 0
        self._after_cr = False  # what was fed ended with CR: a LF starting the next is its end
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0
        self._refused: LineTooLong | None = None  # raised by the next call

    def feed(self, text: str) -> list[SSEEvent]:
        """The events `text` completes, in order."""
        if self._refused is not None:
            raise self._refused
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        if not text:
            return []
        self._after_cr = text.endswith("\r")
        *lines, last = _LINE_END.split(text)
        if lines:
            lines[0] = "".join((*self._line, lines[0]))
            self._line, self._line_size = [], 0
        events: list[SSEEvent] = []
        try:
            for line in lines:
                self._check(len(line))
                self._read_line(line, events)
            if last:
                self._line.append(last)
                self._line_size += len(last)
                self._check(self._line_size)
        except LineTooLong as refused:
            if not events:
                raise
            self._refused = refused
        return events

    def close(self) -> list[SSEEvent]:
        """The event left when the stream ends without the blank line after it: dispatched all
        the same, since some servers end the body right after the end marker's line."""
        if self._refused is not None:
            raise self._refused
        events: list[SSEEvent] = []
        if self._line:
            self._read_line("".join(self._line), events)
            self._line, self._line_size = [], 0
        self._read_line("", events)
        return events

    def _check(self, size: int) -> None:
        if self._max_line is not None and size > self._max_line:
            raise LineTooLong(f"a line longer than {self._max_line} characters")

    def _read_line(self, line: str, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data, self._data_size = "", [], 0
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data_size += len(value) + 1
            self._check(self._data_size)
            self._data.append(value)
        elif name == "event":
            self._event = value


async def _event_lists(texts: AsyncIterator[str], max_line: int) -> AsyncIterator[list[SSEEvent]]:
    """The events each piece of a body's text completes, then those its end completes."""
    decoder = SSEDecoder(max_line)
    async for text in texts:
        yield decoder.feed(text)
    yield decoder.close()


def _read_events(
    events: list[SSEEvent], read: Callable[[str], tuple[list[StreamDelta], bool]]
) -> tuple[list[StreamDelta], bool, UpstreamError | None]:
    """The deltas of `events` up to the last one (`read` says which), whether it came, and the
    error of an event that could not be read: the deltas before it are still relayed."""
    batch: list[StreamDelta] = []
    for event in events:
        try:
            deltas, last = read(event.data)
        except UpstreamError as error:
            return batch, False, error
        batch += deltas
        if last:
            return batch, True, None
    return batch, False, None


def _within(batch: list[StreamDelta], excess: int) -> list[StreamDelta]:
    """`batch` without the deltas at its end that carry its last `excess` characters."""
    kept = list(batch)
    while kept and excess > 0:
        excess -= len(kept.pop().content)
    return kept


async def drain(chunks: AsyncIterator) -> None:
    """Read what is left of a stream after its end marker (so that the connection can go back
    to the pool), briefly and ignoring errors: everything the caller needs is already in."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in chunks:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


# --- The adapter -------------------------------------------------------------------------------


class HTTPProvider(Provider):
    """An adapter that calls its upstream over HTTP: `_endpoint()` names the URL and headers,
    `_result()` reads a JSON answer."""

    @abstractmethod
    def _endpoint(self) -> tuple[str, dict[str, str]]:
        """The URL and headers of a call (NOT_CONFIGURED when the provider cannot be called)."""

    @abstractmethod
    def _result(self, payload: dict) -> ChatResult:
        """The answer read from the upstream's JSON (BAD_RESPONSE when it is not its shape)."""

    def _request(self, body: dict[str, Any], accept: str = "*/*") -> httpx.Request:
        """The call as an httpx request, sent by the transport itself: httpx's client would
        only add layers the adapters do not use (a base URL to join, cookies, auth,
        redirects, event hooks) at a fifth of a millisecond of CPU per call. Its default
        headers and its JSON encoding are kept."""
        url, headers = self._endpoint()
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return httpx.Request(
            "POST",
            url,
            headers={**_DEFAULT_HEADERS, "Accept": accept, **headers},
            content=content.encode(),
            extensions={"timeout": self._timeouts},
        )

    @functools.cached_property
    def _timeouts(self) -> dict:
        return httpx.Timeout(
            self.config.timeout_seconds, connect=self.config.connect_timeout_seconds
        ).as_dict()

    async def _post(self, body: dict[str, Any]) -> ChatResult:
        """One non-streamed call: the answer as a ChatResult, or an UpstreamError."""
        try:
            request = self._request(body)
            response = await self.transport().handle_async_request(request)
            try:
                if response.status_code != 200:
                    raise await error_for_status(response, api_key=self.config.api_key)
                content = await read_body(response, settings.GATEWAY_UPSTREAM_MAX_BYTES)
            finally:
                await response.aclose()
        except httpx.HTTPError as error:
            raise transport_error(error) from None
        except httpx.InvalidURL:
            raise self._invalid_url() from None
        return self._result(json_payload(content))

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """The answer as it comes, delta by delta (`stream_batches`, one at a time)."""
        async with aclosing(self.stream_batches(request)) as batches:
            async for batch in batches:
                for delta in batch:
                    yield delta

    @abstractmethod
    def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[StreamDelta]]:
        """The answer as it comes, in the groups the upstream's bytes arrived in."""

    async def _stream(
        self,
        body: dict[str, Any],
        read: Callable[[str], tuple[list[StreamDelta], bool]],
        *,
        unfinished: str,
        partial_usage: Callable[[], Usage | None] = lambda: None,
    ) -> AsyncIterator[list[StreamDelta]]:
        """One streamed call: each server-sent event's data becomes deltas through
        `read(data)`, which also says whether it was the stream's last event. The deltas of
        the events that arrived together come as one list (none when there are none), so
        what relays them pays per read from the upstream, not per event. A stream that ends
        before its last event is BAD_RESPONSE (`unfinished`); transport failures are mapped
        as in `transport_error`, with the usage reported so far (`partial_usage()`). So is a
        line, or the text of the deltas, longer than GATEWAY_UPSTREAM_MAX_BYTES characters:
        BAD_RESPONSE, after the deltas before it (an endless stream or line is cut there)."""
        limit = settings.GATEWAY_UPSTREAM_MAX_BYTES
        text = 0
        started = False
        try:
            request = self._request(body, accept="text/event-stream")
            response = await self.transport().handle_async_request(request)
            try:
                if response.status_code != 200:
                    raise await error_for_status(response, api_key=self.config.api_key)
                started = True
                chunks = response.aiter_text()
                async with aclosing(_event_lists(chunks, limit)) as event_lists:
                    async for events in event_lists:
                        batch, last, error = _read_events(events, read)
                        text += sum(len(delta.content) for delta in batch)
                        if text > limit:
                            within = _within(batch, text - limit)
                            if within:
                                yield within
                            raise bad_response(
                                f"Upstream stream's text is longer than {limit} characters.",
                                partial_usage(),
                            )
                        if batch:
                            yield batch
                        if error is not None:
                            raise error
                        if last:
                            await drain(chunks)
                            return
            finally:
                await response.aclose()
        except LineTooLong as error:
            raise bad_response(f"Upstream stream sent {error}.", partial_usage()) from None
        except httpx.HTTPError as error:
            raise transport_error(error, streaming=started, partial_usage=partial_usage()) from None
        except httpx.InvalidURL:
            raise self._invalid_url() from None
        raise bad_response(unfinished, partial_usage())

    def _invalid_url(self) -> UpstreamError:
        return UpstreamError(
            ErrorKind.NOT_CONFIGURED, f"Provider {self.config.name!r} has an invalid base URL."
        )
