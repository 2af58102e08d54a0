"""Celery tasks of the playground app: thin, each loads its objects by id and
calls a service, so the rules and the audit event are the service's.

A task is `@shared_task(name="playground.tasks.<name>")`, takes JSON
arguments (ids, never model instances), is safe to run twice (a broker may deliver it again)
and is queued with `transaction.on_commit`, so it never acts on a change that rolled back.
Periodic jobs are listed in `CELERY_BEAT_SCHEDULE` (config/settings/base.py).

Runs and workflow jobs are sent at their priority (playground.jobs.celery_priority); a job's
claim makes a second delivery of its message a no-op.
"""

from celery import shared_task

from .services.ledger import gateway_reservations_release_expired
from .services.reaper import stalled_jobs_reap
from .services.runs import orchestration_run_execute
from .services.workflows import workflow_job_execute


@shared_task(name="playground.tasks.execute_orchestration_run")
def execute_orchestration_run(run_id: str) -> str | None:
    return orchestration_run_execute(run_id=run_id)


@shared_task(name="playground.tasks.execute_workflow_job")
def execute_workflow_job(job_id: str) -> str | None:
    return workflow_job_execute(job_id=job_id)


@shared_task(name="playground.tasks.reap_stalled_jobs")
def reap_stalled_jobs() -> dict:
    return {name: vars(reaped) for name, reaped in stalled_jobs_reap().items()}


@shared_task(name="playground.tasks.release_expired_reservations")
def release_expired_reservations() -> int:
    return gateway_reservations_release_expired()
