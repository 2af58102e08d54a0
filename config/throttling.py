"""Rate limits for fairness, counted in fixed windows and reported as X-RateLimit-* headers.

`admit` counts a request in every window that concerns it in one cache round trip (a Lua
script on Redis), and only when every window has room, so a refused request uses up nothing.
It can also advance a `Meter`, an exact counter with a hard limit, in the same atomic step:
tenants.throttling.TenantThrottle counts a tenant's api_calls quota that way.
"""

import math
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from redis.commands.core import Script
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from .redis import redis_cache, redis_client

# DRF's spellings: "100/min", "1000/hour", "5/s", "10/day", ...
_PERIODS = {
    **dict.fromkeys(("s", "sec", "second"), 1),
    **dict.fromkeys(("m", "min", "minute"), 60),
    **dict.fromkeys(("h", "hour"), 3600),
    **dict.fromkeys(("d", "day"), 86400),
}


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
            # Strict, unlike DRF's first-letter reading, which takes "10/month" as per minute.
            return cls(key, int(count), _PERIODS[period])
        except (KeyError, IndexError, ValueError):
            raise ImproperlyConfigured(f"Invalid rate {rate!r} for {key}") from None


@dataclass(frozen=True)
class Meter:
    """A counter with a hard limit, checked and advanced in the same atomic step as the
    windows (a tenant's api_calls quota). `key` must exist: a missing counter is reported, not
    created, so its owner can seed it from the database. Redis only."""

    key: str  # full cache key
    amount: int
    limit: int
    mark_set: str  # full cache key of a set that collects `mark` when the meter counts
    mark: str


METER_COUNTED, METER_OVER_LIMIT, METER_MISSING = 0, 1, 2


@dataclass(frozen=True)
class Admission:
    refused_window: int | None  # index of the first window without room
    states: list  # a RateLimitState per window
    meter_status: int | None = None  # METER_*, None without a meter or when a window refused
    meter_value: int = 0  # the meter's total after counting, or its current value

    @property
    def admitted(self) -> bool:
        return self.refused_window is None and self.meter_status in (None, METER_COUNTED)


# KEYS: window buckets, then [meter, meter mark set]. ARGV: window count n, then limit_i and
# ttl_i per window, then [amount, meter limit, mark]. Returns {refused window index or 0,
# meter status or -1, meter value, count_1, ..., count_n}. Counts in nothing unless every
# window has room and the meter (if any) too.
_ADMIT_LUA = """
local n = tonumber(ARGV[1])
local result = {0, -1, 0}
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  result[i + 3] = count
  if count >= tonumber(ARGV[2 * i]) and result[1] == 0 then result[1] = i end
end
if result[1] ~= 0 then return result end
if #KEYS > n then
  local current = redis.call('GET', KEYS[n + 1])
  if not current then result[2] = 2 return result end
  current = tonumber(current)
  local amount = tonumber(ARGV[2 * n + 2])
  if current + amount > tonumber(ARGV[2 * n + 3]) then
    result[2] = 1
    result[3] = current
    return result
  end
  result[2] = 0
  result[3] = redis.call('INCRBY', KEYS[n + 1], amount)
  redis.call('SADD', KEYS[n + 2], ARGV[2 * n + 4])
end
for i = 1, n do
  result[i + 3] = redis.call('INCR', KEYS[i])
  if result[i + 3] == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1]) end
end
return result
"""
_admit_script = Script(None, _ADMIT_LUA.encode())


def _bucket(window: Window, now: float) -> tuple[str, int]:
    index = int(now // window.seconds)
    return f"rl:{window.key}:{window.seconds}:{index}", (index + 1) * window.seconds


def admit(
    windows: Sequence[Window], meter: Meter | None = None, now: float | None = None
) -> Admission:
    """Count one request in every window, and `meter.amount` in the meter, if all have room:
    one round trip on Redis."""
    now = time.time() if now is None else now
    buckets = [_bucket(window, now) for window in windows]
    cache = redis_cache()
    meter_status, meter_value = None, 0
    if cache is not None:
        # make_key: validation only warns of keys memcached would refuse; ours are built
        # from ids, scopes and addresses (4 us a key on the path of every request).
        keys = [cache.make_key(name) for name, _ in buckets]
        args = [len(windows)]
        args += [value for window in windows for value in (window.limit, window.seconds + 1)]
        if meter is not None:
            keys += [meter.key, meter.mark_set]
            args += [meter.amount, meter.limit, meter.mark]
        refused, status, meter_value, *counts = _admit_script(
            keys=keys, args=args, client=redis_client(cache)
        )
        meter_status = None if status == -1 else int(status)
    elif meter is not None:
        raise ImproperlyConfigured("A Meter needs the Redis cache.")
    else:
        refused, counts = _hit_local(caches["default"], windows, buckets)
    states = [
        RateLimitState(window.limit, max(window.limit - count, 0), reset_at)
        for window, count, (_, reset_at) in zip(windows, counts, buckets, strict=True)
    ]
    return Admission(refused - 1 if refused else None, states, meter_status, int(meter_value))


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
        try:
            admission = self.admit(request, view, windows)
        except Exception as error:
            # A meter counted in the same step refused (a quota): the windows' states still
            # make the 429's headers.
            refused_admission = getattr(error, "admission", None)
            if refused_admission is not None:
                request._rate_limit_states = [
                    *getattr(request, "_rate_limit_states", []),
                    *refused_admission.states,
                ]
            raise
        states, refused = admission.states, admission.refused_window
        request._rate_limit_states = [*getattr(request, "_rate_limit_states", []), *states]
        self._wait = max(states[refused].reset_at - time.time(), 1) if refused is not None else 0
        return refused is None

    def admit(self, request, view, windows) -> Admission:
        """Count the request in `windows`; subclasses may add a meter to the same step."""
        return admit(windows)

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


def most_restrictive(states: list[RateLimitState]) -> RateLimitState | None:
    return min(states, key=lambda s: (s.remaining, -s.reset_at), default=None)


def rate_limit_headers(request, response=None) -> dict[str, str]:
    """The headers of the most restrictive window the request was counted in. A 429 answer
    (a window, a quota or a login lockout refused it) says no request remains, until at least
    its Retry-After."""
    state = most_restrictive(getattr(request, "_rate_limit_states", []))
    if state is None:
        return {}
    remaining, reset_at = state.remaining, state.reset_at
    if response is not None and response.status_code == 429:
        remaining = 0
        retry_after = response.get("Retry-After", "")
        if retry_after.isdigit():
            reset_at = max(reset_at, math.ceil(time.time()) + int(retry_after))
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset_at),
    }
