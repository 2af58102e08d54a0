"""Support desk state changes, one module per area: the one place their rules live.

    customers        the organization's end customers (customer profiles)
    representatives  the members who answer them: role, presence, capacity
    sla              SLA policies: the targets per ticket priority, in business hours or not
    tickets          tickets: numbered, moved along their statuses, assigned within capacity
    sla_clock        tickets' SLA clocks: due times, pauses, breaches and their escalation
    conversation     a ticket's comments and attachments
    escalations      escalations: handed to a person, moved forward
    common           the lookups they share (another organization's id is a 400)
    agents           AI agents: configurations on the gateway's models, outcomes recorded
    decision_rules   decision rules (support.rules is their language); tickets.rules_apply
                     and refunds.refund_rules_apply apply them when the organization turns
                     it on
    budgets          budgets: what may be given back per period, drawn atomically, alerts
    refunds          refunds: requested, approved within authority and budget, completed

Services are keyword-only, run in a transaction and record their audit event;
tests/audit/test_service_coverage.py holds each to it.
"""

from .agents import (
    agent_assertion_record,
    ai_agent_create,
    ai_agent_delete,
    ai_agent_update,
)
from .budgets import (
    budget_create,
    budget_delete,
    budget_draw,
    budget_update,
    budget_usage_add,
    budgets_roll,
)
from .conversation import ticket_attachment_add, ticket_attachment_delete, ticket_comment_add
from .customers import customer_profile_create, customer_profile_delete, customer_profile_update
from .decision_rules import decision_rule_create, decision_rule_delete, decision_rule_update
from .escalations import escalation_create, escalation_delete, escalation_update
from .refunds import (
    refund_approve,
    refund_complete,
    refund_create,
    refund_reject,
    refund_rules_apply,
    refund_update,
)
from .representatives import (
    representative_create,
    representative_delete,
    representative_update,
)
from .sla import sla_policy_create, sla_policy_delete, sla_policy_update
from .sla_clock import sla_breaches_mark
from .tickets import (
    AUTO,
    rules_apply,
    ticket_assign,
    ticket_create,
    ticket_delete,
    ticket_update,
)

__all__ = [
    "AUTO",
    "agent_assertion_record",
    "ai_agent_create",
    "ai_agent_delete",
    "ai_agent_update",
    "budget_create",
    "budget_delete",
    "budget_draw",
    "budget_update",
    "budget_usage_add",
    "budgets_roll",
    "customer_profile_create",
    "customer_profile_delete",
    "customer_profile_update",
    "decision_rule_create",
    "decision_rule_delete",
    "decision_rule_update",
    "escalation_create",
    "escalation_delete",
    "escalation_update",
    "refund_approve",
    "refund_complete",
    "refund_create",
    "refund_reject",
    "refund_rules_apply",
    "refund_update",
    "representative_create",
    "representative_delete",
    "representative_update",
    "rules_apply",
    "sla_breaches_mark",
    "sla_policy_create",
    "sla_policy_delete",
    "sla_policy_update",
    "ticket_assign",
    "ticket_attachment_add",
    "ticket_attachment_delete",
    "ticket_comment_add",
    "ticket_create",
    "ticket_delete",
    "ticket_update",
]
