"""Sending one webhook request: to the address the SSRF guard checked, never following a
redirect, with bounded time and a bounded read of the answer.

The connection goes to `Target.address`; the URL's host is sent as the Host header and as the
TLS server name (SNI and certificate check), so no second DNS lookup happens. Each sending
thread keeps one httpx client per host: a pooled connection is only reused for the host whose
certificate it checked.
"""

import email.utils
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from django.conf import settings

from .targets import ForbiddenTarget, Target, UnresolvableTarget, check

USER_AGENT = "ControlPlane-Webhooks/1.0"
_MAX_CLIENTS_PER_THREAD = 32


@dataclass
class AttemptResult:
    succeeded: bool
    # Whether a later attempt may succeed (timeout, connection error, 429, 5xx).
    retryable: bool
    status_code: int | None = None
    duration_ms: int = 0
    response_excerpt: str = ""
    error: str = ""
    # Seconds the receiver asked us to wait (Retry-After on 429 and 503).
    retry_after: int | None = None


class _Clients(threading.local):
    def __init__(self):
        self.by_host: OrderedDict[tuple[str, str], httpx.Client] = OrderedDict()


_clients = _Clients()


def _client(target: Target) -> httpx.Client:
    key = (target.scheme, target.host)
    clients = _clients.by_host
    client = clients.get(key)
    if client is None:
        client = httpx.Client(
            timeout=httpx.Timeout(
                settings.WEBHOOK_TIMEOUT_SECONDS, connect=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS
            ),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the checked address is the peer
            headers={"User-Agent": USER_AGENT},
        )
        clients[key] = client
        while len(clients) > _MAX_CLIENTS_PER_THREAD:
            clients.popitem(last=False)[1].close()
    else:
        clients.move_to_end(key)
    return client


def close_clients() -> None:
    """Close this thread's clients (a sending thread calls it when it ends)."""
    while _clients.by_host:
        _clients.by_host.popitem()[1].close()


def post(url: str, *, body: bytes, headers: dict[str, str]) -> AttemptResult:
    """POST `body` to `url` after the SSRF check; the outcome, never an exception."""
    started = time.perf_counter()
    try:
        target = check(url)
    except UnresolvableTarget as error:
        return AttemptResult(succeeded=False, retryable=True, error=str(error))
    except ForbiddenTarget as error:
        return AttemptResult(succeeded=False, retryable=False, error=f"Not sent: {error}")
    try:
        return _send(target, body=body, headers=headers, started=started)
    except httpx.TimeoutException as error:
        return _failure(started, f"Timed out ({type(error).__name__}).")
    except (httpx.HTTPError, OSError) as error:
        return _failure(started, f"Connection failed: {type(error).__name__}: {error}"[:500])


def _failure(started: float, error: str) -> AttemptResult:
    return AttemptResult(
        succeeded=False, retryable=True, duration_ms=_elapsed_ms(started), error=error
    )


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _send(target: Target, *, body: bytes, headers: dict, started: float) -> AttemptResult:
    cap = settings.WEBHOOK_RESPONSE_EXCERPT_BYTES
    deadline = started + settings.WEBHOOK_TIMEOUT_SECONDS
    request_headers = {
        **headers,
        "Host": target.host_header,
        "Content-Type": "application/json",
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    with _client(target).stream(
        "POST", target.connect_url, content=body, headers=request_headers, extensions=extensions
    ) as response:
        excerpt = bytearray()
        for chunk in response.iter_raw():
            excerpt += chunk
            if len(excerpt) >= cap or time.perf_counter() > deadline:
                break
        status = response.status_code
        retry_after = _retry_after(response.headers.get("Retry-After"))
    ok = 200 <= status < 300
    error = ""
    if 300 <= status < 400:
        error = "Redirects are not followed: the endpoint's URL must answer 2xx itself."
    elif not ok:
        error = f"The receiver answered {status}."
    return AttemptResult(
        succeeded=ok,
        retryable=status == 429 or status >= 500,
        status_code=status,
        duration_ms=_elapsed_ms(started),
        response_excerpt=bytes(excerpt[:cap]).decode("utf-8", "replace").replace("\x00", ""),
        error=error,
        retry_after=retry_after if status in (429, 503) else None,
    )


def _retry_after(value: str | None) -> int | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - datetime.now(UTC)).total_seconds()))
