"""One organization's orchestration runs and workflow jobs in progress are bounded
(ORCHESTRATION_RUNS_IN_PROGRESS_PER_TENANT, WORKFLOW_JOBS_IN_PROGRESS_PER_TENANT): the workers
are shared, and without a bound one organization could queue enough work to hold them all.
Past it, 409 CONFLICT with the count and the limit, nothing created, queued or audited; a run
or job that ends or is cancelled makes room; another organization's work does not count; bad
input is still a 400 naming its field; parallel starts cannot pass it together."""

import pytest
from django.db import connection

from audit.models import AuditEvent
from playground.models import JobStatus, OrchestrationRun, WorkflowJob
from playground.tasks import execute_orchestration_run, execute_workflow_job
from tests.conftest import assert_envelope, race

from .factories import ProjectFactory

pytestmark = pytest.mark.django_db

ORCHESTRATE = "/api/v1/orchestrate/"
RUNS = "/api/v1/orchestration/"
EXECUTE = "/api/v1/workflows/execute"
JOBS = "/api/v1/workflows/"
REPORT = {
    "workflow_type": "usage_report",
    "input_data": {"start": "2025-03-01", "end": "2025-03-31"},
}


@pytest.fixture
def sent(monkeypatch):
    """The run and job messages sent to the broker (none is: they are recorded)."""
    messages = []
    for task in (execute_orchestration_run, execute_workflow_job):
        monkeypatch.setattr(task, "apply_async", lambda *a, **k: messages.append(k))
    return messages


@pytest.fixture
def project(owner):
    return ProjectFactory(tenant=owner.tenant, topic="Bounded work")


def start(caller, project, client=None):
    client = client or caller.client
    return client.post(ORCHESTRATE, {"project_id": str(project.pk)}, format="json")


def submit(caller, client=None):
    return (client or caller.client).post(EXECUTE, REPORT, format="json")


def started_events(tenant, event_type):
    return AuditEvent.objects.filter(tenant=tenant, event_type=event_type).count()


def test_runs_in_progress_are_bounded_and_an_ended_or_cancelled_run_makes_room(
    owner, project, make_caller, settings, sent
):
    settings.ORCHESTRATION_RUNS_IN_PROGRESS_PER_TENANT = 2
    first, second = (start(owner, project) for _ in range(2))
    assert first.status_code == 201 and second.status_code == 201, first.content
    events = started_events(owner.tenant, "orchestration.started")

    refused = start(owner, project)

    error = assert_envelope(refused, 409, "CONFLICT")
    assert error["details"] == {"runs_in_progress": 2, "limit": 2}
    assert "cancel one" in error["message"]
    assert OrchestrationRun.objects.filter(tenant=owner.tenant).count() == 2
    assert started_events(owner.tenant, "orchestration.started") == events
    # Another organization's runs are its own.
    other = make_caller()
    assert start(other, ProjectFactory(tenant=other.tenant, topic="Elsewhere")).status_code == 201
    # A cancelled run and an ended one make room; a running one still counts.
    cancelled = owner.client.post(f"{RUNS}{first.json()['run_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert start(owner, project).status_code == 201
    OrchestrationRun.objects.filter(pk=second.json()["run_id"]).update(status=JobStatus.RUNNING)
    assert_envelope(start(owner, project), 409, "CONFLICT")
    OrchestrationRun.objects.filter(pk=second.json()["run_id"]).update(status=JobStatus.COMPLETED)
    assert start(owner, project).status_code == 201


def test_bad_input_at_the_runs_bound_is_still_a_400_naming_the_field(
    owner, project, settings, sent
):
    settings.ORCHESTRATION_RUNS_IN_PROGRESS_PER_TENANT = 1
    assert start(owner, project).status_code == 201

    response = owner.client.post(
        ORCHESTRATE, {"project_id": str(project.pk), "custom_phases": "nope"}, format="json"
    )

    assert "custom_phases" in assert_envelope(response, 400)["details"]


def test_workflow_jobs_in_progress_are_bounded_and_a_cancelled_job_makes_room(
    owner, make_caller, settings, sent
):
    settings.WORKFLOW_JOBS_IN_PROGRESS_PER_TENANT = 1
    first = submit(owner)
    assert first.status_code == 201, first.content

    refused = submit(owner)

    error = assert_envelope(refused, 409, "CONFLICT")
    assert error["details"] == {"jobs_in_progress": 1, "limit": 1}
    assert WorkflowJob.objects.filter(tenant=owner.tenant).count() == 1
    assert started_events(owner.tenant, "workflow.queued") == 1
    assert submit(make_caller()).status_code == 201
    bad = owner.client.post(EXECUTE, {**REPORT, "input_data": {"start": "soon"}}, format="json")
    assert "input_data" in str(assert_envelope(bad, 400)["details"])
    cancelled = owner.client.delete(f"{JOBS}{first.json()['job_id']}/")
    assert cancelled.status_code == 200, cancelled.content
    assert submit(owner).status_code == 201


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["runs", "jobs"])
def test_parallel_starts_stop_at_the_bound(transactional_db, make_caller, settings, sent, kind):
    """Six starts at once with room for two: two 201s and four 409s."""
    settings.ORCHESTRATION_RUNS_IN_PROGRESS_PER_TENANT = 2
    settings.WORKFLOW_JOBS_IN_PROGRESS_PER_TENANT = 2
    owner = make_caller()
    project = ProjectFactory(tenant=owner.tenant, topic="Raced")

    def go():
        try:
            client = owner.client_for(owner.tenant.pk)
            answer = start(owner, project, client) if kind == "runs" else submit(owner, client)
            return answer.status_code
        finally:
            connection.close()

    assert sorted(race(6, go)) == [201, 201, 409, 409, 409, 409]
    model = OrchestrationRun if kind == "runs" else WorkflowJob
    assert model.objects.filter(tenant=owner.tenant).count() == 2
