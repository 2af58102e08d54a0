"""AI agents: configurations created, changed and deleted (audited, `ai_agent.*`), and the
outcomes recorded against them.

An agent's `model` is a name of the gateway's active catalogue, and its `max_tokens`
threshold stays within that model's output limit. Its record (`assertions`, `accuracy`,
`avg_latency`) comes only from `agent_assertion_record`, which counts each outcome with one
atomic UPDATE, so concurrent outcomes are all counted.
"""

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.services import record
from config.db import create_or_conflict, locked_or_404, update_or_conflict
from config.exceptions import ApplicationError
from config.services import UNSET, given, person
from playground.selectors import callable_models
from tenants.models import Tenant

from ..models import AgentAssertion, AiAgent, Ticket


def _record(event_type: str, actor, agent: AiAgent, **payload) -> None:
    record(
        tenant=agent.tenant,
        event_type=event_type,
        actor=actor,
        payload={"agent_id": str(agent.pk), "name": agent.name, "type": agent.type, **payload},
    )


def _check_model(model: str, thresholds: dict) -> None:
    """The model is served by the gateway and `max_tokens` fits its output limit."""
    found = callable_models().filter(name=model).first()
    if found is None:
        names = ", ".join(callable_models().values_list("name", flat=True)[:20])
        raise ApplicationError(
            "Invalid model.",
            details={"model": [f"Not a model of the gateway's catalogue. Available: {names}."]},
        )
    limit = found.max_output_tokens
    if (thresholds or {}).get("max_tokens", 0) > limit:
        raise ApplicationError(
            "Invalid thresholds.",
            details={"thresholds": {"max_tokens": [f"At most {limit} for {model}."]}},
        )


def _name_taken(name: str) -> dict:
    return {
        "conflict_message": f"The organization already has an agent named {name!r}.",
        "conflict_details": {"name": ["Taken in the organization."]},
    }


@transaction.atomic
def ai_agent_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    type: str,
    model: str,
    description: str = "",
    enabled: bool = True,
    status: str = "ACTIVE",
    data_sources: list | None = None,
    thresholds: dict | None = None,
) -> AiAgent:
    _check_model(model, thresholds or {})
    Tenant.objects.ensure_room(
        tenant.pk,
        AiAgent.objects.filter(tenant=tenant),
        limit=settings.AI_AGENTS_PER_TENANT,
        counted="ai_agents",
        noun="AI agents",
    )
    agent = create_or_conflict(
        AiAgent,
        **_name_taken(name),
        tenant=tenant,
        name=name,
        type=type,
        model=model,
        description=description,
        enabled=enabled,
        status=status,
        data_sources=list(data_sources or []),
        thresholds=dict(thresholds or {}),
        created_by=person(actor),
    )
    _record("ai_agent.created", actor, agent)
    return agent


@transaction.atomic
def ai_agent_update(
    *,
    ai_agent: AiAgent,
    actor,
    name=UNSET,
    type=UNSET,
    model=UNSET,
    description=UNSET,
    enabled=UNSET,
    status=UNSET,
    data_sources=UNSET,
    thresholds=UNSET,
) -> AiAgent:
    agent = locked_or_404(AiAgent.objects.select_related("tenant"), pk=ai_agent.pk)
    changes = given(
        name=name,
        type=type,
        model=model,
        description=description,
        enabled=enabled,
        status=status,
        data_sources=data_sources,
        thresholds=thresholds,
    )
    new_model = changes.get("model", agent.model)
    new_thresholds = changes.get("thresholds", agent.thresholds)
    # Checked only when they change: an agent whose model was retired can still be paused.
    if new_model != agent.model or new_thresholds != agent.thresholds:
        _check_model(new_model, new_thresholds)
    changed = update_or_conflict(agent, changes, **_name_taken(changes.get("name", agent.name)))
    if changed:
        _record("ai_agent.updated", actor, agent, changed=sorted(changed))
    return agent


@transaction.atomic
def ai_agent_delete(*, ai_agent: AiAgent, actor) -> None:
    agent = locked_or_404(AiAgent.objects.select_related("tenant"), pk=ai_agent.pk)
    _record("ai_agent.deleted", actor, agent, assertions=agent.assertions_count)
    agent.delete()


@transaction.atomic
def agent_assertion_record(
    *, ai_agent: AiAgent, actor, correct: bool, latency_ms: int, ticket=None, note: str = ""
) -> AgentAssertion:
    """Record one outcome of the agent and count it in its record (one atomic UPDATE)."""
    ai_agent = locked_or_404(AiAgent.objects.select_related("tenant"), pk=ai_agent.pk)
    ticket_id = getattr(ticket, "pk", ticket)
    if (
        ticket_id is not None
        and not Ticket.objects.filter(tenant_id=ai_agent.tenant_id, pk=ticket_id).exists()
    ):
        raise ApplicationError(
            "Invalid ticket.", details={"ticket_id": ["No ticket of the organization has this id."]}
        )
    assertion = AgentAssertion.objects.create(
        tenant_id=ai_agent.tenant_id,
        agent_id=ai_agent.pk,
        correct=correct,
        latency_ms=latency_ms,
        ticket_id=ticket_id,
        note=note,
    )
    AiAgent.objects.filter(pk=ai_agent.pk).update(
        assertions_count=F("assertions_count") + 1,
        correct_count=F("correct_count") + (1 if correct else 0),
        latency_ms_total=F("latency_ms_total") + latency_ms,
        updated_at=timezone.now(),
    )
    record(
        tenant=ai_agent.tenant,
        event_type="ai_agent.assertion_recorded",
        actor=actor,
        payload={
            "agent_id": str(ai_agent.pk),
            "assertion_id": str(assertion.pk),
            "correct": correct,
            "latency_ms": latency_ms,
        },
    )
    return assertion
