"""What one organization may keep of what it configures (prompt templates, projects,
orchestration templates, decision rules, AI agents) and a prompt template of its versions: past
the ceiling, creating one is 409 CONFLICT (nothing written, nothing audited), another
organization's rows do not count, deleting makes room, bad input is still a 400, and parallel
creations stop at it. (API keys and webhook endpoints: tests/accounts and tests/notifications.)"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from audit.models import AuditEvent
from playground.models import OrchestrationTemplate, Project, PromptTemplate
from support.models import AiAgent, DecisionRule
from tenants.models import Role
from tests.conftest import assert_envelope, race
from tests.factories import TenantFactory
from tests.playground import test_projects
from tests.playground.factories import (
    OrchestrationTemplateFactory,
    ProjectFactory,
    PromptTemplateFactory,
)
from tests.playground.test_templates import BODY as PROMPT_TEMPLATE_BODY
from tests.support.factories import AiAgentFactory, DecisionRuleFactory
from tests.support.test_automation import AGENTS, agent_body
from tests.support.test_rules import RULES, rule_body

_numbers = itertools.count(1)


def named(body: dict) -> Callable[[], dict]:
    """Bodies like `body` with a name of their own (names are unique in an organization)."""
    return lambda: {**body, "name": f"Ceiling {next(_numbers)}"}


@dataclass(frozen=True)
class Kind:
    url: str
    setting: str
    counted: str
    noun: str
    model: type
    factory: type
    new_body: Callable[[], dict]


KINDS = [
    pytest.param(
        Kind(
            "/api/v1/playground/templates/",
            "PROMPT_TEMPLATES_PER_TENANT",
            "prompt_templates",
            "prompt templates",
            PromptTemplate,
            PromptTemplateFactory,
            named(PROMPT_TEMPLATE_BODY),
        ),
        id="prompt-templates",
    ),
    pytest.param(
        Kind(
            "/api/v1/projects/",
            "PROJECTS_PER_TENANT",
            "projects",
            "projects",
            Project,
            ProjectFactory,
            named(test_projects.TestProjects.create_data),
        ),
        id="projects",
    ),
    pytest.param(
        Kind(
            "/api/v1/orchestration/templates/",
            "ORCHESTRATION_TEMPLATES_PER_TENANT",
            "orchestration_templates",
            "orchestration templates",
            OrchestrationTemplate,
            OrchestrationTemplateFactory,
            named(test_projects.TestOrchestrationTemplates.create_data),
        ),
        id="orchestration-templates",
    ),
    pytest.param(
        Kind(
            RULES,
            "DECISION_RULES_PER_TENANT",
            "decision_rules",
            "decision rules",
            DecisionRule,
            DecisionRuleFactory,
            # Created disabled: priorities may repeat, but each has its own anyway.
            lambda: rule_body(name=f"Ceiling rule {next(_numbers)}", priority=next(_numbers)),
        ),
        id="decision-rules",
    ),
    pytest.param(
        Kind(
            AGENTS,
            "AI_AGENTS_PER_TENANT",
            "ai_agents",
            "AI agents",
            AiAgent,
            AiAgentFactory,
            lambda: agent_body(name=f"Ceiling agent {next(_numbers)}"),
        ),
        id="ai-agents",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_an_organization_keeps_at_most_the_ceiling(owner, settings, kind):
    setattr(settings, kind.setting, 3)
    kind.factory.create_batch(2, tenant=owner.tenant)
    kind.factory(tenant=TenantFactory())  # another organization's does not count
    assert owner.client.post(kind.url, kind.new_body(), format="json").status_code == 201
    events = AuditEvent.objects.count()

    response = owner.client.post(kind.url, kind.new_body(), format="json")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {kind.counted: 3, "limit": 3}
    assert f"already has 3 {kind.noun}; it may have at most 3" in error["message"]
    assert kind.model.objects.filter(tenant=owner.tenant).count() == 3
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_invalid_input_is_refused_before_the_ceiling(owner, settings, kind):
    """At the ceiling, bad input is still a 400 naming the field, not a 409."""
    setattr(settings, kind.setting, 1)
    kind.factory(tenant=owner.tenant)

    response = owner.client.post(kind.url, {**kind.new_body(), "name": ""}, format="json")

    assert "name" in assert_envelope(response, 400)["details"]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_deleting_one_makes_room(owner, settings, kind):
    setattr(settings, kind.setting, 1)
    existing = kind.factory(tenant=owner.tenant)
    assert_envelope(owner.client.post(kind.url, kind.new_body(), format="json"), 409, "CONFLICT")

    assert owner.client.delete(f"{kind.url}{existing.pk}/").status_code == 204

    assert owner.client.post(kind.url, kind.new_body(), format="json").status_code == 201


@pytest.mark.postgres
@pytest.mark.parametrize("kind", KINDS)
def test_parallel_creations_stop_at_the_ceiling(transactional_db, make_caller, settings, kind):
    """Six creations at once with room for two: two are made, four answer 409."""
    setattr(settings, kind.setting, 3)
    caller = make_caller(Role.OWNER)
    kind.factory(tenant=caller.tenant)
    bodies = [kind.new_body() for _ in range(6)]

    def post():
        return caller.client_for(caller.tenant.pk).post(kind.url, bodies.pop(), format="json")

    statuses = [response.status_code for response in race(6, post)]

    assert sorted(statuses) == [201, 201, 409, 409, 409, 409]
    assert kind.model.objects.filter(tenant=caller.tenant).count() == 3


@pytest.mark.django_db
def test_a_template_keeps_at_most_the_ceiling_of_versions(owner, settings):
    """Past PROMPT_TEMPLATE_VERSIONS_PER_TEMPLATE, a new version is 409 and the whole update
    is refused (its metadata too); an update without a new version still goes through."""
    settings.PROMPT_TEMPLATE_VERSIONS_PER_TEMPLATE = 2
    template = owner.client.post(
        "/api/v1/playground/templates/", PROMPT_TEMPLATE_BODY, format="json"
    ).json()
    url = f"/api/v1/playground/templates/{template['id']}/"
    second = owner.client.patch(
        f"{url}?create_new_version=true", {"user_prompt_template": "v2 {question}"}, format="json"
    )
    assert second.status_code == 200, second.content
    events = AuditEvent.objects.count()

    response = owner.client.patch(
        f"{url}?create_new_version=true",
        {"user_prompt_template": "v3 {question}", "description": "Changed"},
        format="json",
    )

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {"versions": 2, "limit": 2}
    assert "may have at most 2" in error["message"]
    stored = PromptTemplate.objects.get(pk=template["id"])
    assert (stored.latest_version, stored.description) == (2, PROMPT_TEMPLATE_BODY["description"])
    assert stored.versions.count() == 2
    assert AuditEvent.objects.count() == events
    renamed = owner.client.patch(url, {"description": "Changed"}, format="json")
    assert renamed.status_code == 200, renamed.content
    assert renamed.json()["description"] == "Changed"
