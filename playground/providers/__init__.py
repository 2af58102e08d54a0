"""LLM providers behind one interface (base.Provider): `local` (deterministic, offline),
`openai` (any OpenAI-compatible upstream) and `anthropic` (the Messages API)."""

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


def build_provider(config: ProviderConfig) -> Provider:
    """The adapter for `config.kind`."""
    from .anthropic import AnthropicProvider
    from .local import LocalProvider
    from .openai import OpenAIProvider

    kinds = {"local": LocalProvider, "openai": OpenAIProvider, "anthropic": AnthropicProvider}
    try:
        return kinds[config.kind](config)
    except KeyError:
        raise ValueError(f"Unknown provider kind {config.kind!r}") from None


__all__ = [
    "ChatRequest",
    "ChatResult",
    "ErrorKind",
    "Provider",
    "ProviderConfig",
    "StreamDelta",
    "UpstreamError",
    "Usage",
    "build_provider",
]
