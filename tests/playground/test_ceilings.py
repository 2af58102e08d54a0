"""What one organization may keep of prompt templates, projects and orchestration templates:
past the ceiling, creating one is 409 CONFLICT (nothing written, nothing audited), another
organization's rows do not count, deleting makes room, and parallel creations stop at it."""

import itertools
from dataclasses import dataclass

import pytest

from audit.models import AuditEvent
from playground.models import OrchestrationTemplate, Project, PromptTemplate
from tenants.models import Role
from tests.conftest import assert_envelope, race
from tests.factories import TenantFactory

from . import test_projects
from .factories import OrchestrationTemplateFactory, ProjectFactory, PromptTemplateFactory
from .test_templates import BODY as PROMPT_TEMPLATE_BODY

_names = itertools.count()


@dataclass(frozen=True)
class Kind:
    url: str
    setting: str
    counted: str
    model: type
    factory: type
    body: dict

    def new_body(self) -> dict:
        # Prompt template names are unique in an organization.
        return {**self.body, "name": f"Ceiling {next(_names)}"}


KINDS = [
    pytest.param(
        Kind(
            "/api/v1/playground/templates/",
            "PROMPT_TEMPLATES_PER_TENANT",
            "prompt_templates",
            PromptTemplate,
            PromptTemplateFactory,
            PROMPT_TEMPLATE_BODY,
        ),
        id="prompt-templates",
    ),
    pytest.param(
        Kind(
            "/api/v1/projects/",
            "PROJECTS_PER_TENANT",
            "projects",
            Project,
            ProjectFactory,
            test_projects.TestProjects.create_data,
        ),
        id="projects",
    ),
    pytest.param(
        Kind(
            "/api/v1/orchestration/templates/",
            "ORCHESTRATION_TEMPLATES_PER_TENANT",
            "orchestration_templates",
            OrchestrationTemplate,
            OrchestrationTemplateFactory,
            test_projects.TestOrchestrationTemplates.create_data,
        ),
        id="orchestration-templates",
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
    assert "may have at most 3" in error["message"]
    assert kind.model.objects.filter(tenant=owner.tenant).count() == 3
    assert AuditEvent.objects.count() == events


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
