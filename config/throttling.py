"""DRF throttles over the rate-limit windows of config.metering, reported as X-RateLimit-*
headers. tenants.throttling.TenantThrottle adds the tenant's windows and its api_calls quota,
counted in the same atomic step."""

import time
from abc import ABCMeta, abstractmethod

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from . import epoch as principals_epoch
from .metering import Admission, Window, admit, window_headers


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
                    *_rate_limit_states(request),
                    *refused_admission.states,
                ]
            raise
        if admission.stale:
            raise principals_epoch.StaleLookup()
        if principals_epoch.kept_epoch(request) is not None:
            principals_epoch.confirm(request)
        states, refused = admission.states, admission.refused_window
        request._rate_limit_states = [*_rate_limit_states(request), *states]
        self._wait = max(states[refused].reset_at - time.time(), 1) if refused is not None else 0
        return refused is None

    def admit(self, request, view, windows) -> Admission:
        """Count the request in `windows`, confirming the epoch of the kept lookup it acts on
        (config.epoch); subclasses may add a meter to the same step."""
        return admit(windows, epoch=principals_epoch.kept_epoch(request))

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


def rate_limit_headers(request, response=None) -> dict[str, str]:
    """The headers of the most restrictive window the request was counted in; a 429 says
    no request remains, until at least its Retry-After."""
    refused = response is not None and response.status_code == 429
    retry_after = response.get("Retry-After", "") if refused else ""
    return window_headers(_rate_limit_states(request), refused=refused, retry_after=retry_after)


def _rate_limit_states(request) -> list:
    """The states the request's admissions noted so far. Read from the request's own
    attributes: a DRF request falls back to the Django request's for a name it lacks, raising
    and catching two AttributeErrors on the way."""
    return vars(request).get("_rate_limit_states", [])
