"""Playground state changes, one module per area: the one place their rules live.

    gateway    the LLM gateway: reserve, call (retries, fallbacks, cooldown), settle, record
    ledger     the gateway's tokens in the database: reservation and settlement
    templates  prompt templates and their versions, bulk operations, executions and ratings
    projects   projects and orchestration templates
    runs       orchestration runs: start, execute (phase by phase), cancel, fail
    workflows  workflow jobs from the registry (playground.workflows): request, execute, cancel
    artifacts  files jobs write, counted against the storage quota
    reaper     stalled runs and jobs (playground.jobs): resumed or failed

Services are keyword-only, run in a transaction and record their audit event where they
change state; tests/audit/test_service_coverage.py holds each to it. The one exception is the
gateway's metering on PostgreSQL: each step is a single SQL statement in autocommit, atomic by
itself, because a transaction around it would hold the organization's hot quota row locked
across a round trip (ledger.py says why and what it measured).
"""

from .artifacts import artifact_delete, artifact_write, artifacts_delete
from .gateway import (
    ChatInput,
    GatewayStream,
    gateway_abandon,
    gateway_call,
    gateway_call_reserved,
    gateway_clients_close,
    gateway_complete,
    gateway_reserve,
    gateway_run,
    gateway_settle,
)
from .projects import (
    orchestration_template_create,
    orchestration_template_delete,
    orchestration_template_update,
    project_create,
    project_delete,
    project_update,
)
from .reaper import stalled_jobs_reap
from .runs import (
    orchestration_run_cancel,
    orchestration_run_execute,
    orchestration_run_fail,
    orchestration_start,
)
from .templates import (
    prompt_execution_rate,
    prompt_template_create,
    prompt_template_delete,
    prompt_template_execute,
    prompt_template_publish,
    prompt_template_update,
    prompt_templates_bulk,
)
from .workflows import (
    workflow_execute,
    workflow_job_cancel,
    workflow_job_execute,
    workflow_job_fail,
)

__all__ = [
    "ChatInput",
    "GatewayStream",
    "artifact_delete",
    "artifact_write",
    "artifacts_delete",
    "gateway_abandon",
    "gateway_call",
    "gateway_call_reserved",
    "gateway_clients_close",
    "gateway_complete",
    "gateway_reserve",
    "gateway_run",
    "gateway_settle",
    "orchestration_run_cancel",
    "orchestration_run_execute",
    "orchestration_run_fail",
    "orchestration_start",
    "orchestration_template_create",
    "orchestration_template_delete",
    "orchestration_template_update",
    "project_create",
    "project_delete",
    "project_update",
    "prompt_execution_rate",
    "prompt_template_create",
    "prompt_template_delete",
    "prompt_template_execute",
    "prompt_template_publish",
    "prompt_template_update",
    "prompt_templates_bulk",
    "stalled_jobs_reap",
    "workflow_execute",
    "workflow_job_cancel",
    "workflow_job_execute",
    "workflow_job_fail",
]
