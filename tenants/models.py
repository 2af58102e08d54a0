import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce
from django.db.models.signals import class_prepared
from django.dispatch import receiver
from django.utils import timezone

from config.db import locked_or_404
from config.exceptions import Conflict
from config.models import TimestampedModel
from config.validators import (
    DESCRIPTION_MAX_LENGTH,
    validate_domain,
    validate_name,
    validate_phone,
    validate_text,
)

from .plans import first_of_next_month


class TenantStatus(models.TextChoices):
    TRIAL = "trial", "Trial"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    CANCELLED = "cancelled", "Cancelled"


# Statuses in which tenant-scoped endpoints answer 403 TENANT_SUSPENDED.
BLOCKED_STATUSES = frozenset({TenantStatus.SUSPENDED, TenantStatus.CANCELLED})


class PlanTier(models.TextChoices):
    """Subscription tiers: free, pro, enterprise, custom; they drive rate limits and default
    quotas."""

    FREE = "free", "Free"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"
    CUSTOM = "custom", "Custom"


class TenantQuerySet(models.QuerySet):
    def locked(self, pk) -> "Tenant":
        """The tenant's row, locked until the transaction ends: every per-tenant change takes
        it first, so its checks and the change happen as one step. FOR NO KEY UPDATE: lockers
        wait for each other, but rows that merely reference the tenant (audit events, counters)
        can still be inserted meanwhile, so no lock cycle forms with a request doing that."""
        return locked_or_404(self, no_key=True, pk=pk)

    def ensure_room(
        self,
        pk,
        rows: models.QuerySet,
        *,
        limit: int,
        counted: str,
        noun: str = "",
        advice: str = "Delete one it no longer needs.",
    ) -> None:
        """409 CONFLICT when the organization already has `limit` of `rows` (its own rows of
        something it creates: `counted` in the error's details, `noun` in its message, by
        default `counted` in words), else nothing. A ceiling keeps one organization from
        filling the platform's tables (or, for webhook endpoints, multiplying its outbound
        requests). Checked under the organization's row lock, so parallel creations cannot
        pass it together."""
        self.locked(pk)
        count = rows.count()
        if count >= limit:
            raise Conflict(
                f"The organization already has {count} {noun or counted.replace('_', ' ')}; it "
                f"may have at most {limit}. {advice}",
                details={counted: count, "limit": limit},
            )

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

    def with_seats_taken(self, *, now=None):
        """Annotate `seats_taken`: what the `users` quota counts (Membership.holding_seats)."""
        seats = (
            Membership.objects.filter(tenant=models.OuterRef("pk"))
            .holding_seats(now=now)
            .order_by()
            .values("tenant")
            .annotate(n=models.Count("pk"))
            .values("n")
        )
        return self.annotate(
            seats_taken=Coalesce(models.Subquery(seats, output_field=models.IntegerField()), 0)
        )

    def with_quota_usage(self):
        """Annotate `<resource>_used` for every counted quota resource, in the same query."""
        return self.annotate(
            **{
                f"{resource}_used": Coalesce(
                    models.Subquery(
                        QuotaCounter.objects.filter(tenant=models.OuterRef("pk"), resource=resource)
                        .order_by()
                        .values("used")[:1],
                        output_field=models.BigIntegerField(),
                    ),
                    0,
                )
                for resource in COUNTED_QUOTA_RESOURCES
            }
        )


class Tenant(TimestampedModel):
    """An organization, the unit of isolation: profile, contacts, lifecycle status, plan tier,
    settings and quota period."""

    name = models.CharField(max_length=200, validators=[validate_name])
    slug = models.SlugField(max_length=63, unique=True)
    description = models.TextField(
        blank=True, max_length=DESCRIPTION_MAX_LENGTH, validators=[validate_text]
    )
    domain = models.CharField(max_length=253, blank=True, validators=[validate_domain])
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.TRIAL, db_index=True
    )
    plan = models.CharField(max_length=16, choices=PlanTier.choices, default=PlanTier.FREE)
    contact_email = models.EmailField(blank=True)
    contact_name = models.CharField(max_length=200, blank=True, validators=[validate_name])
    contact_phone = models.CharField(max_length=32, blank=True, validators=[validate_phone])
    billing_email = models.EmailField(blank=True)
    # Validated against tenants.settings_schema on every write through the API.
    settings = models.JSONField(default=dict, blank=True)
    # The features of the tenant's billing plan (`maxUsers`, `maxTokensPerMonth`, ..., `sso`),
    # written by billing with every plan change, in the same transaction as `plan` (its tier).
    # Its limits replace the tier's defaults; empty means the tier's defaults (tenants.plans).
    plan_features = models.JSONField(default=dict, blank=True, editable=False)
    trial_ends_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspension_reason = models.CharField(max_length=500, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # The quota period: periodic counters (api_calls, tokens) restart at `quota_reset_at`, which
    # the reset sets to the next month start in the same UPDATE (tenants.services.quotas).
    quota_reset_at = models.DateTimeField(default=first_of_next_month, db_index=True)
    last_reset_at = models.DateTimeField(default=timezone.now)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.name} ({self.slug})"

    @property
    def is_blocked(self) -> bool:
        return self.status in BLOCKED_STATUSES


class TenantOwned(TimestampedModel):
    """Base of every tenant-owned model: a UUID `id`, a non-null tenant FK (the Citus
    distribution column), `created_at` and `updated_at`. A subclass may redeclare `tenant` for
    its own related_name (or as a OneToOneField); it keeps the rest.

    Every unique constraint on a subclass must include `tenant` (tests/test_citus_readiness.py).
    The `tenant` column gets an index of its own only when no index or unique constraint of the
    model already starts with it (index_the_tenant_column_once, below).
    """

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="%(app_label)s_%(class)s_set", editable=False
    )

    class Meta:
        abstract = True


def tenant_column_led_by_an_index(model) -> bool:
    """Whether an index or unique constraint over all of `model`'s rows starts with its tenant
    column, so that it serves the lookups by tenant (a tenant's deletion, the tenant filter)."""
    meta = model._meta
    firsts = [index.fields[0] for index in meta.indexes if index.fields and not index.condition]
    for constraint in meta.constraints:
        if not isinstance(constraint, models.UniqueConstraint) or constraint.condition:
            continue
        if constraint.fields:
            firsts.append(constraint.fields[0])
        elif isinstance(constraint.expressions[0], models.F):
            # UniqueConstraint(F("tenant"), Lower("email")): the index starts with the column.
            firsts.append(constraint.expressions[0].name)
    firsts += [fields[0] for fields in meta.unique_together]
    return "tenant" in firsts or "tenant_id" in firsts


@receiver(class_prepared)
def index_the_tenant_column_once(sender, **kwargs):
    """A model's `tenant` foreign key gets no index of its own when one of the model's indexes
    or unique constraints already starts with it: that one serves the same lookups, and a second
    index on the column would only be one more write on every insert. Models rebuilt from
    migration files (module `__fake__`) are left as their files say."""
    if sender.__module__ == "__fake__":
        return
    field = next((f for f in sender._meta.local_fields if f.name == "tenant"), None)
    if (
        isinstance(field, models.ForeignKey)
        and not isinstance(field, models.OneToOneField)
        and field.remote_field.model in (Tenant, "tenants.Tenant")
        and field.db_index
        and tenant_column_led_by_an_index(sender)
    ):
        field.db_index = False


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


class MembershipQuerySet(models.QuerySet):
    def holding_seats(self, *, now=None):
        """The memberships that take one of the tenant's seats (`users`, maxUsers): active
        members, and pending invitations that have not expired (an invitation reserves the
        seat its invitee will take)."""
        live = Invitation.objects.filter(
            membership=models.OuterRef("pk"),
            status=InvitationStatus.PENDING,
            expires_at__gt=now or timezone.now(),
        )
        return self.filter(
            models.Q(status=MembershipStatus.ACTIVE)
            | (models.Q(status=MembershipStatus.INVITED) & models.Exists(live))
        )


class Membership(TenantOwned):
    """A user's place in a tenant: role, status and per-area permission overrides."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="memberships", editable=False
    )
    # Empty only while an invitation to a new address is pending (status `invited`).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="memberships",
        null=True,
        blank=True,
    )
    # The invited address (lowercase), kept after acceptance for the record.
    invited_email = models.EmailField(blank=True)
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

    objects = MembershipQuerySet.as_manager()

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "user"], name="tenants_membership_unique_user"
            ),
            # One pending invitation per address and tenant.
            models.UniqueConstraint(
                fields=["tenant", "invited_email"],
                condition=models.Q(status="invited") & ~models.Q(invited_email=""),
                name="tenants_membership_unique_invited_email",
            ),
        ]
        indexes = [models.Index(fields=["user", "status"], name="tenants_mem_user_status")]

    def __str__(self):
        return f"{self.user_id or self.invited_email} in {self.tenant_id} as {self.role}"

    @property
    def email(self) -> str:
        return self.user.email if self.user_id else self.invited_email


class InvitationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REVOKED = "revoked", "Revoked"


class Invitation(TenantOwned):
    """The single-use token that turns an `invited` membership into an active one.

    Only the SHA-256 digest of the token is stored; the token itself is in the emailed link.
    """

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="invitations", editable=False
    )
    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    token_digest = models.CharField(max_length=64, db_index=True)
    status = models.CharField(
        max_length=16, choices=InvitationStatus.choices, default=InvitationStatus.PENDING
    )
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "token_digest"], name="tenants_invitation_unique_token"
            ),
        ]

    def __str__(self):
        return f"invitation of {self.email} to {self.tenant_id} ({self.status})"


def _theme_logo_path(theme: "Theme", filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    return f"themes/{theme.tenant_id}/logo-{uuid.uuid4().hex[:12]}.{extension}"


class Theme(TenantOwned):
    """A tenant's branding (colours, logo, custom CSS), also shown as the organization's
    `branding`: one per tenant."""

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="theme", editable=False
    )
    name = models.CharField(max_length=100, default="Default", validators=[validate_name])
    primary_color = models.CharField(max_length=7, default="#2563eb")
    secondary_color = models.CharField(max_length=7, default="#64748b")
    accent_color = models.CharField(max_length=7, default="#f59e0b")
    # An external logo URL; an uploaded logo (below) takes precedence.
    logo_url = models.URLField(max_length=500, blank=True)
    logo = models.FileField(upload_to=_theme_logo_path, blank=True)
    custom_css = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)

    def __str__(self):
        return f"{self.name} ({self.tenant_id})"

    def logo_in_use(self, request=None) -> str:
        """The logo shown: the uploaded file's URL (absolute given the request), else logo_url."""
        if self.logo:
            return request.build_absolute_uri(self.logo.url) if request else self.logo.url
        return self.logo_url


class QuotaResource(models.TextChoices):
    """The quota resources: documents, users, AI tokens, storage and API calls. `users` is
    counted from the memberships, the others by the counters below."""

    DOCUMENTS = "documents", "Documents"
    USERS = "users", "Users"
    TOKENS = "tokens", "AI tokens"
    STORAGE = "storage", "Storage (bytes)"
    API_CALLS = "api_calls", "API calls"


COUNTED_QUOTA_RESOURCES = tuple(r for r in QuotaResource.values if r != QuotaResource.USERS)


class UsageRecord(TenantOwned):
    """What a tenant used in one ended quota period, kept when its counters restart
    (tenants.services.quotas): the usage history billing shows (billing/usage) and bills from.
    Periodic counters (tokens, api_calls) are the period's; stock levels (documents, storage)
    are what was held when it ended."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="usage_records", editable=False
    )
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    tokens = models.PositiveBigIntegerField(default=0)
    api_calls = models.PositiveBigIntegerField(default=0)
    documents = models.PositiveBigIntegerField(default=0)
    storage_bytes = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period_start"], name="usage_record_period")
        ]

    def __str__(self):
        return f"{self.tenant_id} {self.period_start:%Y-%m-%d}"


class QuotaCounter(TenantOwned):
    """How much of one resource a tenant has used; changed only by atomic conditional updates
    (tenants.services.quotas), never read-modify-write. Those updates set `updated_at`
    themselves (a queryset update skips auto_now)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="quota_counters", editable=False
    )
    resource = models.CharField(max_length=16, choices=QuotaResource.choices)
    used = models.BigIntegerField(default=0)
    # Set when this period's `quota.warning` was recorded; cleared by the reset.
    warned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["resource"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "resource"], name="tenants_quotacounter_unique_resource"
            ),
            models.CheckConstraint(
                condition=models.Q(used__gte=0), name="tenants_quotacounter_used_not_negative"
            ),
        ]

    def __str__(self):
        return f"{self.resource}={self.used} ({self.tenant_id})"


class IdempotencyKeyState(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"


def idempotency_key_cutoff(now=None):
    """Keys created at or before this moment have expired (IDEMPOTENCY_KEY_TTL_HOURS)."""
    return (now or timezone.now()) - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)


class IdempotencyKeyQuerySet(models.QuerySet):
    def expired(self, *, now=None):
        """Keys past their time to live: they count as never sent, and pruning deletes them."""
        return self.filter(created_at__lte=idempotency_key_cutoff(now))


class IdempotencyKey(TenantOwned):
    """One `Idempotency-Key` a caller sent to a money-moving POST, with the answer it got
    (tenants.idempotency). Scoped to the tenant and the caller, never visible to another."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="idempotency_keys", editable=False
    )
    # `user:<uuid>` or `api_key:<uuid>`: who sent the key within the tenant.
    caller = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    # SHA-256 (hex) of the method, the path and the canonical (RFC 8785) body.
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(
        max_length=16, choices=IdempotencyKeyState.choices, default=IdempotencyKeyState.RUNNING
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    # The lease of a running request: once it has passed, the claim of a request that died
    # may be taken over. Each holder of the lease has its own token, so a request that
    # outlived its lease cannot store its answer over the one that took it over.
    locked_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True, editable=False)

    objects = IdempotencyKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "caller", "key"], name="tenants_idempotencykey_unique_key"
            ),
        ]
        # Pruning deletes by age.
        indexes = [models.Index(fields=["created_at"], name="tenants_idem_created_at")]

    def __str__(self):
        return f"{self.key} by {self.caller} in {self.tenant_id} ({self.state})"

    def is_expired(self, now=None) -> bool:
        return self.created_at <= idempotency_key_cutoff(now)
