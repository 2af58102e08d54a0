"""The provider interface: what the gateway asks of an upstream, in the gateway's own terms.

A provider turns a `ChatRequest` (OpenAI-shaped messages, already validated) into a
`ChatResult`, or a stream of `StreamDelta`s, and reports what went wrong as an `UpstreamError`
whose `kind` the gateway's retry, fallback and cooldown rules read. An adapter never lets a
transport exception, an upstream's raw body or its key escape: the message of an
UpstreamError is ours, safe to log and to show.

Adapters are async (one event loop serves many in-flight calls; see docs/gateway.md, "Serving
model") and keep one HTTP client per event loop, since an httpx.AsyncClient is bound to the
loop it was first used on.
"""

import asyncio
import itertools
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
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
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResult:
        """The whole answer, or an UpstreamError."""

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        """The answer as it comes (an async generator), or an UpstreamError; the last deltas
        carry the finish reason and, when the upstream reports it, the usage."""

    def client(self):
        """An HTTP client of this event loop for the upstream (created on first use).

        The loop keeps CLIENTS_PER_LOOP clients and takes them in turn: httpcore's pool goes
        over all its connections twice per request, and for each idle one counts all of them
        again (httpcore 1.0.9, `_assign_requests_to_connections`), so a client holding the
        connections of 50 calls in flight spent more CPU choosing a connection than on the
        call (a third of a gateway worker's CPU in bench/gateway.py). Each client of the ring
        holds a few."""
        loop = asyncio.get_running_loop()
        ring = self._clients.get(loop)
        if ring is None:
            ring = self._clients[loop] = _ClientRing(self._new_client)
        return ring.next()

    async def aclose(self) -> None:
        """Close this event loop's clients (a loop that ends closes them first)."""
        ring = self._clients.pop(asyncio.get_running_loop(), None)
        if ring is not None:
            await ring.aclose()

    def _new_client(self):
        import httpx

        return httpx.AsyncClient(
            base_url=self.config.base_url.rstrip("/"),
            timeout=httpx.Timeout(
                self.config.timeout_seconds, connect=self.config.connect_timeout_seconds
            ),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
            follow_redirects=False,
            trust_env=False,
        )


CLIENTS_PER_LOOP = 8


class _ClientRing:
    """CLIENTS_PER_LOOP HTTP clients, handed out in turn."""

    def __init__(self, factory):
        self._clients = [factory() for _ in range(CLIENTS_PER_LOOP)]
        self._turn = itertools.cycle(self._clients)

    def next(self):
        return next(self._turn)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
