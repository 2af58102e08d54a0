"""The serving model: under ASGI every middleware stays async, so the gateway's async view
runs on the event loop (no thread per in-flight LLM call), and the ASGI entry point pools its
database connections. The quick start and tests/live serve through it too."""

import json
import logging
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings
from django.utils.module_loading import import_string

from config.settings import dev


def _python(script: str, **environment) -> str:
    """What `script` prints in a fresh interpreter (settings that must be loaded from scratch)."""
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **environment},
        cwd=settings.BASE_DIR,
    )
    return result.stdout.strip().splitlines()[-1]


def _production_middleware() -> list[str]:
    # Production refuses to load without a real SECRET_KEY: read it in a child process.
    script = "import json, config.settings.production as p; print(json.dumps(p.MIDDLEWARE))"
    return json.loads(_python(script, SECRET_KEY="x" * 64, ALLOWED_HOSTS="x"))


ALL_STACKS = {
    "base": settings.MIDDLEWARE,
    "dev": dev.MIDDLEWARE,
    "production": _production_middleware(),
}


@pytest.mark.parametrize("stack", sorted(ALL_STACKS))
def test_every_middleware_is_async_capable(stack):
    sync_only = [
        path
        for path in ALL_STACKS[stack]
        if not getattr(import_string(path), "async_capable", False)
    ]
    assert sync_only == []


@pytest.mark.parametrize("stack", sorted(ALL_STACKS))
def test_the_asgi_handler_adapts_no_middleware_to_sync(stack, caplog):
    # Django logs each adaptation when DEBUG is on.
    with (
        override_settings(DEBUG=True, MIDDLEWARE=ALL_STACKS[stack]),
        caplog.at_level(logging.DEBUG, logger="django.request"),
    ):
        ASGIHandler()
    adapted = [record.getMessage() for record in caplog.records if "adapted" in record.getMessage()]
    assert adapted == []


def _loaded(entry: str, script: str, **environment) -> str:
    """What `script` prints once `entry` (statements) has loaded Django, against PostgreSQL
    (never reached)."""
    return _python(
        f"import os; os.environ['DATABASE_URL'] = 'postgres://u@127.0.0.1:5/db'; {entry}; {script}",
        DJANGO_SETTINGS_MODULE="config.settings.test",
        **environment,
    )


def _under_asgi(script: str, **environment) -> str:
    """What `script` prints once config.asgi is loaded."""
    return _loaded("import config.asgi", script, **environment)


_DATABASE = (
    "from django.conf import settings; db = settings.DATABASES['default'];"
    "print(db['CONN_MAX_AGE'], 'pool' in db.get('OPTIONS', {}))"
)


def test_the_asgi_entry_point_keeps_each_threads_connection():
    # Requests run on the front's long-lived threads, each keeping its connection.
    printed = _under_asgi(_DATABASE)

    assert printed.split() == ["60", "False"]


@pytest.mark.parametrize(
    ("environment", "threads"),
    [({}, "4"), ({"GATEWAY_SETTLE_THREADS": "3"}, "3"), ({"SETTLE_THREADS": "5"}, "5")],
)
def test_the_settlement_threads_are_a_setting(environment, threads):
    printed = _under_asgi(
        "from playground.services import gateway; print(gateway._settle_threads._max_workers)",
        **environment,
    )

    assert printed == threads


def test_a_pool_is_still_one_setting_away():
    printed = _under_asgi(_DATABASE, DATABASE_POOL="true")

    assert printed.split() == ["0", "True"]


_STATEMENT_LIMIT = (
    "from django.conf import settings;"
    "print(repr(settings.DATABASES['default'].get('OPTIONS', {}).get('options')))"
)


@pytest.mark.parametrize(
    ("environment", "options"),
    [
        ({}, "'-c statement_timeout=30000'"),
        ({"DATABASE_STATEMENT_TIMEOUT": "2.5"}, "'-c statement_timeout=2500'"),
        ({"DATABASE_STATEMENT_TIMEOUT": "0"}, "None"),
    ],
)
def test_the_web_entry_points_bound_each_statement(environment, options):
    # Web processes only: a worker or manage.py loads the settings without either entry point.
    assert _under_asgi(_STATEMENT_LIMIT, **environment) == options
    assert _loaded("import config.wsgi", _STATEMENT_LIMIT, **environment) == options
    assert _loaded("import django; django.setup()", _STATEMENT_LIMIT, **environment) == "None"
