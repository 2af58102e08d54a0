"""One walk of a chain at a time: verifying a chain and exporting it read every sealed event
of it (about 15,000 events a second on one core, bench/audit_chain.py), so a large chain
keeps a web thread busy for as long as that takes. The request rate counts requests, not
their length: without this, a member could keep as many threads walking their organization's
chain as they send requests. A second walk of a chain while one runs is refused (429,
RATE_LIMIT_EXCEEDED); other chains are not held up.

The slot is a cache key (Redis in production, so shared by every process; per process in the
embedded default), given back when the walk ends (a streamed export: when its last line is
sent or the client goes away) and expiring after WALK_SLOT_SECONDS in case its process died.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import cache

from config.exceptions import RateLimitExceeded

from .models import PLATFORM_CHAIN

WALK_SLOT_SECONDS = 15 * 60
WALK_RETRY_SECONDS = 5


def _key(tenant_id) -> str:
    return f"audit:walk:{tenant_id or PLATFORM_CHAIN}"


def take_walk_slot(tenant_id) -> str:
    """The chain's walk slot (a token for giving it back), or RateLimitExceeded."""
    token = uuid.uuid4().hex
    if not cache.add(_key(tenant_id), token, timeout=WALK_SLOT_SECONDS):
        raise RateLimitExceeded(
            "A verification or export of this chain is already running; try again when it ends.",
            wait=WALK_RETRY_SECONDS,
        )
    return token


def give_back_walk_slot(tenant_id, token: str) -> None:
    # Only our own: a slot that expired under a very long walk may be another's by now.
    if cache.get(_key(tenant_id)) == token:
        cache.delete(_key(tenant_id))


@contextmanager
def walk_slot(tenant_id):
    token = take_walk_slot(tenant_id)
    try:
        yield
    finally:
        give_back_walk_slot(tenant_id, token)


def walking(tenant_id, lines: Iterator[str]) -> Iterator[str]:
    """`lines`, holding the chain's walk slot (taken now, before the response starts) until
    they end or the response is closed."""
    token = take_walk_slot(tenant_id)

    def stream():
        try:
            yield from lines
        finally:
            give_back_walk_slot(tenant_id, token)

    return stream()
