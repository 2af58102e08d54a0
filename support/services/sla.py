"""SLA policies: one per ticket priority in an organization, created, changed and deleted, each
audited (`sla_policy.*`). The resolution target is never shorter than the first-response one.
"""

from django.db import transaction

from audit.services import record
from config.db import create_or_conflict, locked_or_404, update_or_conflict
from config.exceptions import ApplicationError
from config.services import UNSET, given
from tenants.models import Tenant

from ..clock import weekly_minutes
from ..models import SlaPolicy


def _record(event_type: str, actor, policy: SlaPolicy, **payload) -> None:
    record(
        tenant=policy.tenant,
        event_type=event_type,
        actor=actor,
        payload={"sla_policy_id": str(policy.pk), "priority": policy.priority, **payload},
    )


# A target must be reachable within this many weeks of the policy's business hours.
REACHABLE_WEEKS = 52


def _check_targets(first_response_minutes: int, resolution_minutes: int, business_hours) -> None:
    if resolution_minutes < first_response_minutes:
        raise ApplicationError(
            "Invalid resolution_minutes.",
            details={"resolution_minutes": ["At least first_response_minutes."]},
        )
    if business_hours and resolution_minutes > weekly_minutes(business_hours) * REACHABLE_WEEKS:
        raise ApplicationError(
            "Invalid resolution_minutes.",
            details={
                "resolution_minutes": [
                    f"More than {REACHABLE_WEEKS} weeks of these business hours "
                    f"({weekly_minutes(business_hours)} minutes a week)."
                ]
            },
        )


def _taken(priority: str) -> dict:
    return {
        "conflict_message": f"The organization already has an SLA policy for {priority}.",
        "conflict_details": {"priority": ["One policy per priority."]},
    }


@transaction.atomic
def sla_policy_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    priority: str,
    first_response_minutes: int,
    resolution_minutes: int,
    business_hours: dict | None = None,
) -> SlaPolicy:
    _check_targets(first_response_minutes, resolution_minutes, business_hours)
    policy = create_or_conflict(
        SlaPolicy,
        **_taken(priority),
        tenant=tenant,
        name=name,
        priority=priority,
        first_response_minutes=first_response_minutes,
        resolution_minutes=resolution_minutes,
        business_hours=business_hours,
    )
    _record("sla_policy.created", actor, policy)
    return policy


@transaction.atomic
def sla_policy_update(
    *,
    sla_policy: SlaPolicy,
    actor,
    name=UNSET,
    priority=UNSET,
    first_response_minutes=UNSET,
    resolution_minutes=UNSET,
    business_hours=UNSET,
) -> SlaPolicy:
    """Change the fields given. Tickets keep the terms they were given (a policy change applies
    to tickets created or re-prioritised after it)."""
    policy = locked_or_404(SlaPolicy.objects, pk=sla_policy.pk)
    changes = given(
        name=name,
        priority=priority,
        first_response_minutes=first_response_minutes,
        resolution_minutes=resolution_minutes,
        business_hours=business_hours,
    )
    _check_targets(
        changes.get("first_response_minutes", policy.first_response_minutes),
        changes.get("resolution_minutes", policy.resolution_minutes),
        changes.get("business_hours", policy.business_hours),
    )
    changed = update_or_conflict(
        policy, changes, **_taken(changes.get("priority", policy.priority))
    )
    if changed:
        _record("sla_policy.updated", actor, policy, changed=sorted(changed))
    return policy


@transaction.atomic
def sla_policy_delete(*, sla_policy: SlaPolicy, actor) -> None:
    policy = locked_or_404(SlaPolicy.objects, pk=sla_policy.pk)
    _record("sla_policy.deleted", actor, policy)
    policy.delete()
