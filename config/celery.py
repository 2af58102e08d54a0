"""The Celery app. Tasks live in each app's tasks.py and call services."""

import logging
import os

from celery import Celery, Task, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

logger = logging.getLogger(__name__)


class _OutageMeta(type):
    def __instancecheck__(cls, error) -> bool:
        from .exceptions import unavailable_dependency

        return unavailable_dependency(error) is not None


class Outage(metaclass=_OutageMeta):
    """Matches, in `isinstance`, any error that says the database, the cache or the broker is
    down (config.exceptions.unavailable_dependency): a restart or a failover, not a bug."""


class PlatformTask(Task):
    """Every task's base. A task that meets an outage fails as a request does: one line in the
    log naming the part and the task, without a traceback (Celery's own line for it is then
    "raised expected", at INFO, through `throws`). A periodic task runs again on its next
    tick; the jobs retry through theirs (playground.tasks). Any other error is logged by
    Celery with its traceback, as before."""

    throws = (Outage,)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from .exceptions import one_line, unavailable_dependency

        dependency = unavailable_dependency(exc)
        if dependency is not None:
            logger.error("%s unavailable in task %s (%s)", dependency, self.name, one_line(exc))
        super().on_failure(exc, task_id, args, kwargs, einfo)


app = Celery("control_plane", task_cls=PlatformTask)
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
