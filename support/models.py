"""Models of the support app (the support desk): the organization's own end customers, its
representatives, the SLA policies its tickets are held to, the tickets with their comments,
attachments and SLA pauses, and escalations.

A tenant's data builds on `tenants.models.TenantOwned` (UUID `id`, `tenant`, `created_at`,
`updated_at`), anything outside a tenant on `config.models.TimestampedModel`. Every unique
constraint of a tenant-owned model includes `tenant` (tests/test_citus_readiness.py). Models
hold fields, constraints and read-only properties; their state changes are the services', and
each model's factory lives in tests/support/factories.py.
"""

import uuid
from datetime import datetime

from django.conf import settings
from django.core.files.storage import storages
from django.db import models
from django.db.models.functions import Lower

from config.models import creator_field
from tenants.models import Tenant, TenantOwned

# Customer profiles -------------------------------------------------------------------------------


class CustomerTier(models.TextChoices):
    FREE = "FREE", "Free"
    STARTER = "STARTER", "Starter"
    PRO = "PRO", "Pro"
    ENTERPRISE = "ENTERPRISE", "Enterprise"


class CustomerStanding(models.TextChoices):
    GOOD = "GOOD", "Good"
    WARNING = "WARNING", "Warning"
    SUSPENDED = "SUSPENDED", "Suspended"
    CLOSED = "CLOSED", "Closed"


class BillingCycle(models.TextChoices):
    MONTHLY = "MONTHLY", "Monthly"
    QUARTERLY = "QUARTERLY", "Quarterly"
    YEARLY = "YEARLY", "Yearly"


class CustomerProfile(TenantOwned):
    """One of the organization's own end customers (not a member): who they are, what they
    pay and use, and the context its support team sees beside their tickets."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="customer_profiles", editable=False
    )
    name = models.CharField(max_length=200)
    # Unique in the organization whatever its case (stored as given).
    email = models.EmailField(max_length=254)
    tier = models.CharField(max_length=16, choices=CustomerTier.choices, default=CustomerTier.FREE)
    standing = models.CharField(
        max_length=16, choices=CustomerStanding.choices, default=CustomerStanding.GOOD
    )
    lifetime_value_cents = models.PositiveBigIntegerField(default=0)
    # What its completed refunds gave back, in total: kept by the refund services.
    lifetime_refunds_cents = models.PositiveBigIntegerField(default=0, editable=False)
    currency = models.CharField(max_length=3, default="USD")
    token_balance = models.PositiveBigIntegerField(default=0)
    token_limit = models.PositiveBigIntegerField(default=0)
    active_sites = models.PositiveIntegerField(default=0)
    sites_limit = models.PositiveIntegerField(default=0)
    billing_cycle = models.CharField(
        max_length=16, choices=BillingCycle.choices, default=BillingCycle.MONTHLY
    )
    # What the support team sees of the customer's setup ({"browser": ..., "os": ...}): a JSON
    # object of at most CONTEXT_MAX_BYTES.
    context = models.JSONField(default=dict, blank=True)
    # The customer's id in the organization's own systems; unique in it when given.
    external_id = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name", "id"]
        # The list's pages walk it in their order (as Ticket's).
        indexes = [models.Index(fields=["tenant", "name", "id"], name="customer_profile_name")]
        constraints = [
            models.UniqueConstraint(
                models.F("tenant"), Lower("email"), name="customer_profile_email"
            ),
            models.UniqueConstraint(
                fields=["tenant", "external_id"],
                condition=~models.Q(external_id=""),
                name="customer_profile_external_id",
            ),
        ]

    def __str__(self):
        return f"{self.name} <{self.email}>"


# Representatives ---------------------------------------------------------------------------------


class RepresentativeRole(models.TextChoices):
    JUNIOR_SUPPORT = "JUNIOR_SUPPORT", "Junior support"
    SENIOR_SUPPORT = "SENIOR_SUPPORT", "Senior support"
    TEAM_LEAD = "TEAM_LEAD", "Team lead"
    ADMIN = "ADMIN", "Admin"


class RepresentativeStatus(models.TextChoices):
    ONLINE = "ONLINE", "Online"
    AWAY = "AWAY", "Away"
    OFFLINE = "OFFLINE", "Offline"


# Setting a representative to one of these (creation included) stamps last_active_at.
ACTIVE_STATUSES = (RepresentativeStatus.ONLINE, RepresentativeStatus.AWAY)


class Representative(TenantOwned):
    """A member of the organization who answers its customers: their support role, presence
    and capacity (the tickets they may hold at once)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="representatives", editable=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="representatives"
    )
    role = models.CharField(
        max_length=16, choices=RepresentativeRole.choices, default=RepresentativeRole.JUNIOR_SUPPORT
    )
    status = models.CharField(
        max_length=16, choices=RepresentativeStatus.choices, default=RepresentativeStatus.OFFLINE
    )
    last_active_at = models.DateTimeField(null=True, blank=True, editable=False)
    max_chats = models.PositiveSmallIntegerField(default=10)
    # The open tickets assigned to them: kept by the ticket services in the transaction that
    # assigns or releases a ticket, never written from a request.
    active_chats = models.PositiveSmallIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="representative_user"),
            models.CheckConstraint(
                condition=models.Q(max_chats__gte=1), name="representative_capacity"
            ),
        ]

    def __str__(self):
        return f"{self.user} ({self.get_role_display()})"

    @property
    def free_capacity(self) -> int:
        return max(self.max_chats - self.active_chats, 0)


# SLA policies -------------------------------------------------------------------------------------


class TicketPriority(models.TextChoices):
    LOW = "LOW", "Low"
    NORMAL = "NORMAL", "Normal"
    HIGH = "HIGH", "High"
    URGENT = "URGENT", "Urgent"


class SlaPolicy(TenantOwned):
    """The targets a ticket of one priority is held to: the first public reply within
    `first_response_minutes`, the resolution within `resolution_minutes`, counted in business
    hours when the policy has them, else around the clock."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="sla_policies", editable=False
    )
    name = models.CharField(max_length=200)
    priority = models.CharField(max_length=16, choices=TicketPriority.choices)
    first_response_minutes = models.PositiveIntegerField()
    resolution_minutes = models.PositiveIntegerField()
    # {"weekdays": [0, 1, 2, 3, 4] (Monday is 0), "start": "09:00", "end": "17:00",
    #  "time_zone": "Europe/Paris"}, or null for around the clock.
    business_hours = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["priority", "id"]
        verbose_name = "SLA policy"
        verbose_name_plural = "SLA policies"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "priority"], name="sla_policy_priority"),
            models.CheckConstraint(
                condition=models.Q(first_response_minutes__gte=1)
                & models.Q(resolution_minutes__gte=models.F("first_response_minutes")),
                name="sla_policy_targets",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.priority})"


class SlaTarget(models.TextChoices):
    FIRST_RESPONSE = "first_response", "First response"
    RESOLUTION = "resolution", "Resolution"


class SlaStatus(models.TextChoices):
    """Where a ticket stands against its SLA (computed, never stored)."""

    OK = "ok", "On track"
    AT_RISK = "at_risk", "At risk"
    BREACHED = "breached", "Breached"
    PAUSED = "paused", "Paused (waiting on the customer)"
    MET = "met", "Met"


# A running target is at risk when less than this share of its minutes is left before it is due.
AT_RISK_FRACTION = 0.25


# Tickets ------------------------------------------------------------------------------------------


class TicketStatus(models.TextChoices):
    OPEN = "OPEN", "Open"
    IN_PROGRESS = "IN_PROGRESS", "In progress"
    WAITING = "WAITING", "Waiting on the customer"
    RESOLVED = "RESOLVED", "Resolved"
    CLOSED = "CLOSED", "Closed"


# Not yet resolved: these hold their assignee's capacity (active_chats).
OPEN_TICKET_STATUSES = (TicketStatus.OPEN, TicketStatus.IN_PROGRESS, TicketStatus.WAITING)
# The legal moves: the open statuses move among themselves or resolve; a resolved ticket is
# closed or reopened (to OPEN or IN_PROGRESS, recorded); CLOSED is final.
TICKET_TRANSITIONS: dict[str, frozenset[str]] = {
    TicketStatus.OPEN: frozenset(
        {TicketStatus.IN_PROGRESS, TicketStatus.WAITING, TicketStatus.RESOLVED}
    ),
    TicketStatus.IN_PROGRESS: frozenset(
        {TicketStatus.OPEN, TicketStatus.WAITING, TicketStatus.RESOLVED}
    ),
    TicketStatus.WAITING: frozenset(
        {TicketStatus.OPEN, TicketStatus.IN_PROGRESS, TicketStatus.RESOLVED}
    ),
    TicketStatus.RESOLVED: frozenset(
        {TicketStatus.CLOSED, TicketStatus.OPEN, TicketStatus.IN_PROGRESS}
    ),
    TicketStatus.CLOSED: frozenset(),
}


class TicketCategory(models.TextChoices):
    TECHNICAL_ISSUE = "TECHNICAL_ISSUE", "Technical issue"
    BILLING_PAYMENT = "BILLING_PAYMENT", "Billing and payment"
    ACCOUNT = "ACCOUNT", "Account"
    FEATURE_REQUEST = "FEATURE_REQUEST", "Feature request"
    OTHER = "OTHER", "Other"


# Ticket numbers start here: TICKET-1001 is an organization's first.
FIRST_TICKET_NUMBER = 1001


class TicketSequence(TenantOwned):
    """The organization's last ticket number, allocated under this row's lock in the creating
    transaction: numbers are gapless (a rolled-back creation takes none) and never collide."""

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="+", editable=False
    )
    last_number = models.PositiveBigIntegerField(default=FIRST_TICKET_NUMBER - 1)

    def __str__(self):
        return f"{self.tenant_id}: {self.last_number}"


class Ticket(TenantOwned):
    """A customer's request to the desk: numbered, prioritised, assigned within capacity, moved
    along its legal statuses."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="tickets", editable=False
    )
    number = models.PositiveBigIntegerField(editable=False)
    subject = models.CharField(max_length=300)
    description = models.TextField(blank=True, max_length=20_000)
    status = models.CharField(
        max_length=16, choices=TicketStatus.choices, default=TicketStatus.OPEN
    )
    priority = models.CharField(
        max_length=16, choices=TicketPriority.choices, default=TicketPriority.NORMAL
    )
    category = models.CharField(
        max_length=20, choices=TicketCategory.choices, default=TicketCategory.OTHER
    )
    customer = models.ForeignKey(
        # RESTRICT, not PROTECT: a customer with tickets is not deleted on its own (the service
        # answers 409), but the organization's deletion removes both.
        CustomerProfile,
        on_delete=models.RESTRICT,
        related_name="tickets",
        null=True,
        blank=True,
    )
    # Holds one of the representative's max_chats while the ticket is open.
    assignee = models.ForeignKey(
        Representative,
        on_delete=models.SET_NULL,
        related_name="tickets",
        null=True,
        blank=True,
        editable=False,
    )
    conversation_id = models.UUIDField(null=True, blank=True)
    ai_handled = models.BooleanField(default=False)
    # The customer's mood as an AI read it: -1 (negative) to 1 (positive).
    sentiment = models.DecimalField(max_digits=3, decimal_places=2, null=True, blank=True)
    # 1 to 5, given once the ticket is resolved.
    customer_satisfaction_score = models.PositiveSmallIntegerField(null=True, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)
    reopened_count = models.PositiveSmallIntegerField(default=0, editable=False)
    created_by = creator_field()
    # SLA (support.services.sla_clock): the policy of the ticket's priority when it was
    # created or re-prioritised, and its terms as they were then (a later policy change
    # applies to later tickets): {"first_response_minutes", "resolution_minutes",
    # "business_hours"}. Null when the organization has no policy for the priority.
    sla_policy = models.ForeignKey(
        SlaPolicy,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tickets",
        editable=False,
    )
    sla_terms = models.JSONField(null=True, blank=True, editable=False)
    first_response_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    resolution_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When each running target turns at risk: a quarter of its minutes (AT_RISK_FRACTION,
    # wall-clock) before it is due.
    first_response_risk_at = models.DateTimeField(null=True, blank=True, editable=False)
    resolution_risk_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The first public comment of a representative: it stops the first-response clock.
    first_responded_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set while the clocks are paused (the ticket is WAITING on the customer).
    sla_paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set once, when a target was first missed; `sla_breach` names which.
    sla_breached_at = models.DateTimeField(null=True, blank=True, editable=False)
    sla_breach = models.CharField(
        max_length=16, choices=SlaTarget.choices, blank=True, editable=False
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The list's pages walk these in their order: the newest first, or by status, where
            # config.pagination.in_total_order breaks ties in the model's order (so the second
            # also serves a filter on a status, newest first).
            models.Index(fields=["tenant", "-created_at", "-id"], name="ticket_created"),
            models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="ticket_status_time"
            ),
            models.Index(fields=["tenant", "assignee", "status"], name="ticket_assignee"),
            # The analytics roll-up job reads the tickets changed since its last run, every
            # minute and across organizations (analytics.streams).
            models.Index(fields=["updated_at"], name="ticket_updated"),
            # The breach sweep reads unbreached tickets by due time, across organizations.
            models.Index(
                fields=["resolution_due_at"],
                condition=models.Q(sla_breached_at__isnull=True),
                name="ticket_sla_resolution_due",
            ),
            models.Index(
                fields=["first_response_due_at"],
                condition=models.Q(sla_breached_at__isnull=True, first_responded_at__isnull=True),
                name="ticket_sla_response_due",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "number"], name="ticket_number"),
            models.CheckConstraint(
                condition=models.Q(sentiment__isnull=True)
                | models.Q(sentiment__gte=-1, sentiment__lte=1),
                name="ticket_sentiment_range",
            ),
            models.CheckConstraint(
                condition=models.Q(customer_satisfaction_score__isnull=True)
                | models.Q(customer_satisfaction_score__gte=1, customer_satisfaction_score__lte=5),
                name="ticket_csat_range",
            ),
        ]

    def __str__(self):
        return f"{self.ticket_number}: {self.subject}"

    @property
    def ticket_number(self) -> str:
        return f"TICKET-{self.number}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_TICKET_STATUSES

    def pending_targets(self) -> list[tuple[datetime, datetime | None]]:
        """The SLA targets still running: (due, at risk from) each."""
        if not self.is_open:
            return []
        pending = []
        if self.first_responded_at is None and self.first_response_due_at is not None:
            pending.append((self.first_response_due_at, self.first_response_risk_at))
        if self.resolution_due_at is not None:
            pending.append((self.resolution_due_at, self.resolution_risk_at))
        return pending

    def sla_status_at(self, now: datetime) -> str | None:
        """ok, at_risk, breached, paused or met (see SlaStatus); None without a policy. The
        same rule in SQL: support.selectors.sla_status_q."""
        if not self.sla_terms:
            return None
        if self.sla_breached_at is not None:
            return SlaStatus.BREACHED
        if not self.is_open:
            return SlaStatus.MET
        if self.status == TicketStatus.WAITING:
            return SlaStatus.PAUSED
        status = SlaStatus.OK
        for due, risk in self.pending_targets():
            if due <= now:
                return SlaStatus.BREACHED
            if risk is not None and risk <= now:
                status = SlaStatus.AT_RISK
        return status


class SlaPauseReason(models.TextChoices):
    WAITING = "waiting", "Waiting on the customer"
    RESOLVED = "resolved", "Resolved, then reopened"


class TicketSlaPause(TenantOwned):
    """A stretch of time the ticket's SLA clocks did not run: while it waited on the customer,
    or between its resolution and its reopening. `ended_at` is null while it lasts."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    ticket = models.ForeignKey(
        Ticket, on_delete=models.CASCADE, related_name="sla_pauses", editable=False
    )
    reason = models.CharField(max_length=16, choices=SlaPauseReason.choices, editable=False)
    started_at = models.DateTimeField(editable=False)
    ended_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["started_at", "id"]
        verbose_name = "SLA pause"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ended_at__isnull=True)
                | models.Q(ended_at__gte=models.F("started_at")),
                name="ticket_sla_pause_order",
            ),
        ]

    def __str__(self):
        return f"{self.ticket_id}: {self.started_at} - {self.ended_at or '...'}"


# Comments and attachments -------------------------------------------------------------------------


class TicketComment(TenantOwned):
    """A reply on a ticket: public (the customer sees it) or internal (the team's note)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    ticket = models.ForeignKey(
        Ticket, on_delete=models.CASCADE, related_name="comments", editable=False
    )
    comment = models.TextField(max_length=20_000)
    is_internal = models.BooleanField(default=False)
    author = creator_field()
    # The author's representative record when they wrote it as one (else null).
    representative = models.ForeignKey(
        Representative,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="comments",
        editable=False,
    )

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.ticket_id}: {self.comment[:40]}"


def _attachment_storage():
    return storages["attachments"]


def _attachment_path(attachment, filename: str) -> str:
    # Never the uploaded name: the stored path is ids only, so no name can reach another
    # folder or overwrite a file.
    return f"support/{attachment.tenant_id}/{attachment.ticket_id}/{uuid.uuid4().hex}"


class TicketAttachment(TenantOwned):
    """A file on a ticket, in STORAGES["attachments"] (private: downloaded through the API
    only, as an attachment), counted against the organization's `storage` quota while it
    exists. Its type is what its content is, from an allow-list (support.attachments)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    ticket = models.ForeignKey(
        Ticket, on_delete=models.CASCADE, related_name="attachments", editable=False
    )
    # The uploaded name, cleaned (no folders, no control characters): for display and
    # the download's filename only.
    name = models.CharField(max_length=200, editable=False)
    content_type = models.CharField(max_length=100, editable=False)
    size_bytes = models.PositiveBigIntegerField(editable=False)
    sha256 = models.CharField(max_length=64, editable=False)
    file = models.FileField(
        upload_to=_attachment_path, max_length=300, storage=_attachment_storage, editable=False
    )
    uploaded_by = creator_field()

    class Meta:
        ordering = ["created_at", "id"]
        # The list's pages walk it in their order (as Ticket's).
        indexes = [models.Index(fields=["tenant", "created_at", "id"], name="attachment_created")]

    def __str__(self):
        return self.name


# Escalations --------------------------------------------------------------------------------------


class EscalationReason(models.TextChoices):
    AI_UNABLE_TO_RESOLVE = "AI_UNABLE_TO_RESOLVE", "The AI could not resolve it"
    CUSTOMER_REQUEST = "CUSTOMER_REQUEST", "The customer asked for a person"
    SLA_BREACH = "SLA_BREACH", "SLA breached"
    NEGATIVE_SENTIMENT = "NEGATIVE_SENTIMENT", "Negative sentiment"
    OTHER = "OTHER", "Other"


class EscalationPriority(models.TextChoices):
    LOW = "LOW", "Low"
    NORMAL = "NORMAL", "Normal"
    HIGH = "HIGH", "High"
    URGENT = "URGENT", "Urgent"
    CRITICAL = "CRITICAL", "Critical"


class EscalationStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    ASSIGNED = "ASSIGNED", "Assigned"
    IN_PROGRESS = "IN_PROGRESS", "In progress"
    RESOLVED = "RESOLVED", "Resolved"


# Forward moves only: an escalation is taken, worked and resolved; RESOLVED is final.
ESCALATION_TRANSITIONS: dict[str, frozenset[str]] = {
    EscalationStatus.PENDING: frozenset(
        {EscalationStatus.ASSIGNED, EscalationStatus.IN_PROGRESS, EscalationStatus.RESOLVED}
    ),
    EscalationStatus.ASSIGNED: frozenset({EscalationStatus.IN_PROGRESS, EscalationStatus.RESOLVED}),
    EscalationStatus.IN_PROGRESS: frozenset({EscalationStatus.RESOLVED}),
    EscalationStatus.RESOLVED: frozenset(),
}


class Escalation(TenantOwned):
    """A conversation or ticket handed to a person: why, how urgent, who took it and when.
    `wait_time` is the seconds it waited for someone (computed)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="escalations", editable=False
    )
    conversation_id = models.UUIDField(null=True, blank=True)
    customer = models.ForeignKey(
        CustomerProfile,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="escalations",
    )
    ticket = models.ForeignKey(
        Ticket, on_delete=models.SET_NULL, null=True, blank=True, related_name="escalations"
    )
    reason = models.CharField(max_length=24, choices=EscalationReason.choices)
    issue_description = models.TextField(max_length=20_000)
    priority = models.CharField(
        max_length=16, choices=EscalationPriority.choices, default=EscalationPriority.NORMAL
    )
    status = models.CharField(
        max_length=16, choices=EscalationStatus.choices, default=EscalationStatus.PENDING
    )
    ai_summary = models.TextField(max_length=20_000, blank=True)
    assignee = models.ForeignKey(
        Representative,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="escalations",
        editable=False,
    )
    assigned_at = models.DateTimeField(null=True, blank=True, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = creator_field()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The list's pages walk these in their order (as Ticket's).
            models.Index(fields=["tenant", "-created_at", "-id"], name="escalation_created"),
            models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="escalation_status_time"
            ),
            # Read by the analytics roll-up job as tickets are (Ticket.Meta).
            models.Index(fields=["updated_at"], name="escalation_updated"),
        ]

    def __str__(self):
        return f"{self.get_reason_display()} ({self.priority})"

    def wait_time_at(self, now: datetime) -> int:
        """Seconds from creation until someone took it (assigned or worked), or until now."""
        taken = self.assigned_at or self.resolved_at or now
        return max(int((taken - self.created_at).total_seconds()), 0)


# Automation: AI agents and decision rules ---------------------------------------------------------


class AgentType(models.TextChoices):
    RESPONSE_RECOMMENDATION = "RESPONSE_RECOMMENDATION", "Response recommendation"
    CUSTOMER_SPEND = "CUSTOMER_SPEND", "Customer spend"
    SENTIMENT_ANALYSIS = "SENTIMENT_ANALYSIS", "Sentiment analysis"
    TICKET_ROUTING = "TICKET_ROUTING", "Ticket routing"
    CUSTOM = "CUSTOM", "Custom"


class AgentStatus(models.TextChoices):
    ACTIVE = "ACTIVE", "Active"
    PAUSED = "PAUSED", "Paused"
    DISABLED = "DISABLED", "Disabled"


class AiAgent(TenantOwned):
    """An AI agent the desk runs (its configuration: model, data sources, thresholds), with
    its track record counted from the outcomes recorded against it (AgentAssertion), never
    typed in."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="ai_agents", editable=False
    )
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=32, choices=AgentType.choices)
    description = models.TextField(blank=True, max_length=2_000)
    enabled = models.BooleanField(default=True)
    status = models.CharField(
        max_length=16, choices=AgentStatus.choices, default=AgentStatus.ACTIVE
    )
    # The gateway catalogue's public model name (playground.LanguageModel.name).
    model = models.CharField(max_length=100)
    # ["Conversation History", "Customer Profile"]: names, at most 20.
    data_sources = models.JSONField(default=list, blank=True)
    # {"confidence": 0.85, "max_tokens": 500}.
    thresholds = models.JSONField(default=dict, blank=True)
    # The record, kept by support.services.agents.agent_assertion_record (atomic increments).
    assertions_count = models.PositiveIntegerField(default=0, editable=False)
    correct_count = models.PositiveIntegerField(default=0, editable=False)
    latency_ms_total = models.PositiveBigIntegerField(default=0, editable=False)
    created_by = creator_field()

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "AI agent"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="ai_agent_name"),
        ]

    def __str__(self):
        return self.name

    @property
    def accuracy(self) -> float | None:
        """Percent of the recorded outcomes that were correct; None before the first."""
        if not self.assertions_count:
            return None
        return round(100 * self.correct_count / self.assertions_count, 2)

    @property
    def avg_latency(self) -> int | None:
        """Average latency of the recorded outcomes, in milliseconds."""
        if not self.assertions_count:
            return None
        return round(self.latency_ms_total / self.assertions_count)


class AgentAssertion(TenantOwned):
    """One outcome of an agent: whether its answer was right, and how long it took."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    agent = models.ForeignKey(
        AiAgent, on_delete=models.CASCADE, related_name="assertions", editable=False
    )
    correct = models.BooleanField()
    latency_ms = models.PositiveIntegerField()
    ticket = models.ForeignKey(
        Ticket, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class DecisionRule(TenantOwned):
    """A rule of the desk's automation: when all `conditions` hold (support.rules), take
    `action` with `action_params`. Enabled rules are tried by `priority`, the lowest first;
    two enabled rules never share one."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="decision_rules", editable=False
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=2_000)
    enabled = models.BooleanField(default=False)
    priority = models.PositiveIntegerField()
    conditions = models.JSONField(default=list, blank=True)
    action = models.CharField(max_length=24)
    action_params = models.JSONField(default=dict, blank=True)
    created_by = creator_field()

    class Meta:
        ordering = ["priority", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "priority"],
                condition=models.Q(enabled=True),
                name="decision_rule_enabled_priority",
            ),
        ]

    def __str__(self):
        return f"{self.priority}: {self.name}"


class RuleApplication(TenantOwned):
    """A decision rule applied automatically (the organization's `support_apply_rules`
    setting) to a ticket or to a refund: which rule, what it did, and the outcome."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Applied"
        SKIPPED = "skipped", "Skipped"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    ticket = models.ForeignKey(
        Ticket,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="rule_applications",
        editable=False,
    )
    refund = models.ForeignKey(
        "Refund",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="rule_applications",
        editable=False,
    )
    rule = models.ForeignKey(
        DecisionRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    rule_name = models.CharField(max_length=200)
    action = models.CharField(max_length=24)
    action_params = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # Applied to exactly one subject: a ticket or a refund.
            models.CheckConstraint(
                condition=models.Q(ticket__isnull=False, refund__isnull=True)
                | models.Q(ticket__isnull=True, refund__isnull=False),
                name="rule_application_one_subject",
            ),
        ]

    def __str__(self):
        return f"{self.rule_name} -> {self.action} ({self.outcome})"


# Budgets and refunds ---------------------------------------------------------------------------


class BudgetType(models.TextChoices):
    REFUND = "REFUND", "Refund"
    COMPENSATION = "COMPENSATION", "Compensation"
    DISCOUNT = "DISCOUNT", "Discount"
    CREDIT = "CREDIT", "Credit"


class BudgetPeriod(models.TextChoices):
    MONTHLY = "MONTHLY", "Monthly"
    QUARTERLY = "QUARTERLY", "Quarterly"
    YEARLY = "YEARLY", "Yearly"


PERIOD_MONTHS = {BudgetPeriod.MONTHLY: 1, BudgetPeriod.QUARTERLY: 3, BudgetPeriod.YEARLY: 12}


class Budget(TenantOwned):
    """What the organization lets its support team give back to its customers in a period:
    refunds, compensation, discounts or credit, in one currency. One budget per type and
    currency; it rolls into its next period by itself (support.services.budgets), and each
    amount drawn from it is a BudgetUsageRecord."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="budgets", editable=False
    )
    type = models.CharField(max_length=16, choices=BudgetType.choices)
    period = models.CharField(max_length=16, choices=BudgetPeriod.choices)
    limit_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3, default="USD")
    # Drawn in the current period: kept by the draw (under the budget's row lock) and reset by
    # the roll, never written from a request.
    spent_cents = models.PositiveBigIntegerField(default=0, editable=False)
    # [{"percentage": 80, "enabled": true}, ...]: each reached once per period.
    alert_thresholds = models.JSONField(default=list, blank=True)
    # The percentages already alerted in the current period (reset by the roll).
    alerted_percentages = models.JSONField(default=list, blank=True, editable=False)
    # At most this much to one customer in a period; null: no per-customer limit.
    refund_limit_per_customer_cents = models.PositiveBigIntegerField(null=True, blank=True)
    # The current period, [period_start, period_end): period_end is the next period's start.
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    created_by = creator_field()

    class Meta:
        ordering = ["type", "currency", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "type", "currency"], name="budget_type_currency"
            ),
            models.CheckConstraint(
                condition=models.Q(period_end__gt=models.F("period_start")),
                name="budget_period_order",
            ),
        ]

    def __str__(self):
        return f"{self.get_type_display()} budget ({self.currency}, {self.get_period_display()})"

    @property
    def remaining_cents(self) -> int:
        return max(self.limit_cents - self.spent_cents, 0)


class BudgetUsageRecord(TenantOwned):
    """One amount drawn from a budget in one of its periods: a refund approved, or a
    compensation, discount or credit given."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    budget = models.ForeignKey(
        Budget, on_delete=models.CASCADE, related_name="usage_records", editable=False
    )
    # The start of the budget period it counts in.
    period_start = models.DateTimeField(editable=False)
    amount_cents = models.PositiveBigIntegerField()
    customer = models.ForeignKey(
        CustomerProfile,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="budget_usage_records",
    )
    # The refund whose approval drew it (one record per refund: it is approved once).
    refund = models.ForeignKey(
        "Refund", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    description = models.CharField(max_length=500, blank=True)
    created_by = creator_field()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["budget", "period_start", "customer"], name="budget_usage_period_customer"
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount_cents__gt=0), name="budget_usage_positive"
            ),
            models.UniqueConstraint(
                fields=["tenant", "refund"],
                condition=models.Q(refund__isnull=False),
                name="budget_usage_one_per_refund",
            ),
        ]

    def __str__(self):
        return f"{self.amount_cents} from {self.budget}"


class RefundReason(models.TextChoices):
    AI_BUG = "AI_BUG", "AI bug"
    SERVICE_DOWNTIME = "SERVICE_DOWNTIME", "Service downtime"
    UX_ISSUE = "UX_ISSUE", "UX issue"
    BILLING_ERROR = "BILLING_ERROR", "Billing error"
    OTHER = "OTHER", "Other"


class RefundStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    APPROVED = "APPROVED", "Approved"
    REJECTED = "REJECTED", "Rejected"
    COMPLETED = "COMPLETED", "Completed"


class Refund(TenantOwned):
    """Money the organization gives back to one of its customers for an order: requested,
    then approved (drawn from the refund budget) or rejected, and completed once paid out. A
    record of money: never deleted."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="refunds", editable=False
    )
    order_id = models.CharField(max_length=100)
    # RESTRICT: a customer with refunds is not deleted alone (the service answers 409), but
    # goes with its whole organization.
    customer = models.ForeignKey(CustomerProfile, on_delete=models.RESTRICT, related_name="refunds")
    amount_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=24, choices=RefundReason.choices)
    notes = models.TextField(blank=True, max_length=5_000)
    ticket = models.ForeignKey(
        Ticket, on_delete=models.SET_NULL, null=True, blank=True, related_name="refunds"
    )
    status = models.CharField(
        max_length=16, choices=RefundStatus.choices, default=RefundStatus.PENDING
    )
    # Set by the moves: approval or rejection, then completion.
    processed_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    # The decision rule that approved or rejected it, when one did.
    decided_by_rule = models.ForeignKey(
        DecisionRule,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    rejection_reason = models.CharField(max_length=500, blank=True, editable=False)
    # The budget it was drawn from when approved (none when no budget covered it).
    budget = models.ForeignKey(
        Budget, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_by = creator_field()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount_cents__gt=0), name="refund_amount_positive"
            ),
        ]
        indexes = [
            # The list's pages walk these in their order (as Ticket's).
            models.Index(fields=["tenant", "-created_at", "-id"], name="refund_created"),
            models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="refund_status_time"
            ),
        ]

    def __str__(self):
        return f"Refund {self.amount_cents} {self.currency} for order {self.order_id}"
