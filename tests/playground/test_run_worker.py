"""Orchestration runs and workflow jobs on real Celery workers consuming from Redis.

- The life cycle in production shape: the API call's commit queues the run on the broker at
  the project's priority, a real worker (in this process, `start_worker`) runs its phases, the
  API shows the result, the quota counts exactly what the gateway recorded.
- Cancelling a run while its worker waits for the upstream: the worker stops after that call
  and calls nothing more; the call is metered and the cancelled phase keeps its usage.
- The crash: a worker in its own process (prefork, as deployed) is SIGKILLed in the middle of
  a phase's upstream call; its lease expires, the reaper queues the run again, a second worker
  resumes it at the killed phase: every phase completed once, one gateway call recorded each,
  and the killed call's quota reservation, never settled, is given back.
- The reaper giving up on a run out of attempts, and Redis message priorities.

The slow upstream is FakeUpstream (tests/playground/upstream.py), a real HTTP server on
127.0.0.1 that the subprocess worker reaches too. Every test purges the broker's queue first
(other tests' leftover messages would be run by these workers).
"""

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from audit.models import AuditEvent
from config.celery import app
from playground import jobs
from playground.models import (
    Artifact,
    CallSource,
    GatewayCall,
    GatewayReservation,
    IntegrationOperation,
    JobStatus,
    OrchestrationPhase,
    OrchestrationRun,
    PhaseStatus,
    WorkflowJob,
)
from playground.services.reaper import stalled_jobs_reap
from playground.services.runs import orchestration_run_execute
from playground.tasks import execute_orchestration_run, execute_workflow_job
from tenants.models import QuotaCounter, Role
from tests.test_dependency_outages import CuttableLink

from .factories import (
    LanguageModelFactory,
    OrchestrationRunFactory,
    ProjectFactory,
    ProviderFactory,
    WorkflowJobFactory,
)
from .upstream import FakeUpstream

REPO = Path(__file__).resolve().parents[2]
SETTINGS_MODULE = "config.settings.test"
DEFAULT_PHASES = 7
# Seconds the slow upstream waits before each answer: long enough to act while a phase's
# call is in flight (cancel it, kill its worker), short enough for a quick test.
SLOW_CALL_SECONDS = 1.5
# The subprocess worker's lease: its run is reapable this soon after the worker dies. Longer
# than a phase (the lease is renewed before each one).
SHORT_LEASE_SECONDS = 3
WORKER_START_SECONDS = 60
RUN_DEADLINE_SECONDS = 60
POLL_SECONDS = 0.05


# --- Helpers -----------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, *, timeout: float, details=None) -> None:
    """Poll `condition` until it holds; fail naming `what`, with `details()` (state, logs)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(POLL_SECONDS)


@functools.cache
def broker() -> redis.Redis:
    """A client of the broker's Redis database (one per test process)."""
    return redis.Redis.from_url(app.conf.broker_url)


def purge_broker() -> None:
    """Empty the default queue (every priority list) so no stale message reaches our workers."""
    app.control.purge()


def queue_keys() -> list[str]:
    """The default queue's Redis lists, highest priority first: `celery`, `celery:1`, ..."""
    options = app.conf.broker_transport_options
    queue, sep = app.conf.task_default_queue, options.get("sep", ":")
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in options["priority_steps"]]


def queued() -> list[tuple[str, str, str]]:
    """The messages waiting on the broker: (Redis list, task name, argsrepr), oldest first."""
    client = broker()
    found = []
    for key in queue_keys():
        for raw in reversed(client.lrange(key, 0, -1)):  # LPUSH to the head, BRPOP from the tail
            headers = json.loads(raw)["headers"]
            found.append((key, headers["task"], headers["argsrepr"]))
    return found


def unacked_mentioning(text: str) -> list[bytes]:
    """Delivery tags of unacknowledged messages (kombu's `unacked` hash) naming `text`."""
    return [tag for tag, payload in broker().hgetall("unacked").items() if text.encode() in payload]


def forget_unacked(text: str) -> None:
    """Drop the unacknowledged messages naming `text` (a killed worker's): left there, Redis
    would hand them to some worker after the visibility timeout (an hour)."""
    client = broker()
    for tag in unacked_mentioning(text):
        client.hdel("unacked", tag)
        client.zrem("unacked_index", tag)


def slow_model(upstream: FakeUpstream):
    """A catalogue model served by `upstream` (OpenAI's wire format), no retries."""
    provider = ProviderFactory(
        kind="openai", base_url=upstream.url + "/v1", max_retries=0, timeout_seconds=30
    )
    return LanguageModelFactory(provider=provider)


def start_run(caller, project, **body) -> str:
    response = caller.client.post(
        "/api/v1/orchestrate/", {"project_id": str(project.pk), **body}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "started"
    return response.json()["run_id"]


def phase_at(run_id, position: int) -> OrchestrationPhase:
    return OrchestrationPhase.objects.get(run_id=run_id, position=position)


def run_state(run_id) -> str:
    """The run and its phases, for failure messages."""
    run = OrchestrationRun.objects.filter(pk=run_id).first()
    if run is None:
        return f"run {run_id}: gone"
    lines = [
        f"run {run.pk}: {run.status}, attempts {run.attempts}, lease {run.lease_token} until "
        f"{run.lease_expires_at}, completed {run.completed_phases}, failed {run.failed_phases}, "
        f"error {run.error!r}"
    ]
    lines += [
        f"  phase {p.position} {p.name}: {p.status}, attempts {p.attempts}, "
        f"call {p.gateway_call_id}, tokens {p.total_tokens}, error {p.error!r}"
        for p in run.phases.order_by("position")
    ]
    return "\n".join(lines)


def tokens_on_quota(tenant) -> int:
    row = QuotaCounter.objects.filter(tenant=tenant, resource="tokens").first()
    return row.used if row else 0


def tokens_recorded(tenant) -> int:
    return GatewayCall.objects.filter(tenant=tenant).aggregate(s=Sum("total_tokens"))["s"] or 0


def events(tenant, prefix: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(tenant=tenant, event_type__startswith=prefix)
        .order_by("created_at")
        .values_list("event_type", flat=True)
    )


@contextlib.contextmanager
def task_results():
    """What the in-process worker's tasks returned: (task name, args, return value), in the
    order they ended (Celery's task_postrun, sent in the worker's thread)."""
    results = []

    def record(sender=None, args=None, retval=None, **kwargs):
        results.append((sender.name, list(args or ()), retval))

    task_postrun.connect(record, weak=False)
    try:
        yield results
    finally:
        task_postrun.disconnect(record)


def in_process_worker():
    """A worker in this process (solo pool, one task at a time) on the test's database."""
    return start_worker(app, perform_ping_check=False, shutdown_timeout=30)


class SubprocessWorker:
    """`celery -A config worker` (prefork, one child) in its own process group, on the test
    database, the same Redis and artifacts folder, with `env` on top (e.g. a short lease)."""

    def __init__(self, log_path: Path, **env: str):
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        test_database = connection.settings_dict["NAME"]
        database_url = urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{test_database}")
        environment = {
            **os.environ,
            "DATABASE_URL": database_url.geturl(),
            "REDIS_URL": os.environ.get("REDIS_URL", ""),
            # Not settings.SETTINGS_MODULE: None under the session's override_settings.
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE),
            "ARTIFACTS_ROOT": str(settings.STORAGES["artifacts"]["OPTIONS"]["location"]),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        if os.environ.get("PYTEST_XDIST_WORKER"):  # the same cache database as this process
            environment["PYTEST_XDIST_WORKER"] = os.environ["PYTEST_XDIST_WORKER"]
        return environment

    def start(self) -> "SubprocessWorker":
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--loglevel=INFO",
            "--concurrency=1",
            "--pool=prefork",
            f"--hostname=test-run-worker-{uuid.uuid4().hex[:8]}@%h",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                command,
                cwd=REPO,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the pool's child goes with it
            )
        return self

    def log(self, last: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "--- worker log (last lines) ---\n" + "\n".join(text.splitlines()[-last:])

    def assert_running(self) -> None:
        assert self.process is not None and self.process.poll() is None, (
            f"the worker exited ({self.process and self.process.returncode})\n{self.log()}"
        )

    def kill(self) -> None:
        """SIGKILL the whole process group: no warm shutdown, no ack, no settlement."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left; safe to call twice."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=15)
            os.killpg(self.process.pid, signal.SIGKILL)  # the pool's child, if it lingers
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


# --- 1. Life cycle -----------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_a_run_is_queued_by_its_commit_and_run_by_a_real_worker(transactional_db, make_caller):
    assert app.conf.broker_url.startswith("redis://"), app.conf.broker_url
    member = make_caller(Role.MEMBER)
    project = ProjectFactory(tenant=member.tenant, topic="A REST API for users", priority="high")
    purge_broker()

    run_id = start_run(member, project, integration_enabled=True)

    # The commit sent the task at the project's priority (high: 8, Celery's 10 - 8 = 2).
    run = OrchestrationRun.objects.get(pk=run_id)
    assert (run.status, run.priority, run.attempts) == (JobStatus.PENDING, 8, 0)
    assert run.queued_at is not None
    assert queued() == [("celery:2", execute_orchestration_run.name, repr([run_id]))]

    with in_process_worker():
        wait_for(
            lambda: OrchestrationRun.objects.get(pk=run_id).is_finished,
            "the worker to finish the run",
            timeout=RUN_DEADLINE_SECONDS,
            details=lambda: run_state(run_id),
        )
        # What a client sees: the run and its phases, over the API.
        detail = member.client.get(f"/api/v1/orchestration/{run_id}/")

    assert detail.status_code == 200, detail.content
    body = detail.json()
    assert body["run"]["status"] == "completed", run_state(run_id)
    assert body["run"]["completed_phases"] == body["run"]["total_phases"] == DEFAULT_PHASES
    assert body["run"]["success_rate"] == 100.0
    assert body["run"]["attempts"] == 1
    assert [p["phase_code"] for p in body["phases"]] == [f"Phase {n}" for n in range(7)]
    for phase in body["phases"]:
        usage = phase["token_usage"]
        assert phase["status"] == "completed", phase
        assert phase["attempts"] == 1, phase
        assert phase["response_text"], phase
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, phase
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert [op["status"] for op in body["integration_operations"]] == ["completed"] * 7

    # One gateway call per phase, each the phase's; the quota counts exactly what they used.
    phases = list(OrchestrationPhase.objects.filter(run_id=run_id).select_related("gateway_call"))
    calls = GatewayCall.objects.filter(tenant=member.tenant)
    assert calls.count() == DEFAULT_PHASES
    assert {p.gateway_call_id for p in phases} == set(calls.values_list("pk", flat=True))
    for phase in phases:
        call = phase.gateway_call
        assert call.source == CallSource.ORCHESTRATION
        assert call.request_id.startswith(f"run:{run_id}:phase:{phase.pk}:")
        assert call.user_id == member.user.pk
        assert (phase.prompt_tokens, phase.completion_tokens, phase.total_tokens) == (
            call.prompt_tokens,
            call.completion_tokens,
            call.total_tokens,
        )
    assert tokens_on_quota(member.tenant) == tokens_recorded(member.tenant) > 0
    assert events(member.tenant, "orchestration.") == [
        "orchestration.started",
        "orchestration.completed",
    ]
    assert queued() == []


# --- 2. Cancel ---------------------------------------------------------------------------------


def cancel_mid_call(member) -> tuple[str, int, list]:
    """Start a run on the slow upstream with a worker in this process, cancel it over the API
    while phase 1's upstream call is in flight, wait for the worker's task to end. Returns
    the run's id, how many requests the upstream received, and the worker's task results."""
    project = ProjectFactory(tenant=member.tenant)
    purge_broker()
    with (
        FakeUpstream(delay=SLOW_CALL_SECONDS) as upstream,
        task_results() as results,
        in_process_worker(),
    ):
        model = slow_model(upstream)
        run_id = start_run(member, project, settings={"ai_model": model.name, "max_tokens": 64})
        wait_for(
            lambda: (
                phase_at(run_id, 1).status == PhaseStatus.RUNNING and len(upstream.requests) == 2
            ),
            "phase 1's upstream call to be in flight",
            timeout=RUN_DEADLINE_SECONDS,
            details=lambda: run_state(run_id),
        )

        cancelled = member.client.post(f"/api/v1/orchestration/{run_id}/cancel")

        assert cancelled.status_code == 200, cancelled.content
        assert cancelled.json()["status"] == "cancelled"
        assert GatewayCall.objects.count() == 1, "phase 1's call returned before the cancel"
        wait_for(
            lambda: bool(results),
            "the worker's task to end",
            timeout=RUN_DEADLINE_SECONDS,
            details=lambda: run_state(run_id),
        )
        time.sleep(0.5)  # a worker that went on would have called the upstream again by now
        return run_id, len(upstream.requests), results


@pytest.mark.postgres
def test_cancelling_a_run_mid_call_stops_its_worker_after_that_call(transactional_db, make_caller):
    member = make_caller(Role.MEMBER)

    run_id, upstream_requests, results = cancel_mid_call(member)

    # The worker saw the cancellation when its call returned and stopped: not its run anymore.
    assert results == [(execute_orchestration_run.name, [run_id], None)]
    assert upstream_requests == 2, "the worker called the upstream after the cancellation"
    run = OrchestrationRun.objects.get(pk=run_id)
    assert run.status == JobStatus.CANCELLED, run_state(run_id)
    assert (run.completed_phases, run.failed_phases) == (1, 0)
    assert run.lease_token is None
    phases = list(OrchestrationPhase.objects.filter(run_id=run_id).order_by("position"))
    assert [p.status for p in phases] == [PhaseStatus.COMPLETED] + [PhaseStatus.CANCELLED] * 6
    assert phases[1].attempts == 1 and phases[1].started_at is not None
    for later in phases[2:]:
        assert later.gateway_call_id is None and later.started_at is None, run_state(run_id)
    # The in-flight call was settled and recorded: one call per phase started, all metered.
    started = [p for p in phases if p.started_at is not None]
    calls = GatewayCall.objects.filter(tenant=member.tenant)
    assert calls.count() == len(started) == 2
    assert all(call.total_tokens > 0 for call in calls)
    assert tokens_on_quota(member.tenant) == tokens_recorded(member.tenant)
    assert events(member.tenant, "orchestration.") == [
        "orchestration.started",
        "orchestration.cancelled",
    ]
    assert AuditEvent.objects.get(event_type="orchestration.cancelled").actor_id == member.user.pk


@pytest.mark.postgres
def test_the_phase_in_flight_when_cancelled_keeps_its_usage(transactional_db, make_caller):
    member = make_caller(Role.MEMBER)

    run_id, _, _ = cancel_mid_call(member)

    in_flight = phase_at(run_id, 1)
    call = GatewayCall.objects.filter(tenant=member.tenant).order_by("created_at").last()
    assert in_flight.status == PhaseStatus.CANCELLED
    assert in_flight.gateway_call_id == call.pk, run_state(run_id)
    assert in_flight.total_tokens == call.total_tokens > 0
    assert in_flight.response_text
    assert in_flight.completed_at is not None


# --- 3. The crash --------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_a_run_whose_worker_is_killed_mid_phase_is_reaped_and_resumed_once(
    transactional_db, make_caller, tmp_path
):
    """A prefork worker is SIGKILLed (its whole process group) while phase 2's upstream call
    is in flight. Observed and asserted:

    - the run stays `running` under the dead worker's lease, phase 2 `running` with no call
      recorded: the call never settled, so no GatewayCall row for it;
    - the message stays unacknowledged in Redis (acks_late): Redis would give it to another
      worker only after its visibility timeout (an hour); the reaper is what resumes the run;
    - before the lease expires the reaper leaves the run alone; after, it queues it again;
    - the second worker skips phases 0 and 1, runs phase 2 again (the same prompt) and the
      rest: 7 phases completed once each, 7 distinct gateway calls, 7 artifacts;
    - the upstream received 8 requests: the killed worker's phase-2 request was received
      and answered into a closed connection, then asked again by the second worker.
    """
    member = make_caller(Role.MEMBER)
    project = ProjectFactory(tenant=member.tenant)
    purge_broker()
    worker = SubprocessWorker(tmp_path / "worker.log", JOBS_LEASE_SECONDS=str(SHORT_LEASE_SECONDS))

    with FakeUpstream(delay=SLOW_CALL_SECONDS) as upstream:
        model = slow_model(upstream)
        run_id = None
        try:
            worker.start()
            run_id = start_run(
                member,
                project,
                integration_enabled=True,
                settings={"ai_model": model.name, "max_tokens": 64},
            )

            def phase_2_in_flight():
                worker.assert_running()
                return (
                    phase_at(run_id, 2).status == PhaseStatus.RUNNING
                    and len(upstream.requests) == 3
                )

            wait_for(
                phase_2_in_flight,
                "phase 2's upstream call to be in flight on the subprocess worker",
                timeout=WORKER_START_SECONDS + RUN_DEADLINE_SECONDS,
                details=lambda: f"{run_state(run_id)}\n{worker.log()}",
            )
            worker.kill()
        finally:
            worker.stop()
        killed_log = worker.log()

        try:
            # The dead worker's state: running under its lease, phase 2 without a call.
            run = OrchestrationRun.objects.get(pk=run_id)
            assert run.status == JobStatus.RUNNING, f"{run_state(run_id)}\n{killed_log}"
            assert run.lease_token is not None and run.lease_expires_at is not None
            assert run.attempts == 1
            before = list(OrchestrationPhase.objects.filter(run_id=run_id).order_by("position"))
            assert [p.status for p in before] == (
                [PhaseStatus.COMPLETED] * 2 + [PhaseStatus.RUNNING] + [PhaseStatus.PENDING] * 4
            ), run_state(run_id)
            assert before[2].attempts == 1 and before[2].gateway_call_id is None
            assert GatewayCall.objects.filter(tenant=member.tenant).count() == 2
            assert unacked_mentioning(run_id), "the killed worker's message was acknowledged"
            assert queued() == []

            # A live lease is left alone (checked only with a clear margin before it expires).
            if (run.lease_expires_at - timezone.now()).total_seconds() > 1:
                assert stalled_jobs_reap()["runs"].requeued == 0
            wait_for(
                lambda: timezone.now() > run.lease_expires_at + timedelta(milliseconds=100),
                "the dead worker's lease to expire",
                timeout=SHORT_LEASE_SECONDS + 5,
            )
            reaped = stalled_jobs_reap()
            assert (reaped["runs"].requeued, reaped["runs"].failed) == (1, 0), run_state(run_id)
            assert queued() == [("celery:5", execute_orchestration_run.name, repr([run_id]))]

            with in_process_worker():
                wait_for(
                    lambda: OrchestrationRun.objects.get(pk=run_id).is_finished,
                    "the second worker to finish the run",
                    timeout=RUN_DEADLINE_SECONDS,
                    details=lambda: run_state(run_id),
                )
        finally:
            forget_unacked(run_id)

    run = OrchestrationRun.objects.get(pk=run_id)
    assert run.status == JobStatus.COMPLETED, run_state(run_id)
    assert run.attempts == 2
    assert (run.completed_phases, run.failed_phases) == (7, 0)
    assert run.lease_token is None
    phases = list(OrchestrationPhase.objects.filter(run_id=run_id).order_by("position"))
    assert [p.status for p in phases] == [PhaseStatus.COMPLETED] * 7, run_state(run_id)
    assert [p.attempts for p in phases] == [1, 1, 2, 1, 1, 1, 1], run_state(run_id)
    assert len({p.pk for p in phases}) == len({p.position for p in phases}) == 7
    # Phases 0 and 1 kept the dead worker's results; no phase completed twice.
    assert [(p.gateway_call_id, p.completed_at) for p in phases[:2]] == [
        (p.gateway_call_id, p.completed_at) for p in before[:2]
    ]
    call_ids = [p.gateway_call_id for p in phases]
    assert None not in call_ids and len(set(call_ids)) == 7
    calls = GatewayCall.objects.filter(tenant=member.tenant)
    assert calls.count() == 7
    assert set(calls.values_list("pk", flat=True)) == set(call_ids)
    for phase in phases:
        assert phase.total_tokens == phase.gateway_call.total_tokens > 0

    # 8 upstream requests: phase 2's twice (the same prompt), every other phase's once.
    requests = upstream.requests
    assert len(requests) == 8, [r["json"]["messages"][-1]["content"][:40] for r in requests]
    prompts = [r["json"]["messages"][-1]["content"] for r in requests]
    assert prompts[2] == prompts[3]
    assert prompts[3].startswith("Phase 3 of 7: design.")
    assert len(set(prompts)) == 7

    # The subprocess worker wrote to the same artifacts folder: one artifact per phase.
    operations = IntegrationOperation.objects.filter(run_id=run_id)
    assert operations.count() == 7
    assert set(operations.values_list("phase__position", flat=True)) == set(range(7))
    artifacts = list(Artifact.objects.filter(run_id=run_id))
    assert len(artifacts) == 7
    assert all(artifact.file.storage.exists(artifact.file.name) for artifact in artifacts)
    assert events(member.tenant, "orchestration.") == [
        "orchestration.started",
        "orchestration.completed",
    ]


@pytest.mark.postgres
@pytest.mark.redis
def test_a_run_whose_worker_loses_the_database_mid_phase_is_taken_back_by_its_retry(
    transactional_db, make_caller, tmp_path
):
    """A prefork worker reaches PostgreSQL through a link the test cuts while phase 1's
    upstream call is in flight, and restores 7 s later (a restart). The call's settlement
    gives up (GATEWAY_SETTLE_RETRY_SECONDS=1), the run stops on the outage, and its task is
    sent again through the broker carrying the stopped attempt's claim token: the retry takes
    the run back at once, inside the run's 10-minute lease and as the same attempt, gives back
    the interrupted call's reservation, and runs that phase again. No reaper runs here."""
    member = make_caller(Role.MEMBER)
    project = ProjectFactory(tenant=member.tenant)
    purge_broker()
    database = connection.settings_dict
    with (
        FakeUpstream(delay=SLOW_CALL_SECONDS) as upstream,
        CuttableLink(database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)) as link,
    ):
        model = slow_model(upstream)
        worker = SubprocessWorker(tmp_path / "worker.log", GATEWAY_SETTLE_RETRY_SECONDS="1")
        url = urlsplit(worker.environment()["DATABASE_URL"])
        user = url.netloc.rpartition("@")[0]
        worker.env["DATABASE_URL"] = url._replace(netloc=f"{user}@127.0.0.1:{link.port}").geturl()
        run_id = None
        try:
            worker.start()
            run_id = start_run(
                member,
                project,
                custom_phases=["ideation", "design", "review"],
                settings={"ai_model": model.name, "max_tokens": 64},
            )
            wait_for(
                lambda: (
                    phase_at(run_id, 1).status == PhaseStatus.RUNNING
                    and len(upstream.requests) == 2
                ),
                "phase 1's upstream call to be in flight on the subprocess worker",
                timeout=WORKER_START_SECONDS + RUN_DEADLINE_SECONDS,
                details=lambda: f"{run_state(run_id)}\n{worker.log()}",
            )
            # Longer than the call's wait (1.5 s) and its settlement's tries (1 s, the last
            # one up to 1 s after it), with 3.5 s to spare: a settlement that landed after the
            # restore would record the phase, and the run would meet no outage. The task's
            # retry comes 5 s after the run stopped; one that comes before the restore meets
            # the outage too and is sent again 10 s later, taking the run back all the same.
            link.cut()
            time.sleep(7)
            link.restore()
            wait_for(
                lambda: OrchestrationRun.objects.get(pk=run_id).is_finished,
                "the worker's retry to finish the run",
                timeout=RUN_DEADLINE_SECONDS,
                details=lambda: f"{run_state(run_id)}\n{worker.log()}",
            )
            log = worker.log(last=400)
        finally:
            worker.stop()
            if run_id is not None:
                forget_unacked(run_id)

    run = OrchestrationRun.objects.get(pk=run_id)
    assert run.status == JobStatus.COMPLETED, f"{run_state(run_id)}\n{log}"
    assert (run.attempts, run.completed_phases, run.failed_phases) == (1, 3, 0)
    phases = list(OrchestrationPhase.objects.filter(run_id=run_id).order_by("position"))
    assert [(p.status, p.attempts) for p in phases] == [
        (PhaseStatus.COMPLETED, 1),
        (PhaseStatus.COMPLETED, 2),
        (PhaseStatus.COMPLETED, 1),
    ], run_state(run_id)
    assert "Retry in 5s" in log, log
    # The interrupted call answered but was never recorded (its settlement gave up), and its
    # reservation was given back: the quota holds the three recorded calls' tokens, exactly.
    assert len(upstream.requests) == 4
    assert GatewayCall.objects.filter(tenant=member.tenant).count() == 3
    assert tokens_on_quota(member.tenant) == tokens_recorded(member.tenant) > 0
    assert not GatewayReservation.objects.filter(tenant=member.tenant).exists()


@pytest.mark.postgres
@pytest.mark.redis
def test_a_killed_workers_reservation_is_not_left_on_the_quota(
    transactional_db, make_caller, tmp_path
):
    member = make_caller(Role.MEMBER)
    project = ProjectFactory(tenant=member.tenant)
    purge_broker()
    worker = SubprocessWorker(tmp_path / "worker.log", JOBS_LEASE_SECONDS=str(SHORT_LEASE_SECONDS))

    with FakeUpstream(delay=SLOW_CALL_SECONDS) as upstream:
        model = slow_model(upstream)
        run_id = None
        try:
            worker.start()
            run_id = start_run(
                member,
                project,
                custom_phases=["design", "review"],
                settings={"ai_model": model.name, "max_tokens": 64},
            )
            wait_for(
                lambda: worker.assert_running() or len(upstream.requests) == 1,
                "phase 0's upstream call to be in flight on the subprocess worker",
                timeout=WORKER_START_SECONDS + RUN_DEADLINE_SECONDS,
                details=lambda: f"{run_state(run_id)}\n{worker.log()}",
            )
            worker.kill()
        finally:
            worker.stop()
        try:
            run = OrchestrationRun.objects.get(pk=run_id)
            assert run.status == JobStatus.RUNNING, f"{run_state(run_id)}\n{worker.log()}"
            wait_for(
                lambda: timezone.now() > run.lease_expires_at + timedelta(milliseconds=100),
                "the dead worker's lease to expire",
                timeout=SHORT_LEASE_SECONDS + 5,
            )
            assert stalled_jobs_reap()["runs"].requeued == 1
            with in_process_worker():
                wait_for(
                    lambda: OrchestrationRun.objects.get(pk=run_id).is_finished,
                    "the second worker to finish the run",
                    timeout=RUN_DEADLINE_SECONDS,
                    details=lambda: run_state(run_id),
                )
        finally:
            forget_unacked(run_id)

    assert OrchestrationRun.objects.get(pk=run_id).status == JobStatus.COMPLETED
    assert GatewayCall.objects.filter(tenant=member.tenant).count() == 2
    assert tokens_on_quota(member.tenant) == tokens_recorded(member.tenant)


# --- 4. The reaper gives up ----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_the_reaper_fails_a_stalled_run_out_of_attempts(transactional_db, make_caller):
    member = make_caller(Role.MEMBER)
    now = timezone.now()
    run = OrchestrationRunFactory(
        project=ProjectFactory(tenant=member.tenant),
        total_phases=4,
        phases=["ideation", "research", "design", "review"],
    )
    OrchestrationRun.objects.filter(pk=run.pk).update(
        status=JobStatus.RUNNING,
        attempts=settings.JOBS_MAX_ATTEMPTS,
        lease_token=uuid.uuid4(),
        lease_expires_at=now - timedelta(seconds=5),
        queued_at=now - timedelta(minutes=5),
        started_at=now - timedelta(minutes=5),
        completed_phases=1,
    )
    OrchestrationPhase.objects.filter(run=run, position=0).update(
        status=PhaseStatus.COMPLETED, attempts=1, response_text="Ideas.", total_tokens=30
    )
    OrchestrationPhase.objects.filter(run=run, position=1).update(
        status=PhaseStatus.RUNNING, attempts=settings.JOBS_MAX_ATTEMPTS, claim=uuid.uuid4()
    )
    purge_broker()

    out = StringIO()
    call_command("reap_stalled_runs", stdout=out)

    assert "runs: 0 queued again, 1 failed" in out.getvalue()
    assert queued() == [], "a run out of attempts was queued again"
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert "gave up" in run.error
    assert run.lease_token is None and run.lease_expires_at is None
    assert run.completed_at is not None
    assert (run.completed_phases, run.failed_phases) == (1, 1)
    phases = list(run.phases.order_by("position"))
    assert [p.status for p in phases] == [
        PhaseStatus.COMPLETED,
        PhaseStatus.FAILED,
        PhaseStatus.SKIPPED,
        PhaseStatus.SKIPPED,
    ]
    assert phases[0].response_text == "Ideas." and phases[0].error == ""
    assert all("gave up" in p.error for p in phases[1:])
    failed = AuditEvent.objects.get(tenant=member.tenant, event_type="orchestration.failed")
    assert failed.payload["run_id"] == str(run.pk)
    assert failed.payload["status"] == "failed"
    assert "gave up" in failed.payload["error"]
    # Done for good: reaped again, nothing; a late delivery of its message, not claimed.
    assert stalled_jobs_reap()["runs"].failed == 0
    assert orchestration_run_execute(run_id=run.pk) is None
    assert events(member.tenant, "orchestration.") == ["orchestration.failed"]


# --- 5. Priorities -------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("where", ["in-process", "subprocess"])
@pytest.mark.redis
def test_a_worker_takes_queued_jobs_highest_priority_first(
    transactional_db, make_caller, tmp_path, where
):
    """Three usage reports queued with priorities 2, 5 and 10 (in that order) while no
    worker runs; one worker, one task at a time, starts them 10, 5, 2. Both in this process
    (solo pool) and as deployed (prefork, its own process)."""
    member = make_caller(Role.OWNER)
    purge_broker()
    with transaction.atomic():
        created = [
            WorkflowJobFactory(tenant=member.tenant, created_by=member.user, priority=priority)
            for priority in (2, 5, 10)
        ]
        for job in created:
            jobs.enqueue(job, execute_workflow_job)

    # Each priority its own Redis list (Celery's 0 highest: 10 - ours).
    assert sorted(queued()) == sorted(
        [
            ("celery", execute_workflow_job.name, repr([str(created[2].pk)])),
            ("celery:5", execute_workflow_job.name, repr([str(created[1].pk)])),
            ("celery:8", execute_workflow_job.name, repr([str(created[0].pk)])),
        ]
    )
    ids = [job.pk for job in created]

    def all_finished():
        # A job's row is complete before Celery acknowledges its message (late acknowledgement):
        # a worker stopped in between puts the message back on its queue. So the worker is
        # stopped only once no message is left unacknowledged.
        finished = WorkflowJob.objects.filter(pk__in=ids, completed_at__isnull=False).count()
        return finished == 3 and not broker().hlen("unacked")

    def state():
        rows = WorkflowJob.objects.filter(pk__in=ids).values_list(
            "priority", "status", "started_at", "error"
        )
        return "\n".join(map(str, rows))

    if where == "in-process":
        with in_process_worker():
            wait_for(all_finished, "the three jobs to finish and be acknowledged",
                     timeout=RUN_DEADLINE_SECONDS, details=state)  # fmt: skip
    else:
        worker = SubprocessWorker(tmp_path / "worker.log")
        try:
            worker.start()
            wait_for(
                lambda: worker.assert_running() or all_finished(),
                "the three jobs to finish and be acknowledged",
                timeout=WORKER_START_SECONDS,
                details=lambda: f"{state()}\n{worker.log()}",
            )
        finally:
            worker.stop()

    started = WorkflowJob.objects.filter(pk__in=ids).order_by("started_at")
    assert list(started.values_list("status", flat=True)) == [JobStatus.COMPLETED] * 3, state()
    assert list(started.values_list("priority", flat=True)) == [10, 5, 2], state()
    assert queued() == []
