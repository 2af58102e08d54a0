"""Upstream cooldown: after repeated failures a model's upstream is skipped for a while.

State lives in the default cache (Redis in production), so every web process shares it: after
GATEWAY_COOLDOWN_FAILURES failed attempts within GATEWAY_COOLDOWN_WINDOW_SECONDS, the model is
"cooling down" for GATEWAY_COOLDOWN_SECONDS and the gateway goes straight to its fallbacks (or
answers 503 AI_SERVICE_ERROR when none is left), instead of making every caller wait for an
upstream that is down. The local provider never fails and is never cooled down.

Reading the state was one of a call's three Redis round trips, for a state that changes a few
times an hour at most. So each process keeps what it read (`Cooling`: each model's end of
cooldown, stamped with the principals' epoch seen before the read, config.epoch), and a
cooldown's start and end move that epoch, as a write to a principal's row does. A kept state
is used while the epoch this process has seen is still its stamp; the call's own admission
(the tokens window's, after the reservation) then confirms it: if that admission saw the
epoch move, the gateway reads the state again before calling anyone
(playground.services.gateway.gateway_reserve). A cooldown that runs out needs no epoch: the
kept end says when. Without Redis (no epoch) every check reads the cache, as before.
"""

import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from config import epoch as principals_epoch

_COOLING = "gateway:cooldown:{}"
_FAILURES = "gateway:failures:{}"


@dataclass(frozen=True)
class Cooling:
    """Which of the models asked about are cooling down; `kept_at` is the epoch of the state
    kept earlier that answered, None when the cache was read for this answer."""

    names: frozenset[str]
    kept_at: int | None = None

    def __contains__(self, name) -> bool:
        return name in self.names

    def confirmed(self) -> bool:
        """Still true as of the latest admission of this process: read now, or kept at the
        epoch that admission saw."""
        return self.kept_at is None or self.kept_at == principals_epoch.observed()


class _Kept:
    """Per model: (the epoch seen before the read, when it was read (monotonic), the cooldown's
    end in epoch seconds, 0 when it was not cooling). Bounded by the catalogue's size. An entry
    older than PRINCIPAL_CACHE_SECONDS is read again, as a kept principal lookup is: what bounds
    a change the epoch did not see (a Redis failure when it was to move)."""

    def __init__(self):
        self.ends: dict[str, tuple[int, float, float]] = {}
        self.lock = threading.Lock()

    def answer(self, names: list[str], epoch: int | None, now: float) -> Cooling | None:
        if epoch is None:
            return None
        ends = self.ends
        oldest = time.monotonic() - settings.PRINCIPAL_CACHE_SECONDS
        cooling = set()
        for name in names:
            entry = ends.get(name)
            if entry is None or entry[0] != epoch or entry[1] < oldest:
                return None
            if entry[2] > now:
                cooling.add(name)
        return Cooling(frozenset(cooling), kept_at=epoch)

    def keep(self, epoch: int, ends: dict[str, float]) -> None:
        read_at = time.monotonic()
        with self.lock:
            self.ends.update((name, (epoch, read_at, end)) for name, end in ends.items())

    def clear(self) -> None:
        with self.lock:
            self.ends = {}


_kept = _Kept()
# A forked child starts with nothing kept and a lock no parent thread can be holding.
os.register_at_fork(after_in_child=_kept.__init__)


def cooling_down(names, *, read: bool = False) -> Cooling:
    """Which of the model `names` are cooling down: from the state kept for them when the
    epoch has not moved since it was read (and `read` is false), otherwise one cache round
    trip."""
    names = list(names)
    if not names:
        return Cooling(frozenset())
    now = time.time()
    epoch = principals_epoch.observed() if principals_epoch.keeping_enabled() else None
    if not read:
        kept = _kept.answer(names, epoch, now)
        if kept is not None:
            return kept
    # The stamp is the epoch seen before the read: a cooldown that starts after the read
    # moves the epoch past it.
    keys = {name: _COOLING.format(name) for name in names}
    found = cache.get_many(list(keys.values()))
    ends = {name: found.get(key, 0.0) for name, key in keys.items()}
    # A value is the cooldown's end. Any other (a cooldown set before ends were stored) says
    # only that the model is cooling now: nothing is kept then.
    if epoch is not None and all(isinstance(end, float) for end in ends.values()):
        _kept.keep(epoch, ends)
    return Cooling(frozenset(name for name, key in keys.items() if key in found))


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
            seconds = settings.GATEWAY_COOLDOWN_SECONDS
            cache.set(_COOLING.format(name), time.time() + seconds, seconds)
            cache.delete(key)
            started.append(name)
    if started:
        _moved()
    return started


def clear(name: str) -> None:
    """End a model's cooldown and forget its failures (ops: `manage.py gateway_status`)."""
    cache.delete_many([_COOLING.format(name), _FAILURES.format(name)])
    _moved()


def forget() -> None:
    """Drop what this process kept (every process's is dropped when the epoch moves)."""
    _kept.clear()


def _moved() -> None:
    # Every process's kept state is read again (theirs when their next admission sees the
    # epoch move; this one's now).
    principals_epoch.advance()
    forget()
