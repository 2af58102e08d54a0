"""Orchestration runs and workflow jobs at their edges: reservations of calls whose worker died
(given back on resume, on cancel, on the reaper giving up, on a suspended organization's
resume), a NUL in a model's
answer, a cancel racing a phase's outcome, odd bodies, workflow types hidden from members
without their permission, a deactivated model, and an organization's deletion removing its
artifact files."""

import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from celery.signals import task_retry
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.exceptions import unavailable_dependency
from playground import jobs
from playground.models import (
    Artifact,
    GatewayCall,
    GatewayReservation,
    JobStatus,
    OrchestrationPhase,
    OrchestrationRun,
    PhaseStatus,
    WorkflowJob,
)
from playground.providers import ChatResult
from playground.services import runs
from playground.services.reaper import stalled_jobs_reap
from playground.services.runs import orchestration_run_execute, orchestration_start
from playground.services.workflows import workflow_job_execute
from playground.tasks import execute_orchestration_run, execute_workflow_job
from tenants.models import QuotaCounter, Role, Tenant
from tenants.services.quotas import quota_states

from .factories import (
    LanguageModelFactory,
    OrchestrationRunFactory,
    ProjectFactory,
    PromptTemplateFactory,
    ProviderFactory,
    claimed_phase,
    started_run,
)
from .upstream import FakeUpstream, Reply

pytestmark = pytest.mark.django_db
RUNS = "/api/v1/orchestration/"


@pytest.fixture(autouse=True)
def _fast_gateway(settings):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0.01
    settings.GATEWAY_RETRY_AFTER_MAX_SECONDS = 0.05
    settings.GATEWAY_COOLDOWN_FAILURES = 100


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(execute_orchestration_run, "apply_async", lambda *a, **k: calls.append(k))
    monkeypatch.setattr(execute_workflow_job, "apply_async", lambda *a, **k: calls.append(k))
    return calls


def used(tenant, resource="tokens") -> int:
    return quota_states(Tenant.objects.get(pk=tenant.pk))[resource].current


def phases_of(run):
    return list(OrchestrationPhase.objects.filter(run_id=run.pk).order_by("position"))


def dead_worker_mid_call(owner):
    """A run whose worker reserved a phase's call and died before it settled."""
    run, _held, phase, token, chat = claimed_phase(owner)
    runs._reserve(run, phase.pk, token, chat)  # ... and the worker is SIGKILLed here
    OrchestrationRun.objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    return run


def test_cancelling_a_run_whose_worker_died_gives_its_reservation_back(owner, sent):
    run = dead_worker_mid_call(owner)
    assert used(owner.tenant) > 0  # the dead call's worst case
    assert not GatewayCall.objects.exists()

    response = owner.client.post(f"{RUNS}{run.pk}/cancel")
    assert response.status_code == 200
    stalled_jobs_reap()
    # Nothing was ever called, the run is over: the quota should be back at 0.
    assert used(owner.tenant) == 0, used(owner.tenant)


def test_the_reaper_giving_up_gives_the_dead_calls_reservation_back(owner, sent, settings):
    run = dead_worker_mid_call(owner)
    OrchestrationRun.objects.filter(pk=run.pk).update(attempts=settings.JOBS_MAX_ATTEMPTS)
    stalled_jobs_reap()
    assert used(owner.tenant) == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_database_goes_away_mid_call_is_taken_back_by_its_retry_at_once(
    owner, sent, monkeypatch
):
    """The second phase's call is reserved (and noted) when the worker's connection dies: the
    run stops on the outage, and its task's retry carries the stopped attempt's claim token,
    takes the run over at once (not after its 10-minute lease, and as the same attempt), gives
    the interrupted call's reservation back and runs that phase again."""
    run = started_run(owner, topic="outage")
    real = runs.gateway_call_reserved
    reserved = []

    def database_gone_on_the_second_call(reservation):
        reserved.append(reservation)
        if len(reserved) == 2:
            own_backend = connection.connection.info.backend_pid
            with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [own_backend])
            connection.cursor().execute("SELECT 1")  # the worker's next statement
        return real(reservation)

    monkeypatch.setattr(runs, "gateway_call_reserved", database_gone_on_the_second_call)
    retried = []

    def note_retry(sender=None, reason=None, **_):
        retried.append(reason)

    task_retry.connect(note_retry, weak=False)
    try:
        result = execute_orchestration_run.apply(args=[str(run.pk)])
    finally:
        task_retry.disconnect(note_retry)

    assert result.get() == JobStatus.COMPLETED
    [retry] = retried
    assert unavailable_dependency(retry.exc) == "database"
    run.refresh_from_db()
    assert (run.attempts, run.completed_phases, run.failed_phases) == (1, 3, 0)
    assert [(p.status, p.attempts) for p in phases_of(run)] == [
        (PhaseStatus.COMPLETED, 1),
        (PhaseStatus.COMPLETED, 2),
        (PhaseStatus.COMPLETED, 1),
    ]
    interrupted = reserved[1]
    assert not GatewayCall.objects.filter(request_id=interrupted.request_id).exists()
    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 3
    assert not GatewayReservation.objects.filter(tenant=owner.tenant).exists()
    recorded = sum(
        GatewayCall.objects.filter(tenant=owner.tenant).values_list("total_tokens", flat=True)
    )
    assert used(owner.tenant) == recorded > 0


def openai_model(upstream, **fields):
    provider = ProviderFactory(
        kind="openai",
        base_url=upstream.url + "/v1",
        api_key_env="",
        max_retries=0,
        timeout_seconds=30,
    )
    return LanguageModelFactory(provider=provider, **fields)


def test_a_nul_in_a_models_answer_is_kept_as_a_replacement_character(owner, sent):
    with FakeUpstream(reply="ok", chunks=1) as upstream:
        model = openai_model(upstream)
        upstream.script(Reply("before\x00after"))
        project = ProjectFactory(tenant=owner.tenant, topic="t")
        run = orchestration_start(
            tenant=owner.tenant,
            actor=owner.user,
            project_id=project.pk,
            custom_phases=["ideation", "design"],
            run_settings={"ai_model": model.name},
        )
        try:
            outcome = orchestration_run_execute(run_id=run.pk)
        except Exception as error:
            outcome = f"raised {type(error).__name__}: {error}"
    run.refresh_from_db()
    assert run.status != JobStatus.RUNNING, (outcome, run.status)


def run_side_by_side(**work) -> tuple[dict, dict]:
    """Each of `work`'s functions on a thread of its own, with its own database connection:
    ({name: what it returned}, {name: the exception it raised, as text})."""
    results, errors = {}, {}

    def running(name, function):
        try:
            results[name] = function()
        except Exception as error:
            errors[name] = repr(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=running, args=item) for item in work.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return results, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_cancel_racing_a_phases_outcome_never_deadlocks(owner, monkeypatch):
    """Cancel locks the counter, the run, then its phases; a phase's outcome written on its own
    (_FINISH_SQL) locks the run, then the phase: the same order."""
    project = ProjectFactory(tenant=owner.tenant, topic="t")
    run = orchestration_start(
        tenant=owner.tenant,
        actor=owner.user,
        project_id=project.pk,
        custom_phases=["ideation", "design"],
    )
    held = jobs.claim(OrchestrationRun, run.pk)
    first, second = phases_of(run)
    token = runs._claim_phase(held, first)
    run_locked = threading.Event()
    real_stop = jobs.stop

    def slow_stop(job, **kwargs):
        real_stop(job, **kwargs)  # the run row is now locked and updated
        run_locked.set()
        time.sleep(0.5)  # ... the worker records its phase meanwhile

    monkeypatch.setattr(jobs, "stop", slow_stop)

    def cancel():
        return owner.client.post(f"{RUNS}{run.pk}/cancel").status_code

    def finish():
        run_locked.wait(5)
        outcome = runs._PhaseOutcome(held, first, token, time.perf_counter(), second)
        answer = ChatResult(content="x", finish_reason="stop", usage=None)
        return outcome.write(result=answer, call=None, error="")

    _, errors = run_side_by_side(cancel=cancel, finish=finish)
    assert not errors, errors


def _another_backend_waits_on_a_lock(timeout: float = 5.0) -> bool:
    """Whether another session of this database waits on a row lock, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            # Within a transaction the activity view is a snapshot, unless cleared.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.02)
    return False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stop", ["cancel", "reaper"])
def test_a_worker_settling_after_its_lease_expired_never_deadlocks_with_a_stop(
    owner, monkeypatch, stop
):
    """The settlement's statement locks the tokens counter, then the run (the phase's outcome
    rides on it). A cancel or the reaper's failure of a run whose lease expired locks the run
    and gives back the dead call's reservation on the counter: taken in that order, the two
    deadlocked and PostgreSQL aborted one (a 500 on the cancel, or an unrecorded call). Both
    now take the counter first."""
    run, held, phase, token, chat = claimed_phase(owner)
    second = phases_of(run)[1]
    reservation = runs._reserve(run, phase.pk, token, chat)
    reservation.settle_rider = runs._PhaseOutcome(held, phase, token, time.perf_counter(), second)
    OrchestrationRun.objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)  # the worker outlived its lease
    )
    stopping, met = threading.Event(), []
    real_is_stalled = jobs.is_stalled

    def is_stalled_once_the_worker_waits(job):
        stopping.set()  # the stop holds its locks; the worker's settlement starts now
        met.append(_another_backend_waits_on_a_lock())
        return real_is_stalled(job)

    monkeypatch.setattr(jobs, "is_stalled", is_stalled_once_the_worker_waits)

    def stop_the_run():
        job = OrchestrationRun.objects.get(pk=run.pk)
        if stop == "cancel":
            return runs.orchestration_run_cancel(run=job, actor=owner.user)
        return runs.orchestration_run_fail(job=job, reason="Its worker stopped too often.")

    def settle_late():
        stopping.wait(5)
        return runs.gateway_call_reserved(reservation)

    _, errors = run_side_by_side(stop=stop_the_run, settlement=settle_late)

    assert not errors, errors
    assert met == [True]  # the two did meet
    call = GatewayCall.objects.get(request_id=reservation.request_id)
    run.refresh_from_db()
    phase.refresh_from_db()
    ended = JobStatus.CANCELLED if stop == "cancel" else JobStatus.FAILED
    assert run.status == ended
    assert phase.status == ended and phase.gateway_call_id is None  # its outcome came too late
    # The stop gave the reservation back, deleting the gateway's note of it; the late
    # settlement found the note gone and moved the counter by its usage alone: given back once.
    assert used(owner.tenant) == call.total_tokens
    assert not GatewayReservation.objects.filter(tenant=owner.tenant).exists()


class Killed(BaseException):
    """SIGKILL, as far as the worker's code can tell."""


def _batch(owner, rows: list[dict]) -> WorkflowJob:
    from playground.services.workflows import workflow_execute

    template = PromptTemplateFactory(tenant=owner.tenant)
    return workflow_execute(
        tenant=owner.tenant,
        actor=owner.user,
        actor_permissions=frozenset({"playground.execute"}),
        workflow_type="template_batch",
        input_data={"template_id": str(template.pk), "rows": rows},
    )


def _batch_killed_on_its_second_call(owner, monkeypatch) -> WorkflowJob:
    """A two-row template_batch whose worker dies in the middle of its second row's call:
    the row's reservation is counted and noted on the job, and no call is recorded for it."""
    from playground.services import gateway

    job = _batch(owner, [{"question": "a"}, {"question": "b"}])
    real = gateway.gateway_call_reserved
    calls = []

    def dies_on_the_second_call(reservation):
        calls.append(reservation)
        if len(calls) == 2:
            raise Killed
        return real(reservation)

    monkeypatch.setattr(gateway, "gateway_call_reserved", dies_on_the_second_call)
    with pytest.raises(Killed):
        workflow_job_execute(job_id=job.pk)
    monkeypatch.setattr(gateway, "gateway_call_reserved", real)
    job.refresh_from_db()
    assert job.reserved_tokens == calls[1].tokens > 0
    assert job.reserved_call == calls[1].request_id
    assert used(owner.tenant) == _metered(owner.tenant) + calls[1].tokens
    WorkflowJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(1))
    return job


def _metered(tenant) -> int:
    return sum(GatewayCall.objects.filter(tenant=tenant).values_list("total_tokens", flat=True))


def test_a_batch_worker_killed_mid_call_gives_its_reservation_back(owner, sent, monkeypatch):
    job = _batch_killed_on_its_second_call(owner, monkeypatch)

    assert stalled_jobs_reap()["workflows"].requeued == 1
    assert workflow_job_execute(job_id=job.pk) == JobStatus.COMPLETED

    assert used(owner.tenant) == _metered(owner.tenant)
    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 2  # one per row
    job.refresh_from_db()
    assert (job.reserved_tokens, job.reserved_call) == (0, "")


def test_a_killed_batch_the_reaper_gives_up_on_gives_its_reservation_back(
    owner, sent, monkeypatch, settings
):
    settings.JOBS_MAX_ATTEMPTS = 1
    job = _batch_killed_on_its_second_call(owner, monkeypatch)

    assert stalled_jobs_reap()["workflows"].failed == 1

    assert used(owner.tenant) == _metered(owner.tenant)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert (job.reserved_tokens, job.reserved_call) == (0, "")


def test_cancelling_a_killed_batch_gives_its_reservation_back(owner, sent, monkeypatch):
    job = _batch_killed_on_its_second_call(owner, monkeypatch)

    response = owner.client.delete(f"/api/v1/workflows/{job.pk}/")

    assert response.status_code == 200, response.content
    assert used(owner.tenant) == _metered(owner.tenant)


def test_a_settled_call_noted_on_a_resumed_batch_is_not_given_back_twice(owner, sent):
    """A worker that died after its row's call was settled (its call is recorded) leaves a
    note that must give nothing back: the call's tokens stay counted."""
    job = _batch(owner, [{"question": "a"}])
    assert workflow_job_execute(job_id=job.pk) == JobStatus.COMPLETED
    call = GatewayCall.objects.get(tenant=owner.tenant)
    # As if the worker had died after settling and before completing the job.
    WorkflowJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        lease_token=uuid.uuid4(),
        lease_expires_at=timezone.now() - timedelta(1),
        reserved_tokens=call.total_tokens + 100,
        reserved_call=call.request_id,
    )
    before = used(owner.tenant)

    assert stalled_jobs_reap()["workflows"].requeued == 1
    assert workflow_job_execute(job_id=job.pk) == JobStatus.COMPLETED

    assert used(owner.tenant) == before == _metered(owner.tenant)


@pytest.mark.postgres
def test_a_batch_rows_reservation_and_its_note_are_one_statement(owner, sent):
    job = _batch(owner, [{"question": "a"}])
    QuotaCounter.objects.get_or_create(tenant=owner.tenant, resource="tokens")  # not the first

    with CaptureQueriesContext(connection) as queries:
        assert workflow_job_execute(job_id=job.pk) == JobStatus.COMPLETED

    table = WorkflowJob._meta.db_table
    statements = [q["sql"] for q in queries.captured_queries]
    # The row's reservation notes itself on the job; the only other write of the note is the
    # job's end, clearing it.
    noting = [sql for sql in statements if "reserved_call = " in sql]
    assert len(noting) == 2 and table in noting[0]
    assert "quota_update AS (UPDATE" in noting[0] and "quota_update" not in noting[1]
    job.refresh_from_db()
    assert (job.reserved_tokens, job.reserved_call) == (0, "")  # cleared at the end
    assert used(owner.tenant) == _metered(owner.tenant) > 0


def test_a_batch_row_reserved_after_its_job_was_cancelled_calls_nothing(owner, sent, monkeypatch):
    """The cancel lands between the job's checkpoint and its row's reservation: the row's
    note writes nothing, the reservation is given back, and the runner stops."""
    from playground.workflows import JobContext

    job = _batch(owner, [{"question": "a"}, {"question": "b"}])
    real_note = JobContext.note

    def note_after_a_cancel(context, request_id, amount):
        WorkflowJob.objects.filter(pk=context.job.pk).update(status=JobStatus.CANCELLED)
        return real_note(context, request_id, amount)

    monkeypatch.setattr(JobContext, "note", note_after_a_cancel)

    assert workflow_job_execute(job_id=job.pk) is None

    [call] = GatewayCall.objects.filter(tenant=owner.tenant)
    assert call.status == "cancelled" and call.total_tokens == 0
    assert used(owner.tenant) == 0
    job.refresh_from_db()
    assert job.reserved_tokens == 0 and job.status == JobStatus.CANCELLED


ODD_ORCHESTRATE = [
    {"custom_phases": [1, 2]},
    {"custom_phases": [{"a": 1}]},
    {"custom_phases": [None]},
    {"custom_phases": [["x"]]},
    {"custom_phases": "abc"},
    {"custom_phases": ["a"] * 21},
    {"custom_phases": ["é"]},
    {"settings": []},
    {"settings": "x"},
    {"settings": {"ai_model": 5}},
    {"settings": {"ai_model": ["gpt-4"]}},
    {"settings": {"ai_model": {"a": 1}}},
    {"settings": {"max_tokens": "12"}},
    {"settings": {"max_tokens": 1.5}},
    {"settings": {"max_tokens": 10**30}},
    {"settings": {"temperature": "hot"}},
    {"settings": {"integration_enabled": "yes"}},
    {"settings": {"unknown": 1}},
    {"settings": None},
    {"topic": "a\x00b"},
    {"topic": 5},
    {"topic": "x" * 6000},
    {"template_id": "not-a-uuid"},
    {"template_id": 5},
    {"integration_enabled": "true"},
    {"project_id": "00000000-0000-0000-0000-000000000000"},
]


@pytest.mark.parametrize("body", ODD_ORCHESTRATE, ids=range(len(ODD_ORCHESTRATE)))
def test_odd_orchestrate_bodies_are_refused_never_500(owner, sent, body):
    project = ProjectFactory(tenant=owner.tenant, topic="t")
    response = owner.client.post(
        "/api/v1/orchestrate/", {"project_id": str(project.pk), **body}, format="json"
    )
    assert response.status_code < 500


ODD_WORKFLOW = [
    ("template_batch", {"template_id": "T", "rows": [{"question": "a\u0000b"}]}),
    ("template_batch", {"template_id": "T", "rows": [{"question": 1e400}]}),
    ("template_batch", {"template_id": "T", "rows": [{"question": {"deep": [1, 2]}}]}),
    ("template_batch", {"template_id": "T", "rows": [{"question": ["a"]}]}),
    ("template_batch", {"template_id": "T", "rows": [{"question": True}]}),
    ("template_batch", {"template_id": "T", "rows": [{"question": "x" * 2_000_000}]}),
    ("template_batch", {"template_id": {"a": 1}, "rows": [{"question": "a"}]}),
    ("template_batch", {"template_id": "T", "rows": [{"question": "a"}], "version": 10**30}),
    ("template_batch", {"template_id": "T", "rows": [{"question": "a"}], "version": "1"}),
    ("template_batch", {"template_id": "T", "rows": [{"\u0000": "a"}]}),
    ("template_batch", {"template_id": "T", "rows": {"question": "a"}}),
    ("usage_report", {"start": "2025-01-01", "end": "9999-12-31"}),
    ("usage_report", {"start": "0001-01-01", "end": "0001-01-01"}),
    ("usage_report", {"start": 5, "end": []}),
    ("usage_report", {"start": "2025-01-01", "end": "2025-01-01", "x": 1}),
    ("audit_export", {"from_seq": 10**30}),
    ("audit_export", {"from_seq": 1, "to_seq": 2**63}),
    ("audit_export", {"from_seq": 1.0}),
    ("audit_export", {"\u0000": 1}),
]


@pytest.mark.parametrize("workflow_type,input_data", ODD_WORKFLOW, ids=range(len(ODD_WORKFLOW)))
def test_odd_workflow_bodies_are_refused_never_500(
    owner, sent, workflow_type, input_data, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
    template = PromptTemplateFactory(tenant=owner.tenant)
    if input_data.get("template_id") == "T":
        input_data = {**input_data, "template_id": str(template.pk)}
    import json

    body = json.dumps({"workflow_type": workflow_type, "input_data": input_data})
    response = owner.client.post("/api/v1/workflows/execute", body, content_type="application/json")
    assert response.status_code < 500
    if response.status_code == 201:
        job_id = response.json()["job_id"]
        # The job ends, whatever its input: never an exception, never left running.
        assert workflow_job_execute(job_id=job_id) in (JobStatus.COMPLETED, JobStatus.FAILED)
        job = WorkflowJob.objects.get(pk=job_id)
        assert job.status != JobStatus.RUNNING


def test_a_usage_report_job_is_not_found_without_analytics_read(owner, make_caller, sent):
    from playground.services.workflows import workflow_execute

    from .factories import GatewayCallFactory

    GatewayCallFactory(tenant=owner.tenant, total_tokens=1234, cost_micros=999)
    job = workflow_execute(
        tenant=owner.tenant,
        actor=owner.user,
        actor_permissions=frozenset({"playground.execute", "analytics.read"}),
        workflow_type="usage_report",
        input_data={"start": "2000-01-01", "end": "2000-12-31"},
    )
    WorkflowJob.objects.filter(pk=job.pk).update(
        input_data={"start": "2026-01-01", "end": "2026-12-31"}
    )
    assert workflow_job_execute(job_id=job.pk) == JobStatus.COMPLETED
    artifact_id = WorkflowJob.objects.get(pk=job.pk).output_data["artifact_id"]
    # A member whose analytics.read was taken away: the job (its totals) and its file are
    # not found; the owner sees both.
    member = make_caller(
        Role.MEMBER, tenant=owner.tenant, permissions={"analytics": {"read": False}}
    )
    assert member.client.get(f"/api/v1/workflows/{job.pk}/").status_code == 404
    assert member.client.get(f"/api/v1/artifacts/{artifact_id}/").status_code == 404
    assert str(job.pk) not in member.client.get("/api/v1/workflows/").content.decode()
    assert "by_model" in owner.client.get(f"/api/v1/workflows/{job.pk}/").json()["output_data"]


def test_run_artifacts_stay_visible_when_workflow_types_are_hidden(owner, make_caller, sent):
    from .factories import ArtifactFactory

    viewer = make_caller(Role.VIEWER, tenant=owner.tenant)
    run = OrchestrationRunFactory(project=ProjectFactory(tenant=owner.tenant))
    artifact = ArtifactFactory(tenant=owner.tenant, run=run)
    ids = {row["id"] for row in viewer.client.get("/api/v1/artifacts/").json()["results"]}
    assert str(artifact.pk) in ids


def test_a_resumed_run_of_a_suspended_organization_gives_the_dead_calls_reservation_back(
    owner, sent
):
    run = dead_worker_mid_call(owner)
    assert used(owner.tenant) > 0
    Tenant.objects.filter(pk=owner.tenant.pk).update(status="suspended")
    assert orchestration_run_execute(run_id=run.pk) == JobStatus.FAILED
    assert used(owner.tenant) == 0, used(owner.tenant)


def test_a_deactivated_model_fails_the_run(owner, sent):
    from playground.models import LanguageModel

    project = ProjectFactory(tenant=owner.tenant, topic="t")
    run = orchestration_start(
        tenant=owner.tenant,
        actor=owner.user,
        project_id=project.pk,
        custom_phases=["ideation", "design"],
    )
    LanguageModel.objects.filter(name=run.ai_model).update(active=False)
    assert orchestration_run_execute(run_id=run.pk) == JobStatus.FAILED
    run.refresh_from_db()
    assert [p.status for p in phases_of(run)] == ["failed", "skipped"], [
        (p.status, p.error) for p in phases_of(run)
    ]


def test_deleting_an_organization_removes_its_artifact_files(
    owner, django_capture_on_commit_callbacks
):
    from django.core.files.storage import storages

    from playground.services.artifacts import artifact_write
    from tenants.services.lifecycle import tenant_delete

    artifact = artifact_write(
        tenant=owner.tenant,
        name="audit.jsonl",
        content=b"secret chain\n",
        content_type="application/x-ndjson",
    )
    name = artifact.file.name
    assert storages["artifacts"].exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_delete(tenant=Tenant.objects.get(pk=owner.tenant.pk), actor=owner.user)
    assert not Artifact.objects.filter(pk=artifact.pk).exists()
    assert not storages["artifacts"].exists(name), f"{name} is still on disk"


def test_a_cancel_between_phases_is_seen_before_the_next_call(owner, sent, monkeypatch):
    run = started_run(owner, topic="t")
    build = runs._phase_messages

    def cancel_before_the_second(run_, phase, done, model):
        # Phase 0 is recorded and phase 1 claimed (in the same statement); now the member
        # cancels, before phase 1's call is reserved.
        if phase.position == 1:
            runs.orchestration_run_cancel(run=run_, actor=owner.user)
        return build(run_, phase, done, model)

    monkeypatch.setattr(runs, "_phase_messages", cancel_before_the_second)

    assert orchestration_run_execute(run_id=run.pk) is None

    assert [p.status for p in phases_of(run)] == ["completed", "cancelled", "cancelled"]
    calls = list(GatewayCall.objects.filter(tenant=owner.tenant).order_by("created_at"))
    assert [c.status for c in calls] == ["succeeded", "cancelled"]
    assert calls[1].total_tokens == 0
    assert used(owner.tenant) == calls[0].total_tokens


def test_a_worker_waits_out_the_tokens_per_minute_window_then_gives_up(monkeypatch):
    from config.exceptions import RateLimitExceeded

    slept = []
    monkeypatch.setattr(jobs.time, "sleep", slept.append)
    answers = iter(
        [RateLimitExceeded("Full.", wait=5), RateLimitExceeded("Full.", wait=90), "answered"]
    )

    def call():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert jobs.waiting_out_throttles(call) == "answered"
    assert slept == [5, jobs.THROTTLE_WAIT_MAX_SECONDS]

    slept.clear()
    attempts = []

    def always_refused():
        attempts.append(1)
        raise RateLimitExceeded("Full.", wait=1)

    with pytest.raises(RateLimitExceeded):
        jobs.waiting_out_throttles(always_refused)
    assert len(attempts) == jobs.THROTTLE_RETRIES + 1
    assert slept == [1] * jobs.THROTTLE_RETRIES

    # A call larger than the whole window is refused at once: no wait would let it through.
    slept.clear()
    attempts.clear()

    def too_large():
        attempts.append(1)
        raise RateLimitExceeded("Larger than the window.", wait=30, retryable=False)

    with pytest.raises(RateLimitExceeded):
        jobs.waiting_out_throttles(too_large)
    assert attempts == [1] and slept == []


def test_a_claims_writes_land_on_its_run_while_it_holds_it_and_no_other(owner, sent):
    """Claim.rows() (the writes' condition) and Claim.update select the claimed run, by the id
    as the task gives it, and no other; nothing once its token or status moved on."""
    project = ProjectFactory(tenant=owner.tenant, topic="t")
    run = orchestration_start(tenant=owner.tenant, actor=owner.user, project_id=project.pk)
    other = orchestration_start(tenant=owner.tenant, actor=owner.user, project_id=project.pk)
    held = jobs.claim(OrchestrationRun, str(run.pk))  # as the task gives it
    jobs.claim(OrchestrationRun, other.pk)

    def holds(job) -> bool:
        selected = held.rows().filter(pk=job.pk).exists()
        if job.pk == run.pk:
            assert bool(held.update(error="")) is selected  # the write agrees with the rows
        return selected

    assert holds(run)
    assert not holds(other)

    OrchestrationRun.objects.filter(pk=run.pk).update(lease_token=uuid.uuid4())
    assert not holds(run)
    OrchestrationRun.objects.filter(pk=run.pk).update(
        lease_token=held.token, status=JobStatus.CANCELLED
    )
    assert not holds(run)


def test_a_retry_takes_its_earlier_attempts_claim_over_once_and_no_other(owner, sent):
    """A task's retry after an outage (playground.tasks) names the claims of the attempts
    before it: it takes the job over while their lease is live, without counting an attempt;
    a second delivery of the same retry, or a claim naming someone else's token, gets
    nothing; and the earlier attempt's writes no longer land."""
    project = ProjectFactory(tenant=owner.tenant, topic="t")
    run = orchestration_start(tenant=owner.tenant, actor=owner.user, project_id=project.pk)
    stopped = jobs.claim(OrchestrationRun, run.pk)

    assert jobs.claim(OrchestrationRun, run.pk) is None  # a live lease
    assert jobs.claim(OrchestrationRun, run.pk, taking_over=[uuid.uuid4()]) is None
    retry = jobs.claim(OrchestrationRun, run.pk, taking_over=[uuid.uuid4(), stopped.token])
    assert retry is not None and retry.token != stopped.token
    assert OrchestrationRun.objects.get(pk=run.pk).attempts == 1
    assert jobs.claim(OrchestrationRun, run.pk, taking_over=[stopped.token]) is None  # twice
    assert not jobs.renew(stopped)
    assert jobs.renew(retry)

    jobs.release(retry, status=JobStatus.COMPLETED)
    assert jobs.claim(OrchestrationRun, run.pk, taking_over=[retry.token]) is None  # ended


def _job_state(job, token, started_before) -> dict:
    """What a claim or a held write leaves on a job, the same whichever statement wrote it
    (its start kept as it was, or set then)."""
    job.refresh_from_db()
    started = job.started_at
    return {
        "status": job.status,
        "attempts": job.attempts,
        "ours": job.lease_token == token,
        "leased": job.lease_expires_at is not None,
        "started_at": "kept" if started == started_before else "set" if started else None,
        "error": job.error,
        "execution_time_ms": job.execution_time_ms,
    }


@pytest.mark.parametrize(
    "before",
    [
        {},
        {"status": JobStatus.RUNNING, "lease": -1, "attempts": 1, "started": -60},
        {"status": JobStatus.RUNNING, "lease": 60, "attempts": 1, "started": -60},
        {"status": JobStatus.PENDING, "attempts": 3},
        {"status": JobStatus.COMPLETED, "attempts": 1, "started": -60},
        {"status": JobStatus.CANCELLED},
        # Held by an earlier attempt of the claiming task (its retry after an outage).
        {"status": JobStatus.RUNNING, "lease": 60, "attempts": 1, "started": -60, "own": True},
        {"status": JobStatus.RUNNING, "lease": 60, "attempts": 3, "started": -60, "own": True},
        {"status": JobStatus.CANCELLED, "lease": 60, "attempts": 1, "own": True},
    ],
    ids=[
        "pending",
        "lease-expired",
        "lease-live",
        "out-of-attempts",
        "completed",
        "cancelled",
        "own-lease",
        "own-lease-last-attempt",
        "own-lease-cancelled",
    ],
)
def test_the_job_engines_statements_write_what_the_orms_updates_write(owner, sent, before):
    """A claim, a held write and a phase's first claim are prepared statements on PostgreSQL
    (elsewhere the ORM's updates): on twin jobs, each leaves what the ORM's update leaves."""
    project = ProjectFactory(tenant=owner.tenant, topic="t")
    now = timezone.now()
    lease = now + timedelta(seconds=before["lease"]) if "lease" in before else None
    started = now + timedelta(seconds=before["started"]) if "started" in before else None
    earlier_attempt = uuid.uuid4()
    taking_over = [uuid.uuid4(), earlier_attempt] if before.get("own") else [uuid.uuid4()]
    twins = []
    for _ in range(2):
        run = orchestration_start(tenant=owner.tenant, actor=owner.user, project_id=project.pk)
        OrchestrationRun.objects.filter(pk=run.pk).update(
            status=before.get("status", JobStatus.PENDING),
            attempts=before.get("attempts", 0),
            lease_token=(earlier_attempt if before.get("own") else uuid.uuid4()) if lease else None,
            lease_expires_at=lease,
            started_at=started,
        )
        twins.append(run)
    prepared, orm = twins

    # The claim: jobs.claim (prepared on PostgreSQL) against the ORM's update.
    held = jobs.claim(OrchestrationRun, str(prepared.pk), taking_over=taking_over)  # as a task
    orm_token = uuid.uuid4()
    orm_taken = jobs._take(OrchestrationRun, orm.pk, orm_token, timezone.now(), taking_over)
    assert (held is not None) == bool(orm_taken)
    token = held.token if held else uuid.uuid4()
    assert _job_state(prepared, token, started) == _job_state(orm, orm_token, started)
    orm_held = jobs.Claim(OrchestrationRun, orm.pk, orm_token)
    held = held or jobs.Claim(OrchestrationRun, prepared.pk, token)

    # The first phase's claim, under the run's claim.
    first, orm_first = phases_of(prepared)[0], phases_of(orm)[0]
    phase_token = uuid.uuid4()
    claimed = runs._claim_pending(held, first.pk, phase_token)
    orm_claimed = runs._claim_pending_rows(orm_held, orm_first.pk).update(
        **runs._claimed(phase_token, timezone.now())
    )
    assert claimed == bool(orm_claimed)
    first.refresh_from_db()
    orm_first.refresh_from_db()
    assert (first.status, first.claim, first.attempts) == (
        orm_first.status,
        orm_first.claim,
        orm_first.attempts,
    )

    # A held write (the end's release): only while the job is ours.
    written = jobs.release(held, status=JobStatus.FAILED, error="x" * 600, started_at=now)
    orm_written = orm_held.rows().update(
        status=JobStatus.FAILED, error="x" * 500, **jobs._ended(now, timezone.now())
    )
    assert bool(written) == bool(orm_written)
    assert _job_state(prepared, token, started) == {
        **_job_state(orm, orm_token, started),
        "execution_time_ms": prepared.execution_time_ms,  # measured apart
    }


def test_a_held_write_of_json_and_of_a_relation_lands_as_the_orms(owner, sent):
    """Claim.update writes a JSON value through the prepared statement, and hands an
    expression or a relation to the ORM: each as the ORM writes it."""
    job = WorkflowJob.objects.create(
        tenant=owner.tenant, workflow_type="usage_report", input_data={}, created_by=owner.user
    )
    held = jobs.claim(WorkflowJob, job.pk)
    output = {"rows": 3, "nested": {"ok": True, "text": "é \u2028"}, "list": [1, None]}
    assert held.update(output_data=output, progress_done=2) == 1
    assert held.update(progress_done=F("progress_done") + 1, created_by=None) == 1
    job.refresh_from_db()
    assert (job.output_data, job.progress_done, job.created_by) == (output, 3, None)

    stale = jobs.Claim(WorkflowJob, job.pk, uuid.uuid4())
    assert stale.update(progress_done=9) == 0
    assert not jobs.renew(stale)
    job.refresh_from_db()
    assert job.progress_done == 3
