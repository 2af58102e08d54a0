"""Celery tasks of the playground app: thin, each loads its objects by id and
calls a service, so the rules and the audit event are the service's.

A task is `@shared_task(name="playground.tasks.<name>")`, takes JSON
arguments (ids, never model instances), is safe to run twice (a broker may deliver it again)
and is queued with `transaction.on_commit`, so it never acts on a change that rolled back.
Periodic jobs are listed in `CELERY_BEAT_SCHEDULE` (config/settings/base.py).

Runs and workflow jobs are sent at their priority (playground.jobs.celery_priority); a job's
claim makes a second delivery of its message a no-op, and one that meets an outage is sent
again, taking its own claim back at once (`_through_outages`).
"""

import uuid

from celery import shared_task

from config.exceptions import unavailable_dependency

from .services.ledger import gateway_reservations_release_expired
from .services.reaper import stalled_jobs_reap
from .services.runs import orchestration_run_execute
from .services.workflows import workflow_job_execute

# A job's message that arrives while the database or the cache is down (a restart, a failover)
# cannot even be claimed, and a job that meets one mid-run stops: either is sent again after a
# pause (5 s, doubling to a minute), up to this many times (about six minutes), rather than left
# until the reaper sends it again (JOBS_REQUEUE_AFTER_SECONDS, 15 minutes, or the lease,
# JOBS_LEASE_SECONDS, 10 minutes). Celery logs each retry as one line.
JOB_OUTAGE_RETRIES = 8


def _through_outages(task, execute, taking_over, **job) -> str | None:
    """`execute(**job)` under a claim token of this attempt's own; sent again after an
    outage. The retry carries the tokens of the attempts before it (`taking_over`): one that
    claimed the job before the outage stopped it has ended, so the retry takes its claim over
    at once (playground.jobs.claim) rather than waiting out its lease."""
    token = uuid.uuid4()
    earlier = [uuid.UUID(str(value)) for value in taking_over or ()]
    try:
        return execute(**job, token=token, taking_over=earlier)
    except Exception as error:
        if unavailable_dependency(error) is None:
            raise
        countdown = min(5 * 2**task.request.retries, 60)
        # This attempt's token whether or not its claim was made: a claim whose answer the
        # outage lost may have been.
        kwargs = {**job, "taking_over": [*map(str, earlier), str(token)]}
        raise task.retry(countdown=countdown, exc=error, kwargs=kwargs) from None


@shared_task(
    name="playground.tasks.execute_orchestration_run", bind=True, max_retries=JOB_OUTAGE_RETRIES
)
def execute_orchestration_run(self, run_id: str, taking_over: list[str] | None = None):
    return _through_outages(self, orchestration_run_execute, taking_over, run_id=run_id)


@shared_task(
    name="playground.tasks.execute_workflow_job", bind=True, max_retries=JOB_OUTAGE_RETRIES
)
def execute_workflow_job(self, job_id: str, taking_over: list[str] | None = None):
    return _through_outages(self, workflow_job_execute, taking_over, job_id=job_id)


@shared_task(name="playground.tasks.reap_stalled_jobs")
def reap_stalled_jobs() -> dict:
    return {name: vars(reaped) for name, reaped in stalled_jobs_reap().items()}


@shared_task(name="playground.tasks.release_expired_reservations")
def release_expired_reservations() -> int:
    return gateway_reservations_release_expired()
