"""The schema states the rules request validation enforces, so that a client (or a generated
SDK) that follows the schema is not refused: text rules as patterns, codes as enums, JSON
objects as objects, non-empty and distinct lists, the Idempotency-Key header. Responses keep
the plain types: a value stored before a rule tightened, or by staff, is answered as it is."""

import re

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.core.management import call_command

from config.validators import validate_name, validate_text
from tenants.theme_assets import HEX_COLOR_PATTERN

pytestmark = [pytest.mark.django_db]


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def component(schema, name):
    return schema["components"]["schemas"][name]["properties"]


def accepts(validator, text) -> bool:
    try:
        validator(text)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("validator", [validate_name, validate_text], ids=["name", "text"])
def test_each_text_pattern_is_exactly_its_validator_on_the_basic_plane(validator):
    pattern = re.compile(validator.pattern)
    # Every character of the plane but the surrogates (JSON text cannot hold them alone).
    differ = [
        f"U+{code:04X}"
        for code in range(0x10000)
        if not 0xD800 <= code <= 0xDFFF
        and bool(pattern.fullmatch(f"a{chr(code)}b")) != accepts(validator, f"a{chr(code)}b")
    ]
    assert differ == []


def test_a_character_beyond_the_basic_plane_matches_the_text_patterns():
    # An emoji is two UTF-16 code units to an ECMA pattern: neither may be refused.
    for validator in (validate_name, validate_text):
        assert re.compile(validator.pattern).fullmatch("launch \U0001f680")
        assert accepts(validator, "launch \U0001f680")


def test_request_text_fields_carry_their_rule_and_responses_do_not(schema):
    assert component(schema, "TenantRequest")["name"]["pattern"] == validate_name.pattern
    assert component(schema, "ProjectRequest")["name"]["pattern"] == validate_text.pattern
    [described, blank] = component(schema, "ProjectRequest")["description"]["oneOf"]
    assert described["pattern"] == validate_text.pattern and blank["maxLength"] == 0
    assert "pattern" not in component(schema, "Project")["name"]
    items = component(schema, "ProcessingActivityInputRequest")["data_subjects"]["items"]
    assert items["pattern"] == validate_name.pattern


def test_colours_state_their_spelling_on_requests(schema):
    theme = component(schema, "ThemeRequest")
    for name in ("primary_color", "secondary_color", "accent_color"):
        assert theme[name]["pattern"] == HEX_COLOR_PATTERN
    assert "pattern" not in component(schema, "Theme")["primary_color"]
    assert re.fullmatch(HEX_COLOR_PATTERN, "#2563eb") and re.fullmatch(HEX_COLOR_PATTERN, "#FFF")
    assert not re.fullmatch(HEX_COLOR_PATTERN, "red")


def enum_of(schema, prop):
    ref = next(part["$ref"] for part in prop["allOf"])
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["enum"]


def test_codes_are_enums_on_requests(schema):
    currencies = enum_of(schema, component(schema, "CustomerProfileRequest")["currency"])
    assert {"USD", "EUR", "JPY"} <= set(currencies) and "ABC" not in currencies
    countries = enum_of(schema, component(schema, "InternationalTransferRequest")["country"])
    assert {"US", "DE", "IN"} <= set(countries) and "XX" not in countries
    assert "allOf" not in component(schema, "CustomerProfile")["currency"]


def test_json_objects_are_documented_as_objects(schema):
    for name, prop in [
        ("ProjectRequest", "metadata"),
        ("OrchestrationTemplateRequest", "template_data"),
        ("WorkflowExecuteRequest", "input_data"),
        ("OrganizationUpdateRequest", "settings"),
        ("OrganizationUpdateRequest", "branding"),
    ]:
        assert component(schema, name)[prop]["type"] == "object", (name, prop)


def test_lists_state_non_empty_and_distinct(schema):
    assert component(schema, "APIKeyCreateRequest")["scopes"]["minItems"] == 1
    activity = component(schema, "ProcessingActivityInputRequest")
    for name in ("special_categories", "data_categories", "data_subjects"):
        assert activity[name]["uniqueItems"] is True, name
    assert "uniqueItems" not in activity["recipients"]


def test_the_idempotency_key_header_states_its_bounds(schema):
    parameters = schema["paths"]["/api/v1/billing/checkout/"]["post"]["parameters"]
    [header] = [p for p in parameters if p["name"] == "Idempotency-Key"]
    rule = header["schema"]
    assert (rule["minLength"], rule["maxLength"]) == (1, 255)
    pattern = re.compile(rule["pattern"])
    assert pattern.fullmatch("order-42") and pattern.fullmatch(" order 42 ")
    assert not pattern.fullmatch("   ") and not pattern.fullmatch("a\x01b")


# What the documented rules are checked by --------------------------------------------------


def test_an_object_field_refuses_other_json(owner):
    for metadata in ([], "x", 5, None):
        response = owner.client.post(
            "/api/v1/projects/",
            {"name": "Rules", "topic": "t", "metadata": metadata},
            format="json",
        )
        assert response.status_code == 400, metadata
        assert "metadata" in response.json()["error"]["details"]


def test_codes_are_taken_in_any_case_and_stored_upper_cased(owner):
    created = owner.client.post(
        "/api/v1/support/customer-profiles/",
        {"name": "Casey", "email": "casey@example.com", "currency": "eur"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["currency"] == "EUR"
    refused = owner.client.post(
        "/api/v1/support/customer-profiles/",
        {"name": "Casey", "email": "casey2@example.com", "currency": "ABC"},
        format="json",
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["details"] == {"currency": ["Not an ISO 4217 currency code."]}


def test_a_distinct_list_refuses_a_repeat(owner):
    body = {
        "name": "Newsletters",
        "purpose": "Sending the monthly newsletter.",
        "legal_basis": "consent",
        "retention_period_months": 24,
        "privacy_impact_score": 3,
        "data_subjects": ["customers", "customers"],
    }
    response = owner.client.post("/api/v1/security/data-processing/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {
        "data_subjects": ["data_subjects lists a value twice."]
    }


def test_nested_objects_are_documented_as_their_serializers(schema):
    hours = component(schema, "SlaPolicyRequest")["business_hours"]
    assert hours["allOf"] == [{"$ref": "#/components/schemas/BusinessHoursRequest"}]
    assert hours["nullable"] is True
    thresholds = component(schema, "AiAgentInputRequest")["thresholds"]
    assert thresholds["allOf"] == [{"$ref": "#/components/schemas/AgentThresholdsRequest"}]


def test_other_request_rules_are_stated(schema):
    ticket = component(schema, "TicketCreateRequest")
    assert ticket["sentiment"]["multipleOf"] == 0.01
    assignee = re.compile(ticket["assignee"]["pattern"])
    assert assignee.fullmatch("auto") and assignee.fullmatch("6f1c2a4e-0b1d-4c3e-9a7f-2d5e8b9c0a1f")
    assert not assignee.fullmatch("anyone")
    scopes = component(schema, "APIKeyCreateRequest")["scopes"]["items"]
    assert {"read", "write", "documents.read"} <= set(enum_of(schema, scopes))
    plan = schema["components"]["schemas"]["ChangePlanRequest"]
    assert plan["anyOf"] == [{"required": ["new_plan_id"]}, {"required": ["plan"]}]
    evaluate = schema["components"]["schemas"]["RuleEvaluateRequest"]
    assert evaluate["oneOf"] == [{"required": ["payload"]}, {"required": ["ticket_id"]}]
    execute = schema["components"]["schemas"]["ExecuteRequest"]
    assert execute["not"] == {"required": ["version", "label"]}
    # A PATCH body's fields are all optional: no rule between them is stated there.
    assert "anyOf" not in schema["components"]["schemas"].get("PatchedChangePlanRequest", {})
    assert component(schema, "ChatCompletionRequest")["tenant_id"]["nullable"] is True


def test_a_json_object_with_a_nul_is_refused_by_name(owner):
    for metadata in ({"note": "a\u0000b"}, {"a\u0000": 1}, {"deep": [{"x": "\u0000"}]}):
        response = owner.client.post(
            "/api/v1/projects/", {"name": "Nul", "topic": "t", "metadata": metadata}, format="json"
        )
        assert response.status_code == 400, metadata
        [message] = response.json()["error"]["details"]["metadata"]
        assert "U+0000" in message


def test_webhook_urls_and_workflow_types_are_stated(schema, settings):
    url = component(schema, "WebhookEndpointCreateRequest")["url"]["pattern"]
    assert re.fullmatch(url, "https://hooks.example.com/in?x=1")
    for refused in ("https://", "https://user@example.com/", "https://example.com/a b", "ftp://x"):
        assert not re.fullmatch(url, refused), refused
    types = component(schema, "WorkflowExecuteRequest")["workflow_type"]
    assert set(enum_of(schema, types)) == {"template_batch", "usage_report", "audit_export"}


def test_the_webhook_scheme_follows_the_setting(settings):
    from notifications.serializers import WebhookURLField

    settings.WEBHOOKS_ALLOW_HTTP = False
    assert not re.fullmatch(WebhookURLField().request_pattern, "http://example.com/")
    settings.WEBHOOKS_ALLOW_HTTP = True
    assert re.fullmatch(WebhookURLField().request_pattern, "http://example.com/")


def examples_of(schema: dict) -> list:
    """Values at the edges of a value schema of the condition language."""
    if schema["type"] == "array":
        [item, *_] = examples_of(schema["items"])
        return [[item], [item] * schema["maxItems"]]
    if schema["type"] == "boolean":
        return [True, False]
    if "enum" in schema:
        return list(schema["enum"])
    if schema["type"] == "string":
        return ["x" * schema["minLength"], "x" * schema["maxLength"]]
    low, high = schema.get("minimum", -1000), schema.get("maximum", 1000)
    if schema["type"] == "integer":
        return [low, high]
    return [low, high, (low + high) / 2]


def test_the_rule_conditions_schema_accepts_only_what_the_language_does(schema):
    from support.rules import conditions_errors

    stated = component(schema, "DecisionRuleInputRequest")["conditions"]
    alternatives = stated["items"]["oneOf"]
    accepted = []
    for alternative in alternatives:
        [name] = alternative["properties"]["field"]["enum"]
        for operator in alternative["properties"]["operator"]["enum"]:
            for value in examples_of(alternative["properties"]["value"]):
                accepted.append({"field": name, "operator": operator, "value": value})
    assert len(accepted) > 100
    assert [c for c in accepted if conditions_errors([c])] == []
    assert conditions_errors(accepted[: stated["maxItems"]]) == {}
    # What the schema leaves out, the language refuses: an operator of another kind of field,
    # a list where a value is expected, one condition too many.
    assert conditions_errors([{"field": "ai_handled", "operator": "gt", "value": True}])
    assert conditions_errors([{"field": "confidence", "operator": "eq", "value": [0.5]}])
    assert conditions_errors(accepted[: stated["maxItems"] + 1])
