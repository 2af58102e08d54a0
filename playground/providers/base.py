"""The provider interface: what the gateway asks of an upstream, in the gateway's own terms.

A provider turns a `ChatRequest` (OpenAI-shaped messages, already validated) into a
`ChatResult`, or a stream of `StreamDelta`s, and reports what went wrong as an `UpstreamError`
whose `kind` the gateway's retry, fallback and cooldown rules read. An adapter never lets a
transport exception, an upstream's raw body or its key escape: the message of an
UpstreamError is ours, safe to log and to show.

Adapters are async (one event loop serves many in-flight calls; see docs/gateway.md, "Serving
model") and keep one HTTP transport (a connection pool) per event loop, since a pool is bound
to the loop it was first used on.
"""

import asyncio
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion, in the upstream's model name. `messages` are `{"role", "content"}`
    with text content; `max_tokens` is always set (the gateway fills in the model's cap)."""

    model: str
    messages: tuple[dict, ...]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    user: str = ""


@dataclass(frozen=True)
class ChatResult:
    content: str
    finish_reason: str  # OpenAI's: stop, length, content_filter
    usage: Usage | None  # None when the upstream did not report it


@dataclass(frozen=True)
class StreamDelta:
    """A piece of a streamed answer: text, and, in the last pieces, the finish reason and
    usage (either may be missing if the upstream does not send them)."""

    content: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


class ErrorKind(StrEnum):
    RATE_LIMITED = "rate_limited"  # upstream 429
    SERVER_ERROR = "server_error"  # upstream 5xx
    TIMEOUT = "timeout"  # connect, read or whole-call timeout
    CONNECTION = "connection"  # refused, reset, DNS
    BAD_RESPONSE = "bad_response"  # not the wire format: malformed JSON, broken stream
    REJECTED = "rejected"  # upstream 4xx other than 429 (bad key, unknown model, ...)
    NOT_CONFIGURED = "not_configured"  # no key or base URL for a provider that needs one


# Kinds worth another try (same model after a back-off, or a fallback model).
RETRYABLE = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT, ErrorKind.CONNECTION}
)


class UpstreamError(Exception):
    """An upstream call failed. `message` is safe to show (never the upstream's body)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        partial_usage: Usage | None = None,
    ):
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        # What a broken stream had consumed before it broke, when the upstream said.
        self.partial_usage = partial_usage

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


@dataclass(frozen=True)
class ProviderConfig:
    """How to reach one upstream. `api_key` is read from the environment when the provider is
    built (never stored in the database, never shown)."""

    name: str
    kind: str  # local, openai, anthropic
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeout_seconds: float = 60.0
    connect_timeout_seconds: float = 5.0


class Provider(ABC):
    """Base class of the adapters."""

    kind: str = ""

    def __init__(self, config: ProviderConfig):
        self.config = config
        self._transports: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResult:
        """The whole answer, or an UpstreamError."""

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """The answer as it comes (an async generator), or an UpstreamError; the last deltas
        carry the finish reason and, when the upstream reports it, the usage."""

    async def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[StreamDelta]]:
        """`stream()`'s deltas in lists of those that arrived together, never empty: what the
        gateway relays, one write per list. The HTTP adapters group each read's; here, one
        delta per list."""
        async with aclosing(self.stream(request)) as deltas:
            async for delta in deltas:
                yield [delta]

    def transport(self):
        """This event loop's HTTP transport to the upstream (made on first use): aiohttp's
        connection pool behind httpx's requests, responses and exceptions
        (providers/transport.py)."""
        loop = asyncio.get_running_loop()
        transport = self._transports.get(loop)
        if transport is None:
            from .transport import AiohttpTransport

            transport = self._transports[loop] = AiohttpTransport()
        return transport

    def retire(self) -> None:
        """From any thread: close each event loop's transport once the calls in flight on it
        have ended (the adapter of a provider that was edited or removed; a new adapter
        serves the provider's next calls)."""
        for loop, transport in list(self._transports.items()):
            if not loop.is_closed():
                with suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(transport.close_when_idle)

    async def aclose(self) -> None:
        """Close this event loop's transport (a loop that ends closes it first)."""
        transport = self._transports.pop(asyncio.get_running_loop(), None)
        if transport is not None:
            await transport.aclose()
