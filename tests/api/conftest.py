"""Fixtures the Schemathesis runs share (tests/api/test_schemathesis.py, test_hostile_input.py)."""

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from tenants.models import Role


@pytest.fixture
def keep_test_connection(db):
    """As Django's test client does: a request served through the WSGI handler must not close
    the test's database connection when it finishes."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def owner_headers(make_caller):
    """The headers of an owner of a fresh tenant: a token and the tenant named."""
    caller = make_caller(Role.OWNER)
    return {"Authorization": f"Token {caller.token}", "X-Organization-ID": str(caller.tenant.pk)}
