"""Memberships and invitations: who belongs to a tenant, with which role and permissions."""

from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.db import create_or_conflict

from ..models import Membership, MembershipStatus, Tenant


@transaction.atomic
def membership_add(
    *,
    tenant: Tenant,
    user,
    role: str,
    actor,
    permissions: dict | None = None,
) -> Membership:
    """Make `user` an active member of `tenant` with `role`."""
    membership = create_or_conflict(
        Membership,
        conflict_message="This user is already a member of the organization.",
        tenant=tenant,
        user=user,
        role=role,
        status=MembershipStatus.ACTIVE,
        permissions=permissions or {},
        invited_by=actor if actor is not None and actor.is_authenticated else None,
        joined_at=timezone.now(),
    )
    record(
        tenant=tenant,
        event_type="member.added",
        actor=actor,
        payload={"membership_id": str(membership.pk), "user_id": str(user.pk), "role": role},
    )
    return membership
