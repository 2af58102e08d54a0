"""Property-based checks of the whole API against its own OpenAPI schema (Schemathesis).

Every operation, as an authenticated owner of a tenant: no 5xx, every response (status, content
type, body, headers) conforms to the schema, and every error is exactly the JSON envelope.

The cost is the number of requests times the application's own work for one (the fixtures run
once per operation, not per example: Hypothesis calls the test with the same values). Each
operation is sent:

- the coverage phase, Schemathesis' deterministic cases (built by the test: fuzzing.py): each
  documented value, boundary and violation of every parameter and body field, once. Some 100 to
  600 requests for an operation with a body, 10 to 200 without; most of the time, and the heart
  of this run: kept whole. (test_hostile_input.py leaves these cases to this run.)
- the fuzzing phase, random requests, bounded per kind of operation. One with a body (JSON or
  multipart) has combinations of fields, lengths and nesting to explore that the one-at-a-time
  coverage cases do not reach: FUZZ_EXAMPLES_WITH_BODY. One without (list, retrieve, delete, an
  action with no body) only has its path and query parameters, which the coverage phase already
  walks one by one: FUZZ_EXAMPLES_WITHOUT_BODY random combinations of them are enough.

So a new route costs its coverage cases plus its kind's examples. Shrinking only runs after a
failure, and stays: it is what makes a failure readable.
"""

import json

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .fuzzing import operation_params, run_operation

FUZZ_EXAMPLES_WITH_BODY = 20
FUZZ_EXAMPLES_WITHOUT_BODY = 5

ERROR_KEYS = {"code", "message", "details", "request_id"}


# Loaded at collection (pytest-django has set Django up by then); fetching the schema needs no
# database.
schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())


def prepare(case, owner_headers) -> None:
    """The owner's credentials on every case."""
    case.headers = {**(case.headers or {}), **owner_headers}
    # Keep generated tenant selectors from drowning every case in 404s; they are fuzzed by
    # the contract tests instead.
    if case.query:
        case.query.pop("organization_id", None)


def assert_an_error_is_the_envelope(case, response) -> None:
    """An error is JSON with exactly the four keys (the schema's ErrorDetail would allow more)."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (case.method, case.path, content_type)
    error = json.loads(response.content)["error"]
    assert set(error) == ERROR_KEYS, (case.method, case.path, error)


def _conforms(case, owner_headers) -> None:
    prepare(case, owner_headers)
    response = case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ]
    )
    assert_an_error_is_the_envelope(case, response)


@pytest.mark.parametrize(
    "operation, max_examples",
    operation_params(
        schema, with_body=FUZZ_EXAMPLES_WITH_BODY, without_body=FUZZ_EXAMPLES_WITHOUT_BODY
    ),
)
def test_every_operation_conforms_to_the_schema(
    operation, max_examples, owner_headers, keep_test_connection
):
    run_operation(
        schema, operation, lambda case: _conforms(case, owner_headers), max_examples=max_examples
    )
