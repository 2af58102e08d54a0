"""Property-based checks of the whole API against its own OpenAPI schema (Schemathesis).

Bounded examples per operation; an authenticated owner of a tenant. No 5xx, and every response
(status, content type, body, headers) conforms to the schema.
"""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tenants.models import Role

MAX_EXAMPLES = 30


# Loaded at collection (pytest-django has set Django up by then); fetching the schema needs no
# database. (schemathesis.pytest.from_fixture does not support pytest 9 yet.)
schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())


@pytest.fixture(autouse=True)
def _keep_test_connection(db):
    # As Django's test client does: a finished request must not close the test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_headers(make_caller):
    caller = make_caller(Role.OWNER)
    return {"Authorization": f"Token {caller.token}", "X-Organization-ID": str(caller.tenant.pk)}


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_schema(case, auth_headers):
    # Keep generated tenant selectors from drowning every case in 404s; they are fuzzed by
    # the contract tests instead.
    case.headers = {**(case.headers or {}), **auth_headers}
    if case.query:
        case.query.pop("organization_id", None)
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ]
    )
