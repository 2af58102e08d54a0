"""A small JSON client for the live server, on the standard library so the live tests need
nothing beyond the project's requirements."""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

DEMO_PASSWORD = "demo-password-123"
# The live server is on loopback: never through an http_proxy a CI runner may set.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


def call(
    base_url: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    organization: str | None = None,
    body: Any = None,
    timeout: float = 60.0,
) -> Answer:
    """One request; an HTTP error status is an answer like any other, not an exception."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Token {token}"
    if organization:
        headers["X-Organization-ID"] = organization
    # Only ever the live server's http:// URL (S310 is about file: and custom schemes).
    request = urllib.request.Request(  # noqa: S310
        base_url + path, data=data, headers=headers, method=method
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Answer(status, parsed)


def is_healthy(base_url: str) -> bool:
    try:
        return call(base_url, "GET", "/health/", timeout=2).status == 200
    except (urllib.error.URLError, OSError):
        return False


def token_for(base_url: str, email: str, password: str = DEMO_PASSWORD) -> str:
    answer = call(
        base_url, "POST", "/api/v1/auth/token/", body={"email": email, "password": password}
    )
    assert answer.status == 200, answer
    return answer.body["token"]
