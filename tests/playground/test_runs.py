"""Orchestration runs end to end.

- POST orchestrate: the seven default phases, custom phases, templates (their settings
  overlaid by the body's, their use counted, private ones kept to their creator), the
  refusals (another tenant's project, an archived one, no topic, bad settings, roles), and the
  task queued on commit at the project's priority.
- Execution, by the service the Celery task calls (`orchestration_run_execute`): each phase
  one gateway call metered like chat/completions, prompts built on the earlier outputs,
  Markdown artifacts counted against the storage quota, upstream failures (FakeUpstream), an
  exhausted tokens quota.
- Cancellation: pending, finished (409), and while a phase is in flight.
- Idempotent claims and crash recovery by the reaper (no worker runs: the task's
  `apply_async` is replaced by a recorder wherever a send would happen).
- The read endpoints, a project's recent runs, deleting a project with its runs.
- Two workers racing for one run (PostgreSQL, real transactions).
"""

import threading
import time
import uuid
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.files.storage import storages
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from playground import jobs
from playground.models import (
    Artifact,
    CallStatus,
    GatewayCall,
    IntegrationOperation,
    JobStatus,
    LanguageModel,
    OrchestrationPhase,
    OrchestrationRun,
    OrchestrationTemplate,
    PhaseStatus,
    Project,
    WorkflowJob,
)
from playground.services import gateway, runs
from playground.services.reaper import stalled_jobs_reap
from playground.services.runs import (
    SYSTEM_PROMPT,
    orchestration_run_cancel,
    orchestration_run_execute,
    orchestration_start,
)
from playground.tasks import execute_orchestration_run
from tenants.models import Role, Tenant
from tenants.plans import MIB
from tenants.services.quotas import quota_consume, quota_states
from tests.conftest import assert_envelope, rows_read

from .factories import (
    LanguageModelFactory,
    OrchestrationRunFactory,
    OrchestrationTemplateFactory,
    ProjectFactory,
    ProviderFactory,
)
from .upstream import Delay, FakeUpstream, Reply, Status

pytestmark = pytest.mark.django_db

ORCHESTRATE = "/api/v1/orchestrate/"
RUNS = "/api/v1/orchestration/"
ARTIFACTS = "/api/v1/artifacts/"
PROJECTS = "/api/v1/projects/"
DEFAULT_PHASES = [
    "ideation",
    "research",
    "design",
    "implementation",
    "testing",
    "documentation",
    "review",
]
TOPIC = "Build a scalable e-commerce platform"


# Helpers ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_gateway(settings):
    """Retries without waiting, and no cooldown in the way of the phases after a failure."""
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0.01
    settings.GATEWAY_RETRY_AFTER_MAX_SECONDS = 0.05
    settings.GATEWAY_COOLDOWN_FAILURES = 100


@pytest.fixture
def sent(monkeypatch):
    """The run tasks sent to the broker, as (args, kwargs) of `apply_async` (nothing is sent)."""
    calls = []
    monkeypatch.setattr(
        execute_orchestration_run,
        "apply_async",
        lambda *args, **kwargs: calls.append((args, kwargs)),
    )
    return calls


@pytest.fixture
def upstream():
    with FakeUpstream(reply="Upstream says hello.", chunks=4) as server:
        yield server


@pytest.fixture
def project(owner):
    return ProjectFactory(tenant=owner.tenant, topic=TOPIC)


def openai_model(upstream, *, max_retries=0, timeout_seconds=60, **fields):
    """A catalogue model served by the FakeUpstream (OpenAI's wire format)."""
    provider = ProviderFactory(
        kind="openai",
        base_url=upstream.url + "/v1",
        api_key_env="",
        max_retries=max_retries,
        timeout_seconds=timeout_seconds,
    )
    return LanguageModelFactory(provider=provider, **fields)


def post_orchestrate(caller, project, **body):
    return caller.client.post(ORCHESTRATE, {"project_id": str(project.pk), **body}, format="json")


def start_run(caller, project, **fields) -> OrchestrationRun:
    """A run started through the service the API calls (queued on a commit that never comes)."""
    return orchestration_start(
        tenant=caller.tenant, actor=caller.user, project_id=project.pk, **fields
    )


def phases_of(run) -> list[OrchestrationPhase]:
    return list(OrchestrationPhase.objects.filter(run_id=run.pk).order_by("position"))


def statuses(run) -> list[str]:
    return [phase.status for phase in phases_of(run)]


def used(tenant, resource="tokens") -> int:
    return quota_states(Tenant.objects.get(pk=tenant.pk))[resource].current


def limit(tenant, **tenant_settings) -> None:
    """Set the tenant's own limits (`maxTokensPerMonth`, `maxStorageMB`, ...)."""
    Tenant.objects.filter(pk=tenant.pk).update(settings=tenant_settings)
    tenant.refresh_from_db()


def events(tenant, event_type):
    return AuditEvent.objects.filter(tenant=tenant, event_type=event_type)


def calls_of(run):
    return GatewayCall.objects.filter(request_id__startswith=f"run:{run.pk}:")


def user_prompt(request) -> str:
    messages = request["json"]["messages"]
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    return messages[1]["content"]


def snapshot(run) -> dict:
    """What a run, its phases, its calls and its events hold, to compare before and after."""
    run = OrchestrationRun.objects.get(pk=run.pk)
    return {
        "run": (run.status, run.attempts, run.completed_phases, run.failed_phases, run.error),
        "phases": [(p.status, p.attempts, p.claim, p.total_tokens) for p in phases_of(run)],
        "calls": calls_of(run).count(),
        "events": AuditEvent.objects.filter(tenant_id=run.tenant_id).count(),
    }


def abandoned_run(tenant, *, attempts=1, lease_expires_at=None) -> OrchestrationRun:
    """A run "claimed" by a worker that died in its second phase: phase 0 completed, phase 1
    running under an old claim, phase 2 pending, the lease expired a minute ago (unless
    given)."""
    run = OrchestrationRunFactory(
        project=ProjectFactory(tenant=tenant),
        total_phases=3,
        phases=["ideation", "design", "review"],
    )
    now = timezone.now()
    OrchestrationRun.objects.filter(pk=run.pk).update(
        status=JobStatus.RUNNING,
        attempts=attempts,
        lease_token=uuid.uuid4(),
        lease_expires_at=lease_expires_at or now - timedelta(minutes=1),
        queued_at=now - timedelta(minutes=12),
        started_at=now - timedelta(minutes=11),
        completed_phases=1,
    )
    first, second, _ = phases_of(run)
    OrchestrationPhase.objects.filter(pk=first.pk).update(
        status=PhaseStatus.COMPLETED,
        claim=uuid.uuid4(),
        attempts=1,
        response_text="What the dead worker's first phase wrote.",
        completed_at=now - timedelta(minutes=10),
    )
    OrchestrationPhase.objects.filter(pk=second.pk).update(
        status=PhaseStatus.RUNNING,
        claim=uuid.uuid4(),
        attempts=1,
        started_at=now - timedelta(minutes=10),
    )
    run.refresh_from_db()
    return run


# 1. Starting a run ------------------------------------------------------------------------------


def test_orchestrate_creates_a_pending_run_of_the_seven_default_phases(owner, project, sent):
    before = timezone.now()

    response = post_orchestrate(owner, project)

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"run_id", "status", "message", "estimated_completion", "phases"}
    assert body["status"] == "started"
    assert body["message"] == "Orchestration started successfully"
    assert [p["code"] for p in body["phases"]] == [f"Phase {n}" for n in range(7)]
    assert [p["name"] for p in body["phases"]] == [name.title() for name in DEFAULT_PHASES]
    assert {p["status"] for p in body["phases"]} == {"pending"}
    # No phase has run yet for this tenant and model: 30 seconds each.
    assert {p["estimated_duration"] for p in body["phases"]} == {"30 seconds"}
    eta = datetime.fromisoformat(body["estimated_completion"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=210) <= eta <= timezone.now() + timedelta(seconds=210)

    run = OrchestrationRun.objects.get(pk=body["run_id"])
    assert run.tenant_id == owner.tenant.pk and run.project_id == project.pk
    assert run.status == JobStatus.PENDING and run.attempts == 0
    assert run.topic == TOPIC
    assert (run.ai_model, run.max_tokens, run.temperature) == ("gpt-3.5-turbo", 1024, None)
    assert run.total_phases == 7 and run.completed_phases == run.failed_phases == 0
    assert run.priority == jobs.PROJECT_PRIORITY["medium"] == 5
    assert run.integration_enabled is False
    assert run.created_by_id == owner.user.pk
    assert run.template_id is None
    assert [p.name for p in phases_of(run)] == DEFAULT_PHASES
    assert set(statuses(run)) == {PhaseStatus.PENDING}
    started = events(owner.tenant, "orchestration.started").get()
    assert started.actor_id == owner.user.pk
    assert started.payload["run_id"] == str(run.pk)
    assert started.payload["phases"] == DEFAULT_PHASES
    assert started.payload["status"] == "pending"
    assert sent == []  # queued on commit only (never, inside this test's transaction)
    assert not GatewayCall.objects.exists()


def test_custom_phases_and_the_bodys_topic_replace_the_defaults(owner, project):
    response = post_orchestrate(
        owner,
        project,
        topic="  A CLI for invoices  ",
        custom_phases=["research", "api_design", "Load Testing"],
        integration_enabled=True,
        settings={"ai_model": "gpt-4", "max_tokens": 300, "temperature": 0.5},
    )

    assert response.status_code == 201, response.content
    names = [p["name"] for p in response.json()["phases"]]
    assert names == ["Research", "Api design", "Load Testing"]
    run = OrchestrationRun.objects.get(pk=response.json()["run_id"])
    assert run.topic == "A CLI for invoices"
    assert [p.name for p in phases_of(run)] == ["research", "api_design", "Load Testing"]
    assert run.total_phases == 3
    assert (run.ai_model, run.max_tokens, run.temperature) == ("gpt-4", 300, 0.5)
    assert run.integration_enabled is True
    assert Project.objects.get(pk=project.pk).topic == TOPIC  # the project keeps its own


def test_a_template_gives_phases_and_settings_the_body_overrides_and_counts_the_use(owner, project):
    template = OrchestrationTemplateFactory(
        tenant=owner.tenant,
        template_data={
            "phases": ["research", "design", "testing"],
            "integrations": ["file_system", "github"],
            "settings": {"ai_model": "gpt-4", "max_tokens": 2000, "temperature": 0.7},
        },
    )

    response = post_orchestrate(
        owner, project, template_id=str(template.pk), settings={"temperature": 0.2}
    )

    assert response.status_code == 201, response.content
    assert [p["name"] for p in response.json()["phases"]] == ["Research", "Design", "Testing"]
    run = OrchestrationRun.objects.get(pk=response.json()["run_id"])
    assert run.template_id == template.pk
    assert (run.ai_model, run.max_tokens, run.temperature) == ("gpt-4", 2000, 0.2)
    # The template lists file_system, and neither the body nor the settings say otherwise.
    assert run.integration_enabled is True
    template.refresh_from_db()
    assert template.usage_count == 1
    payload = events(owner.tenant, "orchestration.started").get().payload
    assert payload["template_id"] == str(template.pk)
    assert payload["ai_model"] == "gpt-4"

    again = post_orchestrate(owner, project, template_id=str(template.pk), custom_phases=["x"])
    assert again.status_code == 201, again.content
    again_run = OrchestrationRun.objects.get(pk=again.json()["run_id"])
    assert [p.name for p in phases_of(again_run)] == ["x"]  # custom phases win
    template.refresh_from_db()
    assert template.usage_count == 2


def test_a_private_template_is_for_its_creator_only(make_caller):
    author = make_caller(Role.MEMBER)
    colleague = make_caller(Role.ADMIN, tenant=author.tenant)
    project = ProjectFactory(tenant=author.tenant)
    private = OrchestrationTemplateFactory(
        tenant=author.tenant, is_public=False, created_by=author.user
    )

    refused = post_orchestrate(colleague, project, template_id=str(private.pk))

    error = assert_envelope(refused, 400, "VALIDATION_ERROR")
    assert "template_id" in error["details"]
    assert not OrchestrationRun.objects.exists()
    assert not OrchestrationPhase.objects.exists()
    assert not events(author.tenant, "orchestration.started").exists()
    assert OrchestrationTemplate.objects.get(pk=private.pk).usage_count == 0

    accepted = post_orchestrate(author, project, template_id=str(private.pk))
    assert accepted.status_code == 201, accepted.content
    assert OrchestrationTemplate.objects.get(pk=private.pk).usage_count == 1


def test_a_template_of_another_tenant_is_refused(owner, project, make_caller):
    elsewhere = OrchestrationTemplateFactory(tenant=make_caller().tenant, is_public=True)

    error = assert_envelope(
        post_orchestrate(owner, project, template_id=str(elsewhere.pk)), 400, "VALIDATION_ERROR"
    )

    assert "template_id" in error["details"]
    assert not OrchestrationRun.objects.exists()
    assert OrchestrationTemplate.objects.get(pk=elsewhere.pk).usage_count == 0


def test_a_project_of_another_tenant_is_refused(owner, make_caller):
    theirs = ProjectFactory(tenant=make_caller().tenant)

    error = assert_envelope(post_orchestrate(owner, theirs), 400, "VALIDATION_ERROR")

    assert "project_id" in error["details"]
    assert not OrchestrationRun.objects.exists()
    assert not AuditEvent.objects.filter(event_type="orchestration.started").exists()


def test_an_archived_project_does_not_run(owner):
    archived = ProjectFactory(tenant=owner.tenant, status="archived")

    error = assert_envelope(post_orchestrate(owner, archived), 409, "CONFLICT")

    assert error["details"] == {"project_id": str(archived.pk), "status": "archived"}
    assert not OrchestrationRun.objects.exists()


def test_a_topic_comes_from_the_body_or_the_project(owner):
    untitled = ProjectFactory(tenant=owner.tenant, topic="")

    error = assert_envelope(post_orchestrate(owner, untitled), 400, "VALIDATION_ERROR")
    assert "topic" in error["details"]
    assert_envelope(post_orchestrate(owner, untitled, topic="   "), 400, "VALIDATION_ERROR")
    assert not OrchestrationRun.objects.exists()

    response = post_orchestrate(owner, untitled, topic="Given in the body")
    assert response.status_code == 201, response.content
    assert OrchestrationRun.objects.get().topic == "Given in the body"


@pytest.mark.parametrize(
    "run_settings",
    [
        {"ai_model": "no-such-model"},
        {"ai_model": "gpt-3.5-turbo", "max_tokens": 4097},  # the model answers at most 4096
        {"temperature": 3},
        {"max_tokens": 0},
        {"ai_model": "gpt-4", "sudo": True},
    ],
    ids=[
        "unknown model",
        "max_tokens over the model's",
        "temperature 3",
        "max_tokens 0",
        "unknown key",
    ],
)
def test_bad_settings_are_refused_and_create_nothing(owner, project, run_settings):
    response = post_orchestrate(owner, project, settings=run_settings)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert any(key.startswith("settings") for key in error["details"]), error
    assert not OrchestrationRun.objects.exists()
    assert not events(owner.tenant, "orchestration.started").exists()


@pytest.mark.parametrize("given_by", ["body", "template"])
def test_max_tokens_over_the_default_models_limit_is_refused(owner, project, given_by):
    default = LanguageModel.objects.get(name=django_settings.GATEWAY_DEFAULT_MODEL)
    over = {"max_tokens": default.max_output_tokens + 1}
    if given_by == "body":
        response = post_orchestrate(owner, project, settings=over)
    else:
        template = OrchestrationTemplateFactory(
            tenant=owner.tenant,
            template_data={"phases": ["design"], "integrations": [], "settings": over},
        )
        response = post_orchestrate(owner, project, template_id=str(template.pk))

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "settings" in error["details"]
    assert not OrchestrationRun.objects.exists()


def test_a_runs_model_is_read_once_and_its_limit_caps_the_default_max_tokens(owner, project):
    small = LanguageModel.objects.get(name=django_settings.GATEWAY_DEFAULT_MODEL)
    LanguageModel.objects.filter(pk=small.pk).update(max_output_tokens=100)

    with CaptureQueriesContext(connection) as queries:
        run = start_run(owner, project)

    model_reads = [
        q["sql"] for q in queries.captured_queries if "playground_languagemodel" in q["sql"]
    ]
    assert len(model_reads) == 1, model_reads
    assert run.ai_model == small.name
    assert run.max_tokens == 100


@pytest.mark.parametrize(
    "phases",
    [[], ["design", "Design"], ["ok", "<script>"], [f"p{n}" for n in range(21)]],
    ids=["none", "twice", "bad name", "21 phases"],
)
def test_bad_custom_phases_are_refused_and_create_nothing(owner, project, phases):
    error = assert_envelope(
        post_orchestrate(owner, project, custom_phases=phases), 400, "VALIDATION_ERROR"
    )

    assert "custom_phases" in error["details"]
    assert not OrchestrationRun.objects.exists()


def test_viewers_and_anonymous_callers_cannot_start_a_run(owner, project, make_caller):
    viewer = make_caller(Role.VIEWER, tenant=owner.tenant)

    assert_envelope(post_orchestrate(viewer, project), 403)
    anonymous = APIClient().post(ORCHESTRATE, {"project_id": str(project.pk)}, format="json")
    assert_envelope(anonymous, 401)

    assert not OrchestrationRun.objects.exists()
    assert viewer.client.get(RUNS).status_code == 200  # reading is theirs


@pytest.mark.parametrize(("priority", "job_priority"), [("low", 2), ("high", 8), ("urgent", 10)])
def test_the_task_is_queued_on_commit_at_the_projects_priority(
    owner, sent, django_capture_on_commit_callbacks, priority, job_priority
):
    project = ProjectFactory(tenant=owner.tenant, priority=priority)

    with django_capture_on_commit_callbacks() as callbacks:
        response = post_orchestrate(owner, project)

    assert response.status_code == 201, response.content
    run = OrchestrationRun.objects.get(pk=response.json()["run_id"])
    assert run.priority == job_priority
    assert sent == [] and run.queued_at is None  # nothing before the commit
    for callback in callbacks:
        callback()
    assert sent == [((), {"args": [str(run.pk)], "priority": jobs.celery_priority(job_priority)})]
    assert jobs.celery_priority(job_priority) == 10 - job_priority
    run.refresh_from_db()
    assert run.queued_at is not None
    assert run.status == JobStatus.PENDING  # a worker claims it, not the send


# 2. Execution -----------------------------------------------------------------------------------


def test_executing_a_run_completes_every_phase_metered_like_chat_completions(owner, project):
    response = post_orchestrate(owner, project)
    run_id = response.json()["run_id"]

    assert orchestration_run_execute(run_id=run_id) == JobStatus.COMPLETED

    run = OrchestrationRun.objects.get(pk=run_id)
    phases = phases_of(run)
    assert [p.status for p in phases] == [PhaseStatus.COMPLETED] * 7
    for phase in phases:
        call = phase.gateway_call
        assert call is not None, phase.name
        assert call.source == "orchestration"
        assert call.request_id.startswith(f"run:{run.pk}:phase:{phase.pk}:")
        assert call.tenant_id == owner.tenant.pk and call.user_id == owner.user.pk
        assert call.status == CallStatus.SUCCEEDED
        assert call.model == call.requested_model == "gpt-3.5-turbo"
        usage = (phase.prompt_tokens, phase.completion_tokens, phase.total_tokens)
        assert usage == (call.prompt_tokens, call.completion_tokens, call.total_tokens)
        assert phase.total_tokens > 0
        assert phase.cost_micros == call.cost_micros
        assert phase.response_text.startswith("[local:gpt-3.5-turbo]")
        assert phase.attempts == 1 and phase.claim is not None and phase.error == ""
        assert phase.started_at <= phase.completed_at
    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 7
    assert used(owner.tenant) == sum(p.total_tokens for p in phases)
    assert run.status == JobStatus.COMPLETED
    assert (run.completed_phases, run.failed_phases, run.success_rate) == (7, 0, 100.0)
    assert run.attempts == 1 and run.error == ""
    assert run.lease_token is None and run.lease_expires_at is None
    elapsed = (run.completed_at - run.started_at).total_seconds() * 1000
    assert run.execution_time_ms > 0 and abs(run.execution_time_ms - elapsed) <= 1
    assert events(owner.tenant, "orchestration.started").count() == 1
    completed = events(owner.tenant, "orchestration.completed").get()
    assert completed.payload["run_id"] == run_id
    assert completed.payload["status"] == "completed"
    assert completed.payload["completed_phases"] == 7
    assert completed.payload["success_rate"] == 100.0
    assert completed.payload["execution_time_ms"] == run.execution_time_ms


def test_each_prompt_carries_the_topic_and_the_earlier_outputs(owner, project, upstream):
    model = openai_model(upstream)
    upstream.script(Reply("ALPHA ideas output"), Reply("BETA design output"))
    run = start_run(
        owner,
        project,
        custom_phases=["ideation", "design", "review"],
        run_settings={"ai_model": model.name, "max_tokens": 200},
    )

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.COMPLETED

    first, second, third = (user_prompt(request) for request in upstream.requests)
    assert first.startswith("Phase 1 of 3: ideation.\n")
    assert f"Topic: {TOPIC}" in first and "Previous phases" not in first
    assert second.startswith("Phase 2 of 3: design.\n")
    assert "\n\nPrevious phases:\n\n## ideation\nALPHA ideas output" in second
    assert "## ideation\nALPHA ideas output\n\n## design\nBETA design output" in third
    assert f"Topic: {TOPIC}" in third
    assert {request["json"]["max_tokens"] for request in upstream.requests} == {200}
    assert {request["json"]["model"] for request in upstream.requests} == {model.upstream_model}
    texts = [p.response_text for p in phases_of(run)]
    assert texts == ["ALPHA ideas output", "BETA design output", "Upstream says hello."]


def _loaded(instance) -> dict:
    """An instance's fields and the related instances it carries, as plain dicts."""
    cached = instance._state.fields_cache
    return {
        "fields": instance.__dict__ | {"_state": None},
        "related": {name: _loaded(other) for name, other in cached.items() if other is not None},
        "db": instance._state.db,
        "adding": instance._state.adding,
    }


def test_the_workers_compiled_reads_build_what_the_orm_builds(owner, project):
    """The run with its organization and creator and its phases in order are compiled once
    and prepared (config.prepared): the instances are the ORM's."""
    run = start_run(owner, project)
    other = start_run(owner, project)

    [compiled] = runs._run_with_owner(run.pk)
    orm = OrchestrationRun.objects.select_related("tenant", "created_by").get(pk=run.pk)
    assert _loaded(compiled) == _loaded(orm)
    assert set(compiled._state.fields_cache) == {"tenant", "created_by"}

    phases = runs._phases_in_order(run.pk)
    orm_phases = OrchestrationPhase.objects.filter(run_id=run.pk).order_by("position")
    assert [_loaded(p) for p in phases] == [_loaded(p) for p in orm_phases]
    assert [p.position for p in phases] == list(range(7))
    assert {p.pk for p in runs._phases_in_order(other.pk)}.isdisjoint({p.pk for p in phases})

    assert runs._run_with_owner(uuid.uuid4()) == []


@pytest.mark.parametrize(
    "model, renewed",
    [
        (OrchestrationRun, {"completed_phases", "failed_phases", "lease_expires_at", "updated_at"}),
        (WorkflowJob, {"progress_done", "lease_expires_at", "updated_at"}),
    ],
)
def test_a_lease_renewal_changes_no_indexed_column(model, renewed):
    """What a phase's end writes on its run (and a batch's checkpoint on its job) is in no
    index, so PostgreSQL updates the row in place (a HOT update) instead of adding an entry to
    each of the table's indexes, at every phase."""
    columns = {model._meta.get_field(name).column for name in renewed}
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, model._meta.db_table)
    indexed = {
        column
        for index in indexes.values()
        if index["index"] or index["unique"] or index["primary_key"]
        for column in index["columns"] or ()
    }
    assert "status" in indexed  # the introspection sees the indexes
    assert not columns & indexed


def test_a_suspended_organization_fails_its_run_without_calling_the_gateway(owner, project):
    run = start_run(owner, project)
    Tenant.objects.filter(pk=owner.tenant.pk).update(status="suspended")

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.FAILED

    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert run.error == "The organization is suspended."
    assert set(statuses(run)) == {PhaseStatus.SKIPPED}
    assert not GatewayCall.objects.exists()
    assert events(owner.tenant, "orchestration.failed").get().payload["error"] == run.error


def test_a_model_that_left_the_catalogue_fails_the_run(owner, project):
    model = LanguageModelFactory()
    run = start_run(owner, project, custom_phases=["a", "b"], run_settings={"ai_model": model.name})
    model.delete()

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.FAILED

    run.refresh_from_db()
    assert statuses(run) == [PhaseStatus.FAILED, PhaseStatus.SKIPPED]
    assert run.error == f"{model.name} left the catalogue."
    assert run.failed_phases == 1
    assert not GatewayCall.objects.exists()


# 3. Artifacts ----------------------------------------------------------------------------------


def test_integration_writes_one_markdown_artifact_per_phase_counted_in_storage(owner, project):
    run = start_run(owner, project, integration_enabled=True)

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.COMPLETED

    phases = phases_of(run)
    operations = list(IntegrationOperation.objects.filter(run=run).order_by("created_at"))
    assert [op.phase_id for op in operations] == [p.pk for p in phases]
    artifacts = {a.pk: a for a in Artifact.objects.filter(run=run)}
    assert len(artifacts) == 7
    for phase, operation in zip(phases, operations, strict=True):
        name = f"{phase.position:02d}-{phase.name}.md"
        assert operation.operation_type == "file_system"
        assert operation.status == IntegrationOperation.Status.COMPLETED
        artifact = artifacts[operation.artifact_id]
        assert operation.result == {
            "success": True,
            "message": "File created successfully",
            "file": name,
            "artifact_id": str(artifact.pk),
            "size_bytes": artifact.size_bytes,
        }
        content = f"# {phase.display_name}\n\n{phase.response_text}\n".encode()
        assert artifact.name == name
        assert artifact.content_type == "text/markdown; charset=utf-8"
        assert artifact.tenant_id == owner.tenant.pk and artifact.created_by_id == owner.user.pk
        assert artifact.size_bytes == len(content)
        with storages["artifacts"].open(artifact.file.name, "rb") as stored:
            assert stored.read() == content
    assert used(owner.tenant, "storage") == sum(a.size_bytes for a in artifacts.values())


def test_an_artifact_downloads_as_markdown_for_its_tenant_only(owner, project, make_caller):
    run = start_run(owner, project, custom_phases=["design"], integration_enabled=True)
    orchestration_run_execute(run_id=run.pk)
    listed = owner.client.get(ARTIFACTS, {"run_id": str(run.pk)}).json()
    assert listed["count"] == 1
    row = listed["results"][0]
    assert row["download_url"] == f"/api/v1/artifacts/{row['id']}/download"

    response = owner.client.get(row["download_url"])

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="00-design.md"'
    body = b"".join(response.streaming_content)  # consumed: the test client closes the file
    assert body == f"# Design\n\n{phases_of(run)[0].response_text}\n".encode()
    stranger = make_caller()
    assert_envelope(stranger.client.get(row["download_url"]), 404)
    assert_envelope(stranger.client.get(f"{ARTIFACTS}{row['id']}/"), 404)
    assert stranger.client.get(ARTIFACTS).json()["count"] == 0


def test_a_full_storage_quota_fails_the_operation_but_not_the_phase(owner, project):
    limit(owner.tenant, maxStorageMB=1)
    quota_consume(tenant=owner.tenant, resource="storage", amount=MIB - 10)
    run = start_run(owner, project, custom_phases=["ideation", "design"], integration_enabled=True)

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.COMPLETED

    assert statuses(run) == [PhaseStatus.COMPLETED, PhaseStatus.COMPLETED]
    operations = IntegrationOperation.objects.filter(run=run)
    assert operations.count() == 2
    for operation in operations:
        assert operation.status == IntegrationOperation.Status.FAILED
        assert operation.artifact_id is None
        assert operation.result == {
            "success": False,
            "message": "The organization's storage quota is full.",
        }
    assert not Artifact.objects.exists()
    assert used(owner.tenant, "storage") == MIB - 10
    run.refresh_from_db()
    assert (run.completed_phases, run.success_rate) == (2, 100.0)


# 4. Failures -----------------------------------------------------------------------------------


def test_a_phase_whose_upstream_fails_is_failed_and_the_run_goes_on(owner, project, upstream):
    model = openai_model(upstream)
    upstream.script(Reply("FIRST output"), Status(500))
    run = start_run(
        owner,
        project,
        custom_phases=["ideation", "design", "review"],
        run_settings={"ai_model": model.name},
    )

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.COMPLETED

    first, failed, last = phases_of(run)
    assert [first.status, failed.status, last.status] == ["completed", "failed", "completed"]
    assert failed.error == "The AI provider could not answer (server_error)."
    assert failed.response_text == "" and failed.total_tokens == 0
    assert failed.gateway_call.status == CallStatus.FAILED
    assert failed.gateway_call.error_type == "server_error"
    # The failed phase's output is not built on; the completed one's is.
    prompt = user_prompt(upstream.requests[2])
    assert "## ideation\nFIRST output" in prompt and "## design" not in prompt
    run.refresh_from_db()
    assert (run.completed_phases, run.failed_phases) == (2, 1)
    assert run.success_rate == 66.7
    assert run.status == JobStatus.COMPLETED
    assert used(owner.tenant) == first.total_tokens + last.total_tokens
    payload = events(owner.tenant, "orchestration.completed").get().payload
    assert (payload["completed_phases"], payload["failed_phases"]) == (2, 1)
    assert payload["success_rate"] == 66.7


def test_a_run_whose_every_phase_fails_is_failed_with_its_event(owner, project, upstream):
    model = openai_model(upstream)
    upstream.script(Status(500), Status(502), Status(503))
    run = start_run(
        owner,
        project,
        custom_phases=["ideation", "design", "review"],
        run_settings={"ai_model": model.name},
    )

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.FAILED

    assert set(statuses(run)) == {PhaseStatus.FAILED}
    assert len(upstream.requests) == 3
    run.refresh_from_db()
    assert (run.completed_phases, run.failed_phases, run.success_rate) == (0, 3, 0.0)
    assert run.error == "No phase completed."
    assert run.completed_at is not None and run.lease_token is None
    failed = events(owner.tenant, "orchestration.failed").get()
    assert failed.payload["error"] == "No phase completed."
    assert failed.payload["failed_phases"] == 3
    assert not events(owner.tenant, "orchestration.completed").exists()
    assert used(owner.tenant) == 0


def test_an_exhausted_tokens_quota_fails_the_run_and_skips_the_rest(owner, make_caller):
    phases = ["ideation", "design", "testing", "review"]
    # The same run elsewhere tells what each phase uses and reserves (the local provider is
    # deterministic): the quota then takes two phases and refuses the third's reservation.
    other = make_caller()
    probe = start_run(
        other,
        ProjectFactory(tenant=other.tenant, topic=TOPIC),
        custom_phases=phases,
        run_settings={"max_tokens": 100},
    )
    assert orchestration_run_execute(run_id=probe.pk) == JobStatus.COMPLETED
    probe_calls = [p.gateway_call for p in phases_of(probe)]
    allowed = probe_calls[0].total_tokens + probe_calls[1].total_tokens
    limit(owner.tenant, maxTokensPerMonth=allowed + probe_calls[2].reserved_tokens - 1)
    project = ProjectFactory(tenant=owner.tenant, topic=TOPIC)
    run = start_run(owner, project, custom_phases=phases, run_settings={"max_tokens": 100})

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.FAILED

    done_1, done_2, refused, rest = phases_of(run)
    assert [done_1.status, done_2.status] == [PhaseStatus.COMPLETED] * 2
    assert refused.status == PhaseStatus.FAILED and refused.gateway_call is None
    assert "tokens quota is exhausted" in refused.error
    assert rest.status == PhaseStatus.SKIPPED and rest.attempts == 0
    assert calls_of(run).count() == 2
    assert used(owner.tenant) == done_1.total_tokens + done_2.total_tokens == allowed
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert (run.completed_phases, run.failed_phases) == (2, 1)
    assert run.error == refused.error
    assert events(owner.tenant, "orchestration.failed").get().payload["error"] == run.error


# 5. Cancel -------------------------------------------------------------------------------------


def test_cancelling_a_pending_run_cancels_it_and_its_phases(owner, project):
    run = start_run(owner, project)

    response = owner.client.post(f"{RUNS}{run.pk}/cancel")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "message": "Orchestration cancelled successfully",
        "run_id": str(run.pk),
        "status": "cancelled",
    }
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED and run.completed_at is not None
    assert set(statuses(run)) == {PhaseStatus.CANCELLED}
    cancelled = events(owner.tenant, "orchestration.cancelled").get()
    assert cancelled.actor_id == owner.user.pk
    assert cancelled.payload["status"] == "cancelled"
    # A message delivered after the cancel finds nothing to run.
    assert orchestration_run_execute(run_id=run.pk) is None
    assert not GatewayCall.objects.exists()
    assert set(statuses(run)) == {PhaseStatus.CANCELLED}


def test_cancelling_a_finished_run_is_409_and_changes_nothing(owner, project):
    run = start_run(owner, project, custom_phases=["design"])
    orchestration_run_execute(run_id=run.pk)
    before = snapshot(run)

    response = owner.client.post(f"{RUNS}{run.pk}/cancel")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {"run_id": str(run.pk), "status": "completed"}
    assert snapshot(run) == before
    assert not events(owner.tenant, "orchestration.cancelled").exists()


def test_only_members_who_execute_cancel_and_only_their_tenants_runs(owner, project, make_caller):
    run = start_run(owner, project)
    viewer = make_caller(Role.VIEWER, tenant=owner.tenant)

    assert_envelope(viewer.client.post(f"{RUNS}{run.pk}/cancel"), 403)
    assert_envelope(make_caller().client.post(f"{RUNS}{run.pk}/cancel"), 404)

    run.refresh_from_db()
    assert run.status == JobStatus.PENDING
    assert set(statuses(run)) == {PhaseStatus.PENDING}


def cancel_during_second_call(monkeypatch, run, actor) -> list:
    """Have the member cancel `run` while its second phase's gateway call is out (after the
    upstream answered, before the call's settlement records it and the phase's outcome);
    returns the calls' (result, call, error)."""
    real_settle = gateway.gateway_settle
    real_gateway_call = runs.gateway_call_reserved
    settling, answered = [], []

    def settled_after_a_cancel(*, reservation, outcome):
        settling.append(reservation)
        if len(settling) == 2:
            orchestration_run_cancel(run=run, actor=actor)
        return real_settle(reservation=reservation, outcome=outcome)

    def gateway_call_answered(reservation):
        answered.append(real_gateway_call(reservation))
        return answered[-1]

    monkeypatch.setattr(gateway, "gateway_settle", settled_after_a_cancel)
    monkeypatch.setattr(runs, "gateway_call_reserved", gateway_call_answered)
    return answered


def test_a_cancel_during_a_phase_stops_the_worker_before_any_later_phase(
    owner, project, monkeypatch
):
    run = start_run(owner, project, custom_phases=["ideation", "design", "review"])
    answered = cancel_during_second_call(monkeypatch, run, owner.user)

    assert orchestration_run_execute(run_id=run.pk) is None

    done, in_flight, later = phases_of(run)
    assert done.status == PhaseStatus.COMPLETED
    assert in_flight.status == PhaseStatus.CANCELLED
    assert later.status == PhaseStatus.CANCELLED
    assert later.attempts == 0 and later.gateway_call is None and later.total_tokens == 0
    assert len(answered) == 2 and calls_of(run).count() == 2
    # The cancelled phase's call was metered all the same.
    assert used(owner.tenant) == sum(calls_of(run).values_list("total_tokens", flat=True))
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED and run.lease_token is None
    assert (run.completed_phases, run.failed_phases) == (1, 0)
    assert events(owner.tenant, "orchestration.cancelled").count() == 1
    assert not events(owner.tenant, "orchestration.completed").exists()
    assert not events(owner.tenant, "orchestration.failed").exists()


def test_the_phase_in_flight_at_a_cancel_keeps_its_tokens(owner, project, monkeypatch):
    run = start_run(owner, project, custom_phases=["ideation", "design", "review"])
    answered = cancel_during_second_call(monkeypatch, run, owner.user)

    assert orchestration_run_execute(run_id=run.pk) is None

    result, call, _ = answered[1]
    in_flight = phases_of(run)[1]
    assert in_flight.status == PhaseStatus.CANCELLED
    assert in_flight.gateway_call_id == call.pk
    usage = (in_flight.prompt_tokens, in_flight.completion_tokens, in_flight.total_tokens)
    assert usage == (call.prompt_tokens, call.completion_tokens, call.total_tokens)
    assert in_flight.total_tokens > 0 and in_flight.cost_micros == call.cost_micros
    assert in_flight.response_text == result.content
    assert in_flight.completed_at is not None
    assert used(owner.tenant) == sum(p.total_tokens for p in phases_of(run))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_cancel_through_the_api_stops_a_worker_waiting_on_its_upstream(owner, sent, upstream):
    model = openai_model(upstream, timeout_seconds=30)
    upstream.script(Reply("first phase done"), Delay(1.5))
    run = start_run(
        owner,
        ProjectFactory(tenant=owner.tenant),
        custom_phases=["ideation", "design", "review"],
        run_settings={"ai_model": model.name},
    )
    outcome = {}

    def worker():
        try:
            outcome["status"] = orchestration_run_execute(run_id=run.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 10
    while len(upstream.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(upstream.requests) == 2, "the second phase never reached the upstream"

    response = owner.client.post(f"{RUNS}{run.pk}/cancel")
    thread.join(timeout=15)

    assert response.status_code == 200, response.content
    assert not thread.is_alive()
    assert outcome == {"status": None}
    done, in_flight, later = phases_of(run)
    assert done.status == PhaseStatus.COMPLETED
    assert in_flight.status == PhaseStatus.CANCELLED
    assert later.status == PhaseStatus.CANCELLED and later.gateway_call is None
    assert len(upstream.requests) == 2  # the last phase never went out
    in_flight_call = calls_of(run).exclude(pk=done.gateway_call_id).get()
    assert in_flight_call.status == CallStatus.SUCCEEDED and in_flight_call.total_tokens > 0
    assert used(owner.tenant) == done.total_tokens + in_flight_call.total_tokens
    assert OrchestrationRun.objects.get(pk=run.pk).status == JobStatus.CANCELLED


# 6. Claims and crash recovery -------------------------------------------------------------------


def test_executing_a_run_twice_does_nothing_the_second_time(owner, project):
    run = start_run(owner, project, custom_phases=["ideation", "design"])
    assert orchestration_run_execute(run_id=run.pk) == JobStatus.COMPLETED
    before = snapshot(run)
    tokens_before = used(owner.tenant)

    assert orchestration_run_execute(run_id=run.pk) is None

    assert snapshot(run) == before
    assert used(owner.tenant) == tokens_before


def test_the_reaper_requeues_a_run_whose_worker_died_and_it_resumes(owner, sent):
    run = abandoned_run(owner.tenant)
    first, second, _ = phases_of(run)

    reaped = stalled_jobs_reap()

    assert (reaped["runs"].requeued, reaped["runs"].failed) == (1, 0)
    assert sent == [((), {"args": [str(run.pk)], "priority": jobs.celery_priority(run.priority)})]
    run.refresh_from_db()
    assert run.status == JobStatus.RUNNING and run.queued_at > run.lease_expires_at
    # Sent again already: the next sweep leaves it to the message on its way.
    assert stalled_jobs_reap()["runs"].requeued == 0 and len(sent) == 1

    assert orchestration_run_execute(run_id=run.pk) == JobStatus.COMPLETED

    resumed_first, resumed_second, resumed_third = phases_of(run)
    assert (resumed_first.status, resumed_first.attempts) == (PhaseStatus.COMPLETED, 1)
    assert resumed_first.response_text == first.response_text  # not run again
    assert resumed_first.gateway_call is None and resumed_first.claim == first.claim
    assert (resumed_second.status, resumed_second.attempts) == (PhaseStatus.COMPLETED, 2)
    assert resumed_second.claim != second.claim
    assert (resumed_third.status, resumed_third.attempts) == (PhaseStatus.COMPLETED, 1)
    assert calls_of(run).count() == 2  # the re-run phase and the last one, once each
    run.refresh_from_db()
    assert run.attempts == 2
    assert (run.completed_phases, run.failed_phases, run.success_rate) == (3, 0, 100.0)
    # The worker's counters, which the event reports, start from the row's (a phase of the
    # first attempt counted) and move with it.
    completed = events(owner.tenant, "orchestration.completed").get()
    assert (completed.payload["completed_phases"], completed.payload["failed_phases"]) == (3, 0)


def test_a_run_out_of_attempts_is_failed_by_the_reaper_with_its_event(owner, sent, settings):
    run = abandoned_run(owner.tenant, attempts=settings.JOBS_MAX_ATTEMPTS)

    reaped = stalled_jobs_reap()

    assert (reaped["runs"].requeued, reaped["runs"].failed) == (0, 1)
    assert sent == []
    run.refresh_from_db()
    reason = f"The worker running it stopped {settings.JOBS_MAX_ATTEMPTS} times; gave up."
    assert run.status == JobStatus.FAILED and run.error == reason
    assert run.lease_token is None and run.completed_at is not None
    assert statuses(run) == [PhaseStatus.COMPLETED, PhaseStatus.FAILED, PhaseStatus.SKIPPED]
    assert {p.error for p in phases_of(run)[1:]} == {reason}
    assert (run.completed_phases, run.failed_phases) == (1, 1)
    failed = events(owner.tenant, "orchestration.failed").get()
    assert failed.payload["error"] == reason and failed.payload["status"] == "failed"
    # Out of attempts, a late message runs nothing either.
    assert orchestration_run_execute(run_id=run.pk) is None
    assert not GatewayCall.objects.exists()


def test_a_run_under_a_live_lease_is_left_alone(owner, sent):
    run = abandoned_run(owner.tenant, lease_expires_at=timezone.now() + timedelta(minutes=5))
    before = snapshot(run)

    reaped = stalled_jobs_reap()

    assert (reaped["runs"].requeued, reaped["runs"].failed) == (0, 0)
    assert sent == []
    assert snapshot(run) == before
    assert orchestration_run_execute(run_id=run.pk) is None  # its worker is alive
    assert snapshot(run) == before


def test_a_stalled_run_cancelled_by_a_member_is_not_the_reapers(owner, sent):
    run = abandoned_run(owner.tenant)

    response = owner.client.post(f"{RUNS}{run.pk}/cancel")

    assert response.status_code == 200, response.content
    assert statuses(run) == [PhaseStatus.COMPLETED, PhaseStatus.CANCELLED, PhaseStatus.CANCELLED]
    reaped = stalled_jobs_reap()
    assert (reaped["runs"].requeued, reaped["runs"].failed) == (0, 0)
    assert sent == []
    assert orchestration_run_execute(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED and run.lease_token is None
    assert not events(owner.tenant, "orchestration.failed").exists()
    assert not GatewayCall.objects.exists()


def test_a_pending_run_whose_message_was_lost_is_sent_again(owner, sent, settings):
    lost = OrchestrationRunFactory(project=ProjectFactory(tenant=owner.tenant))
    fresh = OrchestrationRunFactory(project=ProjectFactory(tenant=owner.tenant))
    long_ago = timezone.now() - timedelta(seconds=settings.JOBS_REQUEUE_AFTER_SECONDS + 60)
    OrchestrationRun.objects.filter(pk=lost.pk).update(queued_at=long_ago)
    OrchestrationRun.objects.filter(pk=fresh.pk).update(queued_at=timezone.now())

    reaped = stalled_jobs_reap()

    assert reaped["runs"].requeued == 1
    assert [kwargs["args"] for _, kwargs in sent] == [[str(lost.pk)]]
    lost.refresh_from_db()
    assert lost.status == JobStatus.PENDING and lost.queued_at > long_ago


def test_the_reap_stalled_runs_command_prints_what_it_did(owner, sent, settings):
    abandoned_run(owner.tenant)
    abandoned_run(owner.tenant, attempts=settings.JOBS_MAX_ATTEMPTS)
    out = StringIO()

    call_command("reap_stalled_runs", stdout=out)

    assert out.getvalue().splitlines() == [
        "runs: 1 queued again, 1 failed",
        "workflows: 0 queued again, 0 failed",
    ]
    assert len(sent) == 1
    assert OrchestrationRun.objects.filter(status=JobStatus.FAILED).count() == 1


# 7. Reading runs, projects ----------------------------------------------------------------------


def test_listing_runs_filters_by_project_and_several_statuses_and_paginates(owner, make_caller):
    shop, blog = (ProjectFactory(tenant=owner.tenant) for _ in range(2))
    by_status = {}
    for status in ("pending", "running", "completed", "failed", "cancelled"):
        run = OrchestrationRunFactory(project=shop if status != "failed" else blog)
        OrchestrationRun.objects.filter(pk=run.pk).update(status=status)
        by_status[status] = str(run.pk)
    OrchestrationRunFactory()  # another tenant's

    def ids(**params):
        response = owner.client.get(RUNS, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids() == set(by_status.values())
    assert ids(project_id=str(blog.pk)) == {by_status["failed"]}
    assert ids(status="completed,failed") == {by_status["completed"], by_status["failed"]}
    assert ids(status="completed,failed", project_id=str(shop.pk)) == {by_status["completed"]}
    assert_envelope(owner.client.get(RUNS, {"status": "completed,nope"}), 400, "VALIDATION_ERROR")

    first = owner.client.get(RUNS, {"page_size": 2}).json()
    assert first["count"] == 5 and len(first["results"]) == 2 and first["next"]
    last = owner.client.get(RUNS, {"page_size": 2, "page": 3}).json()
    assert len(last["results"]) == 1 and last["next"] is None
    row = first["results"][0]
    assert set(row) == {
        "id",
        "project",
        "topic",
        "status",
        "total_phases",
        "completed_phases",
        "success_rate",
        "execution_time_ms",
        "created_at",
    }
    assert set(row["project"]) == {"id", "name"}


def test_run_detail_has_the_run_its_phases_and_its_operations(owner, project, make_caller):
    run = start_run(
        owner, project, custom_phases=["ideation", "api_design"], integration_enabled=True
    )
    orchestration_run_execute(run_id=run.pk)

    response = owner.client.get(f"{RUNS}{run.pk}/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"run", "phases", "integration_operations"}
    assert body["run"]["id"] == str(run.pk)
    assert body["run"]["project_id"] == str(project.pk)
    assert body["run"]["status"] == "completed"
    assert body["run"]["success_rate"] == 100.0
    assert body["run"]["settings"] == {
        "ai_model": "gpt-3.5-turbo",
        "max_tokens": 1024,
        "temperature": None,
        "integration_enabled": True,
    }
    phases = phases_of(run)
    assert [p["phase_code"] for p in body["phases"]] == ["Phase 0", "Phase 1"]
    assert [p["phase_name"] for p in body["phases"]] == ["Ideation", "Api design"]
    for shown, phase in zip(body["phases"], phases, strict=True):
        assert shown["id"] == str(phase.pk)
        assert shown["response_text"] == phase.response_text
        assert shown["token_usage"] == {
            "prompt_tokens": phase.prompt_tokens,
            "completion_tokens": phase.completion_tokens,
            "total_tokens": phase.total_tokens,
        }
    operations = body["integration_operations"]
    assert [op["phase_id"] for op in operations] == [str(p.pk) for p in phases]
    assert {op["status"] for op in operations} == {"completed"}
    assert {op["artifact_id"] for op in operations} == {
        str(pk) for pk in Artifact.objects.filter(run=run).values_list("pk", flat=True)
    }
    assert_envelope(make_caller().client.get(f"{RUNS}{run.pk}/"), 404)


def test_a_project_shows_its_five_most_recent_runs_newest_first(owner, project):
    now = timezone.now()
    made = []
    for age in (6, 1, 4, 2, 5, 3):
        run = OrchestrationRunFactory(project=project)
        OrchestrationRun.objects.filter(pk=run.pk).update(created_at=now - timedelta(hours=age))
        made.append((age, str(run.pk)))
    OrchestrationRunFactory(project=ProjectFactory(tenant=owner.tenant))  # another project's

    response = owner.client.get(f"{PROJECTS}{project.pk}/")

    assert response.status_code == 200, response.content
    recent = response.json()["recent_runs"]
    assert [row["id"] for row in recent] == [pk for _, pk in sorted(made)[:5]]
    assert {row["project"]["id"] for row in recent} == {str(project.pk)}


@pytest.mark.postgres
def test_a_projects_recent_runs_are_read_from_the_index_not_all_of_its_runs(owner, project):
    """Named by project alone, the runs' index on (tenant, project, -created_at) was no use, and
    a project with many runs had them all read and sorted for its five newest."""
    for _ in range(12):
        OrchestrationRunFactory(project=project)

    with CaptureQueriesContext(connection) as captured:
        response = owner.client.get(f"{PROJECTS}{project.pk}/")

    assert response.status_code == 200, response.content
    table = OrchestrationRun._meta.db_table
    [statement] = [
        query["sql"]
        for query in captured.captured_queries
        if f'FROM "{table}"' in query["sql"] and " LIMIT " in query["sql"]
    ]
    assert rows_read(statement, table) == len(response.json()["recent_runs"]) == 5


def test_deleting_a_project_with_a_run_in_progress_is_409_and_deletes_nothing(owner, project):
    finished = start_run(owner, project, custom_phases=["design"], integration_enabled=True)
    orchestration_run_execute(run_id=finished.pk)
    running = OrchestrationRunFactory(project=project)
    OrchestrationRun.objects.filter(pk=running.pk).update(status=JobStatus.RUNNING)
    storage = used(owner.tenant, "storage")

    response = owner.client.delete(f"{PROJECTS}{project.pk}/")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {"run_ids": [str(running.pk)]}
    assert Project.objects.filter(pk=project.pk).exists()
    assert OrchestrationRun.objects.filter(project=project).count() == 2
    assert Artifact.objects.filter(run=finished).count() == 1
    assert used(owner.tenant, "storage") == storage > 0
    assert not events(owner.tenant, "project.deleted").exists()


def test_deleting_a_project_removes_its_runs_and_artifacts_and_frees_storage(
    owner, project, django_capture_on_commit_callbacks
):
    kept = start_run(
        owner,
        ProjectFactory(tenant=owner.tenant),
        custom_phases=["review"],
        integration_enabled=True,
    )
    orchestration_run_execute(run_id=kept.pk)
    kept_bytes = used(owner.tenant, "storage")
    doomed = start_run(
        owner, project, custom_phases=["ideation", "design"], integration_enabled=True
    )
    orchestration_run_execute(run_id=doomed.pk)
    cancelled = start_run(owner, project)
    orchestration_run_cancel(run=cancelled, actor=owner.user)
    files = list(Artifact.objects.filter(run=doomed).values_list("file", flat=True))
    assert len(files) == 2 and all(storages["artifacts"].exists(name) for name in files)
    assert used(owner.tenant, "storage") > kept_bytes

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.delete(f"{PROJECTS}{project.pk}/")

    assert response.status_code == 204, response.content
    assert not Project.objects.filter(pk=project.pk).exists()
    assert not OrchestrationRun.objects.filter(pk__in=[doomed.pk, cancelled.pk]).exists()
    assert not OrchestrationPhase.objects.filter(run_id__in=[doomed.pk, cancelled.pk]).exists()
    assert not IntegrationOperation.objects.filter(run_id=doomed.pk).exists()
    assert not Artifact.objects.filter(run_id=doomed.pk).exists()
    assert not any(storages["artifacts"].exists(name) for name in files)
    assert used(owner.tenant, "storage") == kept_bytes
    assert Artifact.objects.filter(run=kept).count() == 1  # another project's stays
    assert events(owner.tenant, "project.deleted").count() == 1
    # The calls were metered and stay: the quota and the invoice are about them.
    assert GatewayCall.objects.filter(request_id__startswith=f"run:{doomed.pk}:").count() == 2


# 8. Concurrency --------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_run_execute_it_once():
    run = OrchestrationRunFactory(total_phases=3, phases=["ideation", "design", "review"])
    barrier = threading.Barrier(2)
    results = []

    def worker():
        try:
            barrier.wait()
            results.append(orchestration_run_execute(run_id=run.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 2
    assert results.count(JobStatus.COMPLETED) == 1 and results.count(None) == 1
    phases = phases_of(run)
    assert [(p.status, p.attempts) for p in phases] == [(PhaseStatus.COMPLETED, 1)] * 3
    assert calls_of(run).count() == 3
    assert {p.gateway_call_id for p in phases} == set(calls_of(run).values_list("pk", flat=True))
    run.refresh_from_db()
    assert run.attempts == 1 and run.completed_phases == 3
    assert events(run.tenant, "orchestration.completed").count() == 1
    assert used(run.tenant) == sum(p.total_tokens for p in phases)
