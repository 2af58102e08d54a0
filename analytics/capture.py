"""Request capture: every tenant-scoped API request counted off the request path.

The base view calls the observers of config.observers once a response is final;
`observe_request` is ours (registered in AnalyticsConfig.ready). It costs no database write
and, on Redis, no round trip: it adds to config.metering's buffered counts (namespace
`analytics-requests`), one hash per minute and (tenant, method, route, status, credential,
principal), with fields `n` (requests), `us` (latency, microseconds) and one `h<bucket>` per
latency-histogram bucket used (analytics.sketches). `flush_request_facts` (Celery beat every
ANALYTICS_FLUSH_SECONDS, and `manage.py rollup_analytics`) claims what was counted and writes it
as RequestFact rows; the roll-up job then folds them in.

What a process killed outright had not pushed yet (at most API_KEY_USAGE_BUFFER_SECONDS of
requests) is lost to analytics; nothing else is (config.metering). With the local-memory cache
(embedded defaults) the web process flushes its own counts after a request, at most once per
ANALYTICS_FLUSH_SECONDS.
"""

import time
from collections import Counter
from datetime import UTC, datetime

from django.conf import settings
from django.db import router

from accounts.usage import route_template
from config import metering

from . import sketches

NAMESPACE = "analytics-requests"
_SEPARATOR = "\x1f"
_CREDENTIALS = {
    "HashedTokenAuthentication": "token",
    "APIKeyAuthentication": "api_key",
    "BearerJWTAuthentication": "jwt",
    "JWTAuthentication": "jwt",
    "PrincipalSessionAuthentication": "session",
    "SessionAuthentication": "session",
}
_last_local_flush = [time.monotonic()]
# Counts (one per minute and request shape) written per transaction by a flush.
FLUSH_CHUNK = 5_000


def _flush_when_due() -> None:
    if time.monotonic() - _last_local_flush[0] >= settings.ANALYTICS_FLUSH_SECONDS:
        _last_local_flush[0] = time.monotonic()
        metering.flush_beside_request(flush_request_facts)


def request_counts():
    return metering.buffered_counts(
        NAMESPACE,
        push_seconds=lambda: settings.API_KEY_USAGE_BUFFER_SECONDS,
        on_local_record=_flush_when_due,
    )


def credential_of(request) -> tuple[str, str]:
    """(credential type, principal) of an authenticated DRF request."""
    django_request = request._request
    key = getattr(django_request, "api_key", None)
    if key is not None:
        return "api_key", f"key:{key.pk}"
    authenticator = getattr(request, "_authenticator", None)
    kind = _CREDENTIALS.get(type(authenticator).__name__, "none") if authenticator else "none"
    user = getattr(request, "_user", None)
    if user is not None and user.is_authenticated:
        return kind, f"user:{user.pk}"
    return kind, ""


def observe_request(request, response) -> None:
    """Count one answered request of a tenant (requests outside any tenant are not a tenant's
    analytics: health checks, staff views across tenants, unauthenticated refusals)."""
    if not settings.ANALYTICS_CAPTURE_REQUESTS:
        return
    tenant = getattr(request, "tenant", None)
    if tenant is None:
        return
    django_request = request._request
    started = getattr(django_request, "started_at", None)
    elapsed_us = max(int((time.perf_counter() - started) * 1e6), 0) if started else 0
    match = getattr(django_request, "resolver_match", None)
    route = route_template(match.route) if match is not None and match.route else "(unrouted)"
    credential, principal = credential_of(request)
    minute = int(time.time()) // 60 * 60
    owner = _SEPARATOR.join(
        (
            str(tenant.pk),
            str(minute),
            request.method,
            route,
            str(response.status_code),
            credential,
            principal,
        )
    )
    request_counts().record(
        owner, {"n": 1, "us": elapsed_us, "h" + sketches.bucket_of(elapsed_us / 1000): 1}
    )


def facts_of(owner: str, counts: Counter) -> dict:
    """The RequestFact fields of one buffered owner (see `observe_request`)."""
    tenant_id, minute, method, route, status, credential, principal = owner.split(_SEPARATOR)
    return {
        "tenant_id": tenant_id,
        "minute": datetime.fromtimestamp(int(minute), tz=UTC),
        "method": method,
        "route": route[:255],
        "status_code": int(status),
        "credential_type": credential,
        "principal": principal,
        "count": counts.get("n", 0),
        "latency_us_total": counts.get("us", 0),
        "latency_histogram": {
            name[1:]: value for name, value in counts.items() if name.startswith("h") and value
        },
    }


def flush_request_facts() -> int:
    """Write every counted request as RequestFact rows, each once (metering.flush_batches);
    returns how many requests. Safe to run concurrently."""
    from .models import RequestFact
    from .services import request_facts_write

    def write(counts) -> int:
        return request_facts_write(facts=[facts_of(owner, counts[owner]) for owner in counts])

    return metering.flush_batches(
        request_counts(), write, chunk=FLUSH_CHUNK, using=router.db_for_write(RequestFact)
    )
