"""The `anthropic` provider: Anthropic's Messages API (`POST {base_url}/v1/messages`).

The gateway speaks OpenAI's chat format; this adapter translates a request into a Messages
call and the answer (JSON or its event stream) back. See `to_messages_body` for the request's
translation and `AnthropicProvider.stream` for the events it reads.
"""

from collections.abc import AsyncIterator
from typing import Any

from .base import (
    ChatRequest,
    ChatResult,
    ErrorKind,
    StreamDelta,
    UpstreamError,
    Usage,
)
from .http import (
    HTTPProvider,
    bad_response,
    loads,
    require_http_url,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# Sent as the first user message when a conversation has none before the assistant's.
CONTINUE_PROMPT = "(continue)"
# Anthropic's temperature range is 0..1, OpenAI's 0..2: a higher value is clamped to the
# most random Anthropic allows rather than rejected by the upstream.
_MAX_TEMPERATURE = 1.0

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    # The model declined (a safety classifier stopped it): OpenAI's name for that.
    "refusal": "content_filter",
}
# Error events of a stream that started: the kind the gateway's retry rules read.
_STREAM_ERRORS = {
    "overloaded_error": ErrorKind.SERVER_ERROR,
    "api_error": ErrorKind.SERVER_ERROR,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
}


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's finish reason for an Anthropic `stop_reason` (anything unknown: `stop`)."""
    return _STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def to_messages_body(request: ChatRequest) -> dict[str, Any]:
    """The Messages API body for an OpenAI-shaped request.

    - `system` (and OpenAI's newer `developer`) messages, wherever they are, are joined with a
      blank line into the top-level `system` string.
    - The other messages become `user` or `assistant` turns (any role other than `assistant`
      counts as the user's); empty ones are dropped, and consecutive turns of the same role are
      merged with a blank line, since the API wants the roles to alternate.
    - The API wants the conversation to open with a user turn: when it would open with the
      assistant's (or has no turn at all), a user turn "(continue)" is put first.
    - `stop` becomes `stop_sequences`, `user` becomes `metadata.user_id`, and `temperature` is
      clamped to the API's 0..1.
    """
    system_parts: list[str] = []
    turns: list[dict[str, str]] = []
    for message in request.messages:
        role, content = message.get("role"), message.get("content") or ""
        if role in ("system", "developer"):
            if content.strip():
                system_parts.append(content)
            continue
        if not content.strip():
            continue
        role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    if not turns or turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": CONTINUE_PROMPT})

    body: dict[str, Any] = {
        "model": request.model,
        "messages": turns,
        "max_tokens": request.max_tokens,
    }
    if system_parts:
        body["system"] = "\n\n".join(system_parts)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, _MAX_TEMPERATURE)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    stop_sequences = [stop for stop in request.stop if stop]
    if stop_sequences:
        body["stop_sequences"] = stop_sequences
    if request.user:
        body["metadata"] = {"user_id": request.user}
    return body


class AnthropicProvider(HTTPProvider):
    """Anthropic's Messages API. Needs an API key; the base URL defaults to Anthropic's."""

    kind = "anthropic"

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await self._post(to_messages_body(request))

    def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[StreamDelta]]:
        """The answer as it comes: a delta per `text_delta`, then, at `message_stop`, one with
        the finish reason and the usage.

        Events read: `message_start` (input tokens), `content_block_delta` (text),
        `message_delta` (stop reason, output tokens so far), `message_stop` (the end), `error`
        (overloaded -> SERVER_ERROR, rate limit -> RATE_LIMITED, else BAD_RESPONSE); `ping`
        and unknown events are ignored. An error, or a stream that ends without
        `message_stop`, carries as `partial_usage` the tokens reported until then (once
        `message_start` was seen)."""
        body = {**to_messages_body(request), "stream": True}
        state = _StreamState()

        def read(data: str) -> tuple[list[StreamDelta], bool]:
            delta = state.read(data)
            return ([delta] if delta is not None else []), state.stopped

        return self._stream(
            body,
            read,
            unfinished="Upstream stream ended without its end event (message_stop).",
            partial_usage=state.partial_usage,
        )

    def _endpoint(self) -> tuple[str, dict[str, str]]:
        """The URL and headers of a call; NOT_CONFIGURED without an API key."""
        if not self.config.api_key:
            raise UpstreamError(
                ErrorKind.NOT_CONFIGURED, f"Provider {self.config.name!r} has no API key."
            )
        base_url = (self.config.base_url.strip() or DEFAULT_BASE_URL).rstrip("/")
        require_http_url(self.config, base_url)
        # A base URL given with the version path (".../v1") is accepted as well.
        base_url = base_url.removesuffix("/v1")
        headers = {
            "x-api-key": self.config.api_key,
            "anthropic-version": API_VERSION,
            "content-type": "application/json",
        }
        return f"{base_url}/v1/messages", headers

    @staticmethod
    def _result(payload: dict) -> ChatResult:
        blocks = payload.get("content")
        if not isinstance(blocks, list):
            raise bad_response("Upstream answer has no content blocks.")
        texts = []
        for block in blocks:
            if not isinstance(block, dict):
                raise bad_response("Upstream answer has a malformed content block.")
            if block.get("type") == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    raise bad_response("Upstream answer's text block has no text.")
                texts.append(text)
        return ChatResult(
            "".join(texts),
            finish_reason(payload.get("stop_reason")),
            _usage(payload.get("usage")),
        )


def _usage(usage: Any) -> Usage | None:
    """Usage from a Messages `usage` object; None unless it has both counts."""
    prompt = _prompt_tokens(usage)
    completion = _count(usage, "output_tokens")
    if prompt is None or completion is None:
        return None
    return Usage(prompt, completion)


def _prompt_tokens(usage: Any) -> int | None:
    """`input_tokens`, plus the tokens read from or written to the prompt cache, which the API
    counts apart: all of them are the prompt's."""
    tokens = _count(usage, "input_tokens")
    if tokens is None:
        return None
    for key in ("cache_creation_input_tokens", "cache_read_input_tokens"):
        tokens += _count(usage, key) or 0
    return tokens


def _count(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class _StreamState:
    """What a Messages event stream has said so far."""

    def __init__(self) -> None:
        self.started = False  # message_start seen
        self.stopped = False  # message_stop seen
        self.reported_usage = False
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason: str | None = None

    def partial_usage(self) -> Usage | None:
        if not self.started:
            return None
        return Usage(self.input_tokens, self.output_tokens)

    def read(self, data: str) -> StreamDelta | None:
        """Take in one event's data; the delta to pass on, if any. Raises UpstreamError for an
        `error` event or data that is not the wire format."""
        try:
            event = loads(data)
        except ValueError:
            raise bad_response(
                "Upstream stream carried invalid JSON.", self.partial_usage()
            ) from None
        if not isinstance(event, dict):
            raise bad_response("Upstream stream carried an unexpected event.", self.partial_usage())
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            self.started = True
            self._take_usage(message.get("usage") if isinstance(message, dict) else None)
        elif kind == "content_block_start":
            block = event.get("content_block")
            # A text block may open with some text already (usually it is empty).
            if isinstance(block, dict) and block.get("type") == "text":
                return self._text(block.get("text"))
        elif kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                return self._text(delta.get("text"))
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self.stop_reason = delta["stop_reason"]
            self._take_usage(event.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
            usage = Usage(self.input_tokens, self.output_tokens) if self.reported_usage else None
            return StreamDelta(finish_reason=finish_reason(self.stop_reason), usage=usage)
        elif kind == "error":
            raise self._error(event.get("error"))
        # ping, content_block_stop and event types added later: nothing to pass on.
        return None

    def _text(self, text: Any) -> StreamDelta | None:
        if text is None:
            return None
        if not isinstance(text, str):
            raise bad_response("Upstream stream's text is not text.", self.partial_usage())
        return StreamDelta(content=text) if text else None

    def _take_usage(self, usage: Any) -> None:
        """Counts are cumulative: each report replaces the previous one."""
        prompt, completion = _prompt_tokens(usage), _count(usage, "output_tokens")
        if prompt is not None:
            self.input_tokens = prompt
            self.reported_usage = True
        if completion is not None:
            self.output_tokens = completion
            self.reported_usage = True

    def _error(self, error: Any) -> UpstreamError:
        error_type = error.get("type") if isinstance(error, dict) else None
        kind = _STREAM_ERRORS.get(error_type, ErrorKind.BAD_RESPONSE)
        label = {
            ErrorKind.SERVER_ERROR: "Upstream is overloaded or failed mid-stream.",
            ErrorKind.RATE_LIMITED: "Upstream rate limit reached mid-stream.",
        }.get(kind, "Upstream reported an error in the stream.")
        return UpstreamError(kind, label, partial_usage=self.partial_usage())
