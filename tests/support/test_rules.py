"""Decision rules: the generic battery; what the rule language refuses (unknown fields, operators
a field's type does not take, values of the wrong type or out of range, too many conditions or
list items, unknown keys, unknown actions and parameters, missing required ones), each error
naming the condition's index and key, and nothing stored; enabled priorities unique (409, also
under a race); a new action dropping the old parameters; evaluate on a payload or a ticket (the
first rule in priority order that holds, the trace and its reasons, disabled rules and
`rule_ids`, the ticket's facts on a frozen clock, another organization's ticket refused like a
random id, read-only); properties of the pure interpreter (hypothesis); and the automatic
application to tickets under the organization's `support_apply_rules` setting, action by
action."""

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
import time_machine
from django.db import connection
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from config.exceptions import ApplicationError, Conflict
from notifications.models import Channel, Notification
from support.models import (
    DecisionRule,
    Escalation,
    Representative,
    RuleApplication,
    Ticket,
    TicketComment,
    TicketStatus,
)
from support.rules import (
    ACTION_PARAMS,
    ACTIONS,
    BOOLEAN,
    ENUM,
    FIELDS,
    INTEGER,
    LISTS,
    MAX_CONDITIONS,
    MAX_LIST_VALUES,
    OPERATORS,
    OPERATORS_BY_TYPE,
    TEXT,
    action_params_errors,
    clean_facts,
    condition_errors,
    conditions_errors,
    evaluate,
)
from support.services import decision_rule_create, decision_rule_update
from tenants.models import Role, Tenant
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, TenantFactory

from .factories import (
    CustomerProfileFactory,
    DecisionRuleFactory,
    RepresentativeFactory,
    TicketFactory,
)

RULES = "/api/v1/support/decision-rules/"
EVALUATE = f"{RULES}evaluate/"
TICKETS = "/api/v1/support/tickets/"
ORGANIZATION = "/api/v1/organizations/current/"
# A frozen instant the clock-dependent tests start from (in the past: tokens stay valid).
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REASONS = {"holds", "does not hold", "missing", "not a value of this field"}
# Parameters an action needs (the others take none required).
PARAMS = {
    "NOTIFY": {"message": "Have a look."},
    "SET_PRIORITY": {"priority": "HIGH"},
    "ASSIGN_TO_TEAM": {"role": "TEAM_LEAD"},
}


def cond(field, operator, value) -> dict:
    return {"field": field, "operator": operator, "value": value}


def detail(rule) -> str:
    return f"{RULES}{rule.pk}/"


def ticket_url(ticket_id) -> str:
    return f"{TICKETS}{ticket_id}/"


def rule_of(tenant, priority, conditions=(), action="NOTIFY", params=None, enabled=True, **kw):
    """A valid rule of `tenant` (made by the factory: no audit event)."""
    return DecisionRuleFactory(
        tenant=tenant,
        priority=priority,
        enabled=enabled,
        conditions=list(conditions),
        action=action,
        action_params=dict(PARAMS.get(action, {}) if params is None else params),
        **kw,
    )


def rule_events(tenant, event_type=None):
    events = AuditEvent.objects.filter(tenant=tenant, event_type__startswith="decision_rule.")
    if event_type is not None:
        events = events.filter(event_type=event_type)
    return events


def rule_body(**fields) -> dict:
    body = {
        "name": "Confident answers",
        "priority": 10,
        "conditions": [cond("confidence", "gte", 0.95)],
        "action": "AUTO_RESOLVE",
    }
    body.update(fields)
    return body


def evaluate_api(caller, **body):
    return caller.client.post(EVALUATE, body, format="json")


# The battery ------------------------------------------------------------------------------------


class TestDecisionRules(ResourceBattery):
    url = RULES
    create_data = {
        "name": "Unhappy enterprise customers",
        "description": "Tell the admins when an enterprise customer is unhappy.",
        "priority": 5,
        "conditions": [
            {"field": "customer_tier", "operator": "eq", "value": "ENTERPRISE"},
            {"field": "sentiment", "operator": "lt", "value": -0.5},
        ],
        "action": "NOTIFY",
        "action_params": {"message": "An enterprise customer is unhappy."},
    }
    update_data = {"name": "Renamed", "description": "Tried first."}
    audit_prefix = "decision_rule"


def test_a_created_rule_is_disabled_unless_asked_and_shows_what_was_given(owner):
    response = owner.client.post(RULES, TestDecisionRules.create_data, format="json")

    assert response.status_code == 201, response.content
    shown = response.json()
    assert shown["enabled"] is False
    assert shown["conditions"] == TestDecisionRules.create_data["conditions"]
    assert shown["action_params"] == {"message": "An enterprise customer is unhappy."}
    assert shown["created_by"]["id"] == str(owner.user.pk)
    event = rule_events(owner.tenant, "decision_rule.created").get()
    assert event.payload["decision_rule_id"] == shown["id"]
    assert event.payload["action"] == "NOTIFY"


def test_the_list_is_in_the_order_rules_are_tried(owner):
    third = rule_of(owner.tenant, 30)
    first = rule_of(owner.tenant, 10)
    second = rule_of(owner.tenant, 20, enabled=False)

    listed = owner.client.get(RULES).json()["results"]

    assert [row["id"] for row in listed] == [str(first.pk), str(second.pk), str(third.pk)]


def test_a_viewer_reads_rules_but_does_not_write_them(make_caller):
    viewer = make_caller(Role.VIEWER)
    rule = rule_of(viewer.tenant, 1)

    listed = viewer.client.get(RULES)
    created = viewer.client.post(RULES, rule_body(), format="json")
    changed = viewer.client.patch(detail(rule), {"enabled": False}, format="json")
    deleted = viewer.client.delete(detail(rule))

    assert listed.status_code == 200
    for response in (created, changed, deleted):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert DecisionRule.objects.filter(tenant=viewer.tenant).count() == 1
    assert DecisionRule.objects.get(pk=rule.pk).enabled is True


# Validation ------------------------------------------------------------------------------------

# (what is wrong, the conditions, the index of the condition at fault, the key at fault)
INVALID_CONDITIONS = [
    ("unknown field", [cond("refund_reason", "eq", "duplicate")], "0", "field"),
    ("field not a string", [cond(["priority"], "eq", "LOW")], "0", "field"),
    ("gt on an enum", [cond("priority", "gt", "LOW")], "0", "operator"),
    ("contains on a number", [cond("confidence", "contains", "0.9")], "0", "operator"),
    ("in on a number", [cond("confidence", "in", [0.5])], "0", "operator"),
    ("gt on a boolean", [cond("ai_handled", "gt", False)], "0", "operator"),
    ("unknown operator", [cond("subject", "matches", ".*")], "0", "operator"),
    ("a string for a number", [cond("confidence", "gte", "0.9")], "0", "value"),
    ("a fraction for a whole number", [cond("ticket_age_minutes", "gt", 1.5)], "0", "value"),
    ("true for a number", [cond("confidence", "eq", True)], "0", "value"),
    ("true for a whole number", [cond("refund_amount_cents", "lt", True)], "0", "value"),
    ("a number above the maximum", [cond("confidence", "lte", 2)], "0", "value"),
    ("a number below the minimum", [cond("sentiment", "lt", -1.5)], "0", "value"),
    ("a negative age", [cond("ticket_age_minutes", "gte", -1)], "0", "value"),
    ("not a choice", [cond("priority", "eq", "CRITICAL")], "0", "value"),
    ("a string for a boolean", [cond("ai_handled", "eq", "true")], "0", "value"),
    ("empty text", [cond("subject", "contains", "")], "0", "value"),
    ("text too long", [cond("subject", "eq", "x" * 501)], "0", "value"),
    ("null value", [cond("customer_tier", "eq", None)], "0", "value"),
    ("empty list for in", [cond("category", "in", [])], "0", "value"),
    ("a scalar for in", [cond("category", "in", "ACCOUNT")], "0", "value"),
    (
        "more than 50 items",
        [cond("ticket_age_minutes", "in", list(range(MAX_LIST_VALUES + 1)))],
        "0",
        "value",
    ),
    ("a list item not a choice", [cond("priority", "not_in", ["LOW", "SOON"])], "0", "value"),
    ("missing value", [{"field": "confidence", "operator": "gt"}], "0", "value"),
    ("unknown key", [{**cond("confidence", "gt", 0.5), "weight": 2}], "0", "weight"),
    ("not an object", ["confidence > 0.5"], "0", "condition"),
    (
        "the second condition",
        [cond("confidence", "gt", 0.5), cond("sentiment", "lt", -2)],
        "1",
        "value",
    ),
]


@pytest.mark.parametrize(
    ("conditions", "index", "key"),
    [case[1:] for case in INVALID_CONDITIONS],
    ids=[case[0] for case in INVALID_CONDITIONS],
)
def test_an_invalid_condition_is_refused_naming_its_index_and_key(owner, conditions, index, key):
    response = owner.client.post(RULES, rule_body(conditions=conditions), format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {"conditions"}, error
    assert set(error["details"]["conditions"]) == {index}, error
    assert key in error["details"]["conditions"][index], error
    assert not DecisionRule.objects.filter(tenant=owner.tenant).exists()
    assert not rule_events(owner.tenant).exists()


def test_the_errors_say_what_is_expected(owner):
    conditions = [
        cond("confidence", "gt", 0.5),
        cond("priority", "gt", "LOW"),
        cond("confidence", "lte", 2),
        cond("category", "in", []),
        {**cond("ai_handled", "eq", True), "note": "x"},
    ]

    error = assert_envelope(
        owner.client.post(RULES, rule_body(conditions=conditions), format="json"), 400
    )

    found = error["details"]["conditions"]
    assert set(found) == {"1", "2", "3", "4"}
    assert found["1"] == {"operator": "For priority: one of eq, in, neq, not_in."}
    assert found["2"] == {"value": "At most 1."}
    assert found["3"] == {"value": f"A list of 1 to {MAX_LIST_VALUES} values."}
    assert found["4"] == {"note": "Unknown key."}


def test_conditions_must_be_a_list_of_at_most_20(owner):
    too_many = [cond("ticket_age_minutes", "gte", n) for n in range(MAX_CONDITIONS + 1)]
    just_enough = too_many[:MAX_CONDITIONS]

    refused = owner.client.post(RULES, rule_body(conditions=too_many), format="json")
    not_a_list = owner.client.post(
        RULES, rule_body(conditions={"field": "confidence"}), format="json"
    )
    accepted = owner.client.post(RULES, rule_body(conditions=just_enough), format="json")

    assert "At most 20 conditions." in json.dumps(assert_envelope(refused, 400)["details"])
    assert "conditions" in assert_envelope(not_a_list, 400)["details"]
    assert accepted.status_code == 201, accepted.content
    assert len(DecisionRule.objects.get(tenant=owner.tenant).conditions) == MAX_CONDITIONS


def test_every_valid_operator_of_each_type_is_accepted(owner):
    examples = {
        "confidence": 0.5,
        "ticket_age_minutes": 30,
        "ai_handled": True,
        "priority": "HIGH",
        "subject": "refund",
    }
    conditions = []
    for name, value in examples.items():
        for operator in sorted(OPERATORS_BY_TYPE[FIELDS[name].type]):
            conditions.append(cond(name, operator, [value] if operator in LISTS else value))
    # Split in rules of at most 20 conditions.
    for n, start in enumerate(range(0, len(conditions), MAX_CONDITIONS)):
        chunk = conditions[start : start + MAX_CONDITIONS]
        response = owner.client.post(RULES, rule_body(priority=n, conditions=chunk), format="json")
        assert response.status_code == 201, response.content
        assert response.json()["conditions"] == chunk


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(owner, literal):
    raw = (
        '{"name": "n", "priority": 1, "action": "AUTO_RESOLVE", '
        f'"conditions": [{{"field": "confidence", "operator": "gt", "value": {literal}}}]}}'
    )

    response = owner.client.post(RULES, raw, content_type="application/json")

    assert_envelope(response, 400, "VALIDATION_ERROR")
    assert not DecisionRule.objects.filter(tenant=owner.tenant).exists()


def test_a_number_too_large_for_a_float_is_not_finite(owner):
    # json reads 1e400 as float("inf"): no NaN/Infinity literal needed to get one.
    raw = (
        '{"name": "n", "priority": 1, "action": "AUTO_RESOLVE", '
        '"conditions": [{"field": "sentiment", "operator": "lt", "value": -1e400}]}'
    )

    error = assert_envelope(owner.client.post(RULES, raw, content_type="application/json"), 400)

    # Refused by the serializer's JSON field (not strict JSON), and by the language anyway.
    assert "conditions" in error["details"]
    assert condition_errors(cond("sentiment", "lt", float("-inf"))) == {"value": "A finite number."}
    assert not DecisionRule.objects.filter(tenant=owner.tenant).exists()


def test_a_large_whole_number_is_kept_exactly_and_a_huge_one_is_refused(owner):
    large = 10**30 + 1
    raw = (
        '{"name": "n", "priority": 1, "enabled": true, "action": "AUTO_RESOLVE", '
        f'"conditions": [{{"field": "refund_amount_cents", "operator": "gt", "value": {large}}}]}}'
    )
    huge = raw.replace(str(large), "9" * 5_000)

    accepted = owner.client.post(RULES, raw, content_type="application/json")
    refused = owner.client.post(RULES, huge, content_type="application/json")
    above = evaluate_api(owner, payload={"refund_amount_cents": large + 1})
    equal = evaluate_api(owner, payload={"refund_amount_cents": large})

    assert accepted.status_code == 201, accepted.content
    assert DecisionRule.objects.get(tenant=owner.tenant).conditions[0]["value"] == large
    assert_envelope(refused, 400, "VALIDATION_ERROR")
    assert above.json()["matched"] is True
    assert equal.json()["matched"] is False
    assert equal.json()["trace"][0]["conditions"][0]["reason"] == "does not hold"


# (action, action_params or None to leave them out, the key at fault in action_params)
INVALID_PARAMS = [
    ("NOTIFY", {"message": "Look.", "channel": "sms"}, "channel"),
    ("AUTO_RESOLVE", {"comment": "Done.", "notify": True}, "notify"),
    ("APPROVE_REFUND", {"amount_cents": 500}, "amount_cents"),
    ("SET_PRIORITY", {}, "priority"),
    ("SET_PRIORITY", None, "priority"),
    ("NOTIFY", {}, "message"),
    ("NOTIFY", None, "message"),
    ("NOTIFY", {"message": ""}, "message"),
    ("NOTIFY", {"message": "x" * 501}, "message"),
    ("ASSIGN_TO_TEAM", {}, "role"),
    ("ASSIGN_TO_TEAM", None, "role"),
    ("SET_PRIORITY", {"priority": "CRITICAL"}, "priority"),
    ("ASSIGN_TO_TEAM", {"role": "MANAGER"}, "role"),
    ("ESCALATE_TO_HUMAN", {"reason": "ANGRY"}, "reason"),
    ("ESCALATE_TO_HUMAN", {"priority": 3}, "priority"),
    ("REJECT_REFUND", {"reason": 42}, "reason"),
]


@pytest.mark.parametrize(
    ("action", "params", "key"),
    INVALID_PARAMS,
    ids=[f"{a}-{k}-{'absent' if p is None else json.dumps(p)[:20]}" for a, p, k in INVALID_PARAMS],
)
def test_invalid_action_params_are_refused_naming_the_key(owner, action, params, key):
    body = rule_body(action=action)
    if params is not None:
        body["action_params"] = params

    error = assert_envelope(owner.client.post(RULES, body, format="json"), 400)

    assert set(error["details"]) == {"action_params"}, error
    assert key in error["details"]["action_params"], error
    assert not DecisionRule.objects.filter(tenant=owner.tenant).exists()
    assert not rule_events(owner.tenant).exists()


def test_an_unknown_action_or_params_not_an_object_are_refused(owner):
    unknown = owner.client.post(RULES, rule_body(action="DELETE_TICKET"), format="json")
    not_an_object = owner.client.post(
        RULES, rule_body(action="NOTIFY", action_params=["Look."]), format="json"
    )
    missing = owner.client.post(
        RULES, {"name": "n", "priority": 1, "conditions": []}, format="json"
    )

    assert "action" in assert_envelope(unknown, 400)["details"]
    assert "action_params" in assert_envelope(not_an_object, 400)["details"]
    assert "action" in assert_envelope(missing, 400)["details"]
    assert not DecisionRule.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.django_db
def test_the_service_checks_the_language_too():
    tenant = TenantFactory()

    with pytest.raises(ApplicationError) as bad_condition:
        decision_rule_create(
            tenant=tenant,
            actor=None,
            name="n",
            priority=1,
            action="NOTIFY",
            conditions=[cond("confidence", "gt", 0.5), cond("priority", "gt", "LOW")],
            action_params={"message": "x"},
        )
    with pytest.raises(ApplicationError) as bad_action:
        decision_rule_create(tenant=tenant, actor=None, name="n", priority=1, action="DROP")
    with pytest.raises(ApplicationError) as bad_params:
        decision_rule_create(tenant=tenant, actor=None, name="n", priority=1, action="NOTIFY")

    assert bad_condition.value.details == {
        "conditions": {"1": {"operator": "For priority: one of eq, in, neq, not_in."}}
    }
    assert set(bad_action.value.details) == {"action"}
    assert bad_params.value.details == {"action_params": {"message": "Required."}}
    assert not DecisionRule.objects.filter(tenant=tenant).exists()


def test_an_invalid_update_changes_nothing(owner):
    rule = rule_of(owner.tenant, 3, [cond("confidence", "gt", 0.9)], "AUTO_RESOLVE")

    bad_condition = owner.client.patch(
        detail(rule), {"conditions": [cond("confidence", "gt", "high")]}, format="json"
    )
    bad_params = owner.client.patch(detail(rule), {"action_params": {"x": 1}}, format="json")

    assert assert_envelope(bad_condition, 400)["details"]["conditions"] == {
        "0": {"value": "A number."}
    }
    assert assert_envelope(bad_params, 400)["details"]["action_params"] == {
        "x": "Not a parameter of AUTO_RESOLVE."
    }
    stored = DecisionRule.objects.get(pk=rule.pk)
    assert stored.conditions == [cond("confidence", "gt", 0.9)]
    assert stored.action_params == {}
    assert not rule_events(owner.tenant).exists()


def test_an_operator_that_is_a_list_or_an_object_is_a_400(owner):
    for operator in (["gt"], {"op": "gt"}):
        body = rule_body(conditions=[cond("confidence", operator, 0.5)])
        error = assert_envelope(owner.client.post(RULES, body, format="json"), 400)
        assert "operator" in error["details"]["conditions"]["0"]
    assert not DecisionRule.objects.filter(tenant=owner.tenant).exists()


# Enabled priorities are unique -----------------------------------------------------------------


def test_two_enabled_rules_may_not_share_a_priority(owner):
    first = owner.client.post(RULES, rule_body(priority=7, enabled=True), format="json")
    second = owner.client.post(
        RULES, rule_body(name="Second", priority=7, enabled=True), format="json"
    )

    assert first.status_code == 201, first.content
    error = assert_envelope(second, 409, "CONFLICT")
    assert error["details"] == {"priority": ["Unique among the enabled rules."]}
    assert DecisionRule.objects.filter(tenant=owner.tenant).count() == 1
    assert rule_events(owner.tenant).count() == 1


def test_a_disabled_rule_may_share_an_enabled_ones_priority(owner):
    rule_of(owner.tenant, 7)
    rule_of(owner.tenant, 7, enabled=False)

    response = owner.client.post(RULES, rule_body(priority=7, enabled=False), format="json")
    elsewhere = TenantFactory()
    rule_of(elsewhere, 8)
    other_tenant = owner.client.post(RULES, rule_body(priority=8, enabled=True), format="json")

    assert response.status_code == 201, response.content
    assert other_tenant.status_code == 201, other_tenant.content
    assert DecisionRule.objects.filter(tenant=owner.tenant, priority=7).count() == 3


def test_enabling_a_rule_into_a_taken_priority_is_a_conflict(owner):
    enabled = rule_of(owner.tenant, 7)
    disabled = rule_of(owner.tenant, 7, enabled=False)
    other = rule_of(owner.tenant, 9)

    enabling = owner.client.patch(detail(disabled), {"enabled": True}, format="json")
    moving = owner.client.patch(detail(other), {"priority": 7}, format="json")

    assert_envelope(enabling, 409, "CONFLICT")
    assert_envelope(moving, 409, "CONFLICT")
    assert DecisionRule.objects.get(pk=disabled.pk).enabled is False
    assert DecisionRule.objects.get(pk=other.pk).priority == 9
    assert not rule_events(owner.tenant).exists()

    # Once the first is disabled, the priority is free.
    assert owner.client.patch(detail(enabled), {"enabled": False}, format="json").status_code == 200
    freed = owner.client.patch(detail(disabled), {"enabled": True}, format="json")
    assert freed.status_code == 200, freed.content
    assert freed.json()["enabled"] is True


def _enable_in_thread(rule_pk, barrier: threading.Barrier) -> str:
    try:
        rule = DecisionRule.objects.get(pk=rule_pk)
        barrier.wait(timeout=30)
        try:
            decision_rule_update(decision_rule=rule, actor=None, enabled=True)
        except Conflict:
            return "conflict"
        return "enabled"
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_rules_enabled_at_once_at_one_priority_end_with_one_enabled():
    tenant = TenantFactory()
    for round_ in range(3):
        priority = 50 + round_
        rules = [rule_of(tenant, priority, enabled=False) for _ in range(2)]
        barrier = threading.Barrier(2)

        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(_enable_in_thread, rule.pk, barrier) for rule in rules]
            outcomes = sorted(future.result(timeout=60) for future in futures)

        assert outcomes == ["conflict", "enabled"]
        assert (
            DecisionRule.objects.filter(tenant=tenant, priority=priority, enabled=True).count() == 1
        )
    assert rule_events(tenant, "decision_rule.updated").count() == 3


# A new action drops the old parameters --------------------------------------------------------


def test_a_new_action_without_params_drops_the_old_ones(owner):
    rule = rule_of(owner.tenant, 1, action="SET_PRIORITY", params={"priority": "HIGH"})

    # ESCALATE_TO_HUMAN also takes an (optional) "priority": kept, it would be valid.
    response = owner.client.patch(detail(rule), {"action": "ESCALATE_TO_HUMAN"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["action"] == "ESCALATE_TO_HUMAN"
    assert response.json()["action_params"] == {}
    assert DecisionRule.objects.get(pk=rule.pk).action_params == {}
    event = rule_events(owner.tenant, "decision_rule.updated").get()
    assert event.payload["changed"] == ["action", "action_params"]


def test_a_new_action_needing_params_without_them_is_refused(owner):
    rule = rule_of(owner.tenant, 1, action="NOTIFY", params={"message": "Look."})

    response = owner.client.patch(detail(rule), {"action": "SET_PRIORITY"}, format="json")
    with_params = owner.client.patch(
        detail(rule),
        {"action": "SET_PRIORITY", "action_params": {"priority": "URGENT"}},
        format="json",
    )

    error = assert_envelope(response, 400)
    assert error["details"] == {"action_params": {"priority": "Required."}}
    assert with_params.status_code == 200, with_params.content
    assert with_params.json()["action_params"] == {"priority": "URGENT"}


def test_the_same_action_or_params_alone_keep_or_replace_the_params(owner):
    rule = rule_of(owner.tenant, 1, action="NOTIFY", params={"message": "Look."})

    same = owner.client.patch(detail(rule), {"action": "NOTIFY"}, format="json")
    replaced = owner.client.patch(
        detail(rule), {"action_params": {"message": "Look again."}}, format="json"
    )

    assert same.json()["action_params"] == {"message": "Look."}
    assert replaced.json()["action_params"] == {"message": "Look again."}


@pytest.mark.django_db
def test_the_service_drops_the_old_params_and_checks_the_new_actions():
    tenant = TenantFactory()
    rule = rule_of(tenant, 1, action="NOTIFY", params={"message": "Look."})

    with pytest.raises(ApplicationError) as refused:
        decision_rule_update(decision_rule=rule, actor=None, action="ASSIGN_TO_TEAM")
    assert refused.value.details == {"action_params": {"role": "Required."}}
    assert DecisionRule.objects.get(pk=rule.pk).action == "NOTIFY"

    decision_rule_update(decision_rule=rule, actor=None, action="AUTO_RESOLVE")
    stored = DecisionRule.objects.get(pk=rule.pk)
    assert (stored.action, stored.action_params) == ("AUTO_RESOLVE", {})


# Evaluate ----------------------------------------------------------------------------------------


def test_evaluate_answers_the_first_enabled_rule_that_holds_in_priority_order(owner):
    t = owner.tenant
    last = rule_of(t, 30, [cond("confidence", "gte", 0.9)], "AUTO_RESOLVE")
    first = rule_of(t, 10, [cond("confidence", "lt", 0.5)], "ESCALATE_TO_HUMAN")
    second = rule_of(
        t,
        20,
        [cond("confidence", "gte", 0.8), cond("customer_tier", "in", ["PRO", "ENTERPRISE"])],
        "NOTIFY",
        {"message": "Confident, for a paying customer."},
    )
    rule_of(t, 1, [], "APPROVE_REFUND", enabled=False)

    response = evaluate_api(
        owner, payload={"confidence": 0.92, "customer_tier": "PRO", "secret": "ignored"}
    )

    assert response.status_code == 200, response.content
    result = response.json()
    assert result["matched"] is True
    assert result["rule"] == {"id": str(second.pk), "name": second.name, "priority": 20}
    assert result["action"] == "NOTIFY"
    assert result["action_params"] == {"message": "Confident, for a paying customer."}
    assert result["facts"] == {"confidence": 0.92, "customer_tier": "PRO"}
    assert [entry["rule_id"] for entry in result["trace"]] == [str(first.pk), str(second.pk)]
    assert str(last.pk) not in json.dumps(result["trace"])
    tried_first, tried_second = result["trace"]
    assert tried_first["matched"] is False
    assert tried_first["conditions"] == [
        {
            "field": "confidence",
            "operator": "lt",
            "value": 0.5,
            "actual": 0.92,
            "holds": False,
            "reason": "does not hold",
        }
    ]
    assert tried_second["matched"] is True
    assert [c["reason"] for c in tried_second["conditions"]] == ["holds", "holds"]


def test_the_trace_says_why_each_condition_did_not_hold(owner):
    rule = rule_of(
        owner.tenant,
        1,
        [
            cond("confidence", "gte", 0.9),
            cond("customer_tier", "eq", "ENTERPRISE"),
            cond("ai_handled", "eq", True),
            cond("sentiment", "gt", 0),
            cond("priority", "eq", "HIGH"),
        ],
    )

    result = evaluate_api(
        owner,
        payload={
            "confidence": "high",
            "ai_handled": True,
            "sentiment": 3,
            "priority": None,
        },
    ).json()

    assert result["matched"] is False
    assert result["rule"] is None
    assert result["action"] is None
    assert result["action_params"] is None
    (entry,) = result["trace"]
    assert entry["rule_id"] == str(rule.pk)
    assert entry["enabled"] is True
    assert entry["matched"] is False
    assert [(c["holds"], c["reason"], c["actual"]) for c in entry["conditions"]] == [
        (False, "not a value of this field", "high"),
        (False, "missing", None),
        (True, "holds", True),
        (False, "not a value of this field", 3),  # out of range counts as not a value
        (False, "missing", None),  # null is missing
    ]


def test_disabled_rules_are_tried_only_with_include_disabled(owner):
    disabled = rule_of(owner.tenant, 1, [cond("subject", "contains", "refund")], enabled=False)
    enabled = rule_of(owner.tenant, 2, [])

    default = evaluate_api(owner, payload={"subject": "Refund please"}).json()
    included = evaluate_api(
        owner, payload={"subject": "Refund please"}, include_disabled=True
    ).json()

    assert default["rule"]["id"] == str(enabled.pk)
    assert [entry["rule_id"] for entry in default["trace"]] == [str(enabled.pk)]
    assert included["rule"]["id"] == str(disabled.pk)
    assert included["trace"][0]["enabled"] is False
    assert included["trace"][0]["conditions"][0]["reason"] == "holds"


def test_rule_ids_restrict_the_rules_tried(owner):
    first = rule_of(owner.tenant, 1, [])
    second = rule_of(owner.tenant, 2, [cond("ai_handled", "eq", False)])
    foreign = rule_of(TenantFactory(), 3, [])

    only_second = evaluate_api(owner, payload={"ai_handled": False}, rule_ids=[str(second.pk)])
    only_foreign = evaluate_api(owner, payload={}, rule_ids=[str(foreign.pk)])
    everything = evaluate_api(owner, payload={})
    bad_id = evaluate_api(owner, payload={}, rule_ids=["not-a-uuid"])

    assert only_second.json()["rule"]["id"] == str(second.pk)
    assert [e["rule_id"] for e in only_second.json()["trace"]] == [str(second.pk)]
    assert only_foreign.json()["matched"] is False
    assert only_foreign.json()["trace"] == []
    assert everything.json()["rule"]["id"] == str(first.pk)
    assert "rule_ids" in assert_envelope(bad_id, 400)["details"]


def test_a_rule_without_conditions_always_holds(owner):
    rule = rule_of(owner.tenant, 1, [], "AUTO_RESOLVE")

    result = evaluate_api(owner, payload={}).json()

    assert result["matched"] is True
    assert result["rule"]["id"] == str(rule.pk)
    assert result["trace"][0]["conditions"] == []


def test_no_rules_match_nothing(owner):
    result = evaluate_api(owner, payload={"confidence": 0.99}).json()

    assert result == {
        "matched": False,
        "rule": None,
        "action": None,
        "action_params": None,
        "facts": {"confidence": 0.99},
        "trace": [],
    }


TICKET_CONDITIONS = [
    cond("priority", "eq", "HIGH"),
    cond("category", "in", ["BILLING_PAYMENT", "ACCOUNT"]),
    cond("status", "eq", "OPEN"),
    cond("customer_tier", "eq", "ENTERPRISE"),
    cond("customer_standing", "neq", "GOOD"),
    cond("sentiment", "lt", -0.5),
    cond("ticket_age_minutes", "gte", 90),
    cond("ai_handled", "eq", True),
    cond("subject", "contains", "double charge"),
]


def test_evaluate_on_a_ticket_uses_its_facts(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant, tier="ENTERPRISE", standing="WARNING")
    rule = rule_of(owner.tenant, 1, TICKET_CONDITIONS, "ESCALATE_TO_HUMAN", {})
    with time_machine.travel(START, tick=False):
        ticket = TicketFactory(
            tenant=owner.tenant,
            customer=customer,
            priority="HIGH",
            category="BILLING_PAYMENT",
            sentiment=Decimal("-0.75"),
            ai_handled=True,
            subject="A DOUBLE Charge on my invoice",
        )

    with time_machine.travel(START + timedelta(minutes=90), tick=False):
        old_enough = evaluate_api(owner, ticket_id=str(ticket.pk)).json()
    with time_machine.travel(START + timedelta(minutes=89, seconds=59), tick=False):
        too_young = evaluate_api(owner, ticket_id=str(ticket.pk)).json()

    assert old_enough["matched"] is True, old_enough["trace"]
    assert old_enough["rule"]["id"] == str(rule.pk)
    assert old_enough["facts"] == {
        "sentiment": -0.75,
        "priority": "HIGH",
        "category": "BILLING_PAYMENT",
        "status": "OPEN",
        "customer_tier": "ENTERPRISE",
        "customer_standing": "WARNING",
        "ticket_age_minutes": 90,
        "ai_handled": True,
        "subject": "A DOUBLE Charge on my invoice",
    }
    assert too_young["matched"] is False
    failing = [c for c in too_young["trace"][0]["conditions"] if not c["holds"]]
    assert failing == [
        {
            "field": "ticket_age_minutes",
            "operator": "gte",
            "value": 90,
            "actual": 89,
            "holds": False,
            "reason": "does not hold",
        }
    ]


def test_a_ticket_without_customer_or_sentiment_misses_those_facts(owner):
    rule_of(owner.tenant, 1, [cond("customer_tier", "eq", "FREE"), cond("sentiment", "gt", 0)])
    ticket = TicketFactory(tenant=owner.tenant, customer=None, sentiment=None)

    result = evaluate_api(owner, ticket_id=str(ticket.pk)).json()

    assert result["matched"] is False
    assert [c["reason"] for c in result["trace"][0]["conditions"]] == ["missing", "missing"]
    assert result["facts"]["customer_tier"] is None


def test_another_organizations_ticket_is_refused_like_a_random_id(owner):
    rule_of(owner.tenant, 1, [])
    foreign = TicketFactory(tenant=TenantFactory())

    foreign_error = assert_envelope(evaluate_api(owner, ticket_id=str(foreign.pk)), 400)
    random_error = assert_envelope(evaluate_api(owner, ticket_id=str(uuid.uuid4())), 400)

    assert foreign_error["message"] == random_error["message"]
    assert foreign_error["details"] == random_error["details"]
    assert str(foreign.pk) not in json.dumps(foreign_error)


def test_evaluate_takes_a_payload_or_a_ticket_not_both_nor_neither(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    both = evaluate_api(owner, payload={}, ticket_id=str(ticket.pk))
    neither = evaluate_api(owner)
    neither_with_options = evaluate_api(owner, include_disabled=True)
    not_an_object = evaluate_api(owner, payload=["confidence", 0.9])
    not_strict_bool = evaluate_api(owner, payload={}, include_disabled="yes")

    for response in (both, neither, neither_with_options):
        assert "non_field_errors" in assert_envelope(response, 400)["details"]
    assert "payload" in assert_envelope(not_an_object, 400)["details"]
    assert "include_disabled" in assert_envelope(not_strict_bool, 400)["details"]


def test_a_viewer_evaluates_and_nothing_changes(make_caller):
    viewer = make_caller(Role.VIEWER)
    rules_on(viewer.tenant)  # evaluating is not applying
    rule = rule_of(viewer.tenant, 1, [], "AUTO_RESOLVE")
    ticket = TicketFactory(tenant=viewer.tenant)
    events_before = AuditEvent.objects.filter(tenant=viewer.tenant).count()
    updated_before = DecisionRule.objects.get(pk=rule.pk).updated_at

    by_payload = evaluate_api(viewer, payload={"confidence": 0.5})
    by_ticket = evaluate_api(viewer, ticket_id=str(ticket.pk))

    assert by_payload.status_code == 200, by_payload.content
    assert by_ticket.json()["action"] == "AUTO_RESOLVE"
    assert AuditEvent.objects.filter(tenant=viewer.tenant).count() == events_before
    assert DecisionRule.objects.get(pk=rule.pk).updated_at == updated_before
    assert Ticket.objects.get(pk=ticket.pk).status == TicketStatus.OPEN
    assert not RuleApplication.objects.filter(ticket=ticket).exists()


def test_evaluate_needs_support_read(make_caller):
    caller = make_caller(Role.OWNER, permissions={"support": {"read": False}})

    assert_envelope(evaluate_api(caller, payload={}), 403, "INSUFFICIENT_PERMISSIONS")


def test_an_infinite_fact_is_answered_not_a_500(owner):
    rule_of(owner.tenant, 1, [cond("sentiment", "lt", 0)])
    raw = '{"payload": {"sentiment": -1e400}}'

    response = owner.client.post(EVALUATE, raw, content_type="application/json")

    assert response.status_code == 200, response.content[:300]
    assert response.json()["trace"][0]["conditions"][0]["reason"] == "not a value of this field"


# Properties of the interpreter (pure functions, no database) ----------------------------------

PROPERTY_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON_LIKE = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def valid_value(spec):
    """Values of a field of `spec` (what the language accepts)."""
    if spec.type == BOOLEAN:
        return st.booleans()
    if spec.type == ENUM:
        return st.sampled_from(spec.choices)
    if spec.type == TEXT:
        return st.text(min_size=1, max_size=20)
    if spec.type == INTEGER:
        return st.integers(min_value=spec.minimum, max_value=10**15)
    low, high = spec.minimum, spec.maximum
    return st.floats(min_value=low, max_value=high) | st.integers(int(low), int(high))


def _valid_condition(name: str):
    spec = FIELDS[name]

    def with_operator(operator):
        values = valid_value(spec)
        if operator in LISTS:
            values = st.lists(values, min_size=1, max_size=5)
        return values.map(lambda value: cond(name, operator, value))

    return st.sampled_from(sorted(OPERATORS_BY_TYPE[spec.type])).flatmap(with_operator)


VALID_CONDITIONS = st.sampled_from(sorted(FIELDS)).flatmap(_valid_condition)
ANY_VALID_VALUE = st.one_of(*(valid_value(spec) for spec in FIELDS.values()))


def near_conditions(operators):
    """Dicts shaped like conditions, every part possibly wrong."""
    return st.fixed_dictionaries(
        {},
        optional={
            "field": st.sampled_from(sorted(FIELDS)) | JSON_LIKE,
            "operator": operators,
            "value": ANY_VALID_VALUE | JSON_LIKE,
            "weight": JSON_LIKE,
        },
    )


# Operators that are strings, numbers, booleans or null (not lists nor objects: see the xfail).
HASHABLE_OPERATORS = st.sampled_from(sorted(OPERATORS)) | SCALARS
ANY_OPERATORS = st.sampled_from(sorted(OPERATORS)) | JSON_LIKE


def _assert_condition_errors_are_sound(condition, errors) -> None:
    assert isinstance(errors, dict)
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in errors.items())
    if not errors:
        assert isinstance(condition, dict)
        assert set(condition) == {"field", "operator", "value"}
        assert condition["field"] in FIELDS
        assert condition["operator"] in OPERATORS_BY_TYPE[FIELDS[condition["field"]].type]
    elif isinstance(condition, dict):
        unknown = set(condition) - {"field", "operator", "value"}
        if unknown:
            assert set(errors) == unknown


@PROPERTY_SETTINGS
@given(condition=JSON_LIKE | near_conditions(HASHABLE_OPERATORS))
def test_condition_errors_never_raise_and_accept_only_valid_shapes(condition):
    _assert_condition_errors_are_sound(condition, condition_errors(condition))


@PROPERTY_SETTINGS
@given(condition=JSON_LIKE | near_conditions(ANY_OPERATORS))
@example(condition={"field": "priority", "operator": ["eq"], "value": "LOW"})
def test_condition_errors_never_raise_on_any_json_value(condition):
    _assert_condition_errors_are_sound(condition, condition_errors(condition))


@PROPERTY_SETTINGS
@given(
    conditions=JSON_LIKE
    | st.lists(JSON_LIKE | near_conditions(HASHABLE_OPERATORS), max_size=MAX_CONDITIONS + 2)
)
def test_conditions_errors_never_raise_and_name_the_index(conditions):
    errors = conditions_errors(conditions)

    assert isinstance(errors, dict)
    if not isinstance(conditions, list):
        assert set(errors) == {"conditions"}
    elif len(conditions) > MAX_CONDITIONS:
        assert errors == {"conditions": f"At most {MAX_CONDITIONS} conditions."}
    else:
        expected = {str(i) for i, c in enumerate(conditions) if condition_errors(c)}
        assert set(errors) == expected
        for index, found in errors.items():
            assert found == condition_errors(conditions[int(index)])


@PROPERTY_SETTINGS
@given(condition=VALID_CONDITIONS)
def test_every_valid_condition_is_accepted(condition):
    assert condition_errors(condition) == {}
    assert conditions_errors([condition]) == {}


@PROPERTY_SETTINGS
@given(
    action=st.sampled_from(ACTIONS),
    params=JSON_LIKE
    | st.dictionaries(
        st.sampled_from(sorted({k for p in ACTION_PARAMS.values() for k in p})) | st.text(),
        JSON_LIKE | st.sampled_from(["HIGH", "TEAM_LEAD", "OTHER", "A message."]),
        max_size=4,
    ),
)
def test_action_params_errors_never_raise_and_accept_only_known_params(action, params):
    errors = action_params_errors(action, params)

    assert isinstance(errors, dict)
    assert all(isinstance(v, str) and v for v in errors.values())
    accepted = ACTION_PARAMS[action]
    if not isinstance(params, dict):
        assert set(errors) == {"action_params"}
        return
    assert {k for k in params if k not in accepted} <= set(errors)
    for key, param in accepted.items():
        if param.required and key not in params:
            assert errors[key] == "Required."
    if not errors:
        assert set(params) <= set(accepted)


def _rules(lists_of_conditions) -> list:
    return [
        SimpleNamespace(
            pk=uuid.UUID(int=n + 1),
            name=f"Rule {n}",
            priority=10 * n,
            enabled=True,
            conditions=conditions,
            action="NOTIFY",
            action_params={"message": "x"},
        )
        for n, conditions in enumerate(lists_of_conditions)
    ]


RULE_LISTS = st.lists(st.lists(VALID_CONDITIONS, max_size=3), max_size=5).map(_rules)
FACT_VALUES = (
    JSON_LIKE
    | ANY_VALID_VALUE
    # Decimals, NaN and infinities included (the signalling NaN: see the xfail below).
    | st.decimals(allow_nan=True, allow_infinity=True).filter(lambda d: not d.is_snan())
    | st.decimals(min_value=-1, max_value=1, places=2)
)
FACTS = st.dictionaries(
    st.sampled_from(sorted(FIELDS)) | st.text(max_size=8), FACT_VALUES, max_size=8
)


def facts_near(rules):
    """Facts often taken from the rules' own values (so that conditions hold), often not."""
    seen: dict[str, list] = {}
    for rule in rules:
        for condition in rule.conditions:
            value = condition["value"]
            seen.setdefault(condition["field"], []).extend(
                value if condition["operator"] in LISTS else [value]
            )

    def near(values, spec):
        other = valid_value(spec) | FACT_VALUES
        # Eight times in ten one of the rules' own values.
        return st.integers(0, 9).flatmap(lambda n: st.sampled_from(values) if n < 8 else other)

    required = {name: near(values, FIELDS[name]) for name, values in seen.items()}
    optional = {
        name: valid_value(spec) | FACT_VALUES for name, spec in FIELDS.items() if name not in seen
    }
    extra = st.dictionaries(st.text(max_size=8), FACT_VALUES, max_size=3)
    return st.tuples(st.fixed_dictionaries(required, optional=optional), extra).map(
        lambda pair: {**pair[1], **pair[0]}
    )


@PROPERTY_SETTINGS
@given(rules=RULE_LISTS, data=st.data())
def test_evaluate_never_raises_and_answers_the_first_rule_that_holds(rules, data):
    facts = data.draw(FACTS | facts_near(rules), label="facts")

    rule, trace = evaluate(rules, facts)

    assert [entry.rule_id for entry in trace] == [str(r.pk) for r in rules[: len(trace)]]
    assert not any(entry.matched for entry in trace[:-1])
    if rule is None:
        assert len(trace) == len(rules)
        assert not any(entry.matched for entry in trace)
    else:
        assert rule is rules[len(trace) - 1]
        last = trace[-1]
        assert last.matched
        assert len(last.conditions) == len(rule.conditions)
        assert all(result["holds"] for result in last.conditions)
    for entry in trace:
        assert entry.matched == all(result["holds"] for result in entry.conditions)
        for result in entry.conditions:
            assert result["reason"] in REASONS
            assert result["holds"] is (result["reason"] == "holds")
            if result["reason"] == "missing":
                assert facts.get(result["field"]) is None
                continue
            assert result["actual"] is facts[result["field"]]
            # A fact is compared exactly when the language would accept it as a value.
            as_value = condition_errors(cond(result["field"], "eq", result["actual"]))
            assert (result["reason"] == "not a value of this field") == bool(as_value)
    # Only the allow-listed facts count.
    assert evaluate(rules, clean_facts(facts))[0] is rule


@PROPERTY_SETTINGS
@given(payload=st.dictionaries(st.sampled_from(sorted(FIELDS)) | st.text(), JSON_LIKE))
def test_clean_facts_keeps_only_the_allow_listed_keys(payload):
    cleaned = clean_facts(payload)

    assert set(cleaned) == set(payload) & set(FIELDS)
    assert all(cleaned[key] is payload[key] for key in cleaned)


def test_evaluate_compares_decimal_facts_with_float_values():
    rules = _rules([[cond("sentiment", "lt", -0.5)], [cond("confidence", "gte", 0.9)]])

    rule, trace = evaluate(rules, {"sentiment": Decimal("-0.40"), "confidence": Decimal("0.95")})
    nan_rule, nan_trace = evaluate(rules, {"sentiment": Decimal("NaN")})

    assert rule is rules[1]
    assert trace[0].conditions[0]["reason"] == "does not hold"
    assert nan_rule is None
    assert nan_trace[0].conditions[0]["reason"] == "not a value of this field"


def test_a_signalling_nan_decimal_fact_is_not_a_value():
    rules = _rules([[cond("confidence", "gt", 0.5)]])

    rule, trace = evaluate(rules, {"confidence": Decimal("sNaN")})

    assert rule is None
    assert trace[0].conditions[0]["reason"] == "not a value of this field"


# Automatic application to tickets ---------------------------------------------------------------


def rules_on(tenant, value=True) -> None:
    tenant.settings = {**(tenant.settings or {}), "support_apply_rules": value}
    tenant.save()


def open_ticket(caller, **body):
    body.setdefault("subject", "SSO integration failure")
    response = caller.client.post(TICKETS, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def applications(ticket_id):
    return list(RuleApplication.objects.filter(ticket_id=ticket_id).order_by("created_at", "id"))


def applied_events(tenant):
    return AuditEvent.objects.filter(tenant=tenant, event_type="decision_rule.applied")


def test_the_setting_is_a_strict_boolean_turned_on_through_the_organization(owner):
    refused = owner.client.patch(
        ORGANIZATION, {"settings": {"support_apply_rules": "yes"}}, format="json"
    )
    enabled = owner.client.patch(
        ORGANIZATION, {"settings": {"support_apply_rules": True}}, format="json"
    )

    assert "settings" in assert_envelope(refused, 400)["details"]
    assert enabled.status_code == 200, enabled.content
    assert Tenant.objects.get(pk=owner.tenant.pk).settings["support_apply_rules"] is True


def test_auto_resolve_resolves_a_new_ticket_and_records_it(owner):
    assert (
        owner.client.patch(
            ORGANIZATION, {"settings": {"support_apply_rules": True}}, format="json"
        ).status_code
        == 200
    )
    rule = rule_of(
        owner.tenant,
        1,
        [cond("subject", "contains", "password reset")],
        "AUTO_RESOLVE",
        {"comment": "Reset links are sent from Settings > Security."},
        name="Password resets answer themselves",
    )

    created = open_ticket(owner, subject="PASSWORD RESET link expired")
    untouched = open_ticket(owner, subject="Invoice question")

    assert created["status"] == "RESOLVED"
    stored = Ticket.objects.get(pk=created["id"])
    assert stored.status == TicketStatus.RESOLVED
    assert stored.resolved_at is not None
    (application,) = applications(created["id"])
    assert application.rule_id == rule.pk
    assert application.outcome == RuleApplication.Outcome.APPLIED
    assert application.detail == "Resolved."
    assert TicketComment.objects.get(ticket_id=created["id"]).comment.startswith("Reset links")
    shown = owner.client.get(ticket_url(created["id"])).json()["rule_applications"]
    assert shown == [
        {
            "id": str(application.pk),
            "rule_id": str(rule.pk),
            "rule_name": "Password resets answer themselves",
            "action": "AUTO_RESOLVE",
            "action_params": {"comment": "Reset links are sent from Settings > Security."},
            "outcome": "applied",
            "detail": "Resolved.",
            "created_at": shown[0]["created_at"],
        }
    ]
    event = applied_events(owner.tenant).get()
    assert event.payload["decision_rule_id"] == str(rule.pk)
    assert event.payload["ticket_id"] == created["id"]
    assert event.payload["outcome"] == "applied"
    assert event.actor_id == owner.user.pk
    assert (
        AuditEvent.objects.filter(tenant=owner.tenant, event_type="support.ticket.resolved").count()
        == 1
    )
    assert untouched["status"] == "OPEN"
    assert applications(untouched["id"]) == []


def test_set_priority_changes_it_once_without_applying_rules_again(owner):
    rules_on(owner.tenant)
    to_high = rule_of(
        owner.tenant, 1, [cond("priority", "eq", "NORMAL")], "SET_PRIORITY", {"priority": "HIGH"}
    )
    to_urgent = rule_of(
        owner.tenant, 2, [cond("priority", "eq", "HIGH")], "SET_PRIORITY", {"priority": "URGENT"}
    )

    created = open_ticket(owner, priority="NORMAL")

    # Applying rules again after the first change would have made it URGENT.
    assert created["priority"] == "HIGH"
    (application,) = applications(created["id"])
    assert application.rule_id == to_high.pk
    assert application.detail == "Priority set to HIGH."
    assert applied_events(owner.tenant).count() == 1

    # A person's later change applies the rules again: now the second one holds.
    changed = owner.client.patch(
        ticket_url(created["id"]), {"description": "More details."}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["priority"] == "URGENT"
    assert [a.rule_id for a in applications(created["id"])] == [to_high.pk, to_urgent.pk]
    assert [a["rule_id"] for a in changed.json()["rule_applications"]] == [
        str(to_high.pk),
        str(to_urgent.pk),
    ]


def test_set_priority_to_the_same_priority_is_skipped(owner):
    rules_on(owner.tenant)
    rule_of(owner.tenant, 1, [], "SET_PRIORITY", {"priority": "HIGH"})

    created = open_ticket(owner, priority="HIGH")

    (application,) = applications(created["id"])
    assert application.outcome == RuleApplication.Outcome.SKIPPED
    assert application.detail == "Already HIGH."
    assert created["priority"] == "HIGH"


def test_assign_to_team_picks_the_online_representative_of_the_role_with_most_room(owner):
    rules_on(owner.tenant)
    t = owner.tenant
    busy = RepresentativeFactory(tenant=t, role="TEAM_LEAD", max_chats=5)
    Representative.objects.filter(pk=busy.pk).update(active_chats=3)  # 2 free
    roomy = RepresentativeFactory(tenant=t, role="TEAM_LEAD", max_chats=8)  # 8 free
    RepresentativeFactory(tenant=t, role="TEAM_LEAD", status="AWAY", max_chats=50)
    RepresentativeFactory(tenant=t, role="SENIOR_SUPPORT", max_chats=50)
    RepresentativeFactory(tenant=TenantFactory(), role="TEAM_LEAD", max_chats=90)
    rule_of(t, 1, [cond("customer_tier", "eq", "ENTERPRISE")], "ASSIGN_TO_TEAM")
    customer = CustomerProfileFactory(tenant=t, tier="ENTERPRISE")

    created = open_ticket(owner, customer_id=str(customer.pk))

    stored = Ticket.objects.get(pk=created["id"])
    assert stored.assignee_id == roomy.pk
    assert stored.assigned_at is not None
    assert Representative.objects.get(pk=roomy.pk).active_chats == 1
    assert Representative.objects.get(pk=busy.pk).active_chats == 3
    (application,) = applications(created["id"])
    assert application.outcome == RuleApplication.Outcome.APPLIED
    assert str(roomy.pk) in application.detail
    assert AuditEvent.objects.filter(tenant=t, event_type="support.ticket.assigned").count() == 1


def test_assign_to_team_is_skipped_with_its_reason_when_nobody_of_the_role_has_room(owner):
    rules_on(owner.tenant)
    t = owner.tenant
    RepresentativeFactory(tenant=t, role="TEAM_LEAD", status="AWAY")
    full = RepresentativeFactory(tenant=t, role="TEAM_LEAD", max_chats=1)
    Representative.objects.filter(pk=full.pk).update(active_chats=1)
    RepresentativeFactory(tenant=t, role="SENIOR_SUPPORT")
    rule_of(t, 1, [], "ASSIGN_TO_TEAM")

    created = open_ticket(owner)

    (application,) = applications(created["id"])
    assert application.outcome == RuleApplication.Outcome.SKIPPED
    assert application.detail == "No online TEAM_LEAD has free capacity."
    assert Ticket.objects.get(pk=created["id"]).assignee_id is None
    assert Representative.objects.get(pk=full.pk).active_chats == 1


def test_escalate_to_human_opens_an_escalation_of_the_ticket(owner):
    rules_on(owner.tenant)
    rule = rule_of(
        owner.tenant,
        1,
        [cond("sentiment", "lt", -0.5)],
        "ESCALATE_TO_HUMAN",
        {"priority": "URGENT", "reason": "NEGATIVE_SENTIMENT"},
    )
    customer = CustomerProfileFactory(tenant=owner.tenant)

    created = open_ticket(owner, sentiment=-0.8, customer_id=str(customer.pk))
    calm = open_ticket(owner, sentiment=0.2)

    escalation = Escalation.objects.get(tenant=owner.tenant)
    assert str(escalation.ticket_id) == created["id"]
    assert escalation.customer_id == customer.pk
    assert (escalation.priority, escalation.reason) == ("URGENT", "NEGATIVE_SENTIMENT")
    assert created["ticket_number"] in escalation.issue_description
    assert rule.name in escalation.issue_description
    (application,) = applications(created["id"])
    assert application.detail == f"Escalation {escalation.pk} opened."
    assert applications(calm["id"]) == []


def test_notify_notifies_the_organizations_admins(owner):
    rules_on(owner.tenant)
    admin = MembershipFactory(tenant=owner.tenant, role=Role.ADMIN)
    MembershipFactory(tenant=owner.tenant, role=Role.MEMBER)
    MembershipFactory(tenant=owner.tenant, role=Role.VIEWER)
    MembershipFactory(tenant=TenantFactory(), role=Role.ADMIN)
    rule = rule_of(
        owner.tenant,
        1,
        [cond("category", "eq", "BILLING_PAYMENT"), cond("customer_tier", "eq", "ENTERPRISE")],
        "NOTIFY",
        {"message": "An enterprise customer has a billing problem."},
        name="Enterprise billing",
    )
    customer = CustomerProfileFactory(tenant=owner.tenant, tier="ENTERPRISE")

    created = open_ticket(owner, category="BILLING_PAYMENT", customer_id=str(customer.pk))
    open_ticket(owner, category="ACCOUNT", customer_id=str(customer.pk))

    notices = Notification.objects.filter(
        event_type="decision_rule.applied", channel=Channel.IN_APP
    )
    assert {notice.recipient_id for notice in notices} == {admin.user_id}
    notice = notices.get()
    assert notice.tenant_id == owner.tenant.pk
    assert notice.title == "Rule applied: Enterprise billing"
    assert "An enterprise customer has a billing problem." in notice.message
    assert created["ticket_number"] in notice.message
    (application,) = applications(created["id"])
    assert application.rule_id == rule.pk
    assert application.detail == "The organization's admins were notified."


@pytest.mark.parametrize("action", ["APPROVE_REFUND", "REJECT_REFUND"])
def test_refund_rules_are_not_given_tickets(owner, action):
    # A refund rule first in priority does not hide the ticket rule after it.
    rules_on(owner.tenant)
    rule_of(owner.tenant, 1, [cond("category", "eq", "BILLING_PAYMENT")], action)
    ticket_rule = rule_of(owner.tenant, 2, [], "SET_PRIORITY", {"priority": "HIGH"})

    created = open_ticket(owner, category="BILLING_PAYMENT")

    (application,) = applications(created["id"])
    assert application.rule_id == ticket_rule.pk
    assert created["status"] == "OPEN"
    assert created["priority"] == "HIGH"


@pytest.mark.parametrize("setting", [None, False])
def test_with_the_setting_off_no_rule_applies(owner, setting):
    if setting is not None:
        rules_on(owner.tenant, setting)
    rule_of(owner.tenant, 1, [], "AUTO_RESOLVE")

    created = open_ticket(owner)
    changed = owner.client.patch(
        ticket_url(created["id"]), {"priority": "URGENT"}, format="json"
    ).json()

    assert created["status"] == changed["status"] == "OPEN"
    assert changed["rule_applications"] == []
    assert not RuleApplication.objects.filter(tenant=owner.tenant).exists()
    assert not applied_events(owner.tenant).exists()


def test_disabled_rules_never_apply(owner):
    rules_on(owner.tenant)
    rule_of(owner.tenant, 1, [], "AUTO_RESOLVE", enabled=False)
    notify = rule_of(owner.tenant, 2, [cond("priority", "eq", "URGENT")], "NOTIFY")

    quiet = open_ticket(owner)
    urgent = open_ticket(owner, priority="URGENT")

    assert quiet["status"] == urgent["status"] == "OPEN"
    assert applications(quiet["id"]) == []
    assert [a.rule_id for a in applications(urgent["id"])] == [notify.pk]


def test_another_organizations_rules_never_apply(owner):
    rules_on(owner.tenant)
    other = TenantFactory()
    rules_on(other)
    rule_of(other, 1, [], "AUTO_RESOLVE")

    created = open_ticket(owner)

    assert created["status"] == "OPEN"
    assert not RuleApplication.objects.exists()


def test_rules_apply_again_when_an_updated_ticket_matches(owner):
    rules_on(owner.tenant)
    rule = rule_of(
        owner.tenant,
        1,
        [cond("priority", "eq", "URGENT")],
        "ESCALATE_TO_HUMAN",
        {"reason": "CUSTOMER_REQUEST"},
    )
    created = open_ticket(owner, priority="LOW")
    assert applications(created["id"]) == []

    changed = owner.client.patch(ticket_url(created["id"]), {"priority": "URGENT"}, format="json")

    assert changed.status_code == 200, changed.content
    (shown,) = changed.json()["rule_applications"]
    assert shown["rule_id"] == str(rule.pk)
    assert shown["outcome"] == "applied"
    escalation = Escalation.objects.get(ticket_id=created["id"])
    assert (escalation.reason, escalation.priority) == ("CUSTOMER_REQUEST", "HIGH")


def test_a_deleted_rule_stays_named_on_the_tickets_it_applied_to(owner):
    rules_on(owner.tenant)
    rule = rule_of(owner.tenant, 1, [], "NOTIFY", name="Everything")
    created = open_ticket(owner)

    assert owner.client.delete(detail(rule)).status_code == 204

    (shown,) = owner.client.get(ticket_url(created["id"])).json()["rule_applications"]
    assert shown["rule_id"] is None
    assert shown["rule_name"] == "Everything"
    assert rule_events(owner.tenant, "decision_rule.deleted").count() == 1


def test_a_client_cannot_switch_the_rules_off_for_its_own_ticket(owner):
    rules_on(owner.tenant)
    rule_of(owner.tenant, 1, [], "AUTO_RESOLVE")

    response = owner.client.post(
        TICKETS, {"subject": "Keep me open", "apply_rules": False}, format="json"
    )

    assert "apply_rules" in assert_envelope(response, 400)["details"]
    assert not Ticket.objects.filter(tenant=owner.tenant).exists()
