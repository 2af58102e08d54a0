"""The Celery app. Tasks live in each app's tasks.py and call services."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("control_plane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
def _no_connection_pool(**_):
    """A worker serves its connections without psycopg's pool (config.connections)."""
    from .connections import leave_connection_pool

    leave_connection_pool()


@signals.task_prerun.connect
def _drop_closed_connections(**_):
    """Workers keep their connections between tasks (CELERY_DB_REUSE_MAX): one the server has
    closed since is replaced before the task queries (config.connections)."""
    from .connections import drop_closed_connections

    drop_closed_connections()


@signals.worker_process_init.connect
def _freeze_loaded_objects(**_):
    """Each prefork worker process freezes what it loaded out of the garbage collector's walks,
    as the web processes do (config.memory)."""
    from .memory import freeze_loaded_objects

    freeze_loaded_objects()
