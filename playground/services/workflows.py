"""Workflow jobs: request, execute (the Celery task's work), cancel, fail.

The types and their inputs are playground.workflows' registry; the claims, leases and the
reaper are playground.jobs', shared with orchestration runs. A job's result is an artifact
(services.artifacts, counted against the storage quota) and its `output_data`.
"""

import logging

from django.conf import settings
from django.db import transaction

from audit.services import record
from config.db import locked_or_404
from config.exceptions import (
    ApplicationError,
    InsufficientPermissions,
    one_line,
    unavailable_dependency,
)
from tenants.models import BLOCKED_STATUSES, Tenant

from .. import jobs
from ..models import JobStatus, WorkflowJob
from ..workflows import REGISTRY, JobContext, JobStopped
from .artifacts import artifact_spool, artifact_write
from .ledger import gateway_tokens_lock, gateway_tokens_release_unsettled

logger = logging.getLogger(__name__)


def _payload(job: WorkflowJob, **extra) -> dict:
    return {
        "job_id": str(job.pk),
        "workflow_type": job.workflow_type,
        "status": job.status,
        **extra,
    }


@transaction.atomic
def workflow_execute(
    *,
    tenant: Tenant,
    actor,
    actor_permissions: frozenset[str],
    workflow_type: str,
    input_data: dict,
    priority: int = jobs.DEFAULT_PRIORITY,
) -> WorkflowJob:
    """Check the type, the caller's permission for it and its input; make the job and queue it
    at `priority` (1 lowest .. 10 highest)."""
    workflow = REGISTRY.get(workflow_type)
    if workflow is None:
        raise ApplicationError(
            f"Unknown workflow type {str(workflow_type)[:64]!r}.",
            details={"workflow_type": [f"One of: {', '.join(sorted(REGISTRY))}."]},
        )
    if workflow.permission not in actor_permissions:
        raise InsufficientPermissions(
            f"The {workflow.name} workflow needs the {workflow.permission} permission.",
            details={"required_permission": workflow.permission},
        )
    if not isinstance(input_data, dict):
        raise ApplicationError("Invalid workflow input.", details={"input_data": ["An object."]})
    checked, units = workflow.check(tenant, input_data)
    jobs.ensure_room_in_progress(
        WorkflowJob,
        tenant,
        limit=settings.WORKFLOW_JOBS_IN_PROGRESS_PER_TENANT,
        counted="jobs_in_progress",
        noun="workflow jobs pending or running",
    )
    job = WorkflowJob.objects.create(
        tenant=tenant,
        workflow_type=workflow.name,
        input_data=checked,
        priority=priority,
        progress_total=units,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    record(
        tenant=tenant,
        event_type="workflow.queued",
        actor=actor,
        payload=_payload(job, priority=priority),
    )
    from ..tasks import execute_workflow_job

    jobs.enqueue(job, execute_workflow_job)
    return job


def _release_unsettled_call(job: WorkflowJob) -> None:
    """Give back the gateway reservation noted on `job` (JobContext.note) unless its call
    was settled, then clear the note. The caller holds the job's row lock; a settlement that
    lands after this (a worker that outlived its lease) counts its usage alone."""
    if not job.reserved_call:
        return
    gateway_tokens_release_unsettled(tenant=job.tenant, request_id=job.reserved_call)
    WorkflowJob.objects.filter(pk=job.pk).update(reserved_tokens=0, reserved_call="")


@transaction.atomic
def _take_over_noted_call(held: jobs.Claim, tenant_id) -> bool:
    """Settle, under our claim and the job's row lock, what a previous worker (or this one,
    failing between a reservation and its call) left noted; False when the job is no longer
    ours."""
    gateway_tokens_lock(tenant_id=tenant_id)  # first: see gateway_tokens_lock
    job = held.rows().select_for_update().select_related("tenant").first()
    if job is None:
        return False
    _release_unsettled_call(job)
    return True


def _fail(held: jobs.Claim, job: WorkflowJob, error: str) -> None:
    with transaction.atomic():
        _take_over_noted_call(held, job.tenant_id)  # an error between a reservation and its call
        if jobs.release(held, status=JobStatus.FAILED, error=error):
            job.refresh_from_db()
            record(
                tenant=job.tenant,
                event_type="workflow.failed",
                payload=_payload(job, error=job.error, execution_time_ms=job.execution_time_ms),
            )


def workflow_job_execute(*, job_id, token=None, taking_over=()) -> str | None:
    """Run job `job_id` if it is ours to run (claimed under `token`, taking over the claims of
    `taking_over`: playground.jobs.claim): its type's runner, then its artifact and output in
    one transaction. Returns the status it ended in, or None when it was not ours (or was
    cancelled while it ran). An outage propagates, the job left claimed: the task sends it
    again, and the retry takes the claim over and resumes where it stopped."""
    held = jobs.claim(WorkflowJob, job_id, token=token, taking_over=taking_over)
    if held is None:
        return None
    job = WorkflowJob.objects.select_related("tenant", "created_by").get(pk=job_id)
    if job.reserved_call and not _take_over_noted_call(held, job.tenant_id):
        return None
    if job.tenant.status in BLOCKED_STATUSES:
        _fail(held, job, "The organization is suspended.")
        return JobStatus.FAILED
    workflow = REGISTRY[job.workflow_type]
    try:
        with artifact_spool(tenant=job.tenant) as spool:
            return _run(held, job, workflow, spool)
    except JobStopped:
        return None
    except ApplicationError as error:
        # A refusal with a message for the caller: an exhausted quota, a template gone.
        _fail(held, job, str(error.detail))
    except Exception as error:
        dependency = unavailable_dependency(error)
        if dependency is not None:
            # An outage, not the job's doing: failing it for good would lose the work to a
            # restart. Left claimed, it is sent again by its task (playground.tasks), whose
            # retry takes the claim over; failing that (a worker that died meanwhile, the
            # retries spent), the reaper queues it again once its lease ends.
            logger.warning(
                "Workflow job %s (%s) stopped: the %s is unavailable (%s); it is sent again",
                job.pk,
                job.workflow_type,
                dependency,
                one_line(error, 300),
            )
            raise
        logger.exception("Workflow job %s (%s) failed", job.pk, job.workflow_type)
        _fail(held, job, "The job failed on an internal error; it was logged.")
    return JobStatus.FAILED


def _run(held: jobs.Claim, job: WorkflowJob, workflow, spool) -> str:
    """The runner, writing its artifact to `spool`, then the artifact and the job's output
    stored in one transaction."""
    output, name, content_type = workflow.run(
        JobContext(job=job, held=held, artifact=spool), job.tenant, job.created_by
    )
    with transaction.atomic():
        if not held.rows().select_for_update().exists():
            raise JobStopped
        artifact = artifact_write(
            tenant=job.tenant,
            name=name,
            content=spool,
            content_type=content_type,
            created_by=job.created_by,
            workflow_job=job,
        )
        output = {**output, "artifact_id": str(artifact.pk), "size_bytes": artifact.size_bytes}
        # Every row's call was settled: the last note has nothing left to give back.
        jobs.release(
            held,
            status=JobStatus.COMPLETED,
            output_data=output,
            reserved_tokens=0,
            reserved_call="",
        )
        job.refresh_from_db()
        record(
            tenant=job.tenant,
            event_type="workflow.completed",
            payload=_payload(
                job, artifact_id=str(artifact.pk), execution_time_ms=job.execution_time_ms
            ),
        )
    return JobStatus.COMPLETED


@transaction.atomic
def workflow_job_cancel(*, workflow_job: WorkflowJob, actor) -> WorkflowJob:
    """Cancel a pending or running job at once (a running one stops at its next checkpoint);
    a finished job is 409."""
    gateway_tokens_lock(tenant_id=workflow_job.tenant_id)  # first: see gateway_tokens_lock
    job = jobs.cancel(workflow_job, noun="job", id_field="job_id")
    if job.status == JobStatus.RUNNING and jobs.is_stalled(job):
        _release_unsettled_call(job)  # its worker died mid-call: nobody else will
    jobs.stop(job, status=JobStatus.CANCELLED)
    record(tenant=job.tenant, event_type="workflow.cancelled", actor=actor, payload=_payload(job))
    return job


@transaction.atomic
def workflow_job_fail(*, job: WorkflowJob, reason: str) -> bool:
    """Fail a job whose worker stopped too often (the reaper's last resort), unless it moved on
    meanwhile."""
    gateway_tokens_lock(tenant_id=job.tenant_id)  # first: see gateway_tokens_lock
    job = locked_or_404(WorkflowJob.objects, pk=job.pk)
    if not jobs.is_stalled(job):
        return False
    _release_unsettled_call(job)
    jobs.stop(job, status=JobStatus.FAILED, error=reason)
    record(
        tenant=job.tenant,
        event_type="workflow.failed",
        payload=_payload(job, error=job.error, execution_time_ms=job.execution_time_ms),
    )
    return True
