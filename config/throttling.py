"""DRF throttles that also report their state as X-RateLimit-* headers.

These are for fairness only: the cache counting is not atomic. Exact limits (quotas, spend)
use one atomic step in their own services.
"""

from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_at: int  # epoch seconds at which a slot frees up


class ReportingRateThrottle(SimpleRateThrottle):
    """A throttle that records (limit, remaining, reset) on the request for the response headers."""

    def get_rate(self):
        # Read at call time (DRF binds THROTTLE_RATES at import), so settings changes apply.
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"No throttle rate for scope {self.scope!r}") from None

    def allow_request(self, request, view):
        allowed = super().allow_request(request, view)
        if self.rate is None or self.key is None:
            return allowed
        oldest = self.history[-1] if self.history else self.now
        state = RateLimitState(
            limit=self.num_requests,
            remaining=max(self.num_requests - len(self.history), 0),
            reset_at=int(oldest + self.duration + 0.999),
        )
        request._rate_limit_states = [*getattr(request, "_rate_limit_states", []), state]
        return allowed


class PrincipalRateThrottle(ReportingRateThrottle):
    """Per caller: the authenticated user (scope `user`), else the client address (scope `anon`,
    or the view's `anonymous_throttle_scope`, e.g. `auth` for credential endpoints)."""

    scope = "user"

    def __init__(self):
        # The rate is chosen per request (user or anon), not at construction.
        pass

    def allow_request(self, request, view):
        if request.user and request.user.is_authenticated:
            self.scope = "user"
        else:
            self.scope = getattr(view, "anonymous_throttle_scope", "anon")
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        if request.user and request.user.is_authenticated:
            ident = request.user.pk
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class TenantScopeRateThrottle(ReportingRateThrottle):
    """Per tenant, for views that set `throttle_scope` (analytics, billing, gateway)."""

    def __init__(self):
        pass

    def allow_request(self, request, view):
        self.scope = getattr(view, "throttle_scope", None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view):
        tenant = getattr(request, "tenant", None)
        ident = tenant.pk if tenant is not None else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


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
