"""Upstream cooldown: after repeated failures a model's upstream is skipped for a while.

State lives in the default cache (Redis in production), so every web process shares it: after
GATEWAY_COOLDOWN_FAILURES failed attempts within GATEWAY_COOLDOWN_WINDOW_SECONDS, the model is
"cooling down" for GATEWAY_COOLDOWN_SECONDS and the gateway goes straight to its fallbacks (or
answers 503 AI_SERVICE_ERROR when none is left), instead of making every caller wait for an
upstream that is down. The local provider never fails and is never cooled down.
"""

from django.conf import settings
from django.core.cache import cache

_COOLING = "gateway:cooldown:{}"
_FAILURES = "gateway:failures:{}"


def cooling_down(names) -> set[str]:
    """Which of the model `names` are cooling down now (one cache round trip)."""
    names = list(names)
    if not names:
        return set()
    found = cache.get_many([_COOLING.format(name) for name in names])
    return {name for name in names if _COOLING.format(name) in found}


def record_failures(names) -> list[str]:
    """Count one failed attempt for each model in `names`; returns those that just started a
    cooldown."""
    started = []
    for name in names:
        key = _FAILURES.format(name)
        cache.add(key, 0, settings.GATEWAY_COOLDOWN_WINDOW_SECONDS)
        try:
            failures = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, settings.GATEWAY_COOLDOWN_WINDOW_SECONDS)
            failures = 1
        if failures >= settings.GATEWAY_COOLDOWN_FAILURES:
            cache.set(_COOLING.format(name), 1, settings.GATEWAY_COOLDOWN_SECONDS)
            cache.delete(key)
            started.append(name)
    return started


def clear(name: str) -> None:
    """End a model's cooldown and forget its failures (ops: `manage.py gateway_cooldown`)."""
    cache.delete_many([_COOLING.format(name), _FAILURES.format(name)])
