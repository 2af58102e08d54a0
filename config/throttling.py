"""Rate limits for fairness, reported as X-RateLimit-* headers.

One throttle class applies every window that concerns a request, counted in fixed windows in
one cache round trip (a Lua script on Redis):

- the caller: the user (`user` rate), or the client address (`anon`, or the view's
  `anonymous_throttle_scope`, e.g. `auth` on credential endpoints);
- the tenant: every request in it, at its plan tier's hourly rate (seed 004; tenants.plans);
- the tenant's scope, for views that set `throttle_scope` (analytics, billing, gateway): the
  tier's rate for that scope, else the DESIGN.md default.

A request is counted only when every window has room, so a refused request uses up nothing.
These limits are for fairness: exact limits (quotas, spend) use one atomic step in their own
services (tenants.services.quotas).
"""

import time
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from redis.commands.core import Script
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_at: int  # epoch seconds at which the window ends


@dataclass(frozen=True)
class Window:
    """`limit` requests per `seconds` for the caller or tenant named by `key`."""

    key: str
    limit: int
    seconds: int

    @classmethod
    def from_rate(cls, key: str, rate: str) -> "Window":
        try:
            count, _, period = rate.partition("/")
            return cls(key, int(count), _PERIODS[period[0]])
        except (KeyError, IndexError, ValueError):
            raise ImproperlyConfigured(f"Invalid rate {rate!r} for {key}") from None


# KEYS: one bucket per window; ARGV: limit_1, ttl_1, limit_2, ttl_2, ...
# Returns {refused window index or 0, count_1, count_2, ...}.
_HIT_LUA = """
local counts = {0}
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[2 * i - 1]) and counts[1] == 0 then counts[1] = i end
  counts[i + 1] = count
end
if counts[1] ~= 0 then return counts end
for i, key in ipairs(KEYS) do
  counts[i + 1] = redis.call('INCR', key)
  if counts[i + 1] == 1 then redis.call('EXPIRE', key, ARGV[2 * i]) end
end
return counts
"""
_hit_script = Script(None, _HIT_LUA.encode())


def _bucket(window: Window, now: float) -> tuple[str, int]:
    index = int(now // window.seconds)
    return f"rl:{window.key}:{window.seconds}:{index}", (index + 1) * window.seconds


def hit(windows: Sequence[Window], now: float | None = None) -> tuple[int | None, list]:
    """Count one request in every window if all have room. Returns (the index of the first
    window that refused or None, a RateLimitState per window)."""
    now = time.time() if now is None else now
    buckets = [_bucket(window, now) for window in windows]
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        keys = [cache.make_and_validate_key(name) for name, _ in buckets]
        args = [value for window in windows for value in (window.limit, window.seconds + 1)]
        client = cache._cache.get_client(write=True)
        refused, *counts = _hit_script(keys=keys, args=args, client=client)
    else:
        refused, counts = _hit_local(cache, windows, buckets)
    states = [
        RateLimitState(window.limit, max(window.limit - count, 0), reset_at)
        for window, count, (_, reset_at) in zip(windows, counts, buckets, strict=True)
    ]
    return (refused - 1 if refused else None), states


def _hit_local(cache, windows, buckets) -> tuple[int, list[int]]:
    # Other cache backends (the local-memory default): not atomic across windows, which is
    # acceptable for fairness limits in a single development process.
    counts = [cache.get(name, 0) for name, _ in buckets]
    for index, (window, count) in enumerate(zip(windows, counts, strict=True)):
        if count >= window.limit:
            return index + 1, counts
    for index, (window, (name, _)) in enumerate(zip(windows, buckets, strict=True)):
        cache.add(name, 0, window.seconds + 1)
        counts[index] = cache.incr(name)
    return 0, counts


def configured_rate(scope: str) -> str:
    # Read at call time (DRF binds THROTTLE_RATES at import), so settings changes apply.
    try:
        return api_settings.DEFAULT_THROTTLE_RATES[scope]
    except KeyError:
        raise ImproperlyConfigured(f"No throttle rate for scope {scope!r}") from None


class WindowThrottle(BaseThrottle, metaclass=ABCMeta):
    """A DRF throttle over `windows_for(request, view)`, reporting to the response headers."""

    @abstractmethod
    def windows_for(self, request, view) -> list[Window]:
        """The windows this request is counted in."""

    def allow_request(self, request, view):
        windows = self.windows_for(request, view)
        if not windows:
            return True
        refused, states = hit(windows)
        request._rate_limit_states = [*getattr(request, "_rate_limit_states", []), *states]
        self._wait = max(states[refused].reset_at - time.time(), 1) if refused is not None else 0
        return refused is None

    def wait(self):
        return self._wait

    def principal_window(self, request, view) -> Window:
        if request.user and request.user.is_authenticated:
            return Window.from_rate(f"user:{request.user.pk}", configured_rate("user"))
        scope = getattr(view, "anonymous_throttle_scope", "anon")
        return Window.from_rate(f"{scope}:{self.get_ident(request)}", configured_rate(scope))


class PrincipalRateThrottle(WindowThrottle):
    """Per caller only (the user or the client address)."""

    def windows_for(self, request, view):
        return [self.principal_window(request, view)]


class ControlPlaneThrottle(WindowThrottle):
    """The caller, the tenant's plan rate and the tenant's scope (see the module docstring)."""

    def windows_for(self, request, view):
        from tenants.plans import plan_rates, tenant_hourly_rate

        windows = [self.principal_window(request, view)]
        tenant = getattr(request, "tenant", None)
        if tenant is not None:
            windows.append(Window.from_rate(f"tenant:{tenant.pk}", tenant_hourly_rate(tenant)))
        scope = getattr(view, "throttle_scope", None)
        if scope:
            rate = plan_rates(tenant.plan).get(scope) if tenant is not None else None
            owner = tenant.pk if tenant is not None else self.get_ident(request)
            windows.append(Window.from_rate(f"{scope}:{owner}", rate or configured_rate(scope)))
        return windows


def most_restrictive(states: list[RateLimitState]) -> RateLimitState | None:
    return min(states, key=lambda s: (s.remaining, -s.reset_at), default=None)


def rate_limit_headers(request) -> dict[str, str]:
    state = most_restrictive(getattr(request, "_rate_limit_states", []))
    if state is None:
        return {}
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(state.remaining),
        "X-RateLimit-Reset": str(state.reset_at),
    }
