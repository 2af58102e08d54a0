"""The job engine under orchestration runs and workflow jobs: claims, leases, priorities, and
the reaper that recovers jobs whose worker died (docs/orchestration.md, "Crash recovery").

A job row (playground.models.BackgroundJob) is the truth; the Celery message only says "look
at job X". So a message delivered twice, or sent again by the reaper, is harmless:

- `claim` is one conditional UPDATE: a pending job, or a running one whose lease expired, with
  attempts left, becomes running under a fresh `lease_token`. Two workers racing for one job:
  one row updated, one claim.
- The claimant `renew`s its lease as it makes progress and `release`s the job when it ends;
  both are conditional on its token, so a worker whose lease was taken over (it stalled past
  its lease and another worker claimed the job) finds out at its next step and stops, and
  nothing it writes after that lands.
- A task's retry after an outage takes over the claims of the attempts before it at once
  (`claim(taking_over=...)`): those attempts have ended, and their lease need not run out.
- `reap` finds running jobs with an expired lease and pending jobs whose message seems lost:
  jobs with attempts left are queued again (the next claim resumes them where they stopped:
  runs skip completed phases, batches skip answered rows); the others are failed.
"""

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.db import locked_or_404, write_connection
from config.exceptions import Conflict, RateLimitExceeded
from config.prepared import fetch_prepared
from tenants.models import Tenant

from .models import ACTIVE_JOB_STATUSES, BackgroundJob, JobStatus, Priority

logger = logging.getLogger(__name__)

# A project's priority as a job priority (1 lowest .. 10 highest).
PROJECT_PRIORITY = {Priority.LOW: 2, Priority.MEDIUM: 5, Priority.HIGH: 8, Priority.URGENT: 10}
DEFAULT_PRIORITY = 5
# A job refused by the tokens-per-minute window waits it out (waiting_out_throttles).
THROTTLE_RETRIES = 3
THROTTLE_WAIT_MAX_SECONDS = 30


def celery_priority(priority: int) -> int:
    """Our 1 (lowest) .. 10 (highest) as Celery's Redis priority, 0 (highest) .. 9. Platform
    tasks sent without a priority are 0: they share the top level with priority-10 jobs and go
    before every other job."""
    return 10 - max(1, min(priority, 10))


def lease_until():
    return timezone.now() + timedelta(seconds=settings.JOBS_LEASE_SECONDS)


# A worker's claim, renewals and release run once or more per job, a run's phases apart: on
# PostgreSQL they are prepared statements (config.prepared), as the ORM compiled them anew and
# the server planned them anew each time, for more than it took to run them. Elsewhere they
# are the ORM's updates, which the tests compare them with.


def _pk_value(model: type[BackgroundJob], pk, database):
    """A job's id as a raw statement's parameter (a task gives it as a string)."""
    return model._meta.pk.get_db_prep_value(model._meta.pk.to_python(pk), database)


@functools.cache
def _claim_sql(model: type[BackgroundJob]) -> str:
    """claim()'s UPDATE; its parameters: token, lease end, tokens taken over, now, now, id,
    tokens taken over, max attempts, now."""
    table, pk = model._meta.db_table, model._meta.pk.column
    running, pending = JobStatus.RUNNING.value, JobStatus.PENDING.value
    taken_over = f"status = '{running}' AND lease_token = ANY(%s::uuid[])"
    return (
        f"UPDATE {table} SET status = '{running}', lease_token = %s, "  # noqa: S608
        f"lease_expires_at = %s, attempts = attempts + CASE WHEN {taken_over} THEN 0 ELSE 1 END, "
        "started_at = COALESCE(started_at, %s), updated_at = %s "
        f"WHERE {pk} = %s AND (({taken_over}) OR (attempts < %s AND (status = '{pending}' "
        f"OR (status = '{running}' AND lease_expires_at < %s)))) RETURNING {pk}"
    )


@functools.cache
def _held_update_sql(model: type[BackgroundJob], names: tuple[str, ...]) -> str:
    """Claim.update()'s UPDATE of `names`; its parameters: their values, the id, the token."""
    table, pk = model._meta.db_table, model._meta.pk.column
    assignments = ", ".join(f"{model._meta.get_field(name).column} = %s" for name in names)
    return (
        f"UPDATE {table} SET {assignments} WHERE {pk} = %s "  # noqa: S608
        f"AND status = '{JobStatus.RUNNING.value}' AND lease_token = %s RETURNING {pk}"
    )


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one job: every write it makes is conditional on `token`."""

    model: type[BackgroundJob]
    pk: object
    token: uuid.UUID

    def rows(self):
        return self.model.objects.filter(
            pk=self.pk, status=JobStatus.RUNNING, lease_token=self.token
        )

    def update(self, **fields) -> int:
        """`rows().update(**fields)`: the rows written, 1 while the job is ours, else 0. Plain
        values of the job's own columns (a lease, progress, an outcome) are written by a
        prepared statement on PostgreSQL; an expression or a relation by the ORM."""
        database = write_connection(self.model)
        meta = self.model._meta
        plain = not any(
            hasattr(value, "resolve_expression") or meta.get_field(name).is_relation
            for name, value in fields.items()
        )
        if database.vendor != "postgresql" or not plain:
            return self.rows().update(**fields)
        names = tuple(sorted(fields))
        values = [meta.get_field(name).get_db_prep_save(fields[name], database) for name in names]
        params = [*values, _pk_value(self.model, self.pk, database), self.token]
        return len(fetch_prepared(database.alias, _held_update_sql(self.model, names), params))


def claim(
    model: type[BackgroundJob], pk, *, token: uuid.UUID | None = None, taking_over=()
) -> Claim | None:
    """Take job `pk` to run it under `token` (a fresh one by default), or None when it is not
    ours to run (finished, cancelled, held by a live worker, or out of attempts).

    `taking_over`: the tokens of earlier attempts of this same delivery, which met an outage
    and ended (the task's retry, playground.tasks): a job still held under one of them is
    taken over at once, rather than after its lease, and the claim counts no new attempt
    (no worker died). A second delivery of the retry finds the token changed and claims
    nothing."""
    token = token or uuid.uuid4()
    taking_over = list(taking_over)
    take = _take_prepared if write_connection(model).vendor == "postgresql" else _take
    return Claim(model, pk, token) if take(model, pk, token, timezone.now(), taking_over) else None


def _take(model: type[BackgroundJob], pk, token: uuid.UUID, now, taking_over: list) -> int:
    """claim()'s UPDATE through the ORM: the rows taken (0 or 1)."""
    taken_over = Q(status=JobStatus.RUNNING, lease_token__in=taking_over)
    claimable = Q(attempts__lt=settings.JOBS_MAX_ATTEMPTS) & (
        Q(status=JobStatus.PENDING) | Q(status=JobStatus.RUNNING, lease_expires_at__lt=now)
    )
    return (
        model.objects.filter(pk=pk)
        .filter(taken_over | claimable)
        .update(
            status=JobStatus.RUNNING,
            lease_token=token,
            lease_expires_at=lease_until(),
            attempts=Case(When(taken_over, then=F("attempts")), default=F("attempts") + 1),
            started_at=Coalesce(F("started_at"), now),
            updated_at=now,
        )
    )


def _take_prepared(model: type[BackgroundJob], pk, token: uuid.UUID, now, taking_over: list) -> int:
    """_take as a prepared statement (PostgreSQL)."""
    database = write_connection(model)
    pk = _pk_value(model, pk, database)
    params = [token, lease_until(), taking_over, now, now, pk, taking_over]
    params += [settings.JOBS_MAX_ATTEMPTS, now]
    return len(fetch_prepared(database.alias, _claim_sql(model), params))


def renew(held: Claim, **fields) -> bool:
    """Extend the lease (writing `fields` too, progress); False when the job is no longer ours
    (cancelled, or taken over)."""
    return bool(held.update(lease_expires_at=lease_until(), updated_at=timezone.now(), **fields))


def cancel(job: BackgroundJob, *, noun: str, id_field: str) -> BackgroundJob:
    """Lock `job` and cancel it from outside its worker (the caller then records its event);
    a finished job is 409. `noun` and `id_field` name it in the refusal ("run", "run_id")."""
    job = locked_or_404(type(job).objects, pk=job.pk)
    if job.status not in ACTIVE_JOB_STATUSES:
        raise Conflict(
            f"This {noun} is {job.status}; only a pending or running {noun} can be cancelled.",
            details={id_field: str(job.pk), "status": job.status},
        )
    return job


def waiting_out_throttles(call: Callable):
    """`call()`, waiting out the tokens-per-minute window when it refuses (RateLimitExceeded:
    at most THROTTLE_WAIT_MAX_SECONDS each time, THROTTLE_RETRIES times), then refusing as it
    does. A worker may wait; a request would answer 429. A call larger than the whole window
    is refused at once: no wait would let it through."""
    for attempt in range(THROTTLE_RETRIES + 1):
        try:
            return call()
        except RateLimitExceeded as refused:
            if attempt == THROTTLE_RETRIES or not refused.retryable:
                raise
            time.sleep(min(refused.wait or 1, THROTTLE_WAIT_MAX_SECONDS))
    raise AssertionError("unreachable: the last attempt returns or raises")


def _ended(started_at, now) -> dict:
    elapsed = int((now - started_at).total_seconds() * 1000) if started_at else 0
    return {
        "completed_at": now,
        "execution_time_ms": elapsed,
        "lease_token": None,
        "lease_expires_at": None,
        "updated_at": now,
    }


def release(held: Claim, *, status: str, error: str = "", started_at=None, **fields) -> dict:
    """End the job as `status` with `fields`; the end fields written (completed_at,
    execution_time_ms, ...), or {} when it was no longer ours and nothing was written.
    `execution_time_ms` runs from its first start (`started_at`, read when not given) to now."""
    if started_at is None:
        started_at = (
            held.model.objects.filter(pk=held.pk).values_list("started_at", flat=True).first()
        )
    ended = _ended(started_at, timezone.now())
    written = held.update(status=status, error=error[:500], **ended, **fields)
    return ended if written else {}


def stop(job: BackgroundJob, *, status: str, error: str = "", **fields) -> None:
    """End `job` from outside its worker (a cancellation, the reaper giving up); the caller
    holds its row lock. A worker still running it finds its claim gone at its next step."""
    ended = _ended(job.started_at, timezone.now())
    type(job).objects.filter(pk=job.pk).update(status=status, error=error[:500], **ended, **fields)
    job.refresh_from_db()


def is_stalled(job: BackgroundJob) -> bool:
    """Pending, or running under an expired lease: a job the reaper may fail."""
    return job.status == JobStatus.PENDING or (
        job.status == JobStatus.RUNNING
        and job.lease_expires_at is not None
        and job.lease_expires_at < timezone.now()
    )


def ensure_room_in_progress(model, tenant, *, limit: int, counted: str, noun: str) -> None:
    """409 CONFLICT when the organization already has `limit` jobs of `model` pending or
    running (Tenant.objects.ensure_room: counted under its row lock). The workers are shared,
    so each organization's work in progress is bounded; one that ends makes room."""
    Tenant.objects.ensure_room(
        tenant.pk,
        model.objects.filter(tenant=tenant, status__in=ACTIVE_JOB_STATUSES),
        limit=limit,
        counted=counted,
        noun=noun,
        advice="Wait for one to end, or cancel one.",
    )


def enqueue(job: BackgroundJob, task) -> None:
    """Send the job's task once the transaction commits, at the job's priority; the send
    time is kept so the reaper can tell a lost message from a long queue."""

    def send():
        type(job).objects.filter(pk=job.pk).update(queued_at=timezone.now())
        task.apply_async(args=[str(job.pk)], priority=celery_priority(job.priority))

    transaction.on_commit(send, robust=True)


@dataclass
class Reaped:
    requeued: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Engine:
    """One kind of job: its model, its task, and the service that fails it for good."""

    model: type[BackgroundJob]
    task: object
    give_up: Callable  # (job=, reason=) -> bool: fails it (if still stalled), with its event


def reap(engine: Engine, *, now=None) -> Reaped:
    """Recover `engine`'s stalled jobs (see the module docstring)."""
    now = now or timezone.now()
    reaped = Reaped()
    model = engine.model
    resend_before = now - timedelta(seconds=settings.JOBS_REQUEUE_AFTER_SECONDS)
    # Not sent again since its lease expired, or sent long enough ago to be lost too.
    not_resent = Q(queued_at__isnull=True) | Q(queued_at__lt=F("lease_expires_at"))
    stalled = Q(status=JobStatus.RUNNING, lease_expires_at__lt=now) & (
        not_resent | Q(queued_at__lt=resend_before)
    )
    # Sent long ago and never claimed, or never sent (the process died between its commit
    # and the send).
    lost = Q(status=JobStatus.PENDING) & (
        Q(queued_at__lt=resend_before) | Q(queued_at__isnull=True, created_at__lt=resend_before)
    )
    for job in model.objects.filter(stalled | lost).order_by("created_at")[:500]:
        if job.attempts >= settings.JOBS_MAX_ATTEMPTS:
            if engine.give_up(
                job=job,
                reason=f"The worker running it stopped {job.attempts} times; gave up.",
            ):
                reaped.failed += 1
            continue
        # Conditional on what was seen, so a job that moved on meanwhile is left alone.
        resent = model.objects.filter(
            pk=job.pk, status=job.status, lease_token=job.lease_token
        ).update(queued_at=now, updated_at=now)
        if resent:
            engine.task.apply_async(args=[str(job.pk)], priority=celery_priority(job.priority))
            reaped.requeued += 1
            logger.warning(
                "Requeued %s %s (status %s, %s attempts)",
                model.__name__,
                job.pk,
                job.status,
                job.attempts,
            )
    return reaped
