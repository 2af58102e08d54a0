"""The `local` provider: deterministic, offline, for development, demos and tests.

It is not a language model. Its answer is derived from the prompt: it names the model and
restates the last user message (its first 40 tokens), so the same request always gets the
same answer. It counts tokens with the gateway's counting rule (playground.tokens), reports
usage exactly like an upstream, honours `max_tokens` (finish reason `length`) and `stop`
sequences, and streams its answer one token per chunk.
"""

from collections.abc import AsyncIterator

from .. import tokens
from .base import ChatRequest, ChatResult, Provider, StreamDelta, Usage

_ECHO_TOKENS = 40


def _last_user_text(messages) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and message.get("content"):
            return message["content"]
    return ""


def reply_for(request: ChatRequest) -> tuple[str, str]:
    """The answer to `request` and its finish reason."""
    asked = tokens.split_tokens(_last_user_text(request.messages))
    restated = "".join(asked[:_ECHO_TOKENS]).strip()
    if len(asked) > _ECHO_TOKENS:
        restated += " ..."
    text = (
        f"[local:{request.model}] You said: {restated}"
        if restated
        else f"[local:{request.model}] Hello! Send a user message and I will restate it."
    )
    for stop in request.stop:
        if stop and stop in text:
            return text[: text.index(stop)], "stop"
    pieces = tokens.split_tokens(text)
    if len(pieces) > request.max_tokens:
        return "".join(pieces[: request.max_tokens]), "length"
    return text, "stop"


class LocalProvider(Provider):
    kind = "local"

    async def complete(self, request: ChatRequest) -> ChatResult:
        text, finish_reason = reply_for(request)
        return ChatResult(text, finish_reason, self._usage(request, text))

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamDelta]:
        text, finish_reason = reply_for(request)
        for piece in tokens.split_tokens(text):
            yield StreamDelta(content=piece)
        yield StreamDelta(finish_reason=finish_reason, usage=self._usage(request, text))

    @staticmethod
    def _usage(request: ChatRequest, text: str) -> Usage:
        return Usage(tokens.prompt_tokens(request.messages), tokens.count_tokens(text))
