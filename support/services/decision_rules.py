"""Decision rules: created, changed and deleted, each audited (`decision_rule.*`). Conditions
and action parameters are checked against the rule language (support.rules) here as well as
in the serializer, so no caller stores a rule the interpreter cannot read. Two enabled rules
never share a priority (409, also when two changes race: a partial unique constraint).

What a rule did when applied (to a ticket by tickets.rules_apply, to a refund by
refunds.refund_rules_apply) is recorded by `rule_application_record`.
"""

from django.conf import settings
from django.db import transaction

from audit.services import record
from config.db import create_or_conflict, locked_or_404, update_or_conflict
from config.exceptions import ApplicationError
from config.services import UNSET, given, person
from tenants.models import Tenant

from ..models import DecisionRule, RuleApplication
from ..rules import ACTIONS, Action, action_params_errors, conditions_errors


def _check(conditions, action: str, action_params) -> None:
    errors = {}
    found = conditions_errors(conditions)
    if found:
        errors["conditions"] = found
    if action not in ACTIONS:
        errors["action"] = [f"One of {', '.join(ACTIONS)}."]
    else:
        found = action_params_errors(action, action_params)
        if found:
            errors["action_params"] = found
    if errors:
        raise ApplicationError("Invalid rule.", details=errors)


def _priority_taken(priority: int) -> dict:
    return {
        "conflict_message": f"Another enabled rule has priority {priority}.",
        "conflict_details": {"priority": ["Unique among the enabled rules."]},
    }


def _record(event_type: str, actor, rule: DecisionRule, **payload) -> None:
    record(
        tenant=rule.tenant,
        event_type=event_type,
        actor=actor,
        payload={
            "decision_rule_id": str(rule.pk),
            "name": rule.name,
            "priority": rule.priority,
            "enabled": rule.enabled,
            "action": rule.action,
            **payload,
        },
    )


@transaction.atomic
def decision_rule_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    priority: int,
    action: str,
    conditions: list | None = None,
    action_params: dict | None = None,
    description: str = "",
    enabled: bool = False,
) -> DecisionRule:
    """Create a rule; disabled unless `enabled` (test it with evaluate first)."""
    conditions = list(conditions or [])
    action_params = dict(action_params or {})
    _check(conditions, action, action_params)
    # Every ticket and refund is tried against the enabled rules in order, and evaluate's
    # trace lists each rule tried: the ceiling bounds both.
    Tenant.objects.ensure_room(
        tenant.pk,
        DecisionRule.objects.filter(tenant=tenant),
        limit=settings.DECISION_RULES_PER_TENANT,
        counted="decision_rules",
    )
    rule = create_or_conflict(
        DecisionRule,
        **_priority_taken(priority),
        tenant=tenant,
        name=name,
        description=description,
        enabled=enabled,
        priority=priority,
        conditions=conditions,
        action=action,
        action_params=action_params,
        created_by=person(actor),
    )
    _record("decision_rule.created", actor, rule)
    return rule


@transaction.atomic
def decision_rule_update(
    *,
    decision_rule: DecisionRule,
    actor,
    name=UNSET,
    description=UNSET,
    enabled=UNSET,
    priority=UNSET,
    conditions=UNSET,
    action=UNSET,
    action_params=UNSET,
) -> DecisionRule:
    """Change the fields given; a new action without parameters keeps none of the old ones."""
    rule = locked_or_404(DecisionRule.objects.select_related("tenant"), pk=decision_rule.pk)
    changes = given(
        name=name,
        description=description,
        enabled=enabled,
        priority=priority,
        conditions=conditions,
        action=action,
        action_params=action_params,
    )
    if "action" in changes and "action_params" not in changes and changes["action"] != rule.action:
        changes["action_params"] = {}
    _check(
        changes.get("conditions", rule.conditions),
        changes.get("action", rule.action),
        changes.get("action_params", rule.action_params),
    )
    changed = update_or_conflict(
        rule, changes, **_priority_taken(changes.get("priority", rule.priority))
    )
    if changed:
        _record("decision_rule.updated", actor, rule, changed=sorted(changed))
    return rule


@transaction.atomic
def decision_rule_delete(*, decision_rule: DecisionRule, actor) -> None:
    rule = locked_or_404(DecisionRule.objects.select_related("tenant"), pk=decision_rule.pk)
    _record("decision_rule.deleted", actor, rule)
    rule.delete()


# Applications ----------------------------------------------------------------------------------

# The actions that concern refunds; every other one concerns tickets. Tickets and refunds are
# each given only the rules whose action concerns them.
REFUND_ACTIONS = (Action.APPROVE_REFUND, Action.REJECT_REFUND)
# The organization setting that applies its enabled rules to tickets and refunds as they are
# created and changed (by a person or a client: a rule's own change applies none).
APPLY_RULES_SETTING = "support_apply_rules"


def applies_rules(tenant: Tenant) -> bool:
    return (tenant.settings or {}).get(APPLY_RULES_SETTING) is True


def rule_application_record(
    *, rule: DecisionRule, actor, outcome: str, detail: str, ticket=None, refund=None
) -> RuleApplication | None:
    """Record what a rule did to its subject (a ticket or a refund) and audit it
    (`decision_rule.applied`). A skip saying what the subject's last application said is not
    recorded again (each change of a subject that still matches would repeat it)."""
    detail = str(detail)[:500]
    subject = {"ticket": ticket} if ticket is not None else {"refund": refund}
    last = RuleApplication.objects.filter(**subject).order_by("-created_at", "-id").first()
    repeated = last is not None and (last.rule_id, last.outcome, last.detail) == (
        rule.pk,
        outcome,
        detail,
    )
    if outcome == RuleApplication.Outcome.SKIPPED and repeated:
        return None
    application = RuleApplication.objects.create(
        tenant=rule.tenant,
        rule=rule,
        rule_name=rule.name,
        action=rule.action,
        action_params=rule.action_params,
        outcome=outcome,
        detail=detail,
        **subject,
    )
    record(
        tenant=rule.tenant,
        event_type="decision_rule.applied",
        actor=actor,
        payload={
            "decision_rule_id": str(rule.pk),
            "rule_name": rule.name,
            "action": rule.action,
            "outcome": outcome,
            "detail": detail,
            "ticket_id": str(ticket.pk) if ticket is not None else None,
            "ticket_number": ticket.ticket_number if ticket is not None else None,
            "refund_id": str(refund.pk) if refund is not None else None,
            "subject": (
                ticket.ticket_number if ticket is not None else f"refund of order {refund.order_id}"
            ),
            "message": str((rule.action_params or {}).get("message", "")),
        },
    )
    return application
