"""Tenant lifecycle: create, update, activate, suspend, restore, delete."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from audit.services import record
from config.db import create_or_conflict

from ..models import PlanTier, Role, Tenant, TenantStatus
from .members import membership_add


def unique_slug(name: str) -> str:
    """A free slug derived from the name: `acme`, `acme-2`, `acme-3`, ..."""
    base = (slugify(name) or "org")[:56].strip("-") or "org"
    candidate, n = base, 1
    while Tenant.objects.filter(slug=candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


@transaction.atomic
def tenant_create(
    *,
    actor,
    name: str,
    slug: str | None = None,
    plan: str = PlanTier.FREE,
    owner=None,
    **fields,
) -> Tenant:
    """Create a tenant in trial; `owner` (default: the actor) becomes its first owner."""
    tenant = create_or_conflict(
        Tenant,
        conflict_message="An organization with this slug already exists.",
        name=name,
        slug=slug or unique_slug(name),
        plan=plan,
        status=TenantStatus.TRIAL,
        trial_ends_at=timezone.now() + timedelta(days=settings.TENANT_TRIAL_DAYS),
        **fields,
    )
    record(
        tenant=tenant,
        event_type="tenant.created",
        actor=actor,
        payload={"slug": tenant.slug, "name": tenant.name, "plan": tenant.plan},
    )
    owner = owner or actor
    if owner is not None and owner.is_authenticated:
        membership_add(tenant=tenant, user=owner, role=Role.OWNER, actor=actor)
    return tenant
