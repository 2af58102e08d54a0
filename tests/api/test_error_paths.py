"""Errors are the envelope, always, and agree with each other: an error path that cannot fail,
JSONErrorMiddleware around everything Django answers itself, the browsable API showing only
successful reads, malformed pagination, two tenants or two credentials named at once, the
headers of every 429, the seats the users quota counts, and each documented error code answered
with its documented status."""

import json
import time
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, HttpResponseNotFound, HttpResponseRedirect, JsonResponse
from django.test import RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import re_path
from django.utils import timezone
from django.views.static import serve
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView

from config import exceptions as config_exceptions
from config import health
from config.exceptions import ERROR_CODES
from config.middleware import JSONErrorMiddleware, RequestIDMiddleware
from config.renderers import JSONRenderer
from tenants.api import PlatformViewSet
from tenants.models import (
    Invitation,
    Membership,
    MembershipStatus,
    PlanTier,
    Role,
    Tenant,
    TenantStatus,
)
from tenants.permissions import PUBLIC
from tenants.services.quotas import quota_states
from tenants.views.organizations import OrganizationViewSet
from tests.conftest import assert_envelope, token_for
from tests.factories import (
    TEST_PASSWORD,
    AuditEventFactory,
    InvitationFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
    issue_api_key,
)

pytestmark = pytest.mark.django_db

ORG_URL = "/api/v1/organizations/current"
QUOTAS_URL = "/api/v1/organizations/quotas"
TENANTS_URL = "/api/v1/tenants/"
EVENTS_URL = "/api/v1/audit/events/"
ME_URL = "/api/v1/auth/me"
TOKEN_URL = "/api/v1/auth/token/"
PUBLIC_KEY_URL = "/api/v1/audit/public-key/"
INVITE_URL = "/api/v1/organizations/members/invite"

# A URL map for the test that serves files the way development serves uploads (/media/); the
# test fills it in (see test_a_missing_media_file_is_the_json_404_with_debug_on).
urlpatterns = []


def api_calls_used(tenant) -> int:
    return quota_states(Tenant.objects.get(pk=tenant.pk))["api_calls"].current


def envelope_of(response, status: int, code: str) -> dict:
    """The error object of a plain Django response (a unit test's: no test-client helpers)."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["code"] == code, body
    return body["error"]


def _rates(**overrides):
    """Throttle rates for a test (they are read at call time)."""
    return override_settings(
        REST_FRAMEWORK={
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**api_settings.DEFAULT_THROTTLE_RATES, **overrides},
        }
    )


def limit_api_calls(tenant, monthly: int) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(settings={"maxApiCallsPerMonth": monthly})
    tenant.refresh_from_db()


# The error path cannot fail ----------------------------------------------------------------


def test_an_error_handler_that_fails_still_answers_a_500_envelope_and_logs_it(
    owner, monkeypatch, caplog
):
    def broken(exc):
        raise RuntimeError("handler exploded")

    monkeypatch.setattr(config_exceptions, "_message_and_details", broken)
    before = Tenant.objects.count()

    response = owner.client.post(TENANTS_URL, {"name": "Globex", "domain": "no!"}, format="json")

    error = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert error["message"] == "An unexpected error occurred."
    assert error["details"] == {}
    assert "handler exploded" not in response.content.decode()
    assert "The error handler failed while handling 'ValidationError'" in caplog.text
    assert "handler exploded" in caplog.text  # the traceback is logged
    assert Tenant.objects.count() == before


def test_the_json_renderer_escapes_a_lone_surrogate_instead_of_failing():
    rendered = JSONRenderer().render({"text": "a\ud800b", "name": "Café"})

    assert rendered == b'{"text":"a\\ud800b","name":"Caf\\u00e9"}'
    assert json.loads(rendered) == {"text": "a\ud800b", "name": "Café"}


def test_the_json_renderer_still_writes_utf8_when_it_can():
    assert JSONRenderer().render({"name": "Café"}) == '{"name":"Café"}'.encode()


@pytest.mark.parametrize(
    ("accepted", "context", "expected"),
    [
        ("application/json", {}, b'{"a":[1,2]}'),
        (None, {}, b'{"a":[1,2]}'),
        ("application/json; indent=2", {}, b'{\n  "a": [\n    1,\n    2\n  ]\n}'),
        ("application/json; indent=0", {}, b'{"a":[1,2]}'),
        ("application/json; indent=x", {}, b'{"a":[1,2]}'),
        ("application/json; charset=utf-8", {}, b'{"a":[1,2]}'),
        # The browsable API asks for an indent through the context.
        ("application/json", {"indent": 4}, b'{\n    "a": [\n        1,\n        2\n    ]\n}'),
    ],
)
def test_the_json_renderer_indents_only_when_asked(accepted, context, expected):
    """Without parameters in the accepted type, the indent comes from the context alone
    (no header parsing); with them, as DRF reads them."""
    assert JSONRenderer().render({"a": [1, 2]}, accepted, context) == expected


def test_an_accept_header_asking_for_an_indent_gets_one(owner):
    url = "/api/v1/organizations/current"
    compact = owner.client.get(url, HTTP_ACCEPT="application/json")
    indented = owner.client.get(url, HTTP_ACCEPT="application/json; indent=2")

    assert b"\n" not in compact.content
    assert indented.content.startswith(b"{\n  ")
    assert json.loads(indented.content).keys() == json.loads(compact.content).keys()


class _SurrogateProbe(PlatformViewSet):
    """A view whose answer carries text UTF-8 cannot encode (as a library's message might)."""

    authentication_classes = ()
    required_permissions = {"list": PUBLIC}

    def list(self, request):
        return Response({"message": "lone \ud800 surrogate"})


def test_a_response_holding_a_lone_surrogate_renders_instead_of_raising():
    view = _SurrogateProbe.as_view({"get": "list"})

    response = view(APIRequestFactory().get("/probe"))
    response.render()

    assert response.status_code == 200
    assert b"lone \\ud800 surrogate" in response.content
    assert json.loads(response.content) == {"message": "lone \ud800 surrogate"}


# JSONErrorMiddleware -----------------------------------------------------------------------


class FakeView:
    """get_response for the middleware: answers `response` (or raises it) and counts calls."""

    def __init__(self, response):
        self.response = response
        self.calls = 0

    def __call__(self, request):
        self.calls += 1
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


def through_middleware(response, path="/api/v1/anything", **request_extra):
    view = FakeView(response)
    request = RequestFactory().get(path, **request_extra)
    return JSONErrorMiddleware(view)(request), view


def test_an_html_404_from_an_api_path_becomes_the_envelope():
    answer, view = through_middleware(HttpResponseNotFound("<h1>Not Found</h1>"))

    error = envelope_of(answer, 404, "RESOURCE_NOT_FOUND")
    assert error["message"] == "Not found."
    assert view.calls == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "VALIDATION_ERROR"), (403, "INSUFFICIENT_PERMISSIONS"), (405, "METHOD_NOT_ALLOWED"),
     (413, "PAYLOAD_TOO_LARGE"), (500, "INTERNAL_ERROR"), (502, "INTERNAL_ERROR")],
)  # fmt: skip
def test_any_error_in_another_format_becomes_the_envelope_with_its_status(status, code):
    answer, _ = through_middleware(HttpResponse("<p>oops</p>", status=status))

    envelope_of(answer, status, code)


def test_an_exception_escaping_django_becomes_a_500_envelope_and_is_logged(caplog):
    answer, view = through_middleware(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate"))

    envelope_of(answer, 500, "INTERNAL_ERROR")
    assert view.calls == 1
    assert "Unhandled error outside the API's exception handler" in caplog.text


def test_the_envelope_carries_the_request_id_of_the_request():
    view = FakeView(HttpResponseNotFound("<h1>Not Found</h1>"))
    stack = RequestIDMiddleware(JSONErrorMiddleware(view))

    answer = stack(RequestFactory().get("/api/v1/anything", HTTP_X_REQUEST_ID="req-42"))

    assert envelope_of(answer, 404, "RESOURCE_NOT_FOUND")["request_id"] == "req-42"
    assert answer["X-Request-ID"] == "req-42"


@pytest.mark.parametrize("path", ["/admin/tenants/tenant/", "/invitations/accept", "/api-auth/x"])
def test_html_errors_of_the_pages_made_for_people_are_left_alone(path):
    page = HttpResponseNotFound("<h1>Not Found</h1>")

    answer, _ = through_middleware(page, path=path)

    assert answer is page


@pytest.mark.parametrize(
    "page",
    [
        HttpResponse("<html>Swagger UI</html>"),
        HttpResponseRedirect("/api/docs/"),
        HttpResponse(status=204),
    ],
    ids=["200-html", "302", "204"],
)
def test_a_successful_html_answer_is_left_alone(page):
    answer, _ = through_middleware(page, path="/api/docs/")

    assert answer is page


def test_a_json_error_is_left_alone():
    error = JsonResponse({"error": {"code": "CONFLICT"}}, status=409)

    answer, _ = through_middleware(error)

    assert answer is error


def test_a_body_declared_too_large_is_refused_before_anything_reads_it():
    too_large = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1

    answer, view = through_middleware(HttpResponse("ok"), CONTENT_LENGTH=str(too_large))

    error = envelope_of(answer, 413, "PAYLOAD_TOO_LARGE")
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in error["message"]
    assert view.calls == 0


def test_a_body_declared_at_the_limit_is_passed_on():
    answer, view = through_middleware(
        HttpResponse("ok"), CONTENT_LENGTH=str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    )

    assert answer.status_code == 200
    assert view.calls == 1


def test_the_admin_is_not_refused_by_the_declared_size():
    answer, view = through_middleware(
        HttpResponse("ok"),
        path="/admin/tenants/tenant/",
        CONTENT_LENGTH=str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1),
    )

    assert answer.status_code == 200
    assert view.calls == 1


def test_an_unreadable_content_length_is_left_to_the_parsers():
    answer, view = through_middleware(HttpResponse("ok"), CONTENT_LENGTH="lots")

    assert answer.status_code == 200
    assert view.calls == 1


def test_an_oversized_body_is_413_through_the_whole_stack(owner):
    body = json.dumps({"name": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)})

    response = owner.client.generic("POST", TENANTS_URL, body, content_type="application/json")

    assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
    assert api_calls_used(owner.tenant) == 0


def test_a_missing_media_file_is_the_json_404_with_debug_on(api_client, monkeypatch, tmp_path):
    (tmp_path / "logo.png").write_bytes(b"\x89PNG not really")
    routes = [re_path(r"^media/(?P<path>.*)$", serve, {"document_root": str(tmp_path)})]
    monkeypatch.setattr(f"{__name__}.urlpatterns", routes)

    with override_settings(DEBUG=True, ROOT_URLCONF=__name__):
        found = api_client.get("/media/logo.png")
        missing = api_client.get("/media/missing.png")

    assert found.status_code == 200
    assert b"".join(found.streaming_content) == b"\x89PNG not really"
    error = assert_envelope(missing, 404, "RESOURCE_NOT_FOUND")
    assert error["message"] == "Not found."


def test_the_swagger_page_stays_html(api_client):
    response = api_client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


# The browsable API shows successful reads only ----------------------------------------------


@pytest.fixture
def browsable(monkeypatch):
    """The development renderers: JSON and the browsable API."""
    monkeypatch.setattr(APIView, "renderer_classes", [JSONRenderer, BrowsableAPIRenderer])
    renderers = OrganizationViewSet().get_renderers()
    assert [type(renderer) for renderer in renderers] == [JSONRenderer, BrowsableAPIRenderer]


def test_the_browsable_api_shows_a_successful_read_as_html(browsable, owner):
    response = owner.client.get(ORG_URL, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert owner.tenant.name in response.content.decode()


def test_the_browsable_api_answers_an_unauthenticated_read_in_json(browsable, api_client):
    response = api_client.get(ORG_URL, HTTP_ACCEPT="text/html")

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_the_browsable_api_answers_a_refused_read_in_json(browsable, make_caller):
    viewer = make_caller(Role.VIEWER)

    response = viewer.client.get(f"{TENANTS_URL}no-such-tenant", HTTP_ACCEPT="text/html")

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


def test_the_browsable_api_answers_an_invalid_write_in_json(browsable, owner):
    response = owner.client.post(TENANTS_URL, {"name": ""}, format="json", HTTP_ACCEPT="text/html")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "name" in error["details"]


def test_the_browsable_api_answers_a_successful_write_in_json(browsable, owner):
    response = owner.client.patch(
        ORG_URL, {"name": "Renamed"}, format="json", HTTP_ACCEPT="text/html"
    )

    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["name"] == "Renamed"
    assert Tenant.objects.get(pk=owner.tenant.pk).name == "Renamed"


def survivor(caller) -> APIClient:
    """The caller's client answering as a server would when a view raises (no re-raise)."""
    client = caller.client_for(caller.tenant.pk)
    client.raise_request_exception = False
    return client


@pytest.mark.parametrize("debug", [False, True])
def test_a_browsable_page_that_fails_to_render_is_still_a_json_500(browsable, owner, debug):
    with override_settings(DEBUG=debug):
        response = survivor(owner).get("/api/v1/roles/", HTTP_ACCEPT="text/html")

    if response.status_code == 200:  # once the page renders
        assert response["Content-Type"].startswith("text/html")
    else:  # never Django's HTML error page
        assert_envelope(response, 500, "INTERNAL_ERROR")


def test_the_browsable_api_shows_the_roles_list(browsable, owner):
    response = survivor(owner).get("/api/v1/roles/", HTTP_ACCEPT="text/html")

    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/html")


# Pagination --------------------------------------------------------------------------------


@pytest.fixture
def three_tenants(db):
    return [TenantFactory() for _ in range(3)]


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("page", "abc"),
        ("page", "0"),
        ("page", "-1"),
        ("page", "1.5"),
        ("page", "\uff11"),  # a full-width digit one
        ("page_size", "abc"),
        ("page_size", "0"),
        ("page_size", "-5"),
    ],
)
def test_a_malformed_page_or_page_size_is_a_400_naming_it(
    staff_client, three_tenants, parameter, value
):
    response = staff_client.get(TENANTS_URL, {parameter: value})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {parameter: ["Must be a whole number of 1 or more."]}


def test_a_page_past_the_end_is_404(staff_client, three_tenants):
    assert_envelope(staff_client.get(TENANTS_URL, {"page": 999}), 404, "RESOURCE_NOT_FOUND")


def test_page_last_is_the_last_page(staff_client, three_tenants):
    response = staff_client.get(TENANTS_URL, {"page": "last", "page_size": 2})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 3
    assert [tenant["slug"] for tenant in body["results"]] == [
        max(three_tenants, key=lambda tenant: tenant.name).slug
    ]
    assert body["next"] is None and body["previous"] is not None


def test_a_page_size_over_100_is_reduced_to_100(staff_client):
    Tenant.objects.bulk_create(Tenant(name=f"T{n:03}", slug=f"t-{n:03}") for n in range(101))

    response = staff_client.get(TENANTS_URL, {"page_size": 1000})

    assert response.status_code == 200, response.content[:300]
    assert len(response.json()["results"]) == 100
    assert response.json()["count"] == 101


def test_a_malformed_cursor_is_a_400_naming_it(owner):
    AuditEventFactory(tenant=owner.tenant)

    response = owner.client.get(EVENTS_URL, {"cursor": "garbage"})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert list(error["details"]) == ["cursor"]


def test_a_malformed_page_size_on_the_cursor_list_is_a_400(owner):
    error = assert_envelope(owner.client.get(EVENTS_URL, {"page_size": "abc"}), 400)

    assert list(error["details"]) == ["page_size"]


def test_the_cursor_links_still_work(owner):
    for _ in range(3):
        AuditEventFactory(tenant=owner.tenant)

    first = owner.client.get(EVENTS_URL, {"page_size": 2}).json()
    second = owner.client.get(first["next"])

    assert second.status_code == 200, second.content
    assert len(first["results"]) + len(second.json()["results"]) >= 3


# Which tenant ------------------------------------------------------------------------------


@pytest.fixture
def two_tenant_owner(owner):
    """The owner, also an active member of a second tenant."""
    other = TenantFactory(slug="globex")
    MembershipFactory(tenant=other, user=owner.user, role=Role.OWNER)
    owner.other = other
    return owner


def test_header_and_query_naming_two_tenants_is_a_400_naming_the_parameter(two_tenant_owner):
    caller = two_tenant_owner
    client = caller.client_for(caller.tenant.slug)

    response = client.get(ORG_URL, {"organization_id": caller.other.slug})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert list(error["details"]) == ["organization_id"]
    assert api_calls_used(caller.tenant) == api_calls_used(caller.other) == 0


@pytest.mark.parametrize("header_by", ["slug", "id"])
def test_header_and_query_naming_the_same_tenant_differently_are_accepted(
    two_tenant_owner, header_by
):
    caller = two_tenant_owner
    tenant = caller.tenant
    header, query = (tenant.slug, str(tenant.pk))
    if header_by == "id":
        header, query = query, header.upper()

    response = caller.client_for(header).get(ORG_URL, {"organization_id": query})

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(tenant.pk)


def test_an_api_key_with_a_query_naming_another_tenant_is_refused(two_tenant_owner):
    caller = two_tenant_owner
    _, raw = issue_api_key(caller.membership)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw, HTTP_X_ORGANIZATION_ID=caller.tenant.slug)

    refused = client.get(ORG_URL, {"organization_id": caller.other.slug})
    own = client.get(ORG_URL, {"organization_id": str(caller.tenant.pk)})

    assert_envelope(refused, 403, "INSUFFICIENT_PERMISSIONS")
    assert own.status_code == 200, own.content
    assert own.json()["id"] == str(caller.tenant.pk)


# One credential per request ----------------------------------------------------------------


@pytest.fixture
def keys(owner):
    """Two real keys of the owner's tenant."""
    return [issue_api_key(owner.membership, name=f"Key {n}")[1] for n in range(2)]


def conflicting_authorizations(owner, keys) -> dict:
    return {
        "another key": f"Api-Key {keys[1]}",
        "a fake key": "Api-Key cp_" + "0" * 32 + "_" + "A" * 43,
        "a token": f"Token {owner.token}",
        "a bearer token": "Bearer not-even-a-jwt",
    }


@pytest.mark.parametrize(
    "authorization", ["another key", "a fake key", "a token", "a bearer token"]
)
def test_authorization_and_another_x_api_key_is_a_400_naming_x_api_key(owner, keys, authorization):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=conflicting_authorizations(owner, keys)[authorization],
        HTTP_X_API_KEY=keys[0],
    )

    response = client.get(ORG_URL)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert list(error["details"]) == ["X-API-Key"]
    assert api_calls_used(owner.tenant) == 0


def test_the_same_key_in_both_headers_is_one_credential(owner, keys):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {keys[0]}", HTTP_X_API_KEY=keys[0])

    response = client.get(ORG_URL)

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(owner.tenant.pk)


def conflicting_client(owner, keys) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {owner.token}", HTTP_X_API_KEY=keys[0])
    return client


def test_the_public_key_ignores_credentials_entirely(owner, keys):
    response = conflicting_client(owner, keys).get(PUBLIC_KEY_URL)

    assert response.status_code == 200, response.content
    assert set(response.json()) == {"algorithm", "public_key", "key_id"}
    assert response.json()["algorithm"] == "Ed25519"


def test_a_tenants_stylesheet_ignores_credentials_entirely(owner, keys):
    response = conflicting_client(owner, keys).get(f"/api/v1/themes/{owner.tenant.slug}/css")

    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/css")


# 429: no request remains ------------------------------------------------------------------


def one_minute_window():
    """A frozen clock at the start of the next minute: every request falls in one window."""
    start = (timezone.now() + timedelta(minutes=1)).replace(second=0, microsecond=0)
    return time_machine.travel(start, tick=False)


def test_a_throttled_request_says_none_remain_until_after_retry_after(owner):
    with _rates(user="2/min"), one_minute_window():
        for _ in range(2):
            assert owner.client.get(ME_URL).status_code == 200
        before = time.time()
        response = owner.client.get(ME_URL)

    assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
    retry_after = int(response["Retry-After"])
    assert retry_after == 60  # the frozen clock is at the window's first second
    assert response["X-RateLimit-Limit"] == "2"
    assert response["X-RateLimit-Remaining"] == "0"
    assert int(response["X-RateLimit-Reset"]) >= before + retry_after
    assert int(response["X-RateLimit-Reset"]) == int(before) + 60  # the window's end


def test_a_quota_refusal_says_none_remain(owner):
    limit_api_calls(owner.tenant, 1)
    assert owner.client.get(ORG_URL).status_code == 200

    response = owner.client.get(ORG_URL)

    error = assert_envelope(response, 429, "QUOTA_EXCEEDED")
    assert error["details"]["resource"] == "api_calls"
    assert response["X-RateLimit-Remaining"] == "0"
    assert int(response["X-RateLimit-Reset"]) >= time.time() - 1


def assert_locked_with_no_request_left(response, before: float) -> None:
    error = assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= settings.AXES_COOLOFF_TIME.total_seconds()
    assert error["details"]["retry_after_seconds"] == retry_after
    if "X-RateLimit-Remaining" in response:
        assert response["X-RateLimit-Remaining"] == "0"
        assert int(response["X-RateLimit-Reset"]) >= before + retry_after


def test_a_login_lockout_says_none_remain_until_after_retry_after():
    user = UserFactory()
    client = APIClient()
    wrong = {"username": user.email, "password": "wrong-password-7a7a7a"}
    statuses = [
        client.post(TOKEN_URL, wrong, format="json").status_code
        for _ in range(settings.AXES_FAILURE_LIMIT - 1)
    ]
    before = time.time()

    locking = client.post(TOKEN_URL, wrong, format="json")
    while_locked = client.post(TOKEN_URL, {**wrong, "password": TEST_PASSWORD}, format="json")

    assert statuses == [400] * (settings.AXES_FAILURE_LIMIT - 1)
    assert_locked_with_no_request_left(locking, before)
    assert_locked_with_no_request_left(while_locked, before)
    assert "X-RateLimit-Remaining" in while_locked  # the auth window counted the attempt


# Seats: what the users quota counts is what invitations are refused at ---------------------


def invite(caller, email):
    return caller.client.post(INVITE_URL, {"email": email, "role": "viewer"}, format="json")


def seats_shown(caller) -> tuple[int, int]:
    """users.current of organizations/quotas and current_users of tenants/{slug}/quota."""
    quotas = caller.client.get(QUOTAS_URL)
    quota = caller.client.get(f"{TENANTS_URL}{caller.tenant.slug}/quota/")
    assert quotas.status_code == quota.status_code == 200, (quotas.content, quota.content)
    return quotas.json()["users"]["current"], quota.json()["current_users"]


def logged_in_again(caller):
    """`caller` with a fresh token (the old one may have expired on a journey in time)."""
    caller.token = token_for(caller.user)
    caller.client = caller.client_for(caller.tenant.pk)
    return caller


@pytest.fixture
def free_owner(make_caller):
    caller = make_caller(Role.OWNER)
    assert caller.tenant.plan == PlanTier.FREE
    return caller


def test_a_pending_invitation_holds_a_seat_in_both_quota_views(free_owner):
    assert seats_shown(free_owner) == (1, 1)
    assert invite(free_owner, "one@example.com").status_code == 201

    assert seats_shown(free_owner) == (2, 2)


def test_the_invitation_refused_names_the_count_the_quota_shows(free_owner):
    for email in ("one@example.com", "two@example.com"):
        assert invite(free_owner, email).status_code == 201
    shown = seats_shown(free_owner)

    refused = invite(free_owner, "three@example.com")

    assert shown == (3, 3)
    error = assert_envelope(refused, 429, "QUOTA_EXCEEDED")
    assert error["details"] == {"resource": "users", "limit": 3, "current": shown[0]}
    assert not Membership.objects.filter(invited_email="three@example.com").exists()
    quotas = free_owner.client.get(QUOTAS_URL).json()["users"]
    assert (quotas["current"], quotas["limit"], quotas["exceeded"]) == (3, 3, True)


def test_an_expired_invitation_holds_no_seat(free_owner):
    expired = InvitationFactory(tenant=free_owner.tenant)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    InvitationFactory(tenant=free_owner.tenant)

    assert seats_shown(free_owner) == (2, 2)
    assert invite(free_owner, "three@example.com").status_code == 201
    assert seats_shown(free_owner) == (3, 3)


def test_an_invitation_stops_holding_a_seat_when_it_expires(free_owner):
    assert invite(free_owner, "one@example.com").status_code == 201
    expires_at = Invitation.objects.get(tenant=free_owner.tenant).expires_at

    with time_machine.travel(expires_at - timedelta(seconds=1), tick=False):
        before = seats_shown(logged_in_again(free_owner))
    with time_machine.travel(expires_at + timedelta(seconds=1), tick=False):
        after = seats_shown(logged_in_again(free_owner))

    assert (before, after) == ((2, 2), (1, 1))


def test_suspended_members_hold_no_seat(free_owner):
    MembershipFactory(tenant=free_owner.tenant, status=MembershipStatus.SUSPENDED)

    assert seats_shown(free_owner) == (1, 1)


def test_the_tenant_list_shows_the_same_seats(free_owner):
    InvitationFactory(tenant=free_owner.tenant)
    InvitationFactory(tenant=free_owner.tenant)

    body = free_owner.client.get(TENANTS_URL).json()

    (listed,) = body["results"]
    assert listed["quota"]["current_users"] == 3
    assert listed["user_count"] == 1  # active members
    assert listed["quota"]["current_users"] == seats_shown(free_owner)[0]


def test_the_tenant_list_query_count_does_not_grow_with_tenants(staff_client):
    def add(count):
        for _ in range(count):
            tenant = TenantFactory()
            MembershipFactory(tenant=tenant)
            InvitationFactory(tenant=tenant)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = staff_client.get(TENANTS_URL)
        assert response.status_code == 200
        assert all(t["quota"]["current_users"] == 2 for t in response.json()["results"])
        return len(captured)

    add(2)
    few = queries()
    add(10)

    assert queries() == few


# Each documented code, answered with its documented status ----------------------------------


def _validation_error(ctx):
    return ctx.owner.client.post(TENANTS_URL, {}, format="json")


def _tenant_required(ctx):
    MembershipFactory(user=ctx.owner.user, role=Role.OWNER)
    return ctx.owner.client_for(None).get(ORG_URL)


def _authentication_required(ctx):
    return APIClient().get(ME_URL)


def _insufficient_permissions(ctx):
    viewer = ctx.make_caller(Role.VIEWER, tenant=ctx.owner.tenant)
    return viewer.client.patch(ORG_URL, {"name": "Mine"}, format="json")


def _tenant_suspended(ctx):
    Tenant.objects.filter(pk=ctx.owner.tenant.pk).update(status=TenantStatus.SUSPENDED)
    return ctx.owner.client.patch(ORG_URL, {"name": "Still mine"}, format="json")


def _resource_not_found(ctx):
    return ctx.owner.client.get("/api/v1/no-such-thing/")


def _method_not_allowed(ctx):
    return ctx.owner.client.delete(TENANTS_URL)


def _not_acceptable(ctx):
    return ctx.owner.client.get(ORG_URL, HTTP_ACCEPT="text/csv")


def _conflict(ctx):
    invited = InvitationFactory(tenant=ctx.owner.tenant).membership
    url = f"/api/v1/organizations/members/{invited.pk}"
    return ctx.owner.client.patch(url, {"status": "active"}, format="json")


def _payload_too_large(ctx):
    body = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    return ctx.owner.client.generic("POST", TENANTS_URL, body, content_type="application/json")


def _unsupported_media_type(ctx):
    return ctx.owner.client.generic("POST", TENANTS_URL, "name=x", content_type="text/csv")


def _invoice_to_pay(ctx):
    from tests.billing.factories import InvoiceFactory

    invoice = InvoiceFactory(tenant=ctx.owner.tenant)
    return f"/api/v1/billing/invoices/{invoice.pk}/pay"


def _payment_failed(ctx):
    body = {"payment_method_id": "pm_card_chargeDeclined"}
    return ctx.owner.client.post(_invoice_to_pay(ctx), body, format="json")


def _idempotency_key_reused(ctx):
    url = _invoice_to_pay(ctx)
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-1"}
    declined = {"payment_method_id": "pm_card_chargeDeclined"}
    ctx.owner.client.post(url, declined, format="json", **headers)
    return ctx.owner.client.post(
        url, {"payment_method_id": "pm_card_visa"}, format="json", **headers
    )


def _rate_limit_exceeded(ctx):
    with _rates(user="1/min"), one_minute_window():
        ctx.owner.client.get(ME_URL)
        return ctx.owner.client.get(ME_URL)


def _quota_exceeded(ctx):
    limit_api_calls(ctx.owner.tenant, 1)
    ctx.owner.client.get(ORG_URL)
    return ctx.owner.client.get(ORG_URL)


def _internal_error(ctx):
    def explode(self, request):
        raise RuntimeError("unexpected")

    ctx.monkeypatch.setattr(OrganizationViewSet, "current", explode)
    return ctx.owner.client.get(ORG_URL)


def _ai_service_error(ctx):
    import socket

    from tests.playground.factories import LanguageModelFactory, ProviderFactory

    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = ProviderFactory(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    model = LanguageModelFactory(provider=provider)
    body = {"model": model.name, "messages": [{"role": "user", "content": "Hi"}]}
    return ctx.owner.client.post("/api/v1/chat/completions", body, format="json")


def _service_unavailable(ctx):
    def unreachable():
        raise ConnectionError("cache down")

    ctx.monkeypatch.setitem(health.READINESS_CHECKS, "cache", unreachable)
    return APIClient().get("/ready/")


ANSWERED_BY = {
    "VALIDATION_ERROR": _validation_error,
    "TENANT_REQUIRED": _tenant_required,
    "AUTHENTICATION_REQUIRED": _authentication_required,
    "INSUFFICIENT_PERMISSIONS": _insufficient_permissions,
    "TENANT_SUSPENDED": _tenant_suspended,
    "RESOURCE_NOT_FOUND": _resource_not_found,
    "METHOD_NOT_ALLOWED": _method_not_allowed,
    "NOT_ACCEPTABLE": _not_acceptable,
    "CONFLICT": _conflict,
    "PAYLOAD_TOO_LARGE": _payload_too_large,
    "UNSUPPORTED_MEDIA_TYPE": _unsupported_media_type,
    "PAYMENT_FAILED": _payment_failed,
    "IDEMPOTENCY_KEY_REUSED": _idempotency_key_reused,
    "RATE_LIMIT_EXCEEDED": _rate_limit_exceeded,
    "QUOTA_EXCEEDED": _quota_exceeded,
    "INTERNAL_ERROR": _internal_error,
    "SERVICE_UNAVAILABLE": _service_unavailable,
    "AI_SERVICE_ERROR": _ai_service_error,
}


def test_every_documented_code_has_a_request_that_answers_it_here():
    assert set(ANSWERED_BY) == set(ERROR_CODES)


class _Context:
    def __init__(self, **values):
        self.__dict__.update(values)


@pytest.mark.parametrize("code", list(ERROR_CODES))
def test_the_api_answers_each_code_with_its_documented_status(
    code, owner, make_caller, monkeypatch
):
    answer = ANSWERED_BY[code]
    context = _Context(owner=owner, make_caller=make_caller, monkeypatch=monkeypatch)

    response = answer(context)

    assert_envelope(response, ERROR_CODES[code][0], code)
