"""The decision rule language: conditions over an allow-list of fields, a fixed set of operators
and actions, and a small interpreter. No `eval`, no attribute access by name: a condition's
field is looked up in the facts dictionary only if it is in FIELDS, its operator is a function
of OPERATORS, and every comparison is type-checked first, so no payload makes it raise.

A rule holds when all its conditions hold (an empty list always holds). Rules are tried in
priority order (the lowest number first; ties, possible among disabled rules only, by creation)
and the first that holds decides; the trace says for each rule tried why it held or not.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from .models import (
    CustomerStanding,
    CustomerTier,
    EscalationPriority,
    EscalationReason,
    RepresentativeRole,
    TicketCategory,
    TicketPriority,
    TicketStatus,
)

NUMBER, INTEGER, BOOLEAN, ENUM, TEXT = "number", "integer", "boolean", "enum", "text"
MAX_CONDITIONS = 20
MAX_LIST_VALUES = 50
MAX_TEXT = 500


@dataclass(frozen=True)
class Field:
    type: str
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


FIELDS: Mapping[str, Field] = {
    "confidence": Field(NUMBER, "the AI's confidence in its answer, 0 to 1", minimum=0, maximum=1),
    "sentiment": Field(NUMBER, "the customer's mood, -1 (negative) to 1", minimum=-1, maximum=1),
    "priority": Field(ENUM, "the ticket's priority", tuple(TicketPriority.values)),
    "category": Field(ENUM, "the ticket's category", tuple(TicketCategory.values)),
    "status": Field(ENUM, "the ticket's status", tuple(TicketStatus.values)),
    "customer_tier": Field(ENUM, "the customer's tier", tuple(CustomerTier.values)),
    "customer_standing": Field(ENUM, "the customer's standing", tuple(CustomerStanding.values)),
    "ticket_age_minutes": Field(INTEGER, "minutes since the ticket was opened", minimum=0),
    "refund_amount_cents": Field(INTEGER, "the refund asked for, in cents", minimum=0),
    "ai_handled": Field(BOOLEAN, "the AI handled the conversation"),
    "subject": Field(TEXT, "the ticket's subject"),
}


def _contains(actual, expected) -> bool:
    return expected.casefold() in actual.casefold()


OPERATORS: Mapping[str, Callable[[object, object], bool]] = {
    "eq": lambda actual, expected: actual == expected,
    "neq": lambda actual, expected: actual != expected,
    "gt": lambda actual, expected: actual > expected,
    "gte": lambda actual, expected: actual >= expected,
    "lt": lambda actual, expected: actual < expected,
    "lte": lambda actual, expected: actual <= expected,
    "in": lambda actual, expected: actual in expected,
    "not_in": lambda actual, expected: actual not in expected,
    "contains": _contains,
}
ORDERED = {"gt", "gte", "lt", "lte"}
LISTS = {"in", "not_in"}
# Which operators each type of field takes.
OPERATORS_BY_TYPE = {
    NUMBER: {"eq", "neq", "gt", "gte", "lt", "lte"},
    INTEGER: {"eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in"},
    BOOLEAN: {"eq", "neq"},
    ENUM: {"eq", "neq", "in", "not_in"},
    TEXT: {"eq", "neq", "contains"},
}


class Action:
    AUTO_RESOLVE = "AUTO_RESOLVE"
    ESCALATE_TO_HUMAN = "ESCALATE_TO_HUMAN"
    ASSIGN_TO_TEAM = "ASSIGN_TO_TEAM"
    SET_PRIORITY = "SET_PRIORITY"
    APPROVE_REFUND = "APPROVE_REFUND"
    REJECT_REFUND = "REJECT_REFUND"
    NOTIFY = "NOTIFY"


ACTIONS = (
    Action.AUTO_RESOLVE,
    Action.ESCALATE_TO_HUMAN,
    Action.ASSIGN_TO_TEAM,
    Action.SET_PRIORITY,
    Action.APPROVE_REFUND,
    Action.REJECT_REFUND,
    Action.NOTIFY,
)


@dataclass(frozen=True)
class Param:
    type: str
    required: bool = False
    choices: tuple[str, ...] = ()


# The parameters each action takes (nothing else is accepted).
ACTION_PARAMS: Mapping[str, Mapping[str, Param]] = {
    Action.AUTO_RESOLVE: {"comment": Param(TEXT)},
    Action.ESCALATE_TO_HUMAN: {
        "priority": Param(ENUM, choices=tuple(EscalationPriority.values)),
        "reason": Param(ENUM, choices=tuple(EscalationReason.values)),
    },
    Action.ASSIGN_TO_TEAM: {
        "role": Param(ENUM, required=True, choices=tuple(RepresentativeRole.values))
    },
    Action.SET_PRIORITY: {
        "priority": Param(ENUM, required=True, choices=tuple(TicketPriority.values))
    },
    Action.APPROVE_REFUND: {},
    Action.REJECT_REFUND: {"reason": Param(TEXT)},
    Action.NOTIFY: {"message": Param(TEXT, required=True)},
}


# Validation (when a rule is saved) -----------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _value_error(spec: Field, value) -> str | None:
    """Why `value` is not a value of a field of `spec`, or None."""
    if spec.type == BOOLEAN:
        return None if isinstance(value, bool) else "A boolean (true or false)."
    if spec.type == TEXT:
        if not isinstance(value, str) or not value:
            return "A non-empty string."
        return None if len(value) <= MAX_TEXT else f"At most {MAX_TEXT} characters."
    if spec.type == ENUM:
        return None if value in spec.choices else f"One of {', '.join(spec.choices)}."
    if spec.type == INTEGER and not (isinstance(value, int) and not isinstance(value, bool)):
        return "A whole number."
    if spec.type == NUMBER and not _is_number(value):
        return "A number."
    if isinstance(value, Decimal):
        if not value.is_finite():  # NaN, sNaN, infinities (comparing an sNaN raises)
            return "A finite number."
    elif isinstance(value, float) and not math.isfinite(value):
        return "A finite number."
    if spec.minimum is not None and value < spec.minimum:
        return f"At least {spec.minimum}."
    if spec.maximum is not None and value > spec.maximum:
        return f"At most {spec.maximum}."
    return None


def _value_schema(spec: Field) -> dict:
    if spec.type == BOOLEAN:
        return {"type": "boolean"}
    if spec.type == TEXT:
        return {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
    if spec.type == ENUM:
        return {"type": "string", "enum": list(spec.choices)}
    schema = {"type": "integer" if spec.type == INTEGER else "number"}
    if spec.minimum is not None:
        schema["minimum"] = spec.minimum
    if spec.maximum is not None:
        schema["maximum"] = spec.maximum
    return schema


def conditions_schema() -> dict:
    """What `conditions_errors` accepts, as an OpenAPI schema (a request body's): one
    alternative per field and kind of operator, the value typed by the field (a list of 1 to
    MAX_LIST_VALUES of them for `in` and `not_in`)."""
    alternatives = []
    for name, spec in FIELDS.items():
        allowed = OPERATORS_BY_TYPE[spec.type]
        value = _value_schema(spec)
        values = {"type": "array", "items": value, "minItems": 1, "maxItems": MAX_LIST_VALUES}
        for operators, value_schema in ((allowed - LISTS, value), (allowed & LISTS, values)):
            if not operators:
                continue
            alternatives.append(
                {
                    "type": "object",
                    "properties": {
                        "field": {"type": "string", "enum": [name]},
                        "operator": {"type": "string", "enum": sorted(operators)},
                        "value": value_schema,
                    },
                    "required": ["field", "operator", "value"],
                    "additionalProperties": False,
                }
            )
    return {"type": "array", "maxItems": MAX_CONDITIONS, "items": {"oneOf": alternatives}}


def condition_errors(condition) -> dict[str, str]:
    """The errors of one condition, by key; empty when it is valid."""
    if not isinstance(condition, dict):
        return {"condition": 'An object: {"field", "operator", "value"}.'}
    unknown = sorted(set(condition) - {"field", "operator", "value"})
    if unknown:
        return {key: "Unknown key." for key in unknown}
    name, operator = condition.get("field"), condition.get("operator")
    if not isinstance(name, str) or name not in FIELDS:
        return {"field": f"One of {', '.join(FIELDS)}."}
    spec = FIELDS[name]
    allowed = OPERATORS_BY_TYPE[spec.type]
    if not isinstance(operator, str) or operator not in allowed:
        return {"operator": f"For {name}: one of {', '.join(sorted(allowed))}."}
    if "value" not in condition:
        return {"value": "Required."}
    value = condition["value"]
    if operator in LISTS:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST_VALUES:
            return {"value": f"A list of 1 to {MAX_LIST_VALUES} values."}
        for item in value:
            error = _value_error(spec, item)
            if error:
                return {"value": f"Each item: {error}"}
        return {}
    error = _value_error(spec, value)
    return {"value": error} if error else {}


def conditions_errors(conditions) -> dict[str, object]:
    if not isinstance(conditions, list):
        return {"conditions": "A list of conditions."}
    if len(conditions) > MAX_CONDITIONS:
        return {"conditions": f"At most {MAX_CONDITIONS} conditions."}
    errors = {}
    for index, condition in enumerate(conditions):
        found = condition_errors(condition)
        if found:
            errors[str(index)] = found
    return errors


def action_params_errors(action: str, params) -> dict[str, str]:
    if not isinstance(params, dict):
        return {"action_params": "An object."}
    accepted = ACTION_PARAMS[action]
    errors = {key: f"Not a parameter of {action}." for key in params if key not in accepted}
    for key, param in accepted.items():
        if key not in params:
            if param.required:
                errors[key] = "Required."
            continue
        error = _value_error(Field(param.type, "", param.choices), params[key])
        if error:
            errors[key] = error
    return errors


# Evaluation --------------------------------------------------------------------------------------


@dataclass
class RuleTrace:
    rule_id: str
    name: str
    priority: int
    enabled: bool
    matched: bool
    conditions: list[dict] = field(default_factory=list)


def _check(condition: dict, facts: Mapping) -> dict:
    """One condition against the facts: whether it holds, and why not when it does not."""
    name, operator, expected = condition["field"], condition["operator"], condition["value"]
    outcome = {"field": name, "operator": operator, "value": expected}
    if name not in facts or facts[name] is None:
        return {**outcome, "actual": None, "holds": False, "reason": "missing"}
    actual = facts[name]
    outcome["actual"] = actual
    if _value_error(FIELDS[name], actual) is not None:
        return {**outcome, "holds": False, "reason": "not a value of this field"}
    holds = OPERATORS[operator](actual, expected)
    return {**outcome, "holds": bool(holds), "reason": "holds" if holds else "does not hold"}


def evaluate(rules, facts: Mapping) -> tuple[object | None, list[RuleTrace]]:
    """The first rule of `rules` (already in priority order) whose conditions all hold, and the
    trace of every rule tried up to it. A condition stored invalid (never, through the
    services) counts as not holding."""
    trace = []
    for rule in rules:
        results = []
        for condition in rule.conditions or []:
            if condition_errors(condition):
                results.append({**dict(condition), "holds": False, "reason": "invalid condition"})
            else:
                results.append(_check(condition, facts))
        matched = all(result["holds"] for result in results)
        trace.append(
            RuleTrace(
                rule_id=str(rule.pk),
                name=rule.name,
                priority=rule.priority,
                enabled=rule.enabled,
                matched=matched,
                conditions=results,
            )
        )
        if matched:
            return rule, trace
    return None, trace


def clean_facts(payload: Mapping) -> dict:
    """The allow-listed fields of a payload (anything else is dropped, never looked at)."""
    return {name: payload[name] for name in FIELDS if name in payload}


def shown(value):
    """A fact as an answer shows it: a number too large for JSON (1e400 reads as infinity) is
    null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
