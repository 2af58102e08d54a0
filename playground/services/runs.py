"""Orchestration runs: start, execute (the Celery task's work), cancel, fail.

A run is a list of phases executed in order by one worker at a time (playground.jobs holds the
lease). Each phase is one gateway call, metered and recorded exactly like chat/completions
(`gateway_call`, source `orchestration`): its prompt is the run's topic and the outputs of the
phases before it, cut to fit the model's context window. A phase whose upstream fails is
recorded failed and the run goes on; an exhausted tokens quota ends the run (its remaining
phases are skipped). A run completes when at least one phase completed, else it fails;
`success_rate` is the completed share.

Phases are claimed like jobs: a claim token is set when a phase starts, and its result is
written only under that token, in the transaction that locks the run row. So a phase is
never completed twice (a worker that lost its lease, or whose run was cancelled, writes
nothing but the cancelled phase's usage), and a resumed run starts at its first phase not
completed.

With `integration_enabled`, each completed phase's output is written as a Markdown artifact
(services.artifacts; counted against the storage quota) and recorded as a `file_system`
integration operation, in the phase's transaction.
"""

import functools
import logging
import time
import uuid

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404, raw_uuid
from config.exceptions import ApplicationError, Conflict, QuotaExceeded, RateLimitExceeded
from config.prepared import CompiledQuery, Rider, fetch_prepared
from tenants.models import BLOCKED_STATUSES, Tenant

from .. import jobs, tokens
from ..models import (
    CallSource,
    CallStatus,
    IntegrationOperation,
    JobStatus,
    OrchestrationPhase,
    OrchestrationRun,
    OrchestrationTemplate,
    PhaseStatus,
    Project,
    ProjectStatus,
)
from ..orchestration import (
    DEFAULT_PHASES,
    INTEGRATIONS_PERFORMED,
    check_phase_names,
    checked_settings,
)
from .artifacts import artifact_write
from .gateway import (
    ChatInput,
    ReservationNotNoted,
    catalogue_cache,
    gateway_call_reserved,
    gateway_reserve,
)
from .ledger import gateway_tokens_lock, gateway_tokens_release_unsettled

logger = logging.getLogger(__name__)

_RUNS = OrchestrationRun._meta.db_table
_PHASES = OrchestrationPhase._meta.db_table
DEFAULT_MAX_TOKENS = 1024

# What each default phase asks for; a custom phase asks for its name's work.
PHASE_INSTRUCTIONS = {
    "ideation": "List the ideas and options worth considering, with their trade-offs.",
    "research": "Gather what is known: prior art, constraints, risks and open questions.",
    "design": "Propose a design: components, interfaces, data and how they fit together.",
    "implementation": "Describe the implementation step by step, with the key code.",
    "testing": "Write the test plan: cases, edge cases and how to verify each.",
    "documentation": "Write the documentation a user and a maintainer would need.",
    "review": "Review the work so far: what is sound, what is missing, what to fix first.",
}
SYSTEM_PROMPT = (
    "You are one phase of a multi-phase project run. Work only on your phase, build on the "
    "previous phases' results, and answer in Markdown."
)


def _invalid(field: str, message: str) -> ApplicationError:
    return ApplicationError(message, details={field: [message]})


# Start ----------------------------------------------------------------------------------------


def _visible_template(tenant: Tenant, actor, template_id) -> OrchestrationTemplate:
    template = (
        OrchestrationTemplate.objects.filter(tenant=tenant, pk=template_id)
        .select_for_update()
        .first()
    )
    if template is None or not (
        template.is_public or (template.created_by_id and template.created_by_id == actor.pk)
    ):
        raise _invalid("template_id", "No such orchestration template.")
    return template


def _run_settings(template: OrchestrationTemplate | None, given: dict | None) -> dict:
    """The template's settings overlaid with the request's, checked; the model defaulted."""
    merged = {**(template.template_data.get("settings", {}) if template else {}), **(given or {})}
    # The default model is named before the check, so max_tokens is held to its limit too.
    merged["ai_model"] = merged.get("ai_model") or settings.GATEWAY_DEFAULT_MODEL
    merged, model = checked_settings(merged)
    merged.setdefault("max_tokens", min(DEFAULT_MAX_TOKENS, model.max_output_tokens))
    return merged


@transaction.atomic
def orchestration_start(
    *,
    tenant: Tenant,
    actor,
    project_id,
    topic: str = "",
    custom_phases: list | None = None,
    template_id=None,
    integration_enabled: bool | None = None,
    run_settings: dict | None = None,
) -> OrchestrationRun:
    """Create a run and queue it. Phases: `custom_phases`, else the template's, else the seven
    defaults. Settings: the template's overlaid with `run_settings` (the API's `settings`).
    The topic: `topic`, else the project's. `integration_enabled`: as given, else the
    settings', else whether the template lists `file_system`."""
    # Locked: a deletion of the project waits for this run (and then finds it, 409).
    project = Project.objects.select_for_update().filter(tenant=tenant, pk=project_id).first()
    if project is None:
        raise _invalid("project_id", "No such project.")
    if project.status == ProjectStatus.ARCHIVED:
        raise Conflict(
            "An archived project does not run; make it active first.",
            details={"project_id": str(project.pk), "status": project.status},
        )
    template = _visible_template(tenant, actor, template_id) if template_id else None
    topic = (topic or project.topic).strip()
    if not topic:
        raise _invalid("topic", "Give a topic, or set one on the project.")
    if custom_phases:
        phases = check_phase_names(custom_phases, field="custom_phases")
    elif template is not None:
        phases = template.template_data["phases"]
    else:
        phases = list(DEFAULT_PHASES)
    run_settings = _run_settings(template, run_settings)
    if integration_enabled is None:
        integration_enabled = run_settings.get("integration_enabled")
    if integration_enabled is None:
        integration_enabled = bool(
            template
            and set(template.template_data.get("integrations", [])) & set(INTEGRATIONS_PERFORMED)
        )
    jobs.ensure_room_in_progress(
        OrchestrationRun,
        tenant,
        limit=settings.ORCHESTRATION_RUNS_IN_PROGRESS_PER_TENANT,
        counted="runs_in_progress",
        noun="orchestration runs pending or running",
    )
    run = OrchestrationRun.objects.create(
        tenant=tenant,
        project=project,
        template=template,
        topic=topic,
        ai_model=run_settings["ai_model"],
        max_tokens=run_settings["max_tokens"],
        temperature=run_settings.get("temperature"),
        integration_enabled=bool(integration_enabled),
        total_phases=len(phases),
        priority=jobs.PROJECT_PRIORITY.get(project.priority, jobs.DEFAULT_PRIORITY),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    OrchestrationPhase.objects.bulk_create(
        OrchestrationPhase(tenant=tenant, run=run, position=position, name=name)
        for position, name in enumerate(phases)
    )
    if template is not None:
        OrchestrationTemplate.objects.filter(pk=template.pk).update(
            usage_count=F("usage_count") + 1
        )
    record(
        tenant=tenant,
        event_type="orchestration.started",
        actor=actor,
        payload={**_run_payload(run), "phases": list(phases), "ai_model": run.ai_model},
    )
    from ..tasks import execute_orchestration_run

    jobs.enqueue(run, execute_orchestration_run)
    return run


def _run_payload(run: OrchestrationRun) -> dict:
    return {
        "run_id": str(run.pk),
        "project_id": str(run.project_id),
        "template_id": str(run.template_id) if run.template_id else None,
        "status": run.status,
        "total_phases": run.total_phases,
        "completed_phases": run.completed_phases,
        "failed_phases": run.failed_phases,
        "success_rate": run.success_rate,
        "execution_time_ms": run.execution_time_ms,
    }


# Execute --------------------------------------------------------------------------------------


def _phase_messages(run: OrchestrationRun, phase, done: list[tuple[str, str]], model) -> list:
    """The phase's prompt: its instruction, the topic, the previous outputs (the oldest cut
    first, then dropped, until the prompt and max_tokens fit the context window)."""
    instruction = PHASE_INSTRUCTIONS.get(
        phase.name.lower(), f"Carry out the {phase.name} phase for this topic."
    )
    header = (
        f"Phase {phase.position + 1} of {run.total_phases}: {phase.name}.\n{instruction}\n\n"
        f"Topic: {run.topic}"
    )
    budget = model.context_window - min(run.max_tokens, model.max_output_tokens)
    outputs = [[name, text] for name, text in done]

    def build():
        previous = "".join(f"\n\n## {name}\n{text}" for name, text in outputs if text)
        user = header + (f"\n\nPrevious phases:{previous}" if previous else "")
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    messages = build()
    while outputs and tokens.estimate_prompt_tokens(messages) > budget:
        oldest = outputs[0]
        if len(oldest[1]) > 200:
            oldest[1] = oldest[1][: len(oldest[1]) // 2] + " [...]"
        else:
            outputs.pop(0)
        messages = build()
    return messages


class _Stop(Exception):
    """The run is no longer this worker's (cancelled, failed or taken over)."""


def _request_id(run_pk, phase_pk, claim) -> str:
    """The request id of a phase's gateway call under one claim (`run:<id>:phase:<id>:<claim>`,
    so a run's calls are found by prefix): how recovery tells a call that was settled (its
    GatewayCall exists) from one whose worker died before settling."""
    return f"run:{run_pk}:phase:{phase_pk}:{claim}"


# The phase's note of its call's reservation: what recovery gives back if the call is never
# settled. Carried by the reservation's statement (config.prepared.Rider; written only when the
# tokens were counted), so the two are one atomic step; apart (SQLite) after it, in its
# transaction.
_NOTE_UPDATE = (
    f"UPDATE {_PHASES} SET reserved_tokens = %s "  # noqa: S608
    "WHERE id = %s AND claim = %s AND status = 'running'"
)
_NOTE_SQL = f"{_NOTE_UPDATE} RETURNING id"
_NOTE_CTES = f"note AS ({_NOTE_UPDATE} AND EXISTS (SELECT 1 FROM quota_update) RETURNING id)"  # noqa: S608


def _note(phase_pk, claim, amount: int) -> Rider:
    params = [amount, raw_uuid(phase_pk), raw_uuid(claim)]
    return Rider(
        ctes=_NOTE_CTES,
        answer="(SELECT count(*) FROM note)",
        params=params,
        apart=lambda: (len(fetch_prepared(connection.alias, _NOTE_SQL, params)),),
        undo=lambda: OrchestrationPhase.objects.filter(pk=phase_pk, claim=claim).update(
            reserved_tokens=0
        ),
    )


def _reserve(run: OrchestrationRun, phase_pk, claim, chat: ChatInput):
    """The gateway's reservation (one statement, as for any call) with the phase's note of it
    in the same statement: a worker that dies before the call is settled leaves the amount to
    give back on the phase, and none dies between the two."""
    try:
        return gateway_reserve(
            tenant=run.tenant,
            user_id=run.created_by_id,
            api_key=None,
            chat=chat,
            source=CallSource.ORCHESTRATION,
            request_id=_request_id(run.pk, phase_pk, claim),
            note=functools.partial(_note, phase_pk, claim),
        )
    except ReservationNotNoted:
        # Cancelled since the phase was claimed: the gateway gave the reservation back
        # (recorded as a cancelled call with no usage) and called nothing.
        raise _Stop from None


def _failure(error) -> str:
    return f"The AI provider could not answer ({error.kind})."


def _call_gateway(run: OrchestrationRun, phase_pk, claim, messages: list, outcome):
    """One gateway call for a phase (metered exactly as chat/completions): (result, call,
    error, fatal). A tokens-per-minute refusal waits and retries; an exhausted quota is fatal
    to the run; any other refusal fails the phase only. `outcome`, a _PhaseOutcome, records
    the phase's outcome in the call's settlement."""
    chat = ChatInput(
        model=run.ai_model,
        messages=tuple(messages),
        max_tokens=run.max_tokens,
        temperature=run.temperature,
    )
    try:
        reservation = jobs.waiting_out_throttles(lambda: _reserve(run, phase_pk, claim, chat))
    except RateLimitExceeded as refused:
        return None, None, refused.message, False
    except QuotaExceeded as refused:
        return None, None, str(refused.detail), True
    except ApplicationError as refused:
        # The model left the catalogue meanwhile: every later phase would fail alike.
        return None, None, str(refused.detail), "model" in refused.details
    reservation.settle_rider = outcome
    result, call, error = gateway_call_reserved(reservation)
    return result, call, _failure(error) if error else "", False


def _release_unsettled(phase: OrchestrationPhase) -> None:
    """Give back the reservation of a phase whose worker died (or stopped) mid-call: noted on
    the phase, not settled under its claim. A settlement that lands after this (a worker that
    outlived its lease) counts its usage alone: the gateway's note decides which of the two
    gives the reservation back."""
    if not (phase.status == PhaseStatus.RUNNING and phase.claim and phase.reserved_tokens):
        return
    gateway_tokens_release_unsettled(
        tenant=phase.tenant, request_id=_request_id(phase.run_id, phase.pk, phase.claim)
    )


# The first phase's claim (the next ones are claimed in _FINISH_SQL): prepared on PostgreSQL,
# where the ORM's UPDATE with a join was compiled and planned anew for every run.
_CLAIM_PENDING_SQL = (
    f"UPDATE {_PHASES} SET status = 'running', claim = %s, attempts = attempts + 1, "  # noqa: S608
    "started_at = %s, updated_at = %s WHERE id = %s AND status = 'pending' AND EXISTS "
    f"(SELECT 1 FROM {_RUNS} WHERE {_RUNS}.id = {_PHASES}.run_id AND {_RUNS}.status = 'running' "
    f"AND {_RUNS}.lease_token = %s) RETURNING id"
)


def _claim_pending(held: jobs.Claim, phase_pk, token) -> bool:
    """The common claim, one UPDATE: a pending phase of a run we hold."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        params = [token, now, now, raw_uuid(phase_pk), held.token]
        return bool(fetch_prepared(connection.alias, _CLAIM_PENDING_SQL, params))
    return bool(_claim_pending_rows(held, phase_pk).update(**_claimed(token, now)))


def _claim_pending_rows(held: jobs.Claim, phase_pk):
    """What _CLAIM_PENDING_SQL updates, as a queryset (SQLite, and the test comparing them)."""
    return OrchestrationPhase.objects.filter(
        pk=phase_pk,
        status=PhaseStatus.PENDING,
        run__status=JobStatus.RUNNING,
        run__lease_token=held.token,
    )


def _claimed(token, now) -> dict:
    return {
        "status": PhaseStatus.RUNNING,
        "claim": token,
        "attempts": F("attempts") + 1,
        "started_at": now,
        "updated_at": now,
    }


def _claim_phase(held: jobs.Claim, phase) -> uuid.UUID | None:
    """Take `phase` of a run we hold to run it: pending, or running under a dead claim (a
    resumed run), whose unsettled reservation is given back first. Its new claim token, or
    None when it is not ours to run."""
    token = uuid.uuid4()
    if phase.status == PhaseStatus.PENDING:
        return token if _claim_pending(held, phase.pk, token) else None
    with transaction.atomic():
        gateway_tokens_lock(tenant_id=phase.tenant_id)  # first: see gateway_tokens_lock
        stale = (
            OrchestrationPhase.objects.select_for_update(of=("self",))
            .select_related("tenant")
            .filter(
                pk=phase.pk,
                status=PhaseStatus.RUNNING,
                run__status=JobStatus.RUNNING,
                run__lease_token=held.token,
            )
            .first()
        )
        if stale is None:
            return None
        _release_unsettled(stale)
        now = timezone.now()
        OrchestrationPhase.objects.filter(pk=phase.pk).update(
            claim=token,
            reserved_tokens=0,
            attempts=F("attempts") + 1,
            started_at=now,
            completed_at=None,
            updated_at=now,
        )
    return token


def _write_integration(run, phase, text: str) -> None:
    """The `file_system` operation: the phase's output as an artifact, recorded either way
    (once per phase: a resumed run writes those its dead worker did not)."""
    if IntegrationOperation.objects.filter(phase=phase).exists():
        return
    started = time.perf_counter()
    name = f"{phase.position:02d}-{phase.name.lower().replace(' ', '-')}.md"
    artifact = None
    try:
        with transaction.atomic():
            artifact = artifact_write(
                tenant=run.tenant,
                name=name,
                content=f"# {phase.display_name}\n\n{text}\n".encode(),
                content_type="text/markdown; charset=utf-8",
                created_by=run.created_by,
                run=run,
            )
        status = IntegrationOperation.Status.COMPLETED
        result = {"success": True, "message": "File created successfully", "file": name,
                  "artifact_id": str(artifact.pk), "size_bytes": artifact.size_bytes}  # fmt: skip
    except QuotaExceeded:
        status = IntegrationOperation.Status.FAILED
        result = {"success": False, "message": "The organization's storage quota is full."}
    except OSError:
        logger.exception("Writing the artifact of phase %s failed", phase.pk)
        status = IntegrationOperation.Status.FAILED
        result = {"success": False, "message": "The file could not be written."}
    IntegrationOperation.objects.create(
        tenant=run.tenant,
        run=run,
        phase=phase,
        operation_type=IntegrationOperation.Type.FILE_SYSTEM,
        status=status,
        result=result,
        execution_time_ms=int((time.perf_counter() - started) * 1000),
        artifact=artifact,
    )


# A phase's outcome in one statement (PostgreSQL): the phase under its claim, while its run is
# running under our lease (the run's row lock orders it with a cancellation, which changes the
# phase too); then the run's counter and lease; then the next phase's claim when it is
# pending. Carried by the settlement of the phase's call (config.prepared.Rider), so the call's
# record, its tokens and the phase's outcome are one atomic step; on its own when the phase
# had no call to settle. Only the models' table names are interpolated.
_FINISH_CTES = (
    f"held AS (SELECT id FROM {_RUNS} WHERE id = %s AND status = 'running' "  # noqa: S608
    "AND lease_token = %s FOR UPDATE), "
    f"phase AS (UPDATE {_PHASES} SET status = %s, response_text = %s, error = %s, "
    "gateway_call_id = %s, prompt_tokens = %s, completion_tokens = %s, total_tokens = %s, "
    "cost_micros = %s, execution_time_ms = %s, completed_at = %s, updated_at = %s "
    "WHERE id = %s AND claim = %s AND status = 'running' AND EXISTS (SELECT 1 FROM held) "
    "RETURNING id), "
    f"run AS (UPDATE {_RUNS} SET completed_phases = completed_phases + %s, "
    "failed_phases = failed_phases + %s, lease_expires_at = %s, updated_at = %s "
    "WHERE id IN (SELECT id FROM held) AND EXISTS (SELECT 1 FROM phase) RETURNING id), "
    f"next AS (UPDATE {_PHASES} SET status = 'running', claim = %s, attempts = attempts + 1, "
    "started_at = %s, updated_at = %s WHERE id = %s AND status = 'pending' "
    "AND EXISTS (SELECT 1 FROM phase) RETURNING id)"
)
_FINISH_ANSWER = "(SELECT count(*) FROM phase), (SELECT count(*) FROM next)"
_FINISH_SQL = f"WITH {_FINISH_CTES} SELECT {_FINISH_ANSWER}"


def _storable(result) -> str:
    """The answer's text as PostgreSQL can hold it: text cannot hold NUL, and a model may
    answer one; the rest is kept."""
    return result.content.replace("\x00", "\ufffd") if result is not None else ""


def _outcome_fields(result, call, error: str, started: float) -> dict:
    """The phase's columns for its outcome: completed with the answer, or failed with `error`."""
    succeeded = result is not None and not error
    text = _storable(result)
    return {
        "status": PhaseStatus.COMPLETED if succeeded else PhaseStatus.FAILED,
        "response_text": text if succeeded else "",
        "error": error[:500],
        "gateway_call": call,
        "prompt_tokens": call.prompt_tokens if call else 0,
        "completion_tokens": call.completion_tokens if call else 0,
        "total_tokens": call.total_tokens if call else 0,
        "cost_micros": call.cost_micros if call else 0,
        "execution_time_ms": int((time.perf_counter() - started) * 1000),
        "completed_at": timezone.now(),
    }


def _finish_params(held: jobs.Claim, phase, token, fields: dict, next_phase, next_token) -> list:
    """_FINISH_CTES's parameters."""
    call = fields["gateway_call"]
    succeeded = fields["status"] == PhaseStatus.COMPLETED
    return [
        held.pk, held.token,
        fields["status"], fields["response_text"], fields["error"],
        call.pk if call is not None else None,
        fields["prompt_tokens"], fields["completion_tokens"], fields["total_tokens"],
        fields["cost_micros"], fields["execution_time_ms"], fields["completed_at"],
        fields["completed_at"], phase.pk, token,
        int(succeeded), int(not succeeded), jobs.lease_until(), fields["completed_at"],
        next_token, fields["completed_at"], fields["completed_at"],
        next_phase.pk if next_phase is not None else None,
    ]  # fmt: skip


def _record_outcome_apart(held: jobs.Claim, phase, token, fields: dict, next_phase, next_token):
    """_FINISH_CTES's steps through the ORM (SQLite), in a transaction, the run row first:
    (1 if the outcome was ours to write else 0, 1 if the next phase was claimed else 0)."""
    counter = "completed_phases" if fields["status"] == PhaseStatus.COMPLETED else "failed_phases"
    claimed = False
    with transaction.atomic():
        ours = held.rows().update(
            **{counter: F(counter) + 1},
            lease_expires_at=jobs.lease_until(),
            updated_at=fields["completed_at"],
        )
        if ours and not OrchestrationPhase.objects.filter(
            pk=phase.pk, claim=token, status=PhaseStatus.RUNNING
        ).update(**fields, updated_at=fields["completed_at"]):
            transaction.set_rollback(True)
            ours = 0
        if ours and next_phase is not None:
            claimed = _claim_pending(held, next_phase.pk, next_token)
    return int(bool(ours)), int(claimed)


class _PhaseOutcome:
    """A phase's outcome, to be written (_FINISH_CTES): by its call's settlement, as the rider
    the gateway asks for when settling (`reservation.settle_rider`), or on its own (`write`)
    when the phase had no call or its call was cancelled."""

    def __init__(self, held: jobs.Claim, phase, token, started: float, next_phase):
        self.held, self.phase, self.token, self.started = held, phase, token, started
        if next_phase is not None and next_phase.status != PhaseStatus.PENDING:
            next_phase = None
        self.next_phase = next_phase
        self.next_token = uuid.uuid4() if next_phase is not None else None
        self.fields: dict | None = None
        self._rider: Rider | None = None

    def _rider_for(self, fields: dict) -> Rider:
        self.fields = fields
        args = (self.held, self.phase, self.token, fields, self.next_phase, self.next_token)
        self._rider = Rider(
            ctes=_FINISH_CTES,
            answer=_FINISH_ANSWER,
            params=_finish_params(*args),
            apart=lambda: _record_outcome_apart(*args),
        )
        return self._rider

    def __call__(self, call, outcome) -> Rider | None:
        """The settlement's rider for `call`; none for a cancelled call (the worker is being
        stopped: the phase stays claimed, for recovery to resume)."""
        if outcome.status == CallStatus.CANCELLED:
            return None
        # A call that did not succeed failed on an upstream error (gateway_run).
        error = "" if outcome.status == CallStatus.SUCCEEDED else _failure(outcome.error)
        return self._rider_for(_outcome_fields(outcome.result, call, error, self.started))

    def written(self) -> tuple[bool, uuid.UUID | None] | None:
        """(ours, the next phase's claim or None) once written; None before."""
        if self._rider is None or self._rider.answered is None:
            return None
        finished, claimed = self._rider.answered
        return bool(finished), self.next_token if claimed else None

    def write(self, *, result, call, error: str) -> tuple[bool, uuid.UUID | None]:
        """Write the outcome in a statement of its own: (ours, the next phase's claim)."""
        rider = self._rider_for(_outcome_fields(result, call, error, self.started))
        if connection.vendor == "postgresql":
            rider.answered = tuple(fetch_prepared(connection.alias, _FINISH_SQL, rider.params)[0])
        else:
            rider.made_apart()
        return self.written()


def _finish_phase(
    held: jobs.Claim, run, phase, token, outcome: _PhaseOutcome, *, result, call, error
) -> tuple[bool, uuid.UUID | None]:
    """Record the phase's outcome under its claim, renew the run's lease, count the phase on
    the run and claim the next phase if it is pending, in one atomic step (done by the call's
    settlement when it had one); then write its artifact when the run has integrations.
    Returns (whether it succeeded, the next phase's claim or None); raises _Stop when the run
    is no longer ours (a cancelled run's phase keeps its usage)."""
    written = outcome.written()
    ours, next_token = written or outcome.write(result=result, call=call, error=error)
    fields = outcome.fields
    succeeded = fields["status"] == PhaseStatus.COMPLETED
    if ours:
        if succeeded and run.integration_enabled:
            _write_integration(run, phase, fields["response_text"])
        return succeeded, next_token
    # Cancelled (or taken over) while the gateway answered: a cancelled run's phase keeps
    # what it used and said, marked cancelled.
    text = _storable(result)
    OrchestrationPhase.objects.filter(
        pk=phase.pk, claim=token, run__status=JobStatus.CANCELLED
    ).update(
        **{**fields, "status": PhaseStatus.CANCELLED, "error": "", "response_text": text},
        updated_at=fields["completed_at"],
    )
    raise _Stop


def _release_dead_calls(run_id) -> None:
    """Give back the unsettled reservations of the phases a dead worker left running."""
    phases = OrchestrationPhase.objects.select_for_update(of=("self",)).select_related("tenant")
    for phase in phases.filter(run_id=run_id, status=PhaseStatus.RUNNING):
        _release_unsettled(phase)


def _skip_rest(run_id, reason: str) -> None:
    OrchestrationPhase.objects.filter(
        run_id=run_id, status__in=[PhaseStatus.PENDING, PhaseStatus.RUNNING]
    ).update(status=PhaseStatus.SKIPPED, error=reason[:500], updated_at=timezone.now())


# Read once per run by every worker: compiled once per process and prepared on PostgreSQL
# (config.prepared), where compiling and planning them anew cost more than running them.
_run_with_owner = CompiledQuery(
    lambda pk: OrchestrationRun.objects.select_related("tenant", "created_by").filter(pk=pk),
    OrchestrationRun._meta.pk,
)
_phases_in_order = CompiledQuery(
    lambda run_id: OrchestrationPhase.objects.filter(run_id=run_id).order_by("position"),
    OrchestrationPhase._meta.get_field("run"),
)


def _end(held: jobs.Claim, run, *, status: str | None = None, error: str = "") -> str | None:
    """Release `run` as completed (a phase completed) or failed, with its event; the status
    it ended in, or None when it was no longer ours. `run` is the worker's copy, its phase
    counters kept in step with the row's (while the run is ours, only its worker moves them);
    the release, conditional on the claim, locks the row, which orders it with a
    cancellation."""
    status = status or (JobStatus.COMPLETED if run.completed_phases else JobStatus.FAILED)
    if status == JobStatus.FAILED:
        error = error or "No phase completed."
    with transaction.atomic():
        if status == JobStatus.FAILED:  # it gives dead calls' reservations back
            gateway_tokens_lock(tenant_id=run.tenant_id)  # first: see gateway_tokens_lock
        ended = jobs.release(held, status=status, error=error, started_at=run.started_at)
        if not ended:
            return None
        if status == JobStatus.FAILED:
            _release_dead_calls(run.pk)
            _skip_rest(run.pk, error)
        for name, value in {**ended, "status": status, "error": error[:500]}.items():
            setattr(run, name, value)
        record(
            tenant=run.tenant,
            event_type=f"orchestration.{status}",
            payload={**_run_payload(run), "error": run.error},
        )
    return status


def orchestration_run_execute(*, run_id, token=None, taking_over=()) -> str | None:
    """Execute run `run_id` from its first phase not completed, if it is ours to run (see the
    module docstring), claimed under `token`, taking over the claims of `taking_over`
    (playground.jobs.claim). Returns the status it ended in, or None when it was not ours. An
    outage propagates: the task sends the run again."""
    held = jobs.claim(OrchestrationRun, run_id, token=token, taking_over=taking_over)
    if held is None:
        return None
    [run] = _run_with_owner(run_id)
    if run.tenant.status in BLOCKED_STATUSES:
        return _end(held, run, status=JobStatus.FAILED, error="The organization is suspended.")
    # The gateway's own view of the catalogue (what gateway_reserve will resolve the model in).
    model = catalogue_cache.models().get(run.ai_model)
    phases = _phases_in_order(run_id)
    done = [(p.name, p.response_text) for p in phases if p.status == PhaseStatus.COMPLETED]
    if run.integration_enabled and run.attempts > 1:
        for phase in phases:
            if phase.status == PhaseStatus.COMPLETED:
                _write_integration(run, phase, phase.response_text)
    todo = [p for p in phases if p.status in (PhaseStatus.PENDING, PhaseStatus.RUNNING)]
    try:
        token = _claim_phase(held, todo[0]) if todo else None
        for index, phase in enumerate(todo):
            if token is None:
                token = _claim_phase(held, phase)
                if token is None:
                    continue
            following = todo[index + 1] if index + 1 < len(todo) else None
            outcome = _PhaseOutcome(held, phase, token, time.perf_counter(), following)
            if model is None:
                result, call, error, fatal = None, None, f"{run.ai_model} left the catalogue.", True
            else:
                messages = _phase_messages(run, phase, done, model)
                result, call, error, fatal = _call_gateway(run, phase.pk, token, messages, outcome)
            if fatal:
                outcome.next_phase = outcome.next_token = None
            succeeded, token = _finish_phase(
                held, run, phase, token, outcome, result=result, call=call, error=error
            )
            # Counted on the row too, by _finish_phase's statement.
            if succeeded:
                run.completed_phases += 1
                done.append((phase.name, result.content))
            else:
                run.failed_phases += 1
            if fatal:
                return _end(held, run, status=JobStatus.FAILED, error=error)
    except _Stop:
        return None
    return _end(held, run)


# Cancel and fail ------------------------------------------------------------------------------


@transaction.atomic
def orchestration_run_cancel(*, run: OrchestrationRun, actor) -> OrchestrationRun:
    """Cancel a pending or running run at once: its pending phases and the one running are
    marked cancelled; the worker stops when its gateway call returns (that phase keeps its
    usage). A finished run is 409."""
    gateway_tokens_lock(tenant_id=run.tenant_id)  # first: see gateway_tokens_lock
    run = jobs.cancel(run, noun="run", id_field="run_id")
    if run.status == JobStatus.RUNNING and jobs.is_stalled(run):
        _release_dead_calls(run.pk)  # its worker died mid-call: nobody else will
    jobs.stop(run, status=JobStatus.CANCELLED)
    OrchestrationPhase.objects.filter(
        run=run, status__in=[PhaseStatus.PENDING, PhaseStatus.RUNNING]
    ).update(status=PhaseStatus.CANCELLED, updated_at=run.completed_at)
    record(
        tenant=run.tenant, event_type="orchestration.cancelled", actor=actor,
        payload=_run_payload(run),
    )  # fmt: skip
    return run


@transaction.atomic
def orchestration_run_fail(*, job: OrchestrationRun, reason: str) -> bool:
    """Fail a run whose worker stopped too often (the reaper's last resort), unless it moved
    on meanwhile. Its running phase fails with `reason`; the pending ones are skipped."""
    gateway_tokens_lock(tenant_id=job.tenant_id)  # first: see gateway_tokens_lock
    run = locked_or_404(OrchestrationRun.objects, pk=job.pk)
    if not jobs.is_stalled(run):
        return False
    now = timezone.now()
    _release_dead_calls(run.pk)
    OrchestrationPhase.objects.filter(run=run, status=PhaseStatus.RUNNING).update(
        status=PhaseStatus.FAILED, error=reason[:500], completed_at=now, updated_at=now
    )
    _skip_rest(run.pk, reason)
    failed = OrchestrationPhase.objects.filter(run=run, status=PhaseStatus.FAILED).count()
    jobs.stop(run, status=JobStatus.FAILED, error=reason, failed_phases=failed)
    record(
        tenant=run.tenant,
        event_type="orchestration.failed",
        payload={**_run_payload(run), "error": run.error},
    )
    return True
