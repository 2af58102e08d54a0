"""Orchestration runs executed by real Celery workers, against the same gateway calls made in a
bare loop, in one run.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/orchestration.py \
        [--runs 200] [--rounds 3] [--workers 2]

Set-up: a throw-away database (`test_` + DATABASE_URL's name), migrated; one Celery worker
(`celery -A config worker --concurrency=<workers>`, prefork: `--workers` worker processes)
consuming from Redis, started once; every catalogue model served by the `local` provider.
Each round, for each variant, a fresh organization (enterprise tier, a tokens quota it never
reaches) and a project:

- runs: `--runs` runs of the seven default phases (max_tokens 64) started by
  playground.services.orchestration_start in one transaction; its commit sends the tasks. The
  clock runs from the commit to the last run's end (its completed_at), as the workers execute
  them (claims, leases, phase claims, the gateway call with its reservation and settlement, the
  phase's and the run's rows, the events).
- bare loop: the same gateway calls (playground.services.gateway_call with the same messages,
  built the same way from the topic and the previous outputs), `--runs` x 7 of them, in
  `--workers` processes, and nothing else. The clock runs from the processes' start signal to
  the last call answered; their start and exit are not counted.

A warm-up of a few runs goes first, unmeasured. Rounds alternate which variant goes first.
Prints phases per second of each, the ratio (target: runs >= 0.7x the bare loop), then checks
the accounting: every run completed with its seven phases, and the tokens in the phases, in the
GatewayCall rows, in the organization's tokens counter and in what the provider reported (no
call's usage estimated) are the same sum. Exits 1 otherwise.
"""

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import describe_environment, setup_django

# As deployed (the test settings read the catalogue on every call): this process, the worker
# and the bare loop's processes alike.
os.environ["GATEWAY_CATALOGUE_CACHE_SECONDS"] = "5"
# Its runs start together, far past the bound on one organization's runs in progress.
os.environ["ORCHESTRATION_RUNS_IN_PROGRESS_PER_TENANT"] = "1000000"

REPO = Path(__file__).resolve().parent.parent
TOPIC = "Create a REST API for user management with roles, audit and rate limits"
MAX_TOKENS = 64
WORKER_READY_SECONDS = 60
RUN_DEADLINE_SECONDS = 600


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    teardown = setup_django()
    try:
        from django.db import connection

        if connection.vendor != "postgresql":
            raise SystemExit("bench/orchestration.py needs PostgreSQL: set DATABASE_URL")
        print(f"orchestration: {describe_environment()} runs={args.runs} workers={args.workers}")
        ok = run(args.runs, args.rounds, args.workers)
    finally:
        teardown()
    sys.exit(0 if ok else 1)


# Set-up ---------------------------------------------------------------------------------------


def organization(label: str):
    """A fresh enterprise organization (its own tokens-per-minute window) with an owner and a
    project, its tokens quota out of reach."""
    from django.db import transaction

    from accounts.services import user_create
    from playground.services import project_create
    from tenants.services import tenant_create

    with transaction.atomic():
        owner = user_create(email=f"{label}@bench.example.com", password="bench-pass-1", name=label)
        tenant = tenant_create(
            actor=None,
            owner=owner,
            name=f"Bench {label}",
            slug=f"bench-{label}",
            plan="enterprise",
            settings={"maxTokensPerMonth": 10**12, "maxApiCallsPerMonth": 10**12},
        )
        project = project_create(tenant=tenant, actor=owner, name="Bench", topic=TOPIC)
    return tenant, owner, project


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(workers: int, log_dir: Path) -> subprocess.Popen:
    """The Celery worker on the bench's database, once it answers a ping."""
    from config.celery import app

    app.control.purge()
    env = {**os.environ, "DATABASE_URL": _database_url(), "PYTHONPATH": str(REPO)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    log = (log_dir / "worker.log").open("wb")
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel=WARNING",
         f"--concurrency={workers}", "--pool=prefork", "--without-gossip", "--without-mingle"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + WORKER_READY_SECONDS
    while not app.control.ping(timeout=0.5):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start:\n{(log_dir / 'worker.log').read_text()}")
    return worker


def stop(worker: subprocess.Popen) -> None:
    import signal

    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


# The two variants -----------------------------------------------------------------------------


def runs_variant(runs: int, label: str) -> tuple[float, object]:
    """Seconds from the commit that queues `runs` runs to the last one finished."""
    from django.db import transaction
    from django.db.models import Max
    from django.utils import timezone

    from playground.models import FINISHED_JOB_STATUSES, OrchestrationRun
    from playground.services import orchestration_start

    tenant, owner, project = organization(label)
    with transaction.atomic():
        for _ in range(runs):
            orchestration_start(
                tenant=tenant,
                actor=owner,
                project_id=project.pk,
                run_settings={"max_tokens": MAX_TOKENS},
            )
        # Wall-clock time, as the workers stamp each run's completed_at.
        started = timezone.now()
    deadline = time.monotonic() + RUN_DEADLINE_SECONDS
    finished = OrchestrationRun.objects.filter(tenant=tenant, status__in=FINISHED_JOB_STATUSES)
    while finished.count() < runs:
        if time.monotonic() > deadline:
            raise SystemExit(f"{finished.count()} of {runs} runs finished in time")
        time.sleep(0.05)
    # The clock stops at the last run's end, not at the poll that saw it.
    last = finished.aggregate(last=Max("completed_at"))["last"]
    return (last - started).total_seconds(), tenant


def _bare_calls(tenant_id, owner_id, runs: int, ready, go, done) -> None:
    """In a child process (spawned: nothing shared with the parent but the environment, which
    names the bench's database): `runs` runs' worth of gateway calls, phase after phase; then
    it says it is done, before its exit (which the clock does not count)."""
    import django

    django.setup()
    from django.db import connections

    from config.memory import freeze_loaded_objects
    from playground.models import (
        CallSource,
        LanguageModel,
        OrchestrationPhase,
        OrchestrationRun,
    )
    from playground.orchestration import DEFAULT_PHASES
    from playground.services.gateway import ChatInput, gateway_call
    from playground.services.runs import _phase_messages
    from tenants.models import Tenant

    # What it loaded is frozen out of the garbage collector's walks, as in the workers.
    freeze_loaded_objects()
    tenant = Tenant.objects.get(pk=tenant_id)
    run = OrchestrationRun(
        tenant=tenant,
        topic=TOPIC,
        ai_model="gpt-3.5-turbo",
        max_tokens=MAX_TOKENS,
        total_phases=len(DEFAULT_PHASES),
    )
    model = LanguageModel.objects.get(name=run.ai_model)
    ready.put(os.getpid())
    go.wait()
    for _ in range(runs):
        outputs = []
        for position, name in enumerate(DEFAULT_PHASES):
            phase = OrchestrationPhase(position=position, name=name)
            messages = _phase_messages(run, phase, outputs, model)
            result, _call, error = gateway_call(
                tenant=tenant,
                user_id=owner_id,
                api_key=None,
                chat=ChatInput(model=run.ai_model, messages=tuple(messages), max_tokens=MAX_TOKENS),
                source=CallSource.ORCHESTRATION,
            )
            assert error is None, error
            outputs.append((name, result.content))
    done.put(os.getpid())
    connections.close_all()


def bare_variant(runs: int, workers: int, label: str) -> float:
    from django.db import connections

    tenant, owner, _project = organization(label)
    connections.close_all()
    os.environ["DATABASE_URL"] = _database_url()  # the children's settings: the bench database
    shares = [runs // workers + (1 if n < runs % workers else 0) for n in range(workers)]
    context = multiprocessing.get_context("spawn")
    ready, go, done = context.Queue(), context.Event(), context.Queue()
    children = [
        context.Process(target=_bare_calls, args=(tenant.pk, owner.pk, share, ready, go, done))
        for share in shares
    ]
    # Spawning loads Django in each child: they start before the clock and wait for `go`; the
    # clock stops when the last one has made its last call (a process's exit took 0.4 s here,
    # which counted against the bare loop as if it were work).
    for child in children:
        child.start()
    for _child in children:
        ready.get(timeout=WORKER_READY_SECONDS)
    started = time.perf_counter()
    go.set()
    for _child in children:
        done.get(timeout=RUN_DEADLINE_SECONDS)
    elapsed = time.perf_counter() - started
    for child in children:
        child.join()
    if any(child.exitcode for child in children):
        raise SystemExit("a bare-loop process failed")
    return elapsed


# Accounting -----------------------------------------------------------------------------------


def accounting(tenant, runs: int) -> list[str]:
    """What does not add up for a runs variant's organization (empty: all of it does)."""
    from django.db.models import Count, Q, Sum

    from playground.models import GatewayCall, OrchestrationPhase, OrchestrationRun
    from tenants.services.quotas import quota_states

    problems = []
    statuses = dict(
        OrchestrationRun.objects.filter(tenant=tenant)
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    if statuses != {"completed": runs}:
        problems.append(f"run statuses {statuses}, expected {runs} completed")
    phases = OrchestrationPhase.objects.filter(tenant=tenant).aggregate(
        completed=Count("id", filter=Q(status="completed")), tokens=Sum("total_tokens")
    )
    if phases["completed"] != runs * 7:
        problems.append(f"{phases['completed']} phases completed, expected {runs * 7}")
    calls = GatewayCall.objects.filter(tenant=tenant).aggregate(
        n=Count("id"),
        tokens=Sum("total_tokens"),
        estimated=Count("id", filter=Q(usage_estimated=True)),
    )
    counted = quota_states(tenant)["tokens"].current
    if calls["n"] != runs * 7:
        problems.append(f"{calls['n']} gateway calls, expected {runs * 7}")
    if calls["estimated"]:
        problems.append(f"{calls['estimated']} calls without the provider's usage")
    if not phases["tokens"] == calls["tokens"] == counted:
        problems.append(
            f"tokens: phases {phases['tokens']}, calls {calls['tokens']}, quota {counted}"
        )
    return problems


def run(runs: int, rounds: int, workers: int) -> bool:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    worker = start_worker(workers, log_dir)
    # Warm-up, not measured: the worker's processes import and connect on their first tasks.
    runs_variant(max(workers * 5, 10), "warm-up")
    ok = True
    samples = {"runs": [], "bare": []}
    try:
        for number in range(rounds):
            order = ["runs", "bare"] if number % 2 == 0 else ["bare", "runs"]
            for variant in order:
                label = f"{variant}-{number}"
                if variant == "runs":
                    elapsed, tenant = runs_variant(runs, label)
                    problems = accounting(tenant, runs)
                    for problem in problems:
                        print(f"  ACCOUNTING: {problem}")
                    ok = ok and not problems
                else:
                    elapsed = bare_variant(runs, workers, label)
                samples[variant].append(elapsed)
            phases = runs * 7
            ratio = samples["bare"][-1] / samples["runs"][-1]
            print(
                f"round {number + 1}: runs {phases / samples['runs'][-1]:7.1f} phases/s, "
                f"bare loop {phases / samples['bare'][-1]:7.1f} phases/s, ratio {ratio:.2f}"
            )
    finally:
        stop(worker)
    ratios = [bare / ran for bare, ran in zip(samples["bare"], samples["runs"], strict=True)]
    phases = runs * 7
    print(
        f"median: runs {phases / statistics.median(samples['runs']):.1f} phases/s, bare loop "
        f"{phases / statistics.median(samples['bare']):.1f} phases/s; runs/bare "
        f"{statistics.median(ratios):.2f} (target >= 0.7)"
    )
    print("accounting: " + ("tokens in phases == calls == quota, all reported" if ok else "FAILED"))
    if not ok:
        print(f"worker log: {log_dir / 'worker.log'}")
    return ok


if __name__ == "__main__":
    main()
