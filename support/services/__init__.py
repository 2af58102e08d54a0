"""Support desk state changes, one module per area: the one place their rules live.

    customers        the organization's end customers (customer profiles)
    representatives  the members who answer them: role, presence, capacity
    sla              SLA policies: the targets per ticket priority, in business hours or not
    tickets          tickets: numbered, moved along their statuses, assigned within capacity

Services are keyword-only, run in a transaction and record their audit event;
tests/audit/test_service_coverage.py holds each to it.
"""

from .customers import customer_profile_create, customer_profile_delete, customer_profile_update
from .representatives import (
    representative_create,
    representative_delete,
    representative_update,
)
from .sla import sla_policy_create, sla_policy_delete, sla_policy_update
from .tickets import AUTO, ticket_assign, ticket_create, ticket_delete, ticket_update

__all__ = [
    "AUTO",
    "customer_profile_create",
    "customer_profile_delete",
    "customer_profile_update",
    "representative_create",
    "representative_delete",
    "representative_update",
    "sla_policy_create",
    "sla_policy_delete",
    "sla_policy_update",
    "ticket_assign",
    "ticket_create",
    "ticket_delete",
    "ticket_update",
]
