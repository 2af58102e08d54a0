"""Property-based checks of the whole API against its own OpenAPI schema (Schemathesis).

Bounded examples per operation; an authenticated owner of a tenant. No 5xx, and every response
(status, content type, body, headers) conforms to the schema.
"""

import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 30


# Loaded at collection (pytest-django has set Django up by then); fetching the schema needs no
# database. (schemathesis.pytest.from_fixture does not support pytest 9 yet.)
schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())


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
def test_api_conforms_to_its_schema(case, owner_headers, keep_test_connection):
    # Keep generated tenant selectors from drowning every case in 404s; they are fuzzed by
    # the contract tests instead.
    case.headers = {**(case.headers or {}), **owner_headers}
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
