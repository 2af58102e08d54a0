"""Prompt templates through the API: creation and its checks (placeholders, variables, model
config), immutable versions and the `latest`/`production` labels, execution through the
gateway (rendering, metering, saved executions), ratings, analytics, comparison, categories,
bulk operations, and who may do what (roles, API-key scopes, other tenants)."""

import datetime as dt
import re
import uuid

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from playground import tokens
from playground.models import (
    CallSource,
    CallStatus,
    ExecutionStatus,
    GatewayCall,
    LanguageModel,
    PromptExecution,
    PromptTemplate,
    PromptTemplateVersion,
    TemplateStatus,
)
from playground.rendering import MAX_RENDERED_CHARS, MAX_VALUE_CHARS
from playground.services import prompt_template_create
from tenants.models import QuotaCounter, Role
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import issue_api_key

from .factories import PromptExecutionFactory, PromptTemplateFactory, PromptTemplateVersionFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/playground/templates/"
CATEGORIES_URL = "/api/v1/playground/categories/"
COMPARE_URL = f"{URL}compare/"
BULK_URL = f"{URL}bulk/"
# How the API writes a moment (DRF's DateTimeField): 2025-03-10T12:00:00.123456Z.
ISO_8601_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

# Variables as the write serializer stores them (every field present), so a body resent as is
# carries no content change.
VARIABLES = [
    {
        "name": "company",
        "type": "string",
        "description": "Who answers.",
        "required": False,
        "default": "Acme",
        "options": [],
    },
    {
        "name": "question",
        "type": "string",
        "description": "",
        "required": True,
        "default": None,
        "options": [],
    },
    {
        "name": "tone",
        "type": "enum",
        "description": "",
        "required": False,
        "default": "formal",
        "options": ["formal", "casual"],
    },
    {
        "name": "words",
        "type": "number",
        "description": "",
        "required": False,
        "default": 50,
        "options": [],
    },
    {
        "name": "cite",
        "type": "boolean",
        "description": "",
        "required": False,
        "default": False,
        "options": [],
    },
]
CONTENT = {
    "system_prompt": "You answer for {company}.",
    "user_prompt_template": (
        "Answer {question} in a {tone} tone, in {words} words (citations: {cite}). {{json}}"
    ),
    "variables": VARIABLES,
    "model_config": {"model": "gpt-4", "temperature": 0.2, "max_tokens": 200},
}
BODY = {
    "name": "Support answer",
    "description": "Answers customers' questions.",
    "category": "support",
    **CONTENT,
}


def create(caller, **overrides):
    return caller.client.post(URL, {**BODY, **overrides}, format="json")


def created(caller, **overrides) -> dict:
    response = create(caller, **overrides)
    assert response.status_code == 201, response.content
    return response.json()


def detail(template_id) -> str:
    return f"{URL}{template_id}/"


def execute(caller, pk, **body):
    return caller.client.post(f"{detail(pk)}execute/", body, format="json")


def tokens_used(tenant) -> int:
    row = QuotaCounter.objects.filter(tenant=tenant, resource="tokens").first()
    return row.used if row else 0


def events(tenant, event_type) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, event_type=event_type))


def at(execution, when):
    """Move an execution to `when` (created_at is set on insert)."""
    PromptExecution.objects.filter(pk=execution.pk).update(created_at=when)
    return execution


def second_version(template, **fields) -> PromptTemplateVersion:
    version = PromptTemplateVersionFactory(template=template, version=2, **fields)
    PromptTemplate.objects.filter(pk=template.pk).update(latest_version=2)
    template.refresh_from_db()
    return version


# The generic battery ------------------------------------------------------------------------


class TestPromptTemplates(ResourceBattery):
    url = URL
    create_data = BODY
    update_data = {"name": "Renamed", "description": "Now with a new name."}
    audit_prefix = "prompt_template"

    def make(self, tenant, **fields):
        fields.setdefault("name", f"Template {uuid.uuid4().hex[:12]}")
        fields.setdefault("description", BODY["description"])
        fields.setdefault("category", BODY["category"])
        with transaction.atomic():
            return prompt_template_create(tenant=tenant, actor=None, **CONTENT, **fields)


# Create ---------------------------------------------------------------------------------------


def test_create_answers_version_1_labelled_latest_and_records_its_event(owner):
    body = created(owner)

    assert body["version"] == 1
    assert body["labels"] == ["latest"]
    assert body["latest_version"] == 1
    assert body["production_version"] is None
    assert body["status"] == TemplateStatus.DRAFT
    assert body["user_prompt_template"] == CONTENT["user_prompt_template"]
    assert body["system_prompt"] == CONTENT["system_prompt"]
    assert body["variables"] == VARIABLES
    assert body["model_config"] == CONTENT["model_config"]
    assert [v["version"] for v in body["versions"]] == [1]
    assert body["versions"][0]["labels"] == ["latest"]
    template = PromptTemplate.objects.get(pk=body["id"])
    assert template.tenant_id == owner.tenant.pk
    assert template.created_by_id == owner.user.pk
    assert template.versions.get().version == 1
    (event,) = events(owner.tenant, "prompt_template.created")
    assert event.actor_id == owner.user.pk
    assert event.payload["template_id"] == body["id"]
    assert event.payload["name"] == BODY["name"]


def test_create_without_model_config_gets_the_default_model(owner, settings):
    body = created(owner, model_config={})

    assert body["model_config"] == {"model": settings.GATEWAY_DEFAULT_MODEL}


def test_create_sets_the_status_asked_for(owner):
    assert created(owner, status="active")["status"] == TemplateStatus.ACTIVE


def test_a_duplicate_name_in_the_tenant_is_409_and_creates_nothing(owner):
    created(owner)

    error = assert_envelope(create(owner), 409, "CONFLICT")

    assert "name" in error["details"]
    assert PromptTemplate.objects.filter(tenant=owner.tenant).count() == 1
    assert len(events(owner.tenant, "prompt_template.created")) == 1


def test_the_same_name_in_another_tenant_is_fine(owner, make_caller):
    created(owner)

    assert create(make_caller(Role.OWNER)).status_code == 201


@pytest.mark.parametrize(
    "placeholder",
    ["{question.upper}", "{question[0]}", "{question!r}", "{question:>9}", "{", "}", "{}", "{ a }"],
)
def test_placeholders_other_than_bare_names_are_400_naming_user_prompt_template(owner, placeholder):
    error = assert_envelope(
        create(owner, user_prompt_template=f"Answer {{question}} {placeholder}"), 400
    )

    assert "user_prompt_template" in error["details"]
    assert not PromptTemplate.objects.filter(tenant=owner.tenant).exists()


def test_a_bad_placeholder_in_the_system_prompt_is_400_naming_system_prompt(owner):
    error = assert_envelope(create(owner, system_prompt="You answer for {company.name}."), 400)

    assert "system_prompt" in error["details"], error["details"]
    assert not PromptTemplate.objects.filter(tenant=owner.tenant).exists()


def test_literal_braces_are_accepted(owner):
    body = created(owner, user_prompt_template="{{not a variable}} {question} }}{{")

    assert body["user_prompt_template"] == "{{not a variable}} {question} }}{{"


@pytest.mark.parametrize("field", ["user_prompt_template", "system_prompt"])
def test_an_undeclared_placeholder_is_400(owner, field):
    text = "Answer {question} for {customer}." if field == "user_prompt_template" else "{customer}"

    error = assert_envelope(create(owner, **{field: text}), 400)

    assert "customer" in " ".join(error["details"]["variables"])
    assert not PromptTemplate.objects.filter(tenant=owner.tenant).exists()


def test_a_variable_declared_twice_is_400(owner):
    variables = [*VARIABLES, {"name": "question", "type": "string"}]

    error = assert_envelope(create(owner, variables=variables), 400)

    assert "variables" in error["details"]


def test_an_enum_variable_without_options_is_400(owner):
    variables = [*VARIABLES[:2], {"name": "tone", "type": "enum", "default": "formal"}]

    error = assert_envelope(
        create(owner, variables=variables, user_prompt_template="{question} {tone}"), 400
    )

    assert "variables" in error["details"]


def test_a_default_of_the_wrong_type_is_400(owner):
    variables = [VARIABLES[0], VARIABLES[1], {**VARIABLES[3], "default": "fifty"}]

    error = assert_envelope(
        create(owner, variables=variables, user_prompt_template="{question} {words}"), 400
    )

    assert "variables" in error["details"]


@pytest.mark.parametrize(
    ("model_config", "field"),
    [
        ({"model": "gpt-4", "temperature": 3}, "model_config.temperature"),
        ({"model": "gpt-4", "temperature": -0.1}, "model_config.temperature"),
        ({"model": "gpt-4", "temperature": True}, "model_config.temperature"),
        ({"model": "gpt-4", "top_p": 1.5}, "model_config.top_p"),
        ({"model": "gpt-4", "frequency_penalty": 2.5}, "model_config.frequency_penalty"),
        ({"model": "gpt-4", "presence_penalty": -3}, "model_config.presence_penalty"),
        ({"model": "gpt-4", "max_tokens": 4097}, "model_config.max_tokens"),
        ({"model": "gpt-4", "max_tokens": 0}, "model_config.max_tokens"),
        ({"model": "gpt-4", "max_tokens": 10.5}, "model_config.max_tokens"),
        ({"model": "gpt-4", "seed": 1}, "model_config"),
        ({"model": "no-such-model"}, "model_config.model"),
    ],
)
def test_a_model_config_out_of_range_is_400_naming_the_setting(owner, model_config, field):
    error = assert_envelope(create(owner, model_config=model_config), 400)

    assert field in error["details"], error["details"]
    assert not PromptTemplate.objects.filter(tenant=owner.tenant).exists()


def test_max_tokens_is_checked_against_the_models_own_limit(owner):
    LanguageModel.objects.filter(name="claude-3-haiku").update(max_output_tokens=1000)

    error = assert_envelope(
        create(owner, model_config={"model": "claude-3-haiku", "max_tokens": 1001}), 400
    )
    body = created(owner, model_config={"model": "claude-3-haiku", "max_tokens": 1000})

    assert "1000" in error["details"]["model_config.max_tokens"][0]
    assert body["model_config"] == {"model": "claude-3-haiku", "max_tokens": 1000}


def test_an_inactive_model_is_refused(owner):
    LanguageModel.objects.filter(name="gpt-4").update(active=False)

    error = assert_envelope(create(owner), 400)

    assert "model_config.model" in error["details"]


# Versions and labels --------------------------------------------------------------------------


def test_put_with_changed_content_without_the_flag_is_400_and_changes_nothing(owner):
    template = created(owner)

    error = assert_envelope(
        owner.client.put(
            detail(template["id"]),
            {**BODY, "name": "Renamed", "user_prompt_template": "Just {question}"},
            format="json",
        ),
        400,
    )

    assert "user_prompt_template" in error["details"]
    row = PromptTemplate.objects.get(pk=template["id"])
    assert row.name == BODY["name"]
    assert row.latest_version == 1
    assert row.versions.count() == 1
    assert row.versions.get().user_prompt_template == CONTENT["user_prompt_template"]
    assert not events(owner.tenant, "prompt_template.updated")


def test_patch_with_changed_content_without_the_flag_is_400(owner):
    template = created(owner)

    error = assert_envelope(
        owner.client.patch(
            detail(template["id"]), {"model_config": {"model": "gpt-3.5-turbo"}}, format="json"
        ),
        400,
    )

    assert "model_config" in error["details"]
    assert PromptTemplate.objects.get(pk=template["id"]).latest_version == 1


def test_metadata_changes_in_place_without_a_new_version(owner):
    template = created(owner)

    response = owner.client.patch(
        detail(template["id"]),
        {"name": "Renamed", "category": "billing", "status": "archived", "description": "New"},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["category"], body["status"], body["description"]) == (
        "Renamed",
        "billing",
        "archived",
        "New",
    )
    assert body["version"] == 1
    assert PromptTemplateVersion.objects.filter(template_id=template["id"]).count() == 1
    (event,) = events(owner.tenant, "prompt_template.updated")
    assert event.payload["name"] == "Renamed"


def test_put_resending_the_creation_body_without_model_config_changes_only_metadata(owner):
    # The stored config names the default model the body left out: resending the same body is
    # no content change.
    body = {**BODY, "model_config": {}}
    template = owner.client.post(URL, body, format="json").json()

    response = owner.client.put(
        detail(template["id"]), {**body, "description": "Changed"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["description"] == "Changed"
    assert response.json()["latest_version"] == 1


def test_a_renaming_onto_a_taken_name_is_409(owner):
    created(owner, name="First")
    second = created(owner, name="Second")

    assert_envelope(
        owner.client.patch(detail(second["id"]), {"name": "First"}, format="json"), 409, "CONFLICT"
    )

    assert PromptTemplate.objects.get(pk=second["id"]).name == "Second"


def test_create_new_version_makes_version_2_and_keeps_version_1_unchanged(owner):
    template = created(owner)
    url = detail(template["id"])

    response = owner.client.put(
        f"{url}?create_new_version=true",
        {**BODY, "user_prompt_template": "Briefly: {question}", "change_note": "Shorter"},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 2
    assert body["labels"] == ["latest"]
    assert body["latest_version"] == 2
    assert body["user_prompt_template"] == "Briefly: {question}"
    assert [(v["version"], v["labels"]) for v in body["versions"]] == [(2, ["latest"]), (1, [])]
    assert body["versions"][0]["change_note"] == "Shorter"
    first = owner.client.get(url, {"version": 1}).json()
    assert first["version"] == 1
    assert first["labels"] == []
    assert first["user_prompt_template"] == CONTENT["user_prompt_template"]
    assert first["variables"] == VARIABLES
    latest = owner.client.get(url, {"label": "latest"}).json()
    assert latest["version"] == 2
    assert owner.client.get(url).json()["version"] == 2
    (event,) = events(owner.tenant, "prompt_template.versioned")
    assert event.payload["version"] == 2
    assert event.payload["change_note"] == "Shorter"


def test_patch_with_the_flag_keeps_the_content_it_does_not_name(owner):
    template = created(owner)

    response = owner.client.patch(
        f"{detail(template['id'])}?create_new_version=true",
        {"model_config": {"model": "claude-3-haiku", "temperature": 1}},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 2
    assert body["model_config"] == {"model": "claude-3-haiku", "temperature": 1}
    assert body["user_prompt_template"] == CONTENT["user_prompt_template"]
    assert body["variables"] == VARIABLES


def test_an_invalid_new_version_is_400_and_changes_nothing(owner):
    template = created(owner)

    assert_envelope(
        owner.client.put(
            f"{detail(template['id'])}?create_new_version=true",
            {**BODY, "name": "Renamed", "user_prompt_template": "{question} {nobody}"},
            format="json",
        ),
        400,
    )

    row = PromptTemplate.objects.get(pk=template["id"])
    assert (row.name, row.latest_version, row.versions.count()) == (BODY["name"], 1, 1)


def test_a_create_new_version_flag_that_is_not_a_boolean_is_400(owner):
    template = created(owner)

    error = assert_envelope(
        owner.client.patch(
            f"{detail(template['id'])}?create_new_version=maybe", {"name": "X"}, format="json"
        ),
        400,
    )

    assert "create_new_version" in error["details"]


def test_publish_moves_production_and_the_label_returns_it(owner):
    template = created(owner)
    url = detail(template["id"])
    owner.client.patch(
        f"{url}?create_new_version=true", {"user_prompt_template": "v2 {question}"}, format="json"
    )

    response = owner.client.post(f"{url}publish/", {"version": 1}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["production_version"] == 1
    production = owner.client.get(url, {"label": "production"}).json()
    assert production["version"] == 1
    assert production["labels"] == ["production"]
    assert production["user_prompt_template"] == CONTENT["user_prompt_template"]
    (event,) = events(owner.tenant, "prompt_template.published")
    assert (event.payload["version"], event.payload["previous_version"]) == (1, None)

    owner.client.post(f"{url}publish/", {"version": 2}, format="json")

    production = owner.client.get(url, {"label": "production"}).json()
    assert production["version"] == 2
    assert production["labels"] == ["production", "latest"]
    assert len(events(owner.tenant, "prompt_template.published")) == 2


def test_publishing_the_production_version_again_records_nothing(owner):
    template = created(owner)
    url = f"{detail(template['id'])}publish/"
    owner.client.post(url, {"version": 1}, format="json")

    response = owner.client.post(url, {"version": 1}, format="json")

    assert response.status_code == 200
    assert len(events(owner.tenant, "prompt_template.published")) == 1


@pytest.mark.parametrize("version", [2, 0, "one"])
def test_publishing_a_missing_version_is_400(owner, version):
    template = created(owner)

    error = assert_envelope(
        owner.client.post(f"{detail(template['id'])}publish/", {"version": version}, format="json"),
        400,
    )

    assert "version" in error["details"]
    assert PromptTemplate.objects.get(pk=template["id"]).production_version is None


def test_the_production_label_before_any_publish_is_400(owner):
    template = created(owner)

    error = assert_envelope(owner.client.get(detail(template["id"]), {"label": "production"}), 400)

    assert "label" in error["details"]


def test_retrieving_a_missing_version_is_400(owner):
    template = created(owner)

    error = assert_envelope(owner.client.get(detail(template["id"]), {"version": 7}), 400)

    assert "version" in error["details"]


def test_the_routes_answer_without_a_trailing_slash(owner):
    template = created(owner)

    assert owner.client.get(URL.rstrip("/")).status_code == 200
    assert owner.client.get(detail(template["id"]).rstrip("/")).status_code == 200
    assert owner.client.get(CATEGORIES_URL.rstrip("/")).status_code == 200
    response = owner.client.post(
        f"{detail(template['id'])}execute", {"variables": {"question": "Hi?"}}, format="json"
    )
    assert response.status_code == 200, response.content


def test_delete_removes_the_template_with_its_versions_and_executions(owner):
    template = created(owner)
    execute(owner, template["id"], variables={"question": "Why?"})

    response = owner.client.delete(detail(template["id"]))

    assert response.status_code == 204
    assert not PromptTemplate.objects.filter(pk=template["id"]).exists()
    assert not PromptTemplateVersion.objects.filter(template_id=template["id"]).exists()
    assert not PromptExecution.objects.filter(template_id=template["id"]).exists()
    # The gateway's call record stays: it is what was metered.
    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 1
    assert len(events(owner.tenant, "prompt_template.deleted")) == 1


# Listing --------------------------------------------------------------------------------------


def test_list_filters_by_category_and_status_and_searches(owner):
    created(owner, name="Refunds", category="billing", status="active")
    created(owner, name="Greeting", category="support", description="Say hello to refunds")
    created(owner, name="Archive me", category="support", status="archived")

    def names(**query):
        response = owner.client.get(URL, query)
        assert response.status_code == 200, response.content
        return sorted(row["name"] for row in response.json()["results"])

    assert names(category="support") == ["Archive me", "Greeting"]
    assert names(status="active") == ["Refunds"]
    assert names(category="support", status="archived") == ["Archive me"]
    assert names(search="refunds") == ["Greeting", "Refunds"]
    ordered = owner.client.get(URL, {"ordering": "name"}).json()["results"]
    assert [row["name"] for row in ordered] == ["Archive me", "Greeting", "Refunds"]


def test_list_shows_each_templates_latest_version(owner):
    template = created(owner)
    owner.client.patch(
        f"{detail(template['id'])}?create_new_version=true",
        {"user_prompt_template": "v2 {question}"},
        format="json",
    )

    (row,) = owner.client.get(URL).json()["results"]

    assert (row["version"], row["user_prompt_template"]) == (2, "v2 {question}")


# Execute --------------------------------------------------------------------------------------


def test_execute_renders_runs_and_saves_the_execution(owner):
    template = created(owner)
    variables = {"question": "why is the sky blue?", "tone": "casual", "words": 2.5, "cite": True}

    response = execute(owner, template["id"], variables=variables)

    assert response.status_code == 200, response.content
    body = response.json()
    rendered = (
        "Answer why is the sky blue? in a casual tone, in 2.5 words (citations: true). {json}"
    )
    assert body["rendered_prompt"] == rendered
    assert body["status"] == ExecutionStatus.SUCCEEDED
    assert body["model"] == "gpt-4"
    assert body["output"] == f"[local:gpt-4] You said: {rendered}"
    assert body["version"] == 1
    assert body["variables"] == variables
    assert body["saved"] is True
    assert body["error"] == ""
    messages = [
        {"role": "system", "content": "You answer for Acme."},
        {"role": "user", "content": rendered},
    ]
    assert body["prompt_tokens"] == tokens.prompt_tokens(messages)
    assert body["completion_tokens"] == tokens.count_tokens(body["output"])
    assert body["tokens_used"] == body["prompt_tokens"] + body["completion_tokens"]
    assert body["cost_micros"] == tokens.cost_micros(
        prompt_tokens=body["prompt_tokens"],
        completion_tokens=body["completion_tokens"],
        input_price=30_000_000,
        output_price=60_000_000,
    )
    assert body["response_time"] == round(body["response_time_ms"] / 1000, 3)
    execution = PromptExecution.objects.get(pk=body["id"])
    assert execution.tenant_id == owner.tenant.pk
    assert execution.executed_by_id == owner.user.pk
    call = execution.gateway_call
    assert call.source == CallSource.PLAYGROUND
    assert call.status == CallStatus.SUCCEEDED
    assert call.total_tokens == body["tokens_used"]
    assert call.user_id == owner.user.pk
    assert tokens_used(owner.tenant) == body["tokens_used"]
    listed = owner.client.get(f"{detail(template['id'])}executions/").json()["results"]
    assert [row["id"] for row in listed] == [body["id"]]


def test_execute_refuses_a_prompt_that_would_render_past_the_bound_and_meters_nothing(owner):
    variables = [{"name": "a", "type": "string", "required": True}]
    template = created(
        owner, system_prompt="", user_prompt_template="{a} " * 10_000, variables=variables
    )

    response = execute(owner, template["id"], variables={"a": "x" * MAX_VALUE_CHARS})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert f"at most {MAX_RENDERED_CHARS:,}" in error["details"]["variables"][0]
    assert tokens_used(owner.tenant) == 0
    assert not PromptExecution.objects.filter(tenant=owner.tenant).exists()


def test_execute_uses_the_defaults_of_variables_not_given(owner):
    template = created(owner)

    body = execute(owner, template["id"], variables={"question": "Q?"}).json()

    assert body["rendered_prompt"] == (
        "Answer Q? in a formal tone, in 50 words (citations: false). {json}"
    )


def test_execute_without_save_is_not_listed_but_is_metered_and_recorded(owner):
    template = created(owner)

    response = execute(owner, template["id"], variables={"question": "Q?"}, save_execution=False)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["saved"] is False
    assert body["output"].startswith("[local:gpt-4] You said: Answer Q?")
    assert not PromptExecution.objects.filter(tenant=owner.tenant).exists()
    listed = owner.client.get(f"{detail(template['id'])}executions/").json()["results"]
    assert listed == []
    call = GatewayCall.objects.get(tenant=owner.tenant)
    assert call.source == CallSource.PLAYGROUND
    assert call.total_tokens == body["tokens_used"] > 0
    assert tokens_used(owner.tenant) == body["tokens_used"]


def test_execute_runs_production_when_published_else_latest(owner):
    template = created(owner)
    url = detail(template["id"])
    owner.client.patch(
        f"{url}?create_new_version=true", {"user_prompt_template": "v2 {question}"}, format="json"
    )

    assert execute(owner, template["id"], variables={"question": "Q"}).json()["version"] == 2
    owner.client.post(f"{url}publish/", {"version": 1}, format="json")

    assert execute(owner, template["id"], variables={"question": "Q"}).json()["version"] == 1
    latest = execute(owner, template["id"], variables={"question": "Q"}, label="latest").json()
    assert (latest["version"], latest["rendered_prompt"]) == (2, "v2 Q")
    assert (
        execute(owner, template["id"], variables={"question": "Q"}, version=2).json()["version"]
        == 2
    )


def test_executing_a_missing_version_is_400_and_meters_nothing(owner):
    template = created(owner)

    error = assert_envelope(
        execute(owner, template["id"], variables={"question": "Q"}, version=9), 400
    )

    assert "version" in error["details"]
    assert not GatewayCall.objects.filter(tenant=owner.tenant).exists()


def test_a_missing_required_variable_is_400_naming_it_and_meters_nothing(owner):
    template = created(owner)

    error = assert_envelope(execute(owner, template["id"], variables={"tone": "casual"}), 400)

    assert "question" in " ".join(error["details"]["variables"])
    assert "question" in error["message"]
    assert not GatewayCall.objects.filter(tenant=owner.tenant).exists()
    assert not PromptExecution.objects.filter(tenant=owner.tenant).exists()
    assert tokens_used(owner.tenant) == 0


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"question": 42}, "variables.question"),
        ({"question": "Q", "words": "fifty"}, "variables.words"),
        ({"question": "Q", "words": True}, "variables.words"),
        ({"question": "Q", "cite": "yes"}, "variables.cite"),
        ({"question": "Q", "cite": 1}, "variables.cite"),
        ({"question": "Q", "tone": "angry"}, "variables.tone"),
        ({"question": "Q", "tone": 1}, "variables.tone"),
        ({"question": "Q", "customer": "Bob"}, "variables"),
    ],
)
def test_badly_typed_enum_outside_options_or_unknown_variables_are_400(owner, variables, field):
    template = created(owner)

    error = assert_envelope(execute(owner, template["id"], variables=variables), 400)

    assert field in error["details"], error["details"]
    assert not GatewayCall.objects.filter(tenant=owner.tenant).exists()
    assert tokens_used(owner.tenant) == 0


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"question": "Q", "words": ""}, "variables.words"),
        ({"question": "Q", "cite": ""}, "variables.cite"),
        ({"question": "Q", "tone": ""}, "variables.tone"),
    ],
)
def test_an_empty_string_is_no_number_boolean_or_enum_option(owner, variables, field):
    template = created(owner)

    error = assert_envelope(execute(owner, template["id"], variables=variables), 400)

    assert field in error["details"], error["details"]
    assert not GatewayCall.objects.filter(tenant=owner.tenant).exists()


def test_every_problem_with_the_variables_is_named_at_once(owner):
    template = created(owner)

    error = assert_envelope(
        execute(owner, template["id"], variables={"words": "x", "customer": "Bob"}), 400
    )

    assert set(error["details"]) == {"variables", "variables.words"}
    joined = " ".join(error["details"]["variables"])
    assert "customer" in joined
    assert "question" in joined


def test_a_template_id_in_the_execute_body_is_ignored(owner):
    template = created(owner)
    other = created(owner, name="Other", user_prompt_template="Other {question}")

    body = execute(
        owner, template["id"], variables={"question": "Q"}, template_id=other["id"]
    ).json()

    assert body["template_id"] == template["id"]


# Executions -----------------------------------------------------------------------------------


def test_executions_are_cursor_paginated_newest_first(owner):
    template = created(owner)
    ids = [
        execute(owner, template["id"], variables={"question": f"Q{n}"}).json()["id"]
        for n in range(3)
    ]
    url = f"{detail(template['id'])}executions/"

    first = owner.client.get(url, {"page_size": 2}).json()
    second = owner.client.get(first["next"]).json()

    assert [row["id"] for row in first["results"]] == ids[::-1][:2]
    assert [row["id"] for row in second["results"]] == ids[:1]
    assert "cursor=" in first["next"]
    assert second["next"] is None
    assert "count" not in first


def test_executions_filter_by_status_version_and_time(owner):
    template = PromptTemplateFactory(tenant=owner.tenant)
    first = template.versions.get()
    second = second_version(template)
    now = timezone.now()
    old = at(PromptExecutionFactory(template=template, version=first), now - dt.timedelta(days=3))
    failed = PromptExecutionFactory(template=template, version=first, status=ExecutionStatus.FAILED)
    newer = PromptExecutionFactory(template=template, version=second)
    PromptExecutionFactory(template=PromptTemplateFactory(tenant=owner.tenant))
    url = f"{detail(template.pk)}executions/"

    def ids(**query):
        response = owner.client.get(url, query)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids() == {str(old.pk), str(failed.pk), str(newer.pk)}
    assert ids(status="failed") == {str(failed.pk)}
    assert ids(version=2) == {str(newer.pk)}
    since = (now - dt.timedelta(days=1)).isoformat()
    assert ids(since=since) == {str(failed.pk), str(newer.pk)}
    assert ids(until=since) == {str(old.pk)}


# Ratings --------------------------------------------------------------------------------------


def rate(caller, execution_id, rating):
    return caller.client.post(
        f"/api/v1/playground/executions/{execution_id}/rating/", {"rating": rating}, format="json"
    )


def test_rating_from_1_to_5_is_saved_and_recorded(owner):
    template = created(owner)
    execution_id = execute(owner, template["id"], variables={"question": "Q"}).json()["id"]

    for rating in (1, 5, 3):
        response = rate(owner, execution_id, rating)
        assert response.status_code == 200, response.content
        assert response.json()["rating"] == rating

    execution = PromptExecution.objects.get(pk=execution_id)
    assert execution.rating == 3
    assert execution.rated_by_id == owner.user.pk
    assert execution.rated_at is not None
    rated = events(owner.tenant, "prompt_execution.rated")
    assert sorted(e.payload["rating"] for e in rated) == [1, 3, 5]


@pytest.mark.parametrize("rating", [0, 6, -1, "five", None, 2.5])
def test_a_rating_outside_1_to_5_is_400(owner, rating):
    execution = PromptExecutionFactory(template=PromptTemplateFactory(tenant=owner.tenant))

    error = assert_envelope(rate(owner, execution.pk, rating), 400)

    assert "rating" in error["details"]
    execution.refresh_from_db()
    assert execution.rating is None


def test_rating_another_tenants_execution_is_404(owner):
    foreign = PromptExecutionFactory()

    assert_envelope(rate(owner, foreign.pk, 4), 404)
    assert_envelope(rate(owner, uuid.uuid4(), 4), 404)

    foreign.refresh_from_db()
    assert foreign.rating is None


# Analytics ------------------------------------------------------------------------------------


def analytics(caller, template, **query):
    response = caller.client.get(f"{detail(template.pk)}analytics/", query)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def noon():
    """Today at noon (UTC), frozen: days do not turn during a test."""
    moment = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    with time_machine.travel(moment, tick=False):
        yield moment


def test_analytics_summarises_executions_by_template_and_version(owner, noon):
    template = PromptTemplateFactory(tenant=owner.tenant)
    first = template.versions.get()
    second = second_version(template)
    ratings = {100: 5, 200: 4, 800: 2}
    for n in range(1, 11):
        PromptExecutionFactory(
            template=template,
            version=first if n <= 6 else second,
            response_time_ms=n * 100,
            status=ExecutionStatus.FAILED if n in (9, 10) else ExecutionStatus.SUCCEEDED,
            rating=ratings.get(n * 100),
            tokens_used=20,
            cost_micros=30,
        )
    # Outside the period, and another template's: neither counts.
    at(PromptExecutionFactory(template=template), noon - dt.timedelta(days=8))
    PromptExecutionFactory(template=PromptTemplateFactory(tenant=owner.tenant))

    body = analytics(owner, template, days=7)

    assert body["template_id"] == str(template.pk)
    assert body["template_name"] == template.name
    assert body["period"] == {
        "days": 7,
        "start_date": (noon - dt.timedelta(days=7)).date().isoformat(),
        "end_date": noon.date().isoformat(),
    }
    summary = body["summary"]
    assert summary == {
        "executions": 10,
        "failed": 2,
        "error_rate": 0.2,
        "avg_response_time": 0.55,
        "p50_response_time_ms": 550.0,
        "p95_response_time_ms": 955.0,
        "p99_response_time_ms": 991.0,
        "total_tokens": 200,
        "avg_tokens": 20.0,
        "total_cost_micros": 300,
        "avg_cost_micros": 30.0,
        "avg_rating": 3.67,
        "rated_executions": 3,
    }
    by_version = {row["version"]: row for row in body["versions"]}
    assert [row["version"] for row in body["versions"]] == [1, 2]
    assert by_version[1]["executions"] == 6
    assert by_version[1]["failed"] == 0
    assert by_version[1]["error_rate"] == 0.0
    assert by_version[1]["p50_response_time_ms"] == 350.0
    assert by_version[1]["avg_rating"] == 4.5
    assert by_version[2]["executions"] == 4
    assert by_version[2]["error_rate"] == 0.5
    assert by_version[2]["p50_response_time_ms"] == 850.0
    assert by_version[2]["p95_response_time_ms"] == 985.0
    assert by_version[2]["avg_rating"] == 2.0
    assert body["trends"]["daily_usage"] == [
        {
            "date": noon.date().isoformat(),
            "executions": 10,
            "errors": 2,
            "tokens": 200,
            "cost_micros": 300,
            "avg_response_time_ms": 550.0,
        }
    ]
    # One day of data is no trend, however many executions.
    assert body["trends"]["performance_trend"] == "insufficient_data"
    reliability = [r for r in body["recommendations"] if r["type"] == "reliability"]
    assert len(reliability) == 1
    assert reliability[0]["priority"] == "high"
    assert "20%" in reliability[0]["description"]
    assert not [r for r in body["recommendations"] if r["type"] == "usage"]


def test_analytics_daily_usage_has_one_row_per_day_oldest_first(owner, noon):
    template = PromptTemplateFactory(tenant=owner.tenant)
    for days_ago, latency in ((2, 100), (2, 300), (0, 500)):
        at(
            PromptExecutionFactory(template=template, response_time_ms=latency),
            noon - dt.timedelta(days=days_ago),
        )

    daily = analytics(owner, template)["trends"]["daily_usage"]

    assert [(row["date"], row["executions"], row["avg_response_time_ms"]) for row in daily] == [
        ((noon - dt.timedelta(days=2)).date().isoformat(), 2, 200.0),
        (noon.date().isoformat(), 1, 500.0),
    ]


def test_under_10_executions_the_trend_is_insufficient_data(owner, noon):
    template = PromptTemplateFactory(tenant=owner.tenant)
    for n in range(9):
        at(
            PromptExecutionFactory(template=template, response_time_ms=100 if n < 5 else 5000),
            noon - dt.timedelta(days=1 if n < 5 else 0),
        )

    body = analytics(owner, template)

    assert len(body["trends"]["daily_usage"]) == 2
    assert body["trends"]["performance_trend"] == "insufficient_data"
    usage = [r for r in body["recommendations"] if r["type"] == "usage"]
    assert [r["priority"] for r in usage] == ["low"]


@pytest.mark.parametrize(
    ("before", "after", "trend"),
    [(100, 200, "degrading"), (200, 100, "improving"), (100, 105, "stable")],
)
def test_the_trend_compares_the_later_days_latency_with_the_earlier(
    owner, noon, before, after, trend
):
    template = PromptTemplateFactory(tenant=owner.tenant)
    for n in range(10):
        at(
            PromptExecutionFactory(template=template, response_time_ms=before if n < 5 else after),
            noon - dt.timedelta(days=2 if n < 5 else 1),
        )

    body = analytics(owner, template)

    assert body["trends"]["performance_trend"] == trend
    rising = [r for r in body["recommendations"] if r["title"] == "Latency is rising"]
    assert bool(rising) is (trend == "degrading")


def test_a_healthy_template_gets_the_performing_well_recommendation(owner):
    template = PromptTemplateFactory(tenant=owner.tenant)
    for _ in range(10):
        PromptExecutionFactory(template=template, rating=5)

    body = analytics(owner, template)

    assert [(r["type"], r["priority"]) for r in body["recommendations"]] == [("performance", "low")]


def test_analytics_recommend_on_low_ratings_slow_responses_and_no_production(owner):
    template = PromptTemplateFactory(tenant=owner.tenant, status=TemplateStatus.ACTIVE)
    for _ in range(10):
        PromptExecutionFactory(template=template, rating=1, response_time_ms=20_000)

    kinds = {(r["type"], r["priority"]) for r in analytics(owner, template)["recommendations"]}

    assert kinds == {("quality", "high"), ("performance", "medium"), ("process", "low")}


def test_analytics_without_executions_answers_zeros_and_nulls(owner):
    template = PromptTemplateFactory(tenant=owner.tenant)

    body = analytics(owner, template)

    assert body["period"]["days"] == 30
    assert body["summary"]["executions"] == 0
    assert body["summary"]["error_rate"] == 0.0
    assert body["summary"]["p50_response_time_ms"] is None
    assert body["summary"]["avg_rating"] is None
    assert body["versions"] == []
    assert body["trends"] == {"daily_usage": [], "performance_trend": "insufficient_data"}
    assert [r["type"] for r in body["recommendations"]] == ["usage"]


def test_analytics_and_compare_timestamps_are_iso_8601_like_the_rest_of_the_api(owner):
    template = PromptTemplateFactory(tenant=owner.tenant)
    created_at = owner.client.get(detail(template.pk)).json()["created_at"]

    stamps = [
        analytics(owner, template)["generated_at"],
        compare(owner, template).json()["generated_at"],
    ]

    assert ISO_8601_UTC.match(created_at), created_at
    for stamp in stamps:
        assert ISO_8601_UTC.match(stamp), stamp


@pytest.mark.parametrize("days", [0, 366, -1, "week"])
def test_analytics_days_out_of_range_is_400(owner, days):
    template = PromptTemplateFactory(tenant=owner.tenant)

    error = assert_envelope(
        owner.client.get(f"{detail(template.pk)}analytics/", {"days": days}), 400
    )

    assert "days" in error["details"]


# Compare --------------------------------------------------------------------------------------


def compare(caller, *templates, **body):
    return caller.client.post(
        COMPARE_URL, {"template_ids": [str(t.pk) for t in templates], **body}, format="json"
    )


def runs(template, n, **fields):
    for _ in range(n):
        PromptExecutionFactory(template=template, **fields)


def test_compare_names_the_fastest_cheapest_and_highest_rated(owner):
    slow_cheap = PromptTemplateFactory(tenant=owner.tenant, name="Slow cheap")
    fast_dear = PromptTemplateFactory(tenant=owner.tenant, name="Fast dear")
    unused = PromptTemplateFactory(tenant=owner.tenant, name="Unused")
    runs(slow_cheap, 2, response_time_ms=900, cost_micros=10, rating=2)
    runs(fast_dear, 3, response_time_ms=100, cost_micros=90, rating=4)

    response = compare(owner, slow_cheap, fast_dear, unused, days=7)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["period"]["days"] == 7
    assert body["winners"] == {
        "fastest": {"id": str(fast_dear.pk), "name": "Fast dear", "time_ms": 100.0},
        "cheapest": {"id": str(slow_cheap.pk), "name": "Slow cheap", "cost_micros": 10.0},
        "highest_rated": {"id": str(fast_dear.pk), "name": "Fast dear", "rating": 4.0},
    }
    templates = body["templates"]
    assert set(templates) == {str(slow_cheap.pk), str(fast_dear.pk), str(unused.pk)}
    assert templates[str(fast_dear.pk)]["executions"] == 3
    assert templates[str(fast_dear.pk)]["p50_response_time_ms"] == 100.0
    assert templates[str(slow_cheap.pk)]["avg_cost_micros"] == 10.0
    assert templates[str(unused.pk)] == {
        "name": "Unused",
        "category": "faq",
        "executions": 0,
        "avg_response_time": None,
        "p50_response_time_ms": None,
        "avg_cost_micros": None,
        "avg_rating": None,
        "error_rate": None,
    }


def test_compare_without_executions_has_no_winners(owner):
    first = PromptTemplateFactory(tenant=owner.tenant)
    second = PromptTemplateFactory(tenant=owner.tenant)

    body = compare(owner, first, second).json()

    assert body["winners"] == {"fastest": None, "cheapest": None, "highest_rated": None}


def test_unrated_templates_never_win_highest_rated(owner):
    rated = PromptTemplateFactory(tenant=owner.tenant)
    unrated = PromptTemplateFactory(tenant=owner.tenant)
    runs(rated, 1, rating=1)
    runs(unrated, 5)

    winners = compare(owner, rated, unrated).json()["winners"]

    assert winners["highest_rated"]["id"] == str(rated.pk)


def test_compare_ties_go_to_more_executions_then_the_smaller_id(owner):
    fewer = PromptTemplateFactory(tenant=owner.tenant)
    more = PromptTemplateFactory(tenant=owner.tenant)
    runs(fewer, 2, response_time_ms=300, cost_micros=50, rating=4)
    runs(more, 3, response_time_ms=300, cost_micros=50, rating=4)

    winners = compare(owner, fewer, more).json()["winners"]

    assert {w["id"] for w in winners.values()} == {str(more.pk)}

    a = PromptTemplateFactory(tenant=owner.tenant)
    b = PromptTemplateFactory(tenant=owner.tenant)
    runs(a, 2, response_time_ms=300, cost_micros=50, rating=4)
    runs(b, 2, response_time_ms=300, cost_micros=50, rating=4)
    smaller = min(str(a.pk), str(b.pk))

    for order in ((a, b), (b, a)):
        winners = compare(owner, *order).json()["winners"]
        assert {w["id"] for w in winners.values()} == {smaller}


def test_compare_only_counts_the_period(owner, noon):
    recent = PromptTemplateFactory(tenant=owner.tenant)
    old = PromptTemplateFactory(tenant=owner.tenant)
    runs(recent, 1, response_time_ms=500)
    at(PromptExecutionFactory(template=old, response_time_ms=10), noon - dt.timedelta(days=10))

    body = compare(owner, recent, old, days=7).json()

    assert body["templates"][str(old.pk)]["executions"] == 0
    assert body["winners"]["fastest"]["id"] == str(recent.pk)


def test_compare_with_another_tenants_template_is_404_like_a_random_id(owner):
    own = PromptTemplateFactory(tenant=owner.tenant)
    foreign = PromptTemplateFactory()
    runs(foreign, 1)

    foreign_error = assert_envelope(compare(owner, own, foreign), 404)
    random_error = assert_envelope(
        owner.client.post(
            COMPARE_URL, {"template_ids": [str(own.pk), str(uuid.uuid4())]}, format="json"
        ),
        404,
    )

    assert str(foreign.pk) in foreign_error["message"]
    assert foreign_error["code"] == random_error["code"]


@pytest.mark.parametrize(
    "body",
    [{"template_ids": []}, {"template_ids": ["nope"]}, {"template_ids": "x"}, {"days": 400}],
)
def test_compare_validates_its_body(owner, body):
    own = PromptTemplateFactory(tenant=owner.tenant)

    assert_envelope(
        owner.client.post(COMPARE_URL, {"template_ids": [str(own.pk)], **body}, format="json"),
        400,
    )


# Categories -----------------------------------------------------------------------------------


def test_categories_count_templates_by_status(owner):
    for category, status in (
        ("billing", "active"),
        ("billing", "active"),
        ("billing", "draft"),
        ("support", "archived"),
        ("support", "draft"),
    ):
        PromptTemplateFactory(tenant=owner.tenant, category=category, status=status)
    PromptTemplateFactory(category="billing", status="active")

    response = owner.client.get(CATEGORIES_URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 2
    assert body["results"] == [
        {
            "name": "billing",
            "total_templates": 3,
            "active_templates": 2,
            "draft_templates": 1,
            "archived_templates": 0,
        },
        {
            "name": "support",
            "total_templates": 2,
            "active_templates": 0,
            "draft_templates": 1,
            "archived_templates": 1,
        },
    ]


def test_categories_are_paginated(owner):
    for n in range(3):
        PromptTemplateFactory(tenant=owner.tenant, category=f"c{n}")

    body = owner.client.get(CATEGORIES_URL, {"page_size": 2}).json()

    assert body["count"] == 3
    assert [row["name"] for row in body["results"]] == ["c0", "c1"]
    assert body["next"]


# Bulk -----------------------------------------------------------------------------------------


def bulk(caller, operation, ids, **parameters):
    body = {"operation": operation, "template_ids": [str(i) for i in ids]}
    if parameters:
        body["parameters"] = parameters
    return caller.client.post(BULK_URL, body, format="json")


@pytest.fixture
def bulk_targets(owner):
    own = [PromptTemplateFactory(tenant=owner.tenant) for _ in range(2)]
    foreign = PromptTemplateFactory()
    missing = uuid.uuid4()
    return own, foreign, [own[0].pk, missing, foreign.pk, own[1].pk]


def assert_partial(response, ids, own, failed):
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["success_count"], body["error_count"], body["total_count"]) == (2, 2, 4)
    assert [row["id"] for row in body["results"]] == [str(i) for i in ids]
    statuses = {row["id"]: row["status"] for row in body["results"]}
    assert {statuses[str(t.pk)] for t in own} == {"success"}
    assert {statuses[str(i)] for i in failed} == {"error"}
    assert {row["id"] for row in body["errors"]} == {str(i) for i in failed}
    # Another tenant's template is not told apart from a missing one.
    assert len({row["error"] for row in body["errors"]}) == 1


def test_bulk_activate_and_deactivate_apply_to_the_tenants_templates_only(owner, bulk_targets):
    own, foreign, ids = bulk_targets

    response = bulk(owner, "activate", ids)

    assert_partial(response, ids, own, [ids[1], foreign.pk])
    assert {t.status for t in PromptTemplate.objects.filter(tenant=owner.tenant)} == {"active"}
    foreign.refresh_from_db()
    assert foreign.status == TemplateStatus.DRAFT
    assert len(events(owner.tenant, "prompt_template.updated")) == 2

    response = bulk(owner, "deactivate", ids)

    assert_partial(response, ids, own, [ids[1], foreign.pk])
    assert {t.status for t in PromptTemplate.objects.filter(tenant=owner.tenant)} == {"draft"}


def test_bulk_change_category(owner, bulk_targets):
    own, foreign, ids = bulk_targets

    response = bulk(owner, "change_category", ids, category="billing")

    assert_partial(response, ids, own, [ids[1], foreign.pk])
    assert {t.category for t in PromptTemplate.objects.filter(tenant=owner.tenant)} == {"billing"}
    foreign.refresh_from_db()
    assert foreign.category == "faq"


def test_bulk_delete(owner, bulk_targets):
    own, foreign, ids = bulk_targets

    response = bulk(owner, "delete", ids)

    assert_partial(response, ids, own, [ids[1], foreign.pk])
    assert not PromptTemplate.objects.filter(tenant=owner.tenant).exists()
    assert PromptTemplate.objects.filter(pk=foreign.pk).exists()
    assert len(events(owner.tenant, "prompt_template.deleted")) == 2


def test_bulk_delete_naming_a_template_twice_deletes_it_once_and_reports_the_repeat(owner):
    template = PromptTemplateFactory(tenant=owner.tenant)
    kept = PromptTemplateFactory(tenant=owner.tenant)

    response = bulk(owner, "delete", [template.pk, template.pk])

    assert response.status_code == 200, (response.status_code, response.content[:300])
    body = response.json()
    assert [row["status"] for row in body["results"]] == ["success", "error"]
    assert (body["success_count"], body["error_count"]) == (1, 1)
    assert not PromptTemplate.objects.filter(pk=template.pk).exists()
    assert PromptTemplate.objects.filter(pk=kept.pk).exists()
    assert len(events(owner.tenant, "prompt_template.deleted")) == 1


def test_bulk_change_category_without_a_category_is_400(owner):
    template = PromptTemplateFactory(tenant=owner.tenant)

    for parameters in ({}, {"category": 5}):
        body = {"operation": "change_category", "template_ids": [str(template.pk)]}
        error = assert_envelope(
            owner.client.post(BULK_URL, {**body, "parameters": parameters}, format="json"), 400
        )
        assert "parameters.category" in error["details"]

    template.refresh_from_db()
    assert template.category == "faq"


@pytest.mark.parametrize("category", ["Not A Slug!", "x" * 65])
def test_bulk_change_category_refuses_a_category_create_would_refuse(owner, category):
    template = PromptTemplateFactory(tenant=owner.tenant)

    response = bulk(owner, "change_category", [template.pk], category=category)

    assert response.status_code == 400, (response.status_code, response.content[:300])
    template.refresh_from_db()
    assert template.category == "faq"


def test_bulk_with_more_than_100_ids_is_400(owner):
    template = PromptTemplateFactory(tenant=owner.tenant)
    ids = [template.pk, *(uuid.uuid4() for _ in range(100))]

    error = assert_envelope(bulk(owner, "activate", ids), 400)

    assert "template_ids" in error["details"]
    template.refresh_from_db()
    assert template.status == TemplateStatus.DRAFT


def test_bulk_with_an_unknown_operation_is_400(owner):
    template = PromptTemplateFactory(tenant=owner.tenant)

    error = assert_envelope(bulk(owner, "archive", [template.pk]), 400)

    assert "operation" in error["details"]


# Who may do what ------------------------------------------------------------------------------


def test_a_viewer_can_read_but_not_create_or_execute(owner, make_caller):
    viewer = make_caller(Role.VIEWER, tenant=owner.tenant)
    template = created(owner)

    assert owner.client.get(URL).status_code == 200
    listed = viewer.client.get(URL)
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [template["id"]]
    assert viewer.client.get(detail(template["id"])).status_code == 200
    assert viewer.client.get(f"{detail(template['id'])}analytics/").status_code == 200
    assert_envelope(create(viewer, name="Viewer's"), 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(
        execute(viewer, template["id"], variables={"question": "Q"}),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    assert_envelope(bulk(viewer, "delete", [template["id"]]), 403, "INSUFFICIENT_PERMISSIONS")
    assert PromptTemplate.objects.filter(tenant=owner.tenant).count() == 1
    assert not GatewayCall.objects.filter(tenant=owner.tenant).exists()


def test_a_member_without_execute_cannot_rate(owner, make_caller):
    member = make_caller(
        Role.MEMBER, tenant=owner.tenant, permissions={"playground": {"execute": False}}
    )
    execution = PromptExecutionFactory(template=PromptTemplateFactory(tenant=owner.tenant))

    assert_envelope(rate(member, execution.pk, 5), 403, "INSUFFICIENT_PERMISSIONS")


def test_an_api_key_with_the_read_scope_can_list_but_not_create(owner):
    template = created(owner)
    _, raw = issue_api_key(owner.membership, scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    listed = client.get(URL)
    refused = client.post(URL, {**BODY, "name": "By key"}, format="json")
    refused_execute = client.post(
        f"{detail(template['id'])}execute/", {"variables": {"question": "Q"}}, format="json"
    )

    assert listed.status_code == 200, listed.content
    assert [row["id"] for row in listed.json()["results"]] == [template["id"]]
    assert_envelope(refused, 403)
    assert_envelope(refused_execute, 403)
    assert not PromptTemplate.objects.filter(name="By key").exists()


def test_an_api_key_with_the_write_scope_executes_and_is_recorded(owner):
    template = created(owner)
    key, raw = issue_api_key(owner.membership, scopes=["write", "read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    response = client.post(
        f"{detail(template['id'])}execute/", {"variables": {"question": "Q"}}, format="json"
    )

    assert response.status_code == 200, response.content
    assert GatewayCall.objects.get(tenant=owner.tenant).api_key_id == key.pk


def test_another_tenants_template_is_404_everywhere(owner):
    foreign = PromptTemplateFactory()
    PromptExecutionFactory(template=foreign)
    url = detail(foreign.pk)
    random_url = detail(uuid.uuid4())

    answers = [
        owner.client.get(url),
        execute(owner, foreign.pk, variables={"question": "Q"}),
        owner.client.get(f"{url}analytics/"),
        owner.client.get(f"{url}executions/"),
        owner.client.post(f"{url}publish/", {"version": 1}, format="json"),
        owner.client.patch(url, {"name": "Mine"}, format="json"),
        owner.client.delete(url),
    ]

    random_message = assert_envelope(owner.client.get(random_url), 404)["message"]
    for response in answers:
        assert assert_envelope(response, 404)["message"] == random_message
    foreign.refresh_from_db()
    assert foreign.name != "Mine"
    assert foreign.production_version is None
    assert not GatewayCall.objects.exists()


def _days(*latencies, executions=5):
    return [
        {"date": f"2026-11-{index + 1:02d}", "executions": executions, "avg_response_time_ms": ms}
        for index, ms in enumerate(latencies)
    ]


@pytest.mark.parametrize(
    ("latencies", "trend"),
    [
        ((1000, 1000, 700, 700), "improving"),
        ((700, 700, 1000, 1000), "degrading"),
        ((1000, 1000, 1050, 1050), "stable"),  # 5 %: under the relative threshold
        ((1, 1, 4, 4), "stable"),  # +300 % but 3 ms: under the absolute one
        ((1000,), "insufficient_data"),
    ],
)
def test_the_performance_trend_needs_a_relative_and_an_absolute_change(latencies, trend):
    from playground.selectors import performance_trend

    assert performance_trend(_days(*latencies, executions=10)) == trend
