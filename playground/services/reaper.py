"""The reaper of stalled jobs (playground.jobs.reap) over both kinds of job: run every minute
by beat, and by `manage.py reap_stalled_runs`."""

from ..jobs import Engine, Reaped, reap
from ..models import OrchestrationRun, WorkflowJob
from .runs import orchestration_run_fail
from .workflows import workflow_job_fail


def stalled_jobs_reap() -> dict[str, Reaped]:
    """Queue again the jobs whose worker died (or whose message was lost), fail those out of
    attempts; what it did, per kind of job."""
    from ..tasks import execute_orchestration_run, execute_workflow_job

    engines = {
        "runs": Engine(OrchestrationRun, execute_orchestration_run, orchestration_run_fail),
        "workflows": Engine(WorkflowJob, execute_workflow_job, workflow_job_fail),
    }
    return {name: reap(engine) for name, engine in engines.items()}
