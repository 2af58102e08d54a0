"""Schemathesis runs built by the test that runs them, not when pytest collects the suite.

Schemathesis' pytest plugin (`schema.parametrize()`) builds every operation's Hypothesis test at
collection, the coverage phase's cases included: about a minute of CPU for this schema, paid by
every process that collects the suite (each pytest-xdist worker, and the SQLite smoke run, which
runs none of these tests). Here collection only reads the operations' labels, and each test
builds its own operation's run, with the function the plugin builds it with (pinned in
requirements-dev.txt), so the cases sent and the test ids (`test_...[METHOD /path]`) are the
ones the plugin gave. The plugin itself is not loaded (`-p no:schemathesis`).
"""

import unittest
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.core.failures import FailureGroup, as_reported_failure
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.python._constants.orchestrator import make_constants_value_source

SUPPRESSED_HEALTH_CHECKS = [
    # The fixtures (an owner, a test connection kept open) are built once per operation and are
    # the same for every example, by design.
    HealthCheck.function_scoped_fixture,
    HealthCheck.too_slow,
    HealthCheck.filter_too_much,
]

_feedback_by_schema: dict[int, FeedbackSources] = {}


def has_a_body(operation) -> bool:
    """Whether the operation documents a request body (as the schema writes it)."""
    return "requestBody" in operation.definition.raw


def operation_params(schema, *, with_body: int, without_body: int) -> list:
    """One `(label, max_examples)` parameter per operation of the schema, with the id
    `METHOD /path`: the fuzzing phase's bound is `with_body` for an operation that documents a
    request body, `without_body` for one that does not. An operation Schemathesis cannot read
    stops the collection here."""
    found = [result.ok() for result in schema.get_all_operations()]
    return [
        pytest.param(op.label, with_body if has_a_body(op) else without_body, id=op.label)
        for op in found
    ]


def _feedback(schema) -> FeedbackSources:
    # What the plugin gives each operation's test: values the schema's own constants suggest.
    key = id(schema)
    if key not in _feedback_by_schema:
        _feedback_by_schema[key] = FeedbackSources(
            constants_value_source=make_constants_value_source(schema)
        )
    return _feedback_by_schema[key]


def run_operation(schema, label: str, check: Callable, *, max_examples: int) -> None:
    """Send the cases of the operation `label` to `check(case)`: the phases `schema`'s config
    enables, the fuzzing phase bounded to `max_examples`, shrinking after a failure."""
    __tracebackhide__ = True

    @hypothesis_settings(
        max_examples=max_examples, deadline=None, suppress_health_check=SUPPRESSED_HEALTH_CHECKS
    )
    def test(case):
        check(case)

    operation = schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the schema"
    hypothesis_test = build_operation_test(
        config=schema.config,
        operation=operation,
        test_func=test,
        given_kwargs={},
        feedback=_feedback(schema),
    )
    try:
        hypothesis_test()
    except FailureGroup as failures:
        # The checks' failures, one per distinct cause, as the plugin reports them.
        raise as_reported_failure(failures) from None
    except unittest.SkipTest as skipped:
        # Hypothesis skips a test it could not generate a single case for: a schema this run
        # cannot exercise, which is a failure here, not a skip.
        raise AssertionError(f"no case could be generated for {label}: {skipped}") from None
