"""Hostile input on every operation of the OpenAPI schema, authenticated and not: no answer is a
5xx, and every error is the JSON envelope.

The raw corpus (bodies no schema-driven generator would send): JSON nested 100,000 deep, JSON
just over the documented depth, bodies over DATA_UPLOAD_MAX_MEMORY_SIZE (JSON and multipart),
a lone surrogate escape, bytes that are not UTF-8. Then a Schemathesis run whose every
generated string field may become a lone surrogate, a control character, a bidirectional
override or a very long string (`flatmap_body` / `flatmap_query` hooks).

That run is its fuzzing phase alone (see `hostile_schema`), with examples bounded per operation
kind: an operation with a body has every string field of it and of its query open to the hostile
strings, so it gets HOSTILE_EXAMPLES_WITH_BODY; one without a body only has its query strings
(none at all for most: retrieve, delete, actions), so HOSTILE_EXAMPLES_WITHOUT_BODY is enough to
give each of its query parameters several hostile values.
"""

import json
import re
import uuid

import pytest
import schemathesis
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.test import RequestFactory
from hypothesis import strategies as st
from rest_framework.test import APIClient
from schemathesis.config import SchemathesisConfig

from config.middleware import upload_allowance
from tenants.models import Role, Tenant
from tests.conftest import assert_envelope

from .fuzzing import operation_params, run_operation
from .test_schemathesis import assert_an_error_is_the_envelope, prepare
from .test_schemathesis import schema as _base_schema

pytestmark = pytest.mark.django_db

HOSTILE_EXAMPLES_WITH_BODY = 15
HOSTILE_EXAMPLES_WITHOUT_BODY = 8

# Every operation of the API, as its schema documents it.
OPERATIONS = [
    (result.ok().method.upper(), result.ok().path) for result in _base_schema.get_all_operations()
]
OPERATION_IDS = [f"{method} {path}" for method, path in OPERATIONS]


@pytest.fixture
def owner_caller(make_caller):
    return make_caller(Role.OWNER, name="Olive Owner")


def _path(template: str, caller) -> str:
    """The operation's path with its parameters filled: the caller's own tenant and membership,
    so that detail routes get as far as parsing the body."""
    values = {"slug": caller.tenant.slug, "id": str(caller.membership.pk)}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), str(uuid.uuid4())), template)


def _client(caller, authenticated: bool) -> APIClient:
    return caller.client if authenticated else APIClient()


def _assert_no_5xx_and_envelope(response, context: str) -> dict | None:
    assert response.status_code < 500, (context, response.status_code, response.content[:300])
    if response.status_code >= 400:
        assert response["Content-Type"].startswith("application/json"), (context, response)
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details", "request_id"}, context
        return error
    return None


def _send(client, method: str, path: str, body: bytes, content_type: str):
    return client.generic(method, path, body, content_type=content_type)


DEEP = b"[" * 100_000
JUST_TOO_DEEP = json.dumps(
    {"name": json.loads("[" * settings.API_JSON_MAX_DEPTH + "]" * settings.API_JSON_MAX_DEPTH)}
).encode()
LONE_SURROGATE = b'{"name": "\\ud800", "role": "\\udfff", "email": "x@example.com"}'
NOT_UTF8 = b'{"name": "\xff\xfe"}'


@pytest.mark.parametrize("authenticated", [True, False], ids=["owner", "anonymous"])
@pytest.mark.parametrize(
    ("method", "template"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS]
)
def test_raw_hostile_bodies_never_make_a_5xx(owner_caller, authenticated, method, template):
    client = _client(owner_caller, authenticated)
    path = _path(template, owner_caller)
    for name, body in (
        ("deep", DEEP),
        ("too deep", JUST_TOO_DEEP),
        ("surrogate", LONE_SURROGATE),
        ("not utf-8", NOT_UTF8),
    ):
        response = _send(client, method, path, body, "application/json")
        error = _assert_no_5xx_and_envelope(response, f"{name}: {method} {path}")
        if error is not None and response.status_code == 400 and name in ("deep", "too deep"):
            assert error["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("authenticated", [True, False], ids=["owner", "anonymous"])
@pytest.mark.parametrize(
    ("method", "template"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS]
)
def test_a_body_over_the_limit_is_413_on_every_route(owner_caller, authenticated, method, template):
    client = _client(owner_caller, authenticated)
    path = _path(template, owner_caller)
    too_big = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1
    json_body = b'{"name": "' + b"a" * too_big + b'"}'
    boundary = "BoUnDaRy"
    # An upload endpoint takes its file on top of the limit (and refuses more itself).
    probe = getattr(RequestFactory(), method.lower())(
        path, content_type=f"multipart/form-data; boundary={boundary}"
    )
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + b"\0" * (too_big + upload_allowance(probe))
        + f"\r\n--{boundary}--\r\n".encode()
    )
    for name, body, content_type in (
        ("json", json_body, "application/json"),
        ("multipart", multipart, f"multipart/form-data; boundary={boundary}"),
    ):
        response = _send(client, method, path, body, content_type)
        error = _assert_no_5xx_and_envelope(response, f"{name}: {method} {path}")
        assert response.status_code == 413, (name, method, path, response.content[:200])
        assert error["code"] == "PAYLOAD_TOO_LARGE"


# The API reads JSON bodies only; the two uploads read multipart. In form input DRF reads a JSON
# field with json.loads, past the parser's depth and text checks: a deep one was a 500.
UPLOADS = {
    ("POST", "/api/v1/organizations/theme/logo/"),
    ("POST", "/api/v1/support/tickets/{id}/attachments/"),
}
WRITES = [
    (method, template)
    for method, template in OPERATIONS
    if method in ("POST", "PUT", "PATCH") and (method, template) not in UPLOADS
]
_NESTED = b"[" * 5_000 + b"]" * 5_000
FORM_BODIES = (
    ("form", b"name=x&metadata=" + _NESTED, "application/x-www-form-urlencoded"),
    (
        "multipart",
        b'--B\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        + _NESTED
        + b"\r\n--B--\r\n",
        "multipart/form-data; boundary=B",
    ),
)


@pytest.mark.parametrize(("method", "template"), WRITES, ids=[f"{m} {p}" for m, p in WRITES])
def test_an_operation_that_reads_its_body_refuses_form_input(owner_caller, method, template):
    path = _path(template, owner_caller)
    probe = _send(owner_caller.client, method, path, b'{"zz_unknown": 1}', "application/json")
    # Whether it reads its body: the serializers refuse a field they do not know.
    reads_its_body = b"zz_unknown" in probe.content
    for name, body, content_type in FORM_BODIES:
        response = _send(owner_caller.client, method, path, body, content_type)
        _assert_no_5xx_and_envelope(response, f"{name}: {method} {path}")
        if reads_its_body:
            assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_deep_json_field_in_form_input_is_a_415_not_a_crash(owner_caller):
    for _, body, content_type in FORM_BODIES:
        response = _send(owner_caller.client, "POST", "/api/v1/projects/", body, content_type)
        assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_the_schema_offers_json_bodies_only_and_multipart_for_uploads(owner_caller):
    schema = owner_caller.client.get("/api/schema/", {"format": "json"}).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            types = set(operation.get("requestBody", {}).get("content", {}))
            expected = {"multipart/form-data"} if (method.upper(), path) in UPLOADS else None
            assert types <= (expected or {"application/json"}), (method, path, types)


# Precise answers on the routes named when these defects were found -------------------------


def test_deep_nesting_is_a_validation_error_naming_the_depth(owner_caller):
    response = _send(owner_caller.client, "POST", "/api/v1/tenants/", DEEP, "application/json")

    error = _assert_no_5xx_and_envelope(response, "deep")
    assert response.status_code == 400
    assert str(settings.API_JSON_MAX_DEPTH) in error["message"] + json.dumps(error["details"])


def test_nesting_within_the_depth_is_parsed(owner_caller):
    within = "[" * (settings.API_JSON_MAX_DEPTH - 1) + "]" * (settings.API_JSON_MAX_DEPTH - 1)
    body = json.dumps({"name": "Nested", "domain": json.loads(within)}).encode()

    response = _send(owner_caller.client, "POST", "/api/v1/tenants/", body, "application/json")

    # Parsed, then refused by the field's own rule (a domain is a string), not by the depth.
    error = _assert_no_5xx_and_envelope(response, "within")
    assert set(error["details"]) == {"domain"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/organizations/members/invite", b'{"email": "a@b.co", "role": "\\ud800"}'),
        ("POST", "/api/v1/tenants/", b'{"name": "x", "subscription_tier": "\\ud800"}'),
        ("PATCH", "/api/v1/organizations/current", b'{"name": "\\udbff\\u0041"}'),
    ],
)
def test_a_lone_surrogate_is_a_400_in_the_envelope(owner_caller, method, path, body):
    response = _send(owner_caller.client, method, path, body, "application/json")

    error = _assert_no_5xx_and_envelope(response, path)
    assert response.status_code == 400
    assert error["code"] == "VALIDATION_ERROR"
    assert "surrogate" in error["message"]


def test_a_lone_surrogate_in_a_member_update_is_a_400(owner_caller, make_caller):
    member = make_caller(Role.MEMBER, tenant=owner_caller.tenant).membership
    path = f"/api/v1/organizations/members/{member.pk}"

    for body in (b'{"role": "\\ud800"}', b'{"status": "\\udc00"}'):
        response = _send(owner_caller.client, "PATCH", path, body, "application/json")
        assert response.status_code == 400, response.content
    member.refresh_from_db()
    assert member.role == Role.MEMBER


def test_a_paired_surrogate_escape_is_an_ordinary_character(owner_caller):
    body = b'{"name": "Rocket \\ud83d\\ude80 Co"}'

    response = _send(owner_caller.client, "POST", "/api/v1/tenants/", body, "application/json")

    assert response.status_code == 201, response.content
    assert Tenant.objects.get(pk=response.json()["id"]).name == "Rocket \U0001f680 Co"


def test_a_json_body_over_the_limit_changes_nothing(owner_caller):
    body = json.dumps({"name": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}).encode()
    before = Tenant.objects.count()

    response = _send(owner_caller.client, "POST", "/api/v1/tenants/", body, "application/json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert Tenant.objects.count() == before


# Schemathesis with hostile strings in every generated string field --------------------------

HOSTILE_BODY_STRINGS = (
    "\ud800",
    "tail\udfff",
    "\x00",
    "bell\x07",
    "\x1b[31mred",
    "Ev\u202eil",
    "zero\u200bwidth",
    "\ufeff",
    "line\nbreak",
    "x" * 5000,
    "\U0001f680",
)
_SURROGATE = re.compile("[\ud800-\udfff]")
# Query strings and form bodies are percent-encoded as UTF-8 by the client, which cannot encode a
# surrogate; only JSON (with its \u escapes) can carry one.
HOSTILE_QUERY_STRINGS = tuple(s for s in HOSTILE_BODY_STRINGS if not _SURROGATE.search(s))


def _without_surrogates(value):
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {key: _without_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(item) for item in value]
    return value


# Only the fuzzing phase: the hooks below make its strings hostile, and they do not apply to the
# coverage or examples phases, whose cases would be the very ones test_schemathesis.py already
# sends, with stronger checks (including this file's: no 5xx, every error exactly the envelope).
# They were some 100 requests per operation and nearly all of this run's time.
hostile_schema = schemathesis.openapi.from_wsgi(
    "/api/schema/",
    WSGIHandler(),
    config=SchemathesisConfig.from_dict(
        {"phases": {"coverage": {"enabled": False}, "examples": {"enabled": False}}}
    ),
)


def _hostile(value, strings):
    """A strategy that keeps `value`'s shape and may replace any string in it."""
    if isinstance(value, str):
        return st.sampled_from((value, *strings))
    if isinstance(value, dict):
        return st.fixed_dictionaries({key: _hostile(item, strings) for key, item in value.items()})
    if isinstance(value, list):
        return st.tuples(*(_hostile(item, strings) for item in value)).map(list)
    return st.just(value)


@hostile_schema.hook("flatmap_body")
def _hostile_body(context, body):
    return _hostile(body, HOSTILE_BODY_STRINGS)


@hostile_schema.hook("flatmap_query")
def _hostile_query(context, query):
    return _hostile(query, HOSTILE_QUERY_STRINGS)


def _never_a_5xx(case, owner_headers):
    prepare(case, owner_headers)
    if case.media_type != "application/json":
        case.body = _without_surrogates(case.body)
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.content[:300])
    assert_an_error_is_the_envelope(case, response)


@pytest.mark.parametrize(
    "operation, max_examples",
    operation_params(
        hostile_schema,
        with_body=HOSTILE_EXAMPLES_WITH_BODY,
        without_body=HOSTILE_EXAMPLES_WITHOUT_BODY,
    ),
)
def test_hostile_strings_never_make_a_5xx(
    operation, max_examples, owner_headers, keep_test_connection
):
    run_operation(
        hostile_schema,
        operation,
        lambda case: _never_a_5xx(case, owner_headers),
        max_examples=max_examples,
    )
