"""Hostile requests against a running control plane, as a new user and an attacker would send
them: malformed and oversized bodies, text that UTF-8 cannot carry, self-granted plans,
webhooks aimed inside the network, conflicting tenants and credentials, read-only fields,
browsers asking for HTML.

Every answer must be below 500, every error the JSON envelope, and each probe's status the one
it names. Run it against the quick start (or any deployment with the demo data):

    .venv/bin/python -m tests.live.hostile_corpus http://127.0.0.1:8000

tests/live/test_hostile_corpus.py runs it against the live quick start.
"""

import http.client
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

OWNER = "owner@acme.example.com"
PASSWORD = "demo-password-123"
BODY_LIMIT = 2_621_440  # DATA_UPLOAD_MAX_MEMORY_SIZE's default


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The statuses the probe accepts, and the error code when it is an error.
    expect: tuple[int, ...] = (400,)
    code: str | None = "VALIDATION_ERROR"
    # Further checks of a successful answer's JSON.
    check: Callable[[dict], None] | None = None


@dataclass(frozen=True)
class Outcome:
    probe: Probe
    status: int
    content_type: str
    body: object
    problems: tuple[str, ...]


def _json(value) -> bytes:
    return json.dumps(value).encode()


def _request(base_url: str, method: str, path: str, body=None, headers=None):
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        content_type = response.getheader("Content-Type", "")
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw[:200].decode(errors="replace")
        return response.status, content_type, parsed, dict(response.getheaders())
    finally:
        connection.close()


def _token(base_url: str) -> str:
    status, _, body, _ = _request(
        base_url,
        "POST",
        "/api/v1/auth/token/",
        _json({"email": OWNER, "password": PASSWORD}),
        {"Content-Type": "application/json"},
    )
    assert status == 200, (status, body)
    return body["token"]


def _a_member_id(base_url: str, headers: dict) -> str:
    status, _, body, _ = _request(base_url, "GET", "/api/v1/organizations/members/", None, headers)
    assert status == 200, (status, body)
    return next(row["id"] for row in body["results"] if row["role"] == "viewer")


def _no_account_leak(body: dict) -> None:
    member = body["member"]
    assert (member["user_id"], member["name"], member["last_active"]) == (None, "", None), member


def probes(base_url: str) -> Iterator[Probe]:
    token = _token(base_url)
    owner = {"Authorization": f"Token {token}", "X-Organization-ID": "acme"}
    as_json = {**owner, "Content-Type": "application/json"}
    member = f"/api/v1/organizations/members/{_a_member_id(base_url, owner)}"
    run = uuid.uuid4().hex[:8]

    # Bodies no client would send.
    deep = b"[" * 100_000
    yield Probe("deep JSON", "POST", "/api/v1/tenants/", deep, as_json)
    yield Probe(
        "deep JSON, anonymous",
        "POST",
        "/api/v1/tenants/",
        deep,
        {"Content-Type": "application/json"},
        expect=(401,),
        code="AUTHENTICATION_REQUIRED",
    )
    yield Probe("deep JSON, public endpoint", "POST", "/api/v1/auth/token/", deep, as_json)
    yield Probe(
        "JSON over the limit",
        "POST",
        "/api/v1/tenants/",
        b'{"name": "' + b"a" * BODY_LIMIT + b'"}',
        as_json,
        expect=(413,),
        code="PAYLOAD_TOO_LARGE",
    )
    boundary = "hostile"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + b"\0" * BODY_LIMIT
        + f"\r\n--{boundary}--\r\n".encode()
    )
    yield Probe(
        "multipart over the limit",
        "POST",
        "/api/v1/organizations/theme/logo",
        multipart,
        {**owner, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        expect=(413,),
        code="PAYLOAD_TOO_LARGE",
    )
    # Recursion: an SVG logo nested 5,000 deep (its sanitising and writing recurse per level).
    nested = b"<g>" * 5_000 + b"</g>" * 5_000
    svg = b'<svg xmlns="http://www.w3.org/2000/svg">' + nested + b"</svg>"
    yield Probe(
        "SVG logo nested 5,000 deep",
        "POST",
        "/api/v1/organizations/theme/logo",
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.svg"\r\n'
        "Content-Type: image/svg+xml\r\n\r\n".encode()
        + svg
        + f"\r\n--{boundary}--\r\n".encode(),
        {**owner, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    # Form input, where a JSON field was read past the parser's depth check: the API takes JSON.
    yield Probe(
        "form body with a deep JSON field",
        "POST",
        "/api/v1/projects/",
        b"name=x&metadata=" + b"[" * 5_000 + b"]" * 5_000,
        {**owner, "Content-Type": "application/x-www-form-urlencoded"},
        expect=(415,),
        code="UNSUPPORTED_MEDIA_TYPE",
    )
    yield Probe("not UTF-8", "PATCH", "/api/v1/organizations/current", b'{"name": "\xff"}', as_json)

    # Lone surrogates in choice fields.
    yield Probe(
        "surrogate role on invite",
        "POST",
        "/api/v1/organizations/members/invite",
        b'{"email": "s@example.com", "role": "\\ud800"}',
        as_json,
    )
    yield Probe("surrogate member role", "PATCH", member, b'{"role": "\\ud800"}', as_json)
    yield Probe("surrogate member status", "PATCH", member, b'{"status": "\\udfff"}', as_json)
    yield Probe(
        "surrogate tier",
        "POST",
        "/api/v1/tenants/",
        b'{"name": "x", "subscription_tier": "\\ud800"}',
        as_json,
    )

    # Plans are not self-granted.
    for tier in ("enterprise", "custom"):
        yield Probe(
            f"self-granted {tier} plan",
            "POST",
            "/api/v1/tenants/",
            _json({"name": f"Ent Co {run}", "subscription_tier": tier}),
            as_json,
            expect=(403,),
            code="INSUFFICIENT_PERMISSIONS",
        )

    # Webhooks aimed inside the network (the quick start allows loopback and private targets
    # for development; link-local, credentials and other schemes stay refused).
    for name, url in (
        ("cloud metadata", "http://169.254.169.254/latest/meta-data/"),
        ("metadata in decimal", "http://2852039166/"),
        ("credentials in the URL", "https://user:secret@hooks.example.com/"),
        ("a file URL", "file:///etc/passwd"),
    ):
        yield Probe(
            f"webhook to {name}",
            "POST",
            "/api/v1/webhooks/",
            _json({"name": "Probe", "url": url, "events": ["*"]}),
            as_json,
        )
    yield Probe(
        "webhook events not a list",
        "POST",
        "/api/v1/webhooks/",
        _json({"name": "Probe", "url": "https://hooks.example.com/", "events": "*"}),
        as_json,
    )

    # Errors are JSON whatever the client accepts; missing files too.
    html = {"Accept": "text/html"}
    yield Probe(
        "HTML asked, unauthenticated",
        "GET",
        "/api/v1/organizations/current",
        headers=html,
        expect=(401,),
        code="AUTHENTICATION_REQUIRED",
    )
    yield Probe(
        "HTML asked, invalid write",
        "POST",
        "/api/v1/tenants/",
        _json({"name": ""}),
        {**as_json, **html},
    )
    for path in ("/media/missing.png", "/static/missing.css", "/api/v1/missing"):
        yield Probe(
            f"missing {path}", "GET", path, headers=html, expect=(404,), code="RESOURCE_NOT_FOUND"
        )

    # Parameters and credentials that contradict each other.
    yield Probe("page=abc", "GET", "/api/v1/organizations/members/?page=abc", headers=owner)
    # Each word of a search is its own match over every searched field: bounded.
    words = "+".join(f"w{index}" for index in range(2_000))
    yield Probe(
        "2,000 search words", "GET", f"/api/v1/support/tickets/?search={words}", headers=owner
    )
    yield Probe(
        "two tenants named",
        "GET",
        "/api/v1/organizations/current?organization_id=globex",
        headers=owner,
    )
    yield Probe(
        "two credentials",
        "GET",
        "/api/v1/organizations/current",
        headers={
            "Authorization": f"Api-Key cp_{'a' * 32}_{'b' * 43}",
            "X-API-Key": f"cp_{'c' * 32}_{'d' * 43}",
        },
    )

    # Invitations reveal nothing of an existing account.
    yield Probe(
        "invite an existing account",
        "POST",
        "/api/v1/organizations/members/invite",
        _json({"email": "owner@globex.example.com", "send_email": False}),
        as_json,
        expect=(201, 409, 429),
        code=None,
        check=_no_account_leak,
    )

    # Accepted but wrong, until now.
    yield Probe(
        "1 MB description",
        "PATCH",
        "/api/v1/organizations/current",
        _json({"description": "x" * 1_000_000}),
        as_json,
    )
    yield Probe(
        "not a domain",
        "PATCH",
        "/api/v1/tenants/acme",
        _json({"domain": "not a domain!!"}),
        as_json,
    )
    for char in ("\u202e", "\u200b", "\u0007"):
        yield Probe(
            f"U+{ord(char):04X} in a name",
            "PATCH",
            "/api/v1/organizations/current",
            _json({"name": f"Acme{char}Corp"}),
            as_json,
        )
        yield Probe(
            f"U+{ord(char):04X} in a phone number",
            "PATCH",
            "/api/v1/tenants/acme",
            _json({"contact_phone": f"+1 555{char}0100"}),
            as_json,
        )
    yield Probe(
        "a number for a name",
        "PATCH",
        "/api/v1/organizations/current",
        _json({"name": 123}),
        as_json,
    )
    yield Probe(
        "the old name of custom_permissions",
        "PATCH",
        member,
        _json({"permissions": {"billing": {"read": True}}}),
        as_json,
    )
    for field_name, value in (("plan", "enterprise"), ("status", "cancelled"), ("slug", "stolen")):
        yield Probe(
            f"read-only {field_name}",
            "PATCH",
            "/api/v1/organizations/current",
            _json({field_name: value}),
            as_json,
        )

    # A phone number is confirmed with the code sent to it, never by saying so.
    confirm = "/api/v1/notifications/preferences/phone/confirm"
    for label, code in (
        ("a list", ["123456"]),
        ("10,000 digits", "1" * 10_000),
        ("not digits", "12a456"),
    ):
        yield Probe(f"phone code as {label}", "POST", confirm, _json({"code": code}), as_json)
    yield Probe(
        "phone confirmed by saying so",
        "PATCH",
        "/api/v1/notifications/preferences",
        _json({"phone_number_confirmed": True}),
        as_json,
    )

    # JSON values the database cannot store, or of the wrong kind, in a JSON object field.
    project = {"name": f"Hostile {run}", "topic": "t"}
    for label, metadata in (
        ("a NUL in a value", {"note": "a\u0000b"}),
        ("a NUL in a key", {"a\u0000": 1}),
        ("a list", ["x"]),
    ):
        yield Probe(
            f"project metadata with {label}",
            "POST",
            "/api/v1/projects/",
            _json({**project, "metadata": metadata}),
            as_json,
        )

    # Lockout: the 429 says that nothing remains.
    for attempt in range(6):
        yield Probe(
            f"failed login {attempt + 1}",
            "POST",
            "/api/v1/auth/token/",
            _json({"email": f"nobody-{run}@example.com", "password": "wrong"}),
            {"Content-Type": "application/json"},
            expect=(400, 401, 429),
            code=None,
        )


def run(base_url: str) -> list[Outcome]:
    outcomes = []
    for probe in probes(base_url):
        status, content_type, body, headers = _request(
            base_url, probe.method, probe.path, probe.body, probe.headers
        )
        problems = []
        if status >= 500:
            problems.append(f"answered {status}")
        if status not in probe.expect:
            problems.append(f"expected {probe.expect}, got {status}")
        if status >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            if not content_type.startswith("application/json") or not isinstance(error, dict):
                problems.append(f"not the envelope: {content_type} {str(body)[:120]}")
            elif probe.code and error.get("code") != probe.code:
                problems.append(f"code {error.get('code')}, expected {probe.code}")
        if status == 429 and headers.get("X-RateLimit-Remaining", "0") != "0":
            problems.append(f"429 with X-RateLimit-Remaining {headers['X-RateLimit-Remaining']}")
        if probe.check is not None and status < 300:
            try:
                probe.check(body)
            except AssertionError as error:
                problems.append(f"check failed: {error}")
        outcomes.append(Outcome(probe, status, content_type, body, tuple(problems)))
    return outcomes


def main(argv: list[str]) -> int:
    base_url = argv[1] if len(argv) > 1 else "http://127.0.0.1:8000"
    outcomes = run(base_url)
    failed = [outcome for outcome in outcomes if outcome.problems]
    for outcome in outcomes:
        mark = "FAIL" if outcome.problems else "ok  "
        print(f"{mark} {outcome.status} {outcome.probe.name}: {'; '.join(outcome.problems)}")
    server_errors = sum(outcome.status >= 500 for outcome in outcomes)
    print(f"{len(outcomes)} probes, {server_errors} answered 5xx, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
