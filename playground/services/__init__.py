"""Playground state changes, one module per area: the one place their rules live.

    gateway    the LLM gateway: reserve, call (retries, fallbacks, cooldown), settle, record
    ledger     the gateway's tokens in the database: reservation and settlement
    templates  prompt templates and their versions, bulk operations, executions and ratings
    projects   projects and orchestration templates

Services are keyword-only, run in a transaction and record their audit event where they
change state; tests/audit/test_service_coverage.py holds each to it. The one exception is the
gateway's metering on PostgreSQL: each step is a single SQL statement in autocommit, atomic by
itself, because a transaction around it would hold the organization's hot quota row locked
across a round trip (ledger.py says why and what it measured).
"""

from .gateway import (
    ChatInput,
    GatewayStream,
    gateway_abandon,
    gateway_call,
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
from .templates import (
    prompt_execution_rate,
    prompt_template_create,
    prompt_template_delete,
    prompt_template_execute,
    prompt_template_publish,
    prompt_template_update,
    prompt_templates_bulk,
)

__all__ = [
    "ChatInput",
    "GatewayStream",
    "gateway_abandon",
    "gateway_call",
    "gateway_clients_close",
    "gateway_complete",
    "gateway_reserve",
    "gateway_run",
    "gateway_settle",
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
]
