"""The platform's own patterns end at the end of the text: Python's `$` also matches before a
final newline, so `^name$` took "name\\n" (found by the template parser's property test)."""

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from accounts.authentication import parse_api_key
from config.exceptions import ApplicationError
from config.middleware import REQUEST_ID_HEADER, RequestIDMiddleware
from playground.orchestration import check_phase_names
from playground.rendering import TemplateError, placeholders
from tenants.resolution import tenant_lookup

KEY = "cp_" + "0" * 32 + "_" + "A" * 43


@pytest.mark.parametrize("ending", ["\n", "\r\n", " "])
def test_a_placeholder_name_with_a_line_end_is_refused(ending):
    assert placeholders("{topic}") == ["topic"]
    with pytest.raises(TemplateError):
        placeholders("{topic" + ending + "}")


def test_a_phase_name_with_a_line_end_is_refused():
    assert check_phase_names(["Design"]) == ["Design"]
    with pytest.raises(ApplicationError):
        check_phase_names(["Design\n"])


def test_an_api_key_with_a_line_end_is_not_a_key():
    assert parse_api_key(KEY) == ("0" * 32, "A" * 43)
    assert parse_api_key(KEY + "\n") is None


def test_an_organization_slug_with_a_line_end_names_no_organization():
    assert tenant_lookup("acme") == {"slug": "acme"}
    assert tenant_lookup("acme\n") == {}


def test_a_request_id_with_a_line_end_is_replaced_not_echoed():
    middleware = RequestIDMiddleware(lambda request: HttpResponse())
    kept = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="abc-123"))
    replaced = middleware(RequestFactory().get("/", HTTP_X_REQUEST_ID="abc-123\n"))

    assert kept[REQUEST_ID_HEADER] == "abc-123"
    assert "\n" not in replaced[REQUEST_ID_HEADER] and replaced[REQUEST_ID_HEADER] != "abc-123"


def test_a_phone_number_with_a_line_end_is_refused():
    from django.core.exceptions import ValidationError

    from config.validators import validate_phone

    validate_phone("+1 (555) 010-0000")
    with pytest.raises(ValidationError):
        validate_phone("+1 (555) 010-0000\n")
