"""The workflow registry: the job types `POST workflows/execute` runs (docs/orchestration.md,
"Workflows").

Each type names the permission it needs on top of `playground.execute`, checks its
`input_data` when the job is requested (a bad input is a 400 naming what is wrong, and no job
is made), and runs in a worker through a `JobContext`, which renews the job's lease at each
checkpoint and stops the job when it was cancelled. Each writes its result, as it makes it,
to the context's `artifact` (a temporary file, never whole in memory, refused as soon as it
outgrows the tenant's storage quota), stored as the job's artifact; and returns its
`output_data`.

- `template_batch`: a prompt template over 1 to WORKFLOW_BATCH_MAX_ROWS rows of variables,
  each row one metered execution (recorded, linked to the job and its row, so a resumed job
  skips the rows already answered); the results as a JSON Lines artifact.
- `usage_report`: the tenant's gateway calls from `start` to `end` (dates, UTC, inclusive) as
  a CSV artifact, with totals per model in `output_data`.
- `audit_export`: the tenant's audit chain, as `GET audit/export` writes it (JSON Lines,
  verifiable offline), optionally from `from_seq` to `to_seq`.

A new type is a `WorkflowType` added to REGISTRY: its check, its runner, its permission.
"""

import csv
import functools
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock

from django.conf import settings
from django.db.models import Count, Sum

from audit.export import export_lines
from audit.services import chain_seal
from config.db import raw_uuid
from config.exceptions import ApplicationError
from config.files import Spool
from config.prepared import Rider
from config.renderers import csv_cell

from . import jobs, rendering
from .models import CallSource, GatewayCall, PromptExecution, PromptTemplate, WorkflowJob
from .selectors import template_version

# How often a long export renews its lease and looks for a cancellation.
EXPORT_CHECKPOINT_ROWS = 1000


class JobStopped(Exception):
    """The job is no longer this worker's: cancelled, or taken over after its lease expired."""


@dataclass
class JobContext:
    """What a runner gets: the job, `checkpoint` to call as it makes progress, and `artifact`
    to write its result to (config.files.Spool: bytes or text)."""

    job: WorkflowJob
    held: jobs.Claim
    artifact: Spool

    def checkpoint(self, done: int | None = None) -> None:
        """Renew the lease (and record `done` units of progress); raises JobStopped when the
        job is no longer ours, so the runner stops where it is."""
        progress = {"progress_done": done} if done is not None else {}
        if not jobs.renew(self.held, **progress):
            raise JobStopped

    def note(self, request_id: str, amount: int) -> Rider:
        """The note of the gateway reservation for call `request_id` on the job (the gateway's
        `note`, made in the reservation's statement): a worker that dies before settling it
        leaves it to give back (playground.services.workflows). When the job is no longer
        ours it notes nothing, and the gateway gives the reservation back and calls nothing
        (ReservationNotNoted, which the runner turns into JobStopped)."""
        held = self.held
        table = WorkflowJob._meta.db_table
        params = [amount, request_id, raw_uuid(held.pk), held.token]
        return Rider(
            ctes=(
                f"note AS (UPDATE {table} SET reserved_tokens = %s, reserved_call = %s "  # noqa: S608
                "WHERE id = %s AND status = 'running' AND lease_token = %s "
                "AND EXISTS (SELECT 1 FROM quota_update) RETURNING id)"
            ),
            answer="(SELECT count(*) FROM note)",
            params=params,
            apart=lambda: (held.update(reserved_tokens=amount, reserved_call=request_id),),
            undo=lambda: held.update(reserved_tokens=0, reserved_call=""),
        )

    def request_id(self, unit) -> str:
        """The request id of the gateway call for one unit of work under this claim
        (`job:<id>:<unit>:<claim>`): recovery tells a settled call (one is recorded under it)
        from one whose worker died first."""
        return f"job:{self.job.pk}:{unit}:{self.held.token}"


@dataclass(frozen=True)
class WorkflowType:
    name: str
    description: str
    permission: str
    # input_data -> (normalised input, units of work); ApplicationError when invalid.
    check: Callable[..., tuple[dict, int]]
    # (context, tenant, actor) -> (output_data, artifact name, content type), the artifact
    # written to context.artifact.
    run: Callable[..., tuple[dict, str, str]]


def _invalid(problems: dict[str, list[str]]) -> ApplicationError:
    return ApplicationError("Invalid workflow input.", details=problems)


def _keys(data: Mapping, allowed: set[str], required: set[str]) -> None:
    problems = {}
    for key in sorted(set(data) - allowed):
        problems[f"input_data.{key}"] = [f"Unknown (known: {', '.join(sorted(allowed))})."]
    for key in sorted(required - set(data)):
        problems[f"input_data.{key}"] = ["Required."]
    if problems:
        raise _invalid(problems)


def _whole(value, field: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid({f"input_data.{field}": [f"A whole number, at least {minimum}."]})
    return value


# template_batch ---------------------------------------------------------------------------------


def _batch_version(tenant, data: Mapping):
    template = PromptTemplate.objects.filter(tenant=tenant, pk=_uuid(data["template_id"])).first()
    if template is None:
        raise _invalid({"input_data.template_id": ["No such prompt template."]})
    version = data.get("version")
    label = None
    if version is None:
        label = "production" if template.production_version else "latest"
    else:
        version = _whole(version, "version")
    try:
        return template, template_version(template, version=version, label=label)
    except ApplicationError as error:
        raise _invalid({"input_data.version": [str(error.detail)]}) from None


def _uuid(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def check_template_batch(tenant, data: Mapping) -> tuple[dict, int]:
    _keys(data, {"template_id", "version", "rows"}, {"template_id", "rows"})
    rows = data["rows"]
    limit = settings.WORKFLOW_BATCH_MAX_ROWS
    if not isinstance(rows, list) or not 1 <= len(rows) <= limit:
        raise _invalid({"input_data.rows": [f"A list of 1 to {limit} objects of variables."]})
    template, version = _batch_version(tenant, data)
    problems = {}
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            problems[f"input_data.rows[{index}]"] = ["An object of variables."]
            continue
        try:
            values = rendering.resolve_values(version.variables, row)
            rendering.ensure_renderable(version.texts, values)
        except rendering.TemplateError as error:
            problems[f"input_data.rows[{index}]"] = [
                message for messages in error.errors.values() for message in messages
            ]
        if len(problems) >= 20:
            break
    if problems:
        raise _invalid(problems)
    checked = {"template_id": str(template.pk), "version": version.version, "rows": rows}
    return checked, len(rows)


def _execute_row(context: JobContext, template, version, actor, index: int, row: dict):
    from .services.gateway import ReservationNotNoted
    from .services.templates import prompt_template_execute

    request_id = context.request_id(f"row:{index}")
    try:
        return jobs.waiting_out_throttles(
            lambda: prompt_template_execute(
                template=template,
                version=version,
                actor=actor,
                api_key=None,
                variables=row,
                save_execution=False,
                source=CallSource.WORKFLOW,
                request_id=request_id,
                note=functools.partial(context.note, request_id),
            )
        )
    except ReservationNotNoted:
        raise JobStopped from None


def run_template_batch(context: JobContext, tenant, actor):
    job = context.job
    data = job.input_data
    template = PromptTemplate.objects.filter(tenant=tenant, pk=data["template_id"]).first()
    version = template and template.versions.filter(version=data["version"]).first()
    if version is None:
        raise ApplicationError(
            "The batch's prompt template (or its version) was deleted.",
            details={"template_id": [data["template_id"]], "version": [data["version"]]},
        )
    answered = set(
        PromptExecution.objects.filter(workflow_job=job).values_list("batch_row", flat=True)
    )
    for index, row in enumerate(data["rows"]):
        if index in answered:
            continue
        context.checkpoint(done=len(answered))
        execution = _execute_row(context, template, version, actor, index, row)
        execution.workflow_job = job
        execution.batch_row = index
        execution.save()
        answered.add(index)
    context.checkpoint(done=len(answered))
    executions = PromptExecution.objects.filter(workflow_job=job).order_by("batch_row")
    rows, succeeded, total_tokens, cost = 0, 0, 0, 0
    for execution in executions.iterator():
        rows += 1
        succeeded += execution.status == "succeeded"
        total_tokens += execution.tokens_used
        cost += execution.cost_micros
        context.artifact.write(
            json.dumps(
                {
                    "row": execution.batch_row,
                    "variables": execution.variables,
                    "status": execution.status,
                    "output": execution.output,
                    "error": execution.error,
                    "model": execution.model,
                    "prompt_tokens": execution.prompt_tokens,
                    "completion_tokens": execution.completion_tokens,
                    "total_tokens": execution.tokens_used,
                    "cost_micros": execution.cost_micros,
                    "execution_id": str(execution.pk),
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    output = {
        "rows": rows,
        "succeeded": succeeded,
        "failed": rows - succeeded,
        "total_tokens": total_tokens,
        "cost_micros": cost,
        "template_id": str(template.pk),
        "version": version.version,
    }
    return output, f"template-batch-{job.pk}.jsonl", "application/x-ndjson"


# usage_report -----------------------------------------------------------------------------------


def _date(value) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def check_usage_report(tenant, data: Mapping) -> tuple[dict, int]:
    _keys(data, {"start", "end"}, {"start", "end"})
    start, end = _date(data["start"]), _date(data["end"])
    problems = {}
    for name, value in (("start", start), ("end", end)):
        if value is None:
            problems[f"input_data.{name}"] = ["A date, YYYY-MM-DD."]
    if not problems and start > end:
        problems["input_data.end"] = ["On or after start."]
    elif not problems and (end - start).days + 1 > settings.WORKFLOW_REPORT_MAX_DAYS:
        problems["input_data.end"] = [f"At most {settings.WORKFLOW_REPORT_MAX_DAYS} days."]
    if problems:
        raise _invalid(problems)
    return {"start": start.isoformat(), "end": end.isoformat()}, 0


REPORT_COLUMNS = (
    "created_at",
    "source",
    "requested_model",
    "model",
    "provider",
    "status",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_micros",
    "latency_ms",
    "time_to_first_token_ms",
    "streamed",
    "usage_estimated",
    "api_key_id",
    "user_id",
    "request_id",
)


def _range(data: Mapping) -> tuple[datetime, datetime]:
    start = datetime.combine(date.fromisoformat(data["start"]), clock.min, tzinfo=UTC)
    end = datetime.combine(date.fromisoformat(data["end"]), clock.min, tzinfo=UTC)
    return start, end + timedelta(days=1)


def run_usage_report(context: JobContext, tenant, actor):
    job = context.job
    start, end = _range(job.input_data)
    calls = GatewayCall.objects.filter(tenant=tenant, created_at__gte=start, created_at__lt=end)
    writer = csv.writer(context.artifact)
    writer.writerow(REPORT_COLUMNS)
    written = 0
    for row in calls.order_by("created_at", "id").values_list(*REPORT_COLUMNS).iterator(2000):
        # One rule for the platform's CSV cells (the API's CSV answers too): a request id a
        # client chose may start as a formula would.
        writer.writerow(csv_cell(value) for value in row)
        written += 1
        if written % EXPORT_CHECKPOINT_ROWS == 0:
            context.checkpoint(done=written)
    context.checkpoint(done=written)
    by_model = {
        row["model"]: {
            "calls": row["calls"],
            "total_tokens": row["total_tokens"] or 0,
            "cost_micros": row["cost_micros"] or 0,
        }
        for row in calls.values("model")
        .annotate(
            calls=Count("id"), total_tokens=Sum("total_tokens"), cost_micros=Sum("cost_micros")
        )
        .order_by("model")
    }
    output = {
        **job.input_data,
        "calls": written,
        "total_tokens": sum(m["total_tokens"] for m in by_model.values()),
        "cost_micros": sum(m["cost_micros"] for m in by_model.values()),
        "currency": settings.GATEWAY_CURRENCY,
        "by_model": by_model,
    }
    name = f"usage-{job.input_data['start']}-to-{job.input_data['end']}.csv"
    return output, name, "text/csv; charset=utf-8"


# audit_export -----------------------------------------------------------------------------------


def check_audit_export(tenant, data: Mapping) -> tuple[dict, int]:
    _keys(data, {"from_seq", "to_seq"}, set())
    from_seq = data.get("from_seq")
    checked = {"from_seq": 1 if from_seq is None else _whole(from_seq, "from_seq")}
    if data.get("to_seq") is not None:
        checked["to_seq"] = _whole(data["to_seq"], "to_seq")
        if checked["to_seq"] < checked["from_seq"]:
            raise _invalid({"input_data.to_seq": ["At least from_seq."]})
    return checked, 0


def run_audit_export(context: JobContext, tenant, actor):
    data = context.job.input_data
    # Events are sealed shortly after they are recorded; seal what is pending so the export
    # is up to the moment it was asked for.
    chain_seal(tenant_id=tenant.pk)
    events = 0
    for line in export_lines(tenant.pk, from_seq=data["from_seq"], to_seq=data.get("to_seq")):
        context.artifact.write(line)
        if line.startswith('{"type":"event"'):
            events += 1
            if events % EXPORT_CHECKPOINT_ROWS == 0:
                context.checkpoint(done=events)
    context.checkpoint(done=events)
    output = {**data, "events": events}
    name = f"audit-{tenant.slug}-{context.job.pk}.jsonl"
    return output, name, "application/x-ndjson"


def hidden_types(permissions) -> list[str]:
    """The workflow types whose permission `permissions` lack: their jobs and artifacts are
    "not found" for that caller (a usage report's totals, the audit chain)."""
    return [name for name, workflow in REGISTRY.items() if workflow.permission not in permissions]


REGISTRY: dict[str, WorkflowType] = {
    workflow.name: workflow
    for workflow in (
        WorkflowType(
            name="template_batch",
            description="Run a prompt template over up to 1,000 rows of variables; the results "
            "as JSON Lines.",
            permission="playground.execute",
            check=check_template_batch,
            run=run_template_batch,
        ),
        WorkflowType(
            name="usage_report",
            description="The organization's gateway calls from start to end (dates) as CSV, "
            "with totals per model.",
            permission="analytics.read",
            check=check_usage_report,
            run=run_usage_report,
        ),
        WorkflowType(
            name="audit_export",
            description="The organization's audit chain as JSON Lines, verifiable offline.",
            permission="audit.read",
            check=check_audit_export,
            run=run_audit_export,
        ),
    )
}
