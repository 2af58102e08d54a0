"""Tenant state changes, one module per area: the one place their rules live.

    lifecycle    tenants: create, update, activate, suspend, restore, delete; the plan
                 billing applies
    members      memberships and invitations, and deleting a user account (its memberships)
    themes       branding and the generated stylesheet
    quotas       counters, limits, resets (each ended period kept as a usage record)
    idempotency  pruning the remembered Idempotency-Keys (tenants.idempotency)

The services other apps and commands use most are re-exported here; the rest are imported
from their module (`from tenants.services import quotas; quotas.quota_consume(...)`).
"""

from .lifecycle import tenant_create, unique_slug
from .members import (
    invitation_accept,
    invitation_resend,
    invitation_revoke,
    member_invite,
    member_remove,
    member_update,
    membership_add,
)
from .themes import theme_logo_set, theme_update

__all__ = [
    "invitation_accept",
    "invitation_resend",
    "invitation_revoke",
    "member_invite",
    "member_remove",
    "member_update",
    "membership_add",
    "tenant_create",
    "theme_logo_set",
    "theme_update",
    "unique_slug",
]
