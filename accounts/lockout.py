"""Brute-force protection (django-axes) as the API answers it.

Axes counts failed `authenticate()` calls per account and client address (login endpoints and
the admin login). At AXES_FAILURE_LIMIT failures the pair is locked for AXES_COOLOFF_TIME: the
axes backend then refuses even the right password. Every lockout answers the error envelope,
429 RATE_LIMIT_EXCEEDED, with Retry-After: the seconds until the lock lifts.
"""

import math

from asgiref.sync import sync_to_async
from axes.helpers import get_lockout_response
from axes.middleware import AxesMiddleware
from django.conf import settings
from django.db.models import Max
from django.http import JsonResponse
from django.utils import timezone
from rest_framework import status

from config.exceptions import error_body
from config.middleware import client_ip

LOCKED_MESSAGE = (
    "Too many failed login attempts for this account from this address. Try again later."
)


def username_from_credentials(request, credentials) -> str | None:
    """The login identifier, normalised as the login views do (case and spaces)."""
    value = (credentials or {}).get(settings.AXES_USERNAME_FORM_FIELD)
    if value is None and request is not None and request.method == "POST":
        value = request.POST.get(settings.AXES_USERNAME_FORM_FIELD)
    return value.strip().lower() if isinstance(value, str) else value


def client_ip_address(request) -> str | None:
    """The client address, trusting X-Forwarded-For only from TRUSTED_PROXY_COUNT proxies."""
    return client_ip(request)


def retry_after_seconds(request, username: str | None) -> int:
    """Seconds until the lock on (username, this address) lifts."""
    from axes.models import AccessAttempt

    cool_off = settings.AXES_COOLOFF_TIME
    last = AccessAttempt.objects.filter(
        username=username, ip_address=client_ip_address(request)
    ).aggregate(last=Max("attempt_time"))["last"]
    if last is None:
        return math.ceil(cool_off.total_seconds())
    remaining = (last + cool_off - timezone.now()).total_seconds()
    return max(1, math.ceil(remaining))


def lockout_response(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the envelope for a locked-out login (API views already raise it)."""
    if getattr(request, "lockout_answered", False) and original_response is not None:
        return original_response
    retry_after = retry_after_seconds(request, username_from_credentials(request, credentials))
    response = JsonResponse(
        error_body("RATE_LIMIT_EXCEEDED", LOCKED_MESSAGE, {"retry_after_seconds": retry_after}),
        status=status.HTTP_429_TOO_MANY_REQUESTS,
    )
    response["Retry-After"] = str(retry_after)
    return response


class LockoutMiddleware(AxesMiddleware):
    """django-axes' middleware with its async path fixed: axes 8.3 calls the lockout response
    with (request, credentials) there, so under ASGI a lockout answered a 500 instead of the
    429 envelope. Both paths now call it as the sync one does."""

    async def __acall__(self, request):
        response = await self.get_response(request)
        if settings.AXES_ENABLED and getattr(request, "axes_locked_out", None):
            credentials = getattr(request, "axes_credentials", None)
            response = await sync_to_async(get_lockout_response, thread_sensitive=True)(
                request, response, credentials
            )
        return response
