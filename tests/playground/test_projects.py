"""Projects and orchestration templates: the generic battery, the filters of the seed's
conventions (several values, date ranges, search, priority ordering by rank), metadata and
template data validation, and private templates seen by their creator only."""

from datetime import UTC, datetime

import pytest

from playground.models import OrchestrationTemplate, Project
from tenants.models import Role
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope

from .factories import OrchestrationTemplateFactory, ProjectFactory

pytestmark = pytest.mark.django_db

PROJECTS = "/api/v1/projects/"
TEMPLATES = "/api/v1/orchestration/templates/"
TEMPLATE_DATA = {
    "phases": ["research", "design", "implementation", "testing"],
    "integrations": ["file_system", "github"],
    "settings": {"ai_model": "gpt-4", "max_tokens": 2000, "temperature": 0.7},
}


class TestProjects(ResourceBattery):
    url = PROJECTS
    create_data = {
        "name": "New Project",
        "description": "Project description",
        "topic": "Detailed project topic for AI processing",
        "priority": "medium",
        "metadata": {"estimated_duration": "2 months", "budget": 50000, "team_size": 5},
    }
    update_data = {"name": "Updated Project Name", "priority": "high", "status": "active"}
    audit_prefix = "project"
    filter_examples = {
        "created_after": lambda project: project.created_at.isoformat(),
        "created_before": lambda project: "2100-01-01T00:00:00Z",
    }


class TestOrchestrationTemplates(ResourceBattery):
    url = TEMPLATES
    create_data = {
        "name": "Custom Template",
        "description": "My custom orchestration template",
        "category": "custom",
        "is_public": True,
        "template_data": TEMPLATE_DATA,
    }
    update_data = {"name": "Renamed", "is_public": True}
    audit_prefix = "orchestration_template"


def test_creating_a_project_answers_it_with_its_creator(owner):
    response = owner.client.post(PROJECTS, TestProjects.create_data, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "active"
    assert body["created_by"]["email"] == owner.user.email
    assert body["metadata"]["team_size"] == 5


def test_several_statuses_a_date_range_and_search(owner):
    tenant = owner.tenant
    active = ProjectFactory(tenant=tenant, status="active", name="Shop rewrite")
    done = ProjectFactory(tenant=tenant, status="completed", topic="Recommendations for the shop")
    ProjectFactory(tenant=tenant, status="archived")
    Project.objects.filter(pk=done.pk).update(created_at=datetime(2024, 1, 15, tzinfo=UTC))

    def ids(**params):
        return {row["id"] for row in owner.client.get(PROJECTS, params).json()["results"]}

    assert ids(status="active,completed") == {str(active.pk), str(done.pk)}
    assert ids(created_after="2024-01-01T00:00:00Z", created_before="2024-01-31T00:00:00Z") == {
        str(done.pk)
    }
    assert ids(search="shop") == {str(active.pk), str(done.pk)}
    assert_envelope(owner.client.get(PROJECTS, {"status": "active,nope"}), 400, "VALIDATION_ERROR")


def test_priority_sorts_by_rank_then_newest(owner):
    names = ["urgent-1", "low-1", "high-1", "medium-1", "low-2"]
    for name in names:
        ProjectFactory(tenant=owner.tenant, name=name, priority=name.split("-")[0])
    rows = owner.client.get(PROJECTS, {"ordering": "priority,-created_at"}).json()["results"]
    assert [row["name"] for row in rows] == ["low-2", "low-1", "medium-1", "high-1", "urgent-1"]
    rows = owner.client.get(PROJECTS, {"ordering": "-priority"}).json()["results"]
    assert rows[0]["name"] == "urgent-1"


@pytest.mark.parametrize(
    "metadata", [["not", "an", "object"], {"blob": "x" * 20_000}], ids=["list", "too big"]
)
def test_bad_metadata_is_refused_and_changes_nothing(owner, metadata):
    body = {**TestProjects.create_data, "metadata": metadata}
    assert_envelope(owner.client.post(PROJECTS, body, format="json"), 400, "VALIDATION_ERROR")
    assert not Project.objects.exists()


@pytest.mark.parametrize(
    ("template_data", "field"),
    [
        ({"phases": []}, "template_data.phases"),
        ({"phases": ["a", "A"]}, "template_data.phases"),
        ({"phases": ["ok", "<script>"]}, "template_data.phases"),
        ({"phases": ["ok"], "settings": {"ai_model": "nope"}}, "template_data.settings"),
        ({"phases": ["ok"], "settings": {"max_tokens": 10**9}}, "template_data.settings"),
        ({"phases": ["ok"], "settings": {"temperature": 3}}, "template_data.settings"),
        ({"phases": ["ok"], "settings": {"sudo": True}}, "template_data.settings"),
        ({"phases": ["ok"], "extra": 1}, "template_data"),
        ("phases", "template_data"),
    ],
)
def test_bad_template_data_is_refused_with_the_field(owner, template_data, field):
    body = {**TestOrchestrationTemplates.create_data, "template_data": template_data}
    error = assert_envelope(
        owner.client.post(TEMPLATES, body, format="json"), 400, "VALIDATION_ERROR"
    )
    assert field in error["details"]
    assert not OrchestrationTemplate.objects.exists()


def test_a_private_template_is_seen_by_its_creator_only(make_caller):
    author = make_caller(Role.MEMBER)
    colleague = make_caller(Role.ADMIN, tenant=author.tenant)
    body = {**TestOrchestrationTemplates.create_data, "is_public": False}
    private = author.client.post(TEMPLATES, body, format="json").json()
    public = OrchestrationTemplateFactory(tenant=author.tenant, is_public=True)
    seen = {row["id"] for row in colleague.client.get(TEMPLATES).json()["results"]}
    assert seen == {str(public.pk)}
    assert_envelope(colleague.client.get(f"{TEMPLATES}{private['id']}"), 404, "RESOURCE_NOT_FOUND")
    mine = {row["id"] for row in author.client.get(TEMPLATES).json()["results"]}
    assert mine == {private["id"], str(public.pk)}
