"""API-wide conventions: trailing slashes, request ids, the envelope for every kind of error,
pagination, throttling headers."""

import pytest
from django.test import override_settings
from rest_framework.settings import api_settings
from rest_framework.test import APIRequestFactory, force_authenticate

from tenants.api import TenantContextViewSet
from tenants.models import Role
from tenants.permissions import TENANT_MEMBER
from tests.conftest import assert_envelope
from tests.factories import AuditEventFactory, MembershipFactory

from .endpoints import ENDPOINTS

pytestmark = pytest.mark.django_db

GETS = [e for e in ENDPOINTS if e.method == "get" and not e.is_detail]


@pytest.mark.parametrize("endpoint", GETS, ids=str)
def test_every_path_answers_with_and_without_trailing_slash(endpoint, owner):
    with_slash = owner.client.get(endpoint.url(slash=True))
    if with_slash.streaming:
        # Read to its end: a streamed answer holds what it streams until then (the audit
        # export: its chain's walk slot).
        b"".join(with_slash.streaming_content)
    without_slash = owner.client.get(endpoint.url(slash=False))
    assert with_slash.status_code == without_slash.status_code == 200
    assert with_slash["Content-Type"] == without_slash["Content-Type"]
    if with_slash["Content-Type"] == "application/json":
        assert with_slash.json().keys() == without_slash.json().keys()


def test_request_id_is_echoed_when_valid(api_client):
    response = api_client.get("/health/", HTTP_X_REQUEST_ID="abc-123.DEF:9")
    assert response["X-Request-ID"] == "abc-123.DEF:9"


@pytest.mark.parametrize("unsafe", ["has spaces", "x" * 129, "new\\nline", "<script>"])
def test_unsafe_request_id_is_replaced(api_client, unsafe):
    response = api_client.get("/health/", HTTP_X_REQUEST_ID=unsafe)
    assert response["X-Request-ID"] != unsafe
    assert len(response["X-Request-ID"]) == 32


def test_request_id_is_generated_and_in_the_error(api_client):
    error = assert_envelope(api_client.get("/api/v1/auth/me"), 401)
    assert len(error["request_id"]) == 32


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/tenants/x/y/z/", "/nowhere", "/api/"])
def test_unknown_url_is_a_json_404(api_client, path):
    assert_envelope(api_client.get(path), 404, "RESOURCE_NOT_FOUND")


def test_unknown_url_is_json_with_debug_on_too(api_client):
    with override_settings(DEBUG=True):
        assert_envelope(api_client.post("/api/v1/missing/"), 404, "RESOURCE_NOT_FOUND")


def test_wrong_method_is_405_envelope(owner):
    error = assert_envelope(owner.client.delete("/api/v1/tenants/"), 405, "METHOD_NOT_ALLOWED")
    assert "DELETE" in error["message"]


def test_wrong_method_is_405_even_unauthenticated(api_client):
    assert_envelope(api_client.put("/api/v1/auth/token/"), 405, "METHOD_NOT_ALLOWED")


def test_malformed_json_is_a_validation_error(owner):
    response = owner.client.generic(
        "POST", "/api/v1/tenants/", "{not json", content_type="application/json"
    )
    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_unsupported_media_type_is_415(owner):
    response = owner.client.generic("POST", "/api/v1/tenants/", "name=x", content_type="text/csv")
    assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_validation_error_names_the_field(owner):
    error = assert_envelope(owner.client.post("/api/v1/tenants/", {}), 400, "VALIDATION_ERROR")
    assert "name" in error["details"]


def test_unhandled_exception_is_a_500_envelope_without_traceback(owner, monkeypatch, caplog):
    from tenants.views.organizations import OrganizationViewSet

    def explode(self, request):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(OrganizationViewSet, "current", explode)
    response = owner.client.get("/api/v1/organizations/current")
    error = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "secret internal detail" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert error["request_id"] in caplog.text or "Unhandled error" in caplog.text


def test_nul_byte_in_a_query_parameter_is_a_validation_error(owner):
    response = owner.client.get("/api/v1/tenants/", {"search": "a\x00b"})
    assert_envelope(response, 400, "VALIDATION_ERROR")


class TestPagination:
    def test_page_number_shape_and_default_size(self, staff_client):
        for _ in range(25):
            MembershipFactory()
        body = staff_client.get("/api/v1/tenants/").json()
        assert set(body) == {"count", "next", "previous", "results"}
        assert body["count"] == 25
        assert len(body["results"]) == 20
        assert body["next"] and body["previous"] is None

    def test_page_size_is_capped_at_100(self, staff_client):
        for _ in range(105):
            MembershipFactory()
        body = staff_client.get("/api/v1/tenants/", {"page_size": 1000}).json()
        assert len(body["results"]) == 100

    def test_page_past_the_end_is_404_envelope(self, staff_client):
        assert_envelope(
            staff_client.get("/api/v1/tenants/", {"page": 99}), 404, "RESOURCE_NOT_FOUND"
        )

    def test_cursor_pagination_for_events(self, make_caller):
        caller = make_caller(Role.OWNER)
        for _ in range(5):
            AuditEventFactory(tenant=caller.tenant)
        first = caller.client.get("/api/v1/audit/events/", {"page_size": 3}).json()
        assert set(first) == {"next", "previous", "results"}
        assert len(first["results"]) == 3
        second = caller.client.get(first["next"]).json()
        seen = [e["id"] for e in first["results"] + second["results"]]
        assert len(seen) == len(set(seen))


def _rates(**overrides):
    return override_settings(
        REST_FRAMEWORK={
            **_rest_framework_settings(),
            "DEFAULT_THROTTLE_RATES": {**api_settings.DEFAULT_THROTTLE_RATES, **overrides},
        }
    )


def _rest_framework_settings():
    from django.conf import settings

    return settings.REST_FRAMEWORK


class TestThrottling:
    def test_success_carries_rate_limit_headers(self, owner):
        with _rates(user="5/min"):
            response = owner.client.get("/api/v1/auth/me")
        assert response.status_code == 200
        assert response["X-RateLimit-Limit"] == "5"
        assert response["X-RateLimit-Remaining"] == "4"
        assert int(response["X-RateLimit-Reset"]) > 0

    def test_over_the_limit_is_429_with_retry_after(self, owner):
        with _rates(user="2/min"):
            for _ in range(2):
                assert owner.client.get("/api/v1/auth/me").status_code == 200
            response = owner.client.get("/api/v1/auth/me")
        error = assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
        assert 0 < int(response["Retry-After"]) <= 60
        assert response["X-RateLimit-Remaining"] == "0"
        assert error["details"]["retry_after_seconds"] == int(response["Retry-After"])

    def test_users_are_counted_separately(self, make_caller):
        first, second = make_caller(), make_caller()
        with _rates(user="1/min"):
            assert first.client.get("/api/v1/auth/me").status_code == 200
            assert second.client.get("/api/v1/auth/me").status_code == 200
            assert first.client.get("/api/v1/auth/me").status_code == 429

    def test_login_endpoint_has_its_own_anonymous_rate(self, api_client):
        with _rates(auth="1/min"):
            api_client.post("/api/v1/auth/token/", {"email": "a@example.com", "password": "x"})
            response = api_client.post(
                "/api/v1/auth/token/", {"email": "a@example.com", "password": "x"}
            )
        assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")

    def test_tenant_scope_is_shared_by_the_tenants_members(self, make_caller):
        class AnalyticsProbe(TenantContextViewSet):
            required_permissions = {"list": TENANT_MEMBER}
            throttle_scope = "analytics"

            def list(self, request):
                from rest_framework.response import Response

                return Response({"ok": True})

        first = make_caller(Role.VIEWER)
        second = make_caller(Role.VIEWER, tenant=first.tenant)
        view = AnalyticsProbe.as_view({"get": "list"})
        factory = APIRequestFactory()

        def call(caller):
            request = factory.get("/probe", HTTP_X_ORGANIZATION_ID=str(caller.tenant.pk))
            force_authenticate(request, user=caller.user)
            return view(request)

        with _rates(analytics="2/min"):
            assert call(first).status_code == 200
            assert call(second).status_code == 200
            refused = call(first)
        assert refused.status_code == 429
        assert refused.data["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert refused["X-RateLimit-Limit"] == "2"
