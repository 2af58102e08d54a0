"""config.memory: the web application and the Celery worker processes freeze what they loaded
at start-up out of the garbage collector's walks, unless turned off."""

import gc
import os
import subprocess
import sys

import pytest
from celery import signals
from django.conf import settings

from config.memory import freeze_loaded_objects


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_what_is_loaded(unfrozen):
    frozen = freeze_loaded_objects()

    # Not `==`: a thread an earlier test left running in this process (a settlement or loop
    # thread) may free frozen objects meanwhile, which leave the count; nothing adds to it.
    assert frozen >= gc.get_freeze_count() > 10_000
    assert not any(obj is settings for obj in gc.get_objects())  # frozen, no longer walked


def test_turned_off_freezes_nothing(unfrozen, settings):
    settings.GC_FREEZE_AT_STARTUP = False

    assert freeze_loaded_objects() == 0
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi"])
@pytest.mark.parametrize("setting", ["true", "false"])
def test_the_served_applications_freeze_once_built(module, setting):
    env = {**os.environ, "GC_FREEZE_AT_STARTUP": setting}
    code = f"import gc, {module}; print(gc.get_freeze_count())"
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )

    frozen = int(result.stdout.split()[-1])
    assert (frozen > 10_000) if setting == "true" else (frozen == 0)


def test_the_asgi_application_loads_the_upstream_transport_and_freezes_it():
    """The first call to an upstream in a worker does not load aiohttp (about 150 ms): the
    application did, before freezing what it loaded."""
    code = (
        "import gc, sys, config.asgi; aiohttp = sys.modules.get('aiohttp'); "
        "print(aiohttp is not None, any(o is aiohttp.ClientSession for o in gc.get_objects()))"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["True", "False"]


def test_a_celery_worker_process_freezes_when_it_starts(unfrozen):
    # The config package loads the Celery app (config/__init__.py), which connects the handler.
    signals.worker_process_init.send(sender=None)

    assert gc.get_freeze_count() > 10_000
