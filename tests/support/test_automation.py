"""AI agents: the generic battery for /api/v1/support/agents/; creating one on a model of the
gateway's active catalogue with thresholds within its output limit, the name unique in the
organization, read-only record keys refused; updates re-checking model and thresholds, PUT of
the shown document, status changes audited; recording outcomes (`POST {id}/assertions/`) and
the record they make (assertions, accuracy, avg_latency), counted exactly under concurrency;
deletion with its assertions; filters and search; who may do what."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from audit.models import AuditEvent
from support.models import AgentAssertion, AiAgent
from support.services import agent_assertion_record
from tenants.models import Role
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import TenantFactory
from tests.playground.factories import LanguageModelFactory

from .factories import AiAgentFactory, TicketFactory

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/support/agents/"
LIVE_KEYS = ("assertions", "accuracy", "avg_latency")


def detail(agent) -> str:
    return f"{AGENTS}{agent.pk}/"


def assertions_url(agent) -> str:
    return f"{AGENTS}{agent.pk}/assertions/"


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def agent_body(**overrides) -> dict:
    """A valid create body on a model of its own (2,048 output tokens)."""
    body = {
        "name": "Reply drafter",
        "type": "RESPONSE_RECOMMENDATION",
        "model": LanguageModelFactory(max_output_tokens=2_048).name,
        "description": "Drafts the first reply.",
        "data_sources": ["Conversation History", "Customer Profile"],
        "thresholds": {"confidence": 0.85, "max_tokens": 500},
    }
    body.update(overrides)
    return body


def create(caller, **overrides):
    return caller.client.post(AGENTS, agent_body(**overrides), format="json")


def agent_events(tenant, event_type=None):
    events = AuditEvent.objects.filter(tenant=tenant, event_type__startswith="ai_agent.")
    if event_type is not None:
        events = events.filter(event_type=event_type)
    return events


def post_assertion(caller, agent, **body):
    body.setdefault("correct", True)
    body.setdefault("latency_ms", 1_000)
    return caller.client.post(assertions_url(agent), body, format="json")


def listed(caller, **params) -> set[str]:
    response = caller.client.get(AGENTS, {**params, "page_size": 100})
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def ids(*objects) -> set[str]:
    return {str(obj.pk) for obj in objects}


# The battery ------------------------------------------------------------------------------------


class TestAiAgents(ResourceBattery):
    url = AGENTS
    update_data = {"status": "PAUSED", "enabled": False, "description": "Paused for review."}
    audit_prefix = "ai_agent"

    @property
    def create_data(self):
        # A model of its own for each body: the seeded catalogue is not relied upon.
        return agent_body()


# Creation ----------------------------------------------------------------------------------------


def test_create_round_trips_every_field_and_is_audited(owner):
    body = agent_body(
        name="Mood reader",
        type="SENTIMENT_ANALYSIS",
        description="Reads the mood.\nFlags the angry ones.",
        enabled=False,
        status="PAUSED",
        data_sources=["Conversation History", "Ticket Tags", "Customer Profile"],
        thresholds={"confidence": 0.7, "max_tokens": 2_048},
    )

    response = owner.client.post(AGENTS, body, format="json")

    assert response.status_code == 201, response.content
    shown = response.json()
    for key, value in body.items():
        assert shown[key] == value, key
    assert shown["assertions"] == 0
    assert shown["accuracy"] is None
    assert shown["avg_latency"] is None
    assert shown["created_by"]["id"] == str(owner.user.pk)
    assert owner.client.get(f"{AGENTS}{shown['id']}/").json() == shown
    agent = AiAgent.objects.get(pk=shown["id"])
    assert agent.tenant_id == owner.tenant.pk
    assert agent.thresholds == {"confidence": 0.7, "max_tokens": 2_048}
    assert agent.data_sources == body["data_sources"]
    event = agent_events(owner.tenant, "ai_agent.created").get()
    assert event.payload == {"agent_id": shown["id"], "name": "Mood reader", "type": body["type"]}
    assert event.actor_id == owner.user.pk


def test_a_minimal_creation_takes_the_defaults(owner):
    model = LanguageModelFactory()

    response = owner.client.post(
        AGENTS, {"name": "Router", "type": "TICKET_ROUTING", "model": model.name}, format="json"
    )

    assert response.status_code == 201, response.content
    shown = response.json()
    assert shown["enabled"] is True
    assert shown["status"] == "ACTIVE"
    assert shown["description"] == ""
    assert shown["data_sources"] == []
    assert shown["thresholds"] == {}


def test_a_model_of_the_seeded_catalogue_is_accepted(owner):
    from playground.selectors import callable_models

    seeded = callable_models().first()
    assert seeded is not None, "the gateway catalogue is seeded by a data migration"

    response = create(owner, model=seeded.name, thresholds={"confidence": 0.5})

    assert response.status_code == 201, response.content
    assert response.json()["model"] == seeded.name


@pytest.mark.parametrize("which", ["unknown", "inactive", "blank", "number"])
def test_a_model_outside_the_active_catalogue_is_400_naming_model(owner, which):
    retired = LanguageModelFactory(active=False)
    model = {"unknown": "no-such-model", "inactive": retired.name, "blank": "", "number": 4}[which]

    error = assert_envelope(create(owner, model=model), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {"model"}
    assert retired.name not in str(error["details"])
    assert not AiAgent.objects.filter(tenant=owner.tenant).exists()
    assert not agent_events(owner.tenant).exists()


def test_max_tokens_may_reach_the_models_output_limit_but_not_pass_it(owner):
    model = LanguageModelFactory(max_output_tokens=1_024)

    over = create(owner, model=model.name, thresholds={"confidence": 0.5, "max_tokens": 1_025})
    at = create(owner, model=model.name, thresholds={"confidence": 0.5, "max_tokens": 1_024})

    error = assert_envelope(over, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {"thresholds"}
    assert "max_tokens" in error["details"]["thresholds"]
    assert "1024" in str(error["details"]["thresholds"]["max_tokens"])
    assert at.status_code == 201, at.content
    assert at.json()["thresholds"]["max_tokens"] == 1_024
    assert AiAgent.objects.filter(tenant=owner.tenant).count() == 1


@pytest.mark.parametrize(
    "thresholds",
    [
        {"confidence": -0.01},
        {"confidence": 1.01},
        {"confidence": "high"},
        {"confidence": None},
        {"max_tokens": 0},
        {"max_tokens": 1.5},
        {"max_tokens": "many"},
        {"temperature": 0.2},
        {"confidence": 0.5, "Max_Tokens": 10},
        [0.5, 500],
        "confidence=0.5",
        0.5,
        None,
    ],
)
def test_bad_thresholds_are_400(owner, thresholds):
    error = assert_envelope(create(owner, thresholds=thresholds), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {"thresholds"}
    assert not AiAgent.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize("confidence", [0, 1, 0.0, 1.0, 0.5])
def test_confidence_takes_its_bounds(owner, confidence):
    response = create(owner, thresholds={"confidence": confidence})

    assert response.status_code == 201, response.content
    assert response.json()["thresholds"] == {"confidence": float(confidence)}


@pytest.mark.parametrize(
    "data_sources",
    [
        [f"Source {n}" for n in range(21)],
        ["x" * 101],
        ["Bell\x07source"],
        ["Line\nbreak"],
        ["Zero\u200bwidth"],
        ["Fine", ""],
        ["Fine", 5],
        ["Fine", None],
        [{"name": "Fine"}],
        "Conversation History",
        {"0": "Conversation History"},
        None,
    ],
)
def test_bad_data_sources_are_400(owner, data_sources):
    error = assert_envelope(create(owner, data_sources=data_sources), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {"data_sources"}
    assert not AiAgent.objects.filter(tenant=owner.tenant).exists()


def test_twenty_data_sources_of_a_hundred_characters_are_accepted(owner):
    sources = [f"{n:02d}" + "x" * 98 for n in range(20)]

    response = create(owner, data_sources=sources)

    assert response.status_code == 201, response.content
    assert response.json()["data_sources"] == sources


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "response_recommendation"),
        ("type", "ROBOT"),
        ("type", 1),
        ("type", None),
        ("status", "RUNNING"),
        ("status", "paused"),
        ("status", True),
        ("enabled", "true"),
        ("enabled", 1),
        ("enabled", None),
        ("name", ""),
        ("name", 42),
        ("name", "x" * 201),
        ("name", "Evil\u202eAgent"),
        ("description", "Bell\x07"),
        ("description", "x" * 2_001),
    ],
)
def test_enums_and_text_are_validated(owner, field, value):
    error = assert_envelope(create(owner, **{field: value}), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {field}
    assert not AiAgent.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize("field", ["name", "type", "model"])
def test_name_type_and_model_are_required(owner, field):
    body = agent_body()
    del body[field]

    error = assert_envelope(owner.client.post(AGENTS, body, format="json"), 400)

    assert set(error["details"]) == {field}


@pytest.mark.parametrize("agent_type", ["CUSTOMER_SPEND", "CUSTOM", "TICKET_ROUTING"])
def test_every_type_is_accepted(owner, agent_type):
    response = create(owner, name=f"Agent {agent_type}", type=agent_type, status="DISABLED")

    assert response.status_code == 201, response.content
    assert response.json()["type"] == agent_type
    assert response.json()["status"] == "DISABLED"


def test_a_name_is_unique_in_the_organization_only(make_caller):
    mine, theirs = make_caller(Role.OWNER), make_caller(Role.OWNER)
    assert create(mine, name="Reply drafter").status_code == 201

    duplicate = create(mine, name="Reply drafter")
    trimmed = create(mine, name="  Reply drafter  ")
    elsewhere = create(theirs, name="Reply drafter")

    error = assert_envelope(duplicate, 409, "CONFLICT")
    assert set(error["details"]) == {"name"}
    assert_envelope(trimmed, 409, "CONFLICT")
    assert elsewhere.status_code == 201, elsewhere.content
    assert AiAgent.objects.filter(tenant=mine.tenant).count() == 1
    assert agent_events(mine.tenant, "ai_agent.created").count() == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("assertions", 0),
        ("assertions", 100),
        ("accuracy", None),
        ("accuracy", 99.5),
        ("avg_latency", 120),
        ("assertions_count", 5),
        ("correct_count", 5),
        ("latency_ms_total", 5),
        ("id", "7e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b"),
        ("created_by", None),
        ("created_at", "2026-01-01T00:00:00Z"),
    ],
)
def test_the_record_and_other_read_only_keys_are_refused_on_create(owner, key, value):
    error = assert_envelope(create(owner, **{key: value}), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {key}
    assert not AiAgent.objects.filter(tenant=owner.tenant).exists()


# Updates -----------------------------------------------------------------------------------------


def test_patching_the_model_to_one_below_the_current_max_tokens_is_400(owner):
    agent = AiAgentFactory(tenant=owner.tenant, thresholds={"confidence": 0.8, "max_tokens": 500})
    small = LanguageModelFactory(max_output_tokens=256)
    before = agent.model

    error = assert_envelope(
        owner.client.patch(detail(agent), {"model": small.name}, format="json"), 400
    )

    assert set(error["details"]) == {"thresholds"}
    assert "max_tokens" in error["details"]["thresholds"]
    assert "256" in str(error["details"]["thresholds"]["max_tokens"])
    assert fresh(agent).model == before
    assert not agent_events(owner.tenant).exists()


def test_patching_model_and_thresholds_together_is_checked_as_a_whole(owner):
    agent = AiAgentFactory(tenant=owner.tenant, thresholds={"confidence": 0.8, "max_tokens": 500})
    small = LanguageModelFactory(max_output_tokens=256)

    response = owner.client.patch(
        detail(agent),
        {"model": small.name, "thresholds": {"confidence": 0.8, "max_tokens": 256}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["model"] == small.name
    assert response.json()["thresholds"] == {"confidence": 0.8, "max_tokens": 256}
    event = agent_events(owner.tenant, "ai_agent.updated").get()
    assert event.payload["changed"] == ["model", "thresholds"]


@pytest.mark.parametrize("which", ["unknown", "inactive"])
def test_patching_the_model_outside_the_catalogue_is_400(owner, which):
    agent = AiAgentFactory(tenant=owner.tenant)
    model = "no-such-model" if which == "unknown" else LanguageModelFactory(active=False).name

    error = assert_envelope(owner.client.patch(detail(agent), {"model": model}, format="json"), 400)

    assert set(error["details"]) == {"model"}
    assert fresh(agent).model != model


def test_patching_thresholds_alone_is_checked_against_the_current_model(owner):
    model = LanguageModelFactory(max_output_tokens=600)
    agent = AiAgentFactory(tenant=owner.tenant, model=model.name)

    over = owner.client.patch(detail(agent), {"thresholds": {"max_tokens": 601}}, format="json")
    unknown_key = owner.client.patch(detail(agent), {"thresholds": {"top_p": 0.9}}, format="json")
    within = owner.client.patch(detail(agent), {"thresholds": {"max_tokens": 600}}, format="json")

    error = assert_envelope(over, 400)
    assert "max_tokens" in error["details"]["thresholds"]
    assert set(assert_envelope(unknown_key, 400)["details"]) == {"thresholds"}
    assert within.status_code == 200, within.content
    # The thresholds object is replaced whole, not merged.
    assert within.json()["thresholds"] == {"max_tokens": 600}
    assert fresh(agent).thresholds == {"max_tokens": 600}
    assert agent_events(owner.tenant, "ai_agent.updated").count() == 1


def test_patching_only_the_status_of_an_agent_on_a_retired_model_works(owner):
    model = LanguageModelFactory()
    agent = AiAgentFactory(tenant=owner.tenant, model=model.name)
    type(model).objects.filter(pk=model.pk).update(active=False)

    response = owner.client.patch(detail(agent), {"status": "DISABLED"}, format="json")

    assert response.status_code == 200, response.content
    assert fresh(agent).status == "DISABLED"


def test_status_changes_are_audited_and_no_change_records_nothing(owner):
    agent = AiAgentFactory(tenant=owner.tenant)

    paused = owner.client.patch(detail(agent), {"status": "PAUSED"}, format="json")
    again = owner.client.patch(detail(agent), {"status": "PAUSED"}, format="json")
    disabled = owner.client.patch(
        detail(agent), {"status": "DISABLED", "enabled": False}, format="json"
    )

    assert paused.status_code == again.status_code == disabled.status_code == 200
    assert disabled.json()["status"] == "DISABLED"
    events = list(agent_events(owner.tenant, "ai_agent.updated").order_by("created_at", "seq"))
    assert [event.payload["changed"] for event in events] == [["status"], ["enabled", "status"]]
    assert all(event.payload["agent_id"] == str(agent.pk) for event in events)
    assert all(event.actor_id == owner.user.pk for event in events)


def test_renaming_to_a_taken_name_is_409(owner):
    AiAgentFactory(tenant=owner.tenant, name="Taken")
    agent = AiAgentFactory(tenant=owner.tenant, name="Mine")
    AiAgentFactory(tenant=TenantFactory(), name="Theirs")

    taken = owner.client.patch(detail(agent), {"name": "Taken"}, format="json")
    theirs = owner.client.patch(detail(agent), {"name": "Theirs"}, format="json")

    error = assert_envelope(taken, 409, "CONFLICT")
    assert set(error["details"]) == {"name"}
    assert theirs.status_code == 200, theirs.content
    assert fresh(agent).name == "Theirs"


def _with_record(agent, outcomes):
    for correct, latency in outcomes:
        agent_assertion_record(ai_agent=agent, actor=None, correct=correct, latency_ms=latency)
    return fresh(agent)


def test_put_of_the_shown_document_is_accepted_with_its_live_figures_ignored(owner):
    agent = _with_record(AiAgentFactory(tenant=owner.tenant), [(True, 1_000), (False, 3_000)])
    shown = owner.client.get(detail(agent)).json()
    assert shown["assertions"] == 2

    unchanged = owner.client.put(detail(agent), shown, format="json")
    stale = {**shown, "assertions": 999, "accuracy": 1.0, "avg_latency": 1, "status": "PAUSED"}
    stale["updated_at"] = "2020-01-01T00:00:00Z"
    changed = owner.client.put(detail(agent), stale, format="json")

    assert unchanged.status_code == 200, unchanged.content
    assert changed.status_code == 200, changed.content
    assert changed.json()["status"] == "PAUSED"
    assert changed.json()["assertions"] == 2
    assert changed.json()["accuracy"] == 50.0
    assert changed.json()["avg_latency"] == 2_000
    agent = fresh(agent)
    assert (agent.assertions_count, agent.correct_count, agent.latency_ms_total) == (2, 1, 4_000)
    events = agent_events(owner.tenant, "ai_agent.updated")
    assert [event.payload["changed"] for event in events] == [["status"]]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("id", "7e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b"),
        (
            "created_by",
            {
                "id": "0d6c2f8e-7b1a-4c55-8a3e-61b2f4d9a7c2",
                "email": "x@example.org",
                "full_name": "X",
            },
        ),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("correct_count", 7),
    ],
)
def test_put_with_a_changed_read_only_key_is_400(owner, key, value):
    agent = AiAgentFactory(tenant=owner.tenant)
    shown = owner.client.get(detail(agent)).json()

    error = assert_envelope(
        owner.client.put(detail(agent), {**shown, key: value, "status": "PAUSED"}, format="json"),
        400,
    )

    assert set(error["details"]) == {key}
    assert fresh(agent).status == "ACTIVE"


def test_patching_the_record_changes_nothing(owner):
    agent = _with_record(AiAgentFactory(tenant=owner.tenant), [(True, 500)])

    response = owner.client.patch(
        detail(agent), {"assertions": 1_000, "accuracy": 0.0, "avg_latency": 9}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["assertions"] == 1
    assert response.json()["accuracy"] == 100.0
    assert response.json()["avg_latency"] == 500
    assert fresh(agent).assertions_count == 1
    assert not agent_events(owner.tenant, "ai_agent.updated").exists()


def test_put_of_the_shown_document_works_after_the_model_is_retired(owner):
    model = LanguageModelFactory()
    agent = AiAgentFactory(tenant=owner.tenant, model=model.name)
    shown = owner.client.get(detail(agent)).json()
    type(model).objects.filter(pk=model.pk).update(active=False)

    response = owner.client.put(detail(agent), {**shown, "status": "PAUSED"}, format="json")

    assert response.status_code == 200, response.content
    assert fresh(agent).status == "PAUSED"


# Assertions --------------------------------------------------------------------------------------


def test_recording_an_outcome_answers_it_and_audits_it(owner):
    agent = AiAgentFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant)

    response = post_assertion(
        owner, agent, correct=True, latency_ms=1_200, ticket_id=str(ticket.pk), note="Spot on."
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {
        "id",
        "agent_id",
        "correct",
        "latency_ms",
        "ticket_id",
        "note",
        "created_at",
    }
    assert body["agent_id"] == str(agent.pk)
    assert body["correct"] is True
    assert body["latency_ms"] == 1_200
    assert body["ticket_id"] == str(ticket.pk)
    assert body["note"] == "Spot on."
    assertion = AgentAssertion.objects.get(pk=body["id"])
    assert (assertion.tenant_id, assertion.agent_id, assertion.ticket_id) == (
        owner.tenant.pk,
        agent.pk,
        ticket.pk,
    )
    event = agent_events(owner.tenant, "ai_agent.assertion_recorded").get()
    assert event.payload == {
        "agent_id": str(agent.pk),
        "assertion_id": body["id"],
        "correct": True,
        "latency_ms": 1_200,
    }
    assert event.actor_id == owner.user.pk


def test_a_minimal_outcome_has_no_ticket_and_no_note(owner):
    agent = AiAgentFactory(tenant=owner.tenant)

    response = owner.client.post(
        assertions_url(agent), {"correct": False, "latency_ms": 0, "ticket_id": None}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["ticket_id"] is None
    assert response.json()["note"] == ""
    assert response.json()["correct"] is False


def test_the_record_follows_the_outcomes(owner):
    agent = AiAgentFactory(tenant=owner.tenant)
    for correct, latency in [(True, 1_000), (True, 1_200), (False, 800), (True, 1_000)]:
        assert post_assertion(owner, agent, correct=correct, latency_ms=latency).status_code == 201

    shown = owner.client.get(detail(agent)).json()
    row = next(r for r in owner.client.get(AGENTS).json()["results"] if r["id"] == str(agent.pk))

    assert shown["assertions"] == 4
    assert shown["accuracy"] == 75.0
    assert shown["avg_latency"] == 1_000
    assert {key: row[key] for key in LIVE_KEYS} == {key: shown[key] for key in LIVE_KEYS}
    agent = fresh(agent)
    assert (agent.assertions_count, agent.correct_count, agent.latency_ms_total) == (4, 3, 4_000)
    assert agent.assertions.count() == 4


def test_accuracy_is_rounded_to_two_decimals(owner):
    agent = _with_record(
        AiAgentFactory(tenant=owner.tenant), [(True, 100), (True, 100), (False, 101)]
    )

    shown = owner.client.get(detail(agent)).json()

    assert shown["accuracy"] == 66.67
    assert shown["avg_latency"] == 100


def test_an_agent_without_outcomes_has_no_accuracy_or_latency(owner):
    agent = AiAgentFactory(tenant=owner.tenant)

    shown = owner.client.get(detail(agent)).json()

    assert shown["assertions"] == 0
    assert shown["accuracy"] is None
    assert shown["avg_latency"] is None


def test_latency_takes_its_bounds(owner):
    agent = AiAgentFactory(tenant=owner.tenant)

    low = post_assertion(owner, agent, latency_ms=0)
    high = post_assertion(owner, agent, latency_ms=3_600_000)

    assert low.status_code == high.status_code == 201
    assert owner.client.get(detail(agent)).json()["avg_latency"] == 1_800_000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"correct": "yes", "latency_ms": 100}, "correct"),
        ({"correct": 1, "latency_ms": 100}, "correct"),
        ({"correct": "true", "latency_ms": 100}, "correct"),
        ({"correct": None, "latency_ms": 100}, "correct"),
        ({"latency_ms": 100}, "correct"),
        ({"correct": True, "latency_ms": -1}, "latency_ms"),
        ({"correct": True, "latency_ms": 3_600_001}, "latency_ms"),
        ({"correct": True, "latency_ms": 1.5}, "latency_ms"),
        ({"correct": True, "latency_ms": "fast"}, "latency_ms"),
        ({"correct": True, "latency_ms": None}, "latency_ms"),
        ({"correct": True}, "latency_ms"),
        ({"correct": True, "latency_ms": 1, "ticket_id": "TICKET-1001"}, "ticket_id"),
        ({"correct": True, "latency_ms": 1, "note": "Bell\x07"}, "note"),
        ({"correct": True, "latency_ms": 1, "note": "x" * 501}, "note"),
        ({"correct": True, "latency_ms": 1, "note": 5}, "note"),
        (
            {"correct": True, "latency_ms": 1, "agent_id": "5b0e7a36-3c1e-4a4f-9f5e-2d8a43c8e0f1"},
            "agent_id",
        ),
        (
            {"correct": True, "latency_ms": 1, "tenant": "5b0e7a36-3c1e-4a4f-9f5e-2d8a43c8e0f1"},
            "tenant",
        ),
    ],
)
def test_bad_outcomes_are_400_and_count_nothing(owner, body, field):
    agent = AiAgentFactory(tenant=owner.tenant)

    error = assert_envelope(
        owner.client.post(assertions_url(agent), body, format="json"), 400, "VALIDATION_ERROR"
    )

    assert set(error["details"]) == {field}
    assert fresh(agent).assertions_count == 0
    assert not AgentAssertion.objects.filter(agent=agent).exists()
    assert not agent_events(owner.tenant, "ai_agent.assertion_recorded").exists()


def test_another_organizations_ticket_is_refused_like_a_random_id(owner):
    agent = AiAgentFactory(tenant=owner.tenant)
    foreign = TicketFactory(tenant=TenantFactory())
    answers = []

    for ticket_id in (str(foreign.pk), str(uuid.uuid4())):
        error = assert_envelope(post_assertion(owner, agent, ticket_id=ticket_id), 400)
        answers.append((error["message"], error["details"]))

    assert answers[0] == answers[1]
    assert set(answers[0][1]) == {"ticket_id"}
    assert fresh(agent).assertions_count == 0
    assert not AgentAssertion.objects.exists()


def test_another_organizations_agent_is_404(make_caller):
    mine, theirs = make_caller(Role.OWNER), make_caller(Role.OWNER)
    foreign = AiAgentFactory(tenant=theirs.tenant)

    foreign_error = assert_envelope(post_assertion(mine, foreign), 404)
    random_error = assert_envelope(
        mine.client.post(
            f"{AGENTS}{uuid.uuid4()}/assertions/", {"correct": True, "latency_ms": 1}, format="json"
        ),
        404,
    )

    assert foreign_error["message"] == random_error["message"]
    assert fresh(foreign).assertions_count == 0
    assert not AgentAssertion.objects.exists()
    assert assert_envelope(mine.client.get(detail(foreign)), 404)
    assert assert_envelope(mine.client.patch(detail(foreign), {"status": "PAUSED"}), 404)
    assert assert_envelope(mine.client.delete(detail(foreign)), 404)
    assert AiAgent.objects.filter(pk=foreign.pk, status="ACTIVE").exists()


def test_a_viewer_reads_agents_but_writes_nothing(make_caller):
    viewer = make_caller(Role.VIEWER)
    agent = _with_record(AiAgentFactory(tenant=viewer.tenant), [(True, 700)])

    listing = viewer.client.get(AGENTS)
    shown = viewer.client.get(detail(agent))
    record = post_assertion(viewer, agent)
    created = create(viewer)
    patched = viewer.client.patch(detail(agent), {"status": "PAUSED"}, format="json")
    deleted = viewer.client.delete(detail(agent))

    assert listing.status_code == 200
    assert [row["id"] for row in listing.json()["results"]] == [str(agent.pk)]
    assert shown.status_code == 200
    assert shown.json()["accuracy"] == 100.0
    for response in (record, created, patched, deleted):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    agent = fresh(agent)
    assert (agent.assertions_count, agent.status) == (1, "ACTIVE")
    assert AiAgent.objects.filter(tenant=viewer.tenant).count() == 1


def test_recording_outcomes_needs_support_write(make_caller):
    reader = make_caller(Role.OWNER, permissions={"support": {"write": False}})
    writer = make_caller(Role.MEMBER, tenant=reader.tenant)
    agent = AiAgentFactory(tenant=reader.tenant)

    assert_envelope(post_assertion(reader, agent), 403, "INSUFFICIENT_PERMISSIONS")
    assert reader.client.get(detail(agent)).status_code == 200
    assert post_assertion(writer, agent).status_code == 201
    assert fresh(agent).assertions_count == 1


# Concurrency -------------------------------------------------------------------------------------


def _record_in_thread(agent_id, n: int, start: threading.Event):
    try:
        start.wait(timeout=30)
        agent = AiAgent.objects.get(pk=agent_id)
        return agent_assertion_record(
            ai_agent=agent, actor=None, correct=n % 3 != 0, latency_ms=100 + n
        ).pk
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_outcomes_recorded_at_once_are_all_counted():
    # The flush of transactional tests empties the seeded catalogue: the model is our own.
    model = LanguageModelFactory(max_output_tokens=4_096)
    agent = AiAgentFactory(tenant=TenantFactory(), model=model.name)
    calls = 30
    start = threading.Event()

    with ThreadPoolExecutor(max_workers=15) as pool:
        futures = [pool.submit(_record_in_thread, agent.pk, n, start) for n in range(calls)]
        start.set()
        recorded = [future.result(timeout=120) for future in futures]

    agent = fresh(agent)
    correct = sum(1 for n in range(calls) if n % 3 != 0)
    assert len(set(recorded)) == calls
    assert agent.assertions_count == calls
    assert agent.correct_count == correct == 20
    assert agent.latency_ms_total == sum(100 + n for n in range(calls))
    assert agent.accuracy == round(100 * 20 / 30, 2)
    assert AgentAssertion.objects.filter(agent=agent).count() == calls
    assert agent_events(agent.tenant, "ai_agent.assertion_recorded").count() == calls


# Deletion ----------------------------------------------------------------------------------------


def test_deleting_an_agent_takes_its_assertions_and_is_audited(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    agent = AiAgentFactory(tenant=owner.tenant)
    other = AiAgentFactory(tenant=owner.tenant)
    for latency in (100, 200, 300):
        post_assertion(owner, agent, latency_ms=latency, ticket_id=str(ticket.pk))
    post_assertion(owner, other)

    response = owner.client.delete(detail(agent))

    assert response.status_code == 204, response.content
    assert not AiAgent.objects.filter(pk=agent.pk).exists()
    assert not AgentAssertion.objects.filter(agent_id=agent.pk).exists()
    assert AgentAssertion.objects.filter(agent=other).count() == 1
    assert fresh(ticket).pk == ticket.pk
    event = agent_events(owner.tenant, "ai_agent.deleted").get()
    assert event.payload == {
        "agent_id": str(agent.pk),
        "name": agent.name,
        "type": agent.type,
        "assertions": 3,
    }
    assert event.actor_id == owner.user.pk
    assert_envelope(owner.client.get(detail(agent)), 404)


def test_deleting_an_agent_without_outcomes_records_zero(owner):
    agent = AiAgentFactory(tenant=owner.tenant)

    assert owner.client.delete(detail(agent)).status_code == 204

    assert agent_events(owner.tenant, "ai_agent.deleted").get().payload["assertions"] == 0


# Filters and search ------------------------------------------------------------------------------


def test_type_and_status_take_comma_lists_and_enabled_a_boolean(owner):
    t = owner.tenant
    drafter = AiAgentFactory(tenant=t, type="RESPONSE_RECOMMENDATION", status="ACTIVE")
    spend = AiAgentFactory(tenant=t, type="CUSTOMER_SPEND", status="PAUSED", enabled=False)
    mood = AiAgentFactory(tenant=t, type="SENTIMENT_ANALYSIS", status="DISABLED", enabled=False)
    router = AiAgentFactory(tenant=t, type="TICKET_ROUTING", status="ACTIVE")
    AiAgentFactory(tenant=TenantFactory(), type="CUSTOMER_SPEND", status="PAUSED", enabled=False)

    assert listed(owner, type="CUSTOMER_SPEND") == ids(spend)
    assert listed(owner, type="CUSTOMER_SPEND,TICKET_ROUTING") == ids(spend, router)
    assert listed(owner, type="CUSTOM") == set()
    assert listed(owner, status="ACTIVE") == ids(drafter, router)
    assert listed(owner, status="PAUSED,DISABLED") == ids(spend, mood)
    assert listed(owner, enabled="true") == ids(drafter, router)
    assert listed(owner, enabled="false") == ids(spend, mood)
    assert listed(owner, status="ACTIVE", type="TICKET_ROUTING,CUSTOMER_SPEND") == ids(router)
    assert listed(owner, enabled="false", status="DISABLED") == ids(mood)


@pytest.mark.parametrize(
    "params",
    [{"type": "ROBOT"}, {"type": "CUSTOM,NOPE"}, {"status": "active"}, {"status": "RUNNING"}],
)
def test_an_unknown_value_in_a_filter_is_400(owner, params):
    AiAgentFactory(tenant=owner.tenant)

    error = assert_envelope(owner.client.get(AGENTS, params), 400)

    assert set(params) <= set(error["details"])


def test_search_finds_names_and_descriptions_of_the_organization_only(owner):
    t = owner.tenant
    by_name = AiAgentFactory(tenant=t, name="Refund Triage", description="")
    by_description = AiAgentFactory(tenant=t, name="Helper", description="Handles refund asks.")
    AiAgentFactory(tenant=t, name="Router", description="Sends tickets on.")
    AiAgentFactory(tenant=TenantFactory(), name="Refund Triage", description="refund")

    assert listed(owner, search="refund triage") == ids(by_name)
    assert listed(owner, search="REFUND") == ids(by_name, by_description)
    assert listed(owner, search="nothing like it") == set()


def test_ordering_by_assertions(owner):
    few = _with_record(AiAgentFactory(tenant=owner.tenant, name="A"), [(True, 1)])
    many = _with_record(AiAgentFactory(tenant=owner.tenant, name="B"), [(True, 1)] * 3)
    none = AiAgentFactory(tenant=owner.tenant, name="C")

    ascending = owner.client.get(AGENTS, {"ordering": "assertions_count"}).json()["results"]
    descending = owner.client.get(AGENTS, {"ordering": "-assertions_count"}).json()["results"]
    by_name = owner.client.get(AGENTS).json()["results"]

    assert [row["id"] for row in ascending] == [str(a.pk) for a in (none, few, many)]
    assert [row["id"] for row in descending] == [str(a.pk) for a in (many, few, none)]
    assert [row["name"] for row in by_name] == ["A", "B", "C"]
