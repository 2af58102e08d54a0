import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce


class TenantStatus(models.TextChoices):
    TRIAL = "trial", "Trial"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    CANCELLED = "cancelled", "Cancelled"


# Statuses in which tenant-scoped endpoints answer 403 TENANT_SUSPENDED.
BLOCKED_STATUSES = frozenset({TenantStatus.SUSPENDED, TenantStatus.CANCELLED})


class PlanTier(models.TextChoices):
    """Subscription tiers (seed 004); they drive rate limits and default quotas."""

    FREE = "free", "Free"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"
    CUSTOM = "custom", "Custom"


class TenantQuerySet(models.QuerySet):
    def with_member_count(self):
        """Annotate `member_count` (active members) with a subquery, keeping Meta.ordering."""
        active = (
            Membership.objects.filter(tenant=models.OuterRef("pk"), status=MembershipStatus.ACTIVE)
            .order_by()
            .values("tenant")
            .annotate(n=models.Count("pk"))
            .values("n")
        )
        return self.annotate(
            member_count=Coalesce(models.Subquery(active, output_field=models.IntegerField()), 0)
        )


class Tenant(models.Model):
    """An organization, the unit of isolation: seed 002 tenant and seed 000 organization fields."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=63, unique=True)
    description = models.TextField(blank=True)
    domain = models.CharField(max_length=253, blank=True)
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.TRIAL, db_index=True
    )
    plan = models.CharField(max_length=16, choices=PlanTier.choices, default=PlanTier.FREE)
    contact_email = models.EmailField(blank=True)
    contact_name = models.CharField(max_length=200, blank=True)
    contact_phone = models.CharField(max_length=32, blank=True)
    billing_email = models.EmailField(blank=True)
    settings = models.JSONField(default=dict, blank=True)
    branding = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    trial_ends_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspension_reason = models.CharField(max_length=500, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.slug})"

    @property
    def is_blocked(self) -> bool:
        return self.status in BLOCKED_STATUSES


class TenantOwned(models.Model):
    """Base of every tenant-owned model: a non-null tenant FK (the Citus distribution column).

    Every unique constraint on a subclass must include `tenant` (tests/test_citus_readiness.py).
    """

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="%(app_label)s_%(class)s_set", editable=False
    )

    class Meta:
        abstract = True


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"
    BILLING = "billing", "Billing"
    DPO = "dpo", "Data protection officer"


class MembershipStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    INVITED = "invited", "Invited"
    SUSPENDED = "suspended", "Suspended"


class Membership(TenantOwned):
    """A user's place in a tenant: role, status and per-area permission overrides (seed 000)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="memberships", editable=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    status = models.CharField(
        max_length=16, choices=MembershipStatus.choices, default=MembershipStatus.ACTIVE
    )
    # {"documents": {"read": true, "delete": false}, ...}: applied on top of the role's set.
    permissions = models.JSONField(default=dict, blank=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    invited_at = models.DateTimeField(null=True, blank=True)
    joined_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "user"], name="tenants_membership_unique_user"
            ),
        ]
        indexes = [models.Index(fields=["user", "status"], name="tenants_mem_user_status")]

    def __str__(self):
        return f"{self.user_id} in {self.tenant_id} as {self.role}"
