"""The `openai` provider: any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, ...).

It POSTs to `{base_url}/chat/completions` (base_url like `https://api.openai.com/v1` or
`http://localhost:11434/v1`), with `Authorization: Bearer <api_key>` when a key is configured
(self-hosted servers usually need none). Streaming reads the server-sent events of the chat
completion chunks up to `data: [DONE]`.

The HTTP plumbing it shares with the Anthropic adapter is in `http.py`.
"""

from collections.abc import AsyncIterator
from typing import Any

from .base import ChatRequest, ChatResult, ErrorKind, StreamDelta, UpstreamError
from .http import (
    HTTPProvider,
    bad_response,
    loads,
    require_http_url,
    usage_from,
)

# The finish reasons the gateway speaks (OpenAI's); others (tool_calls, vLLM's abort, ...)
# are reported as `stop`, since the gateway asks for no tools.
_FINISH_REASONS = frozenset({"stop", "length", "content_filter"})


def _finish_reason(value: Any) -> str:
    return value if value in _FINISH_REASONS else "stop"


class OpenAIProvider(HTTPProvider):
    """An OpenAI-compatible chat completions upstream."""

    kind = "openai"

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await self._post(self._body(request))

    def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[StreamDelta]]:
        """The answer as it comes: content pieces, then the finish reason, then (when the
        upstream sends it) the usage. BAD_RESPONSE if the stream ends without `[DONE]`."""
        body = {**self._body(request), "stream": True, "stream_options": {"include_usage": True}}

        def read(data: str) -> tuple[list[StreamDelta], bool]:
            if data.strip() == "[DONE]":
                return [], True
            return self._deltas(data), False

        return self._stream(
            body, read, unfinished="Upstream stream ended without its end marker ([DONE])."
        )

    def _endpoint(self) -> tuple[str, dict[str, str]]:
        """The URL and headers of a call; NOT_CONFIGURED without a base URL."""
        base_url = self.config.base_url.strip().rstrip("/")
        if not base_url:
            raise UpstreamError(
                ErrorKind.NOT_CONFIGURED, f"Provider {self.config.name!r} has no base URL."
            )
        require_http_url(self.config, base_url)
        headers = {}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return f"{base_url}/chat/completions", headers

    @staticmethod
    def _body(request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [
                {"role": message.get("role"), "content": message.get("content") or ""}
                for message in request.messages
            ],
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if request.user:
            body["user"] = request.user
        return body

    @staticmethod
    def _result(payload: dict) -> ChatResult:
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad_response("Upstream answer has no choices.")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise bad_response("Upstream answer has no message.")
        content = message.get("content")
        if content is None:  # e.g. a refusal or a tool call: no text
            content = ""
        if not isinstance(content, str):
            raise bad_response("Upstream answer's content is not text.")
        return ChatResult(
            content,
            _finish_reason(choices[0].get("finish_reason")),
            usage_from(payload.get("usage"), "prompt_tokens", "completion_tokens"),
        )

    @staticmethod
    def _deltas(data: str) -> list[StreamDelta]:
        """The deltas of one chunk (`data:` payload other than `[DONE]`)."""
        try:
            chunk = loads(data)
        except ValueError:
            raise bad_response("Upstream stream carried invalid JSON.") from None
        if not isinstance(chunk, dict):
            raise bad_response("Upstream stream carried JSON that is not an object.")
        if "error" in chunk:
            # vLLM and others report a failure mid-stream as a chunk of their error body.
            raise bad_response("Upstream reported an error in the stream.")
        deltas = []
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise bad_response("Upstream stream chunk has malformed choices.")
        if choices:
            choice = choices[0]
            if not isinstance(choice, dict):
                raise bad_response("Upstream stream chunk has a malformed choice.")
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise bad_response("Upstream stream chunk's content is not text.")
            if content:
                deltas.append(StreamDelta(content=content))
            if choice.get("finish_reason") is not None:
                deltas.append(StreamDelta(finish_reason=_finish_reason(choice["finish_reason"])))
        usage = usage_from(chunk.get("usage"), "prompt_tokens", "completion_tokens")
        if usage is not None:
            deltas.append(StreamDelta(usage=usage))
        return deltas
