"""Models of the security app: incidents and their timelines (personal data breaches included),
compliance audits with their findings, and the register of processing activities (GDPR Art. 30).

A tenant's data builds on `tenants.models.TenantOwned` (UUID `id`, `tenant`, `created_at`,
`updated_at`), anything outside a tenant on `config.models.TimestampedModel`. Every unique
constraint of a tenant-owned model includes `tenant` (tests/test_citus_readiness.py). Models
hold fields, constraints and read-only properties; their state changes are the services', and
each model's factory lives in tests/security/factories.py.
"""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from config.models import creator_field
from tenants.models import Tenant, TenantOwned

# GDPR Art. 33(1): the supervisory authority is notified "not later than 72 hours after having
# become aware" of a personal data breach. The law's figure, not a setting.
BREACH_NOTIFICATION_WINDOW = timedelta(hours=72)
# The deadline's first reminder goes out this long before it.
BREACH_REMINDER_LEAD = timedelta(hours=24)


# Incidents --------------------------------------------------------------------------------------


class Severity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


# Severities in increasing order, for sorting and for the dashboard's risk level.
SEVERITY_RANK = {Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class IncidentCategory(models.TextChoices):
    DATA_BREACH = "data_breach", "Data breach"
    UNAUTHORIZED_ACCESS = "unauthorized_access", "Unauthorized access"
    PII_EXPOSURE = "pii_exposure", "PII exposure"
    SYSTEM_COMPROMISE = "system_compromise", "System compromise"
    OTHER = "other", "Other"


class IncidentStatus(models.TextChoices):
    OPEN = "open", "Open"
    INVESTIGATING = "investigating", "Investigating"
    RESOLVED = "resolved", "Resolved"
    CLOSED = "closed", "Closed"


# The legal moves. Open and investigating go back and forth; resolving needs resolution notes;
# a resolved incident is closed or reopened (to open or investigating); closed is final.
INCIDENT_TRANSITIONS: dict[str, frozenset[str]] = {
    IncidentStatus.OPEN: frozenset({IncidentStatus.INVESTIGATING, IncidentStatus.RESOLVED}),
    IncidentStatus.INVESTIGATING: frozenset({IncidentStatus.OPEN, IncidentStatus.RESOLVED}),
    IncidentStatus.RESOLVED: frozenset(
        {IncidentStatus.CLOSED, IncidentStatus.OPEN, IncidentStatus.INVESTIGATING}
    ),
    IncidentStatus.CLOSED: frozenset(),
}
# Not yet resolved: what the dashboard's risk level and the "unassigned" rule look at.
UNRESOLVED_STATUSES = (IncidentStatus.OPEN, IncidentStatus.INVESTIGATING)


class RaisedBy(models.TextChoices):
    MEMBER = "member", "A member"
    AUDIT_CHAIN = "audit_chain", "Audit chain verification"
    LOGIN_LOCKOUTS = "login_lockouts", "Burst of locked-out logins"


class IncidentQuerySet(models.QuerySet):
    def notification_overdue(self, *, now=None):
        """Personal data breaches whose authority deadline passed without a notification."""
        return self.filter(
            personal_data_breach=True,
            authority_notified_at__isnull=True,
            authority_notification_due_at__lte=now or timezone.now(),
        )

    def notification_due_within(self, lead: timedelta, *, now=None):
        """Personal data breaches not yet notified whose deadline falls within `lead` (not yet
        passed)."""
        now = now or timezone.now()
        return self.filter(
            personal_data_breach=True,
            authority_notified_at__isnull=True,
            authority_notification_due_at__gt=now,
            authority_notification_due_at__lte=now + lead,
        )


class Incident(TenantOwned):
    """A security incident of the tenant: what happened, how bad, who handles it, and (for a
    personal data breach) the 72-hour clock of the authority's notification."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="security_incidents", editable=False
    )
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=10_000)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    category = models.CharField(max_length=32, choices=IncidentCategory.choices)
    status = models.CharField(
        max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.OPEN
    )
    affected_users = models.PositiveIntegerField(default=0)
    affected_documents = models.PositiveIntegerField(default=0)
    # Short labels ("email", "payment_data"): a JSON list of strings.
    data_types_affected = models.JSONField(default=list, blank=True)
    # An active member of the tenant when assigned; kept (as null) if their account goes.
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    resolution_notes = models.TextField(blank=True, max_length=10_000)
    # When the tenant became aware of it: the 72-hour clock of a breach starts here.
    detected_at = models.DateTimeField()
    # Set by the transitions: resolving sets resolved_at (reopening clears it), closing closed_at.
    resolved_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    # GDPR Art. 33/34. The due time is detected_at + 72 h while personal_data_breach is set.
    personal_data_breach = models.BooleanField(default=False)
    authority_notification_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    authority_notified_at = models.DateTimeField(null=True, blank=True)
    authority_reference = models.CharField(max_length=200, blank=True)
    subjects_notified_at = models.DateTimeField(null=True, blank=True)
    # When the beat job sent the deadline's reminders (24 h before, and once it passed): each
    # is claimed by a conditional update, so a doubled beat sends it once.
    breach_due_soon_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    breach_overdue_sent_at = models.DateTimeField(null=True, blank=True, editable=False)

    raised_by = models.CharField(
        max_length=16, choices=RaisedBy.choices, default=RaisedBy.MEMBER, editable=False
    )
    # What a platform-raised incident is about ("audit_chain:<event id>",
    # "login_lockouts:<window start>"): unique per tenant, so it is opened once.
    source_key = models.CharField(max_length=200, blank=True, editable=False)
    reported_by = creator_field()

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-detected_at", "-id"]
        indexes = [
            # The list's pages by status walk it in their order, and a filter on a status
            # newest first (config.pagination.in_total_order breaks ties in the model's order).
            models.Index(
                fields=["tenant", "status", "-detected_at", "-id"], name="incident_status_time"
            ),
            models.Index(fields=["tenant", "-detected_at"], name="incident_detected"),
            # The deadline beat job's scan: unnotified breaches by due time.
            models.Index(
                fields=["authority_notification_due_at"],
                name="incident_breach_due",
                condition=models.Q(personal_data_breach=True, authority_notified_at__isnull=True),
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "source_key"],
                condition=~models.Q(source_key=""),
                name="incident_source_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(personal_data_breach=False)
                | models.Q(authority_notification_due_at__isnull=False),
                name="incident_breach_has_deadline",
            ),
        ]

    def __str__(self):
        return self.title

    @property
    def notification_overdue(self) -> bool:
        """A personal data breach past its deadline with no authority notification."""
        return bool(
            self.personal_data_breach
            and self.authority_notified_at is None
            and self.authority_notification_due_at is not None
            and self.authority_notification_due_at <= timezone.now()
        )


class TimelineKind(models.TextChoices):
    CREATED = "created", "Created"
    STATUS_CHANGED = "status_changed", "Status changed"
    REOPENED = "reopened", "Reopened"
    UPDATED = "updated", "Details changed"
    ASSIGNED = "assigned", "Assigned"
    BREACH_FLAGGED = "breach_flagged", "Marked a personal data breach"
    BREACH_UNFLAGGED = "breach_unflagged", "No longer a personal data breach"
    AUTHORITY_NOTIFIED = "authority_notified", "Authority notified"
    SUBJECTS_NOTIFIED = "subjects_notified", "Data subjects notified"
    NOTIFICATION_DUE_SOON = "notification_due_soon", "Authority notification due soon"
    NOTIFICATION_OVERDUE = "notification_overdue", "Authority notification overdue"


class IncidentTimelineEntry(TenantOwned):
    """One step of an incident's history, appended by the services, never changed."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="timeline")
    kind = models.CharField(max_length=32, choices=TimelineKind.choices)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    note = models.TextField(blank=True)
    actor = creator_field()

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "incident timeline entries"

    def __str__(self):
        return f"{self.get_kind_display()} ({self.incident_id})"


# Compliance audits ------------------------------------------------------------------------------


class Framework(models.TextChoices):
    GDPR = "gdpr", "GDPR"
    HDS = "hds", "HDS"
    ISO27001 = "iso27001", "ISO/IEC 27001"
    SOC2 = "soc2", "SOC 2"
    CUSTOM = "custom", "Custom"


class AuditType(models.TextChoices):
    INTERNAL = "internal", "Internal"
    EXTERNAL = "external", "External"
    REGULATORY = "regulatory", "Regulatory"
    CERTIFICATION = "certification", "Certification"


class AuditStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


# Completed and failed are the audit's outcome: final.
AUDIT_TRANSITIONS: dict[str, frozenset[str]] = {
    AuditStatus.PLANNED: frozenset(
        {AuditStatus.IN_PROGRESS, AuditStatus.COMPLETED, AuditStatus.FAILED}
    ),
    AuditStatus.IN_PROGRESS: frozenset(
        {AuditStatus.PLANNED, AuditStatus.COMPLETED, AuditStatus.FAILED}
    ),
    AuditStatus.COMPLETED: frozenset(),
    AuditStatus.FAILED: frozenset(),
}
CONCLUDED_AUDIT_STATUSES = (AuditStatus.COMPLETED, AuditStatus.FAILED)


class FindingStatus(models.TextChoices):
    OPEN = "open", "Open"
    REMEDIATED = "remediated", "Remediated"


class ComplianceAudit(TenantOwned):
    """An audit against a framework: planned, carried out, and concluded with a score (0-100)
    and findings."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="compliance_audits", editable=False
    )
    audit_type = models.CharField(max_length=16, choices=AuditType.choices)
    framework = models.CharField(max_length=16, choices=Framework.choices)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=10_000)
    scope = models.TextField(blank=True, max_length=5_000)
    planned_date = models.DateField(null=True, blank=True)
    auditor_name = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=16, choices=AuditStatus.choices, default=AuditStatus.PLANNED
    )
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    # [{"category", "severity", "description", "recommendation", "status"}]: see the serializer.
    findings = models.JSONField(default=list, blank=True)
    recommendations = models.TextField(blank=True, max_length=10_000)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_by = creator_field()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "status", "framework"], name="compliance_audit_status")
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(score__isnull=True) | models.Q(score__lte=100),
                name="compliance_audit_score_range",
            ),
            models.CheckConstraint(
                condition=~models.Q(status=AuditStatus.COMPLETED) | models.Q(score__isnull=False),
                name="compliance_audit_scored",
            ),
        ]

    def __str__(self):
        return self.title


# The register of processing activities (GDPR Art. 30) -----------------------------------------


class LegalBasis(models.TextChoices):
    """GDPR Art. 6(1) (a) to (f)."""

    CONSENT = "consent", "Consent (a)"
    CONTRACT = "contract", "Contract (b)"
    LEGAL_OBLIGATION = "legal_obligation", "Legal obligation (c)"
    VITAL_INTERESTS = "vital_interests", "Vital interests (d)"
    PUBLIC_TASK = "public_task", "Public task (e)"
    LEGITIMATE_INTEREST = "legitimate_interest", "Legitimate interest (f)"


class SpecialCategory(models.TextChoices):
    """GDPR Art. 9(1): the special categories of personal data."""

    RACIAL_OR_ETHNIC_ORIGIN = "racial_or_ethnic_origin", "Racial or ethnic origin"
    POLITICAL_OPINIONS = "political_opinions", "Political opinions"
    RELIGIOUS_OR_PHILOSOPHICAL_BELIEFS = (
        "religious_or_philosophical_beliefs",
        "Religious or philosophical beliefs",
    )
    TRADE_UNION_MEMBERSHIP = "trade_union_membership", "Trade union membership"
    GENETIC_DATA = "genetic_data", "Genetic data"
    BIOMETRIC_DATA = "biometric_data", "Biometric data (for identification)"
    HEALTH_DATA = "health_data", "Data concerning health"
    SEX_LIFE_OR_ORIENTATION = "sex_life_or_orientation", "Sex life or sexual orientation"


class TransferSafeguard(models.TextChoices):
    """GDPR Chapter V: what makes a transfer outside the EEA lawful."""

    ADEQUACY_DECISION = "adequacy_decision", "Adequacy decision (Art. 45)"
    STANDARD_CONTRACTUAL_CLAUSES = "standard_contractual_clauses", "Standard contractual clauses"
    BINDING_CORPORATE_RULES = "binding_corporate_rules", "Binding corporate rules (Art. 47)"
    CERTIFICATION = "certification", "Certification (Art. 46(2)(f))"
    CODE_OF_CONDUCT = "code_of_conduct", "Code of conduct (Art. 46(2)(e))"
    DEROGATION = "derogation", "Derogation for a specific situation (Art. 49)"


class ActivityStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    APPROVED = "approved", "Approved"
    DEPRECATED = "deprecated", "Deprecated"


# A draft is approved (or dropped); an approved activity goes back to draft for a revision or is
# deprecated; deprecated stays in the register's history and is final.
ACTIVITY_TRANSITIONS: dict[str, frozenset[str]] = {
    ActivityStatus.DRAFT: frozenset({ActivityStatus.APPROVED, ActivityStatus.DEPRECATED}),
    ActivityStatus.APPROVED: frozenset({ActivityStatus.DRAFT, ActivityStatus.DEPRECATED}),
    ActivityStatus.DEPRECATED: frozenset(),
}
# A privacy impact score from which a DPIA is required (see dpia_required).
DPIA_SCORE_THRESHOLD = 7


def dpia_reasons(
    *,
    privacy_impact_score: int,
    profiling_involved: bool,
    automated_processing: bool,
    special_categories: list,
) -> list[str]:
    """Why the activity needs a data protection impact assessment (GDPR Art. 35), empty when it
    does not: a privacy impact score of 7 or more, or special categories of data (Art. 9)
    processed with profiling or by automated means (Art. 35(3)(a) and (b) as the supervisory
    authorities' lists read them: sensitive data evaluated, or decided on, by machine)."""
    reasons = []
    if privacy_impact_score >= DPIA_SCORE_THRESHOLD:
        reasons.append(f"privacy impact score {privacy_impact_score} of 10 (7 or more)")
    if special_categories and profiling_involved:
        reasons.append("profiling with special categories of data")
    if special_categories and automated_processing:
        reasons.append("automated processing of special categories of data")
    return reasons


def dpia_required(**inputs) -> bool:
    """Whether dpia_reasons(**inputs) gives any reason."""
    return bool(dpia_reasons(**inputs))


class ProcessingActivity(TenantOwned):
    """One entry of the tenant's record of processing activities (GDPR Art. 30)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="processing_activities", editable=False
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=10_000)
    purpose = models.TextField(max_length=5_000)
    legal_basis = models.CharField(max_length=32, choices=LegalBasis.choices)
    # JSON lists of short labels ("contact_data"; "customers").
    data_categories = models.JSONField(default=list, blank=True)
    data_subjects = models.JSONField(default=list, blank=True)
    # SpecialCategory values (Art. 9).
    special_categories = models.JSONField(default=list, blank=True)
    # Who receives the data (Art. 30(1)(d)): processors, authorities, partners.
    recipients = models.JSONField(default=list, blank=True)
    # [{"country": "US", "safeguard": "standard_contractual_clauses"}] (Art. 30(1)(e)).
    international_transfers = models.JSONField(default=list, blank=True)
    automated_processing = models.BooleanField(default=False)
    profiling_involved = models.BooleanField(default=False)
    retention_period_months = models.PositiveSmallIntegerField()
    third_parties_involved = models.BooleanField(default=False)
    privacy_impact_score = models.PositiveSmallIntegerField()
    risk_mitigation_measures = models.TextField(blank=True, max_length=10_000)
    # Computed by the services from the fields above on every write (never given).
    dpia_required = models.BooleanField(default=False, editable=False)
    # When the DPIA was carried out; the dashboard recommends one while it is missing.
    dpia_completed_on = models.DateField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=ActivityStatus.choices, default=ActivityStatus.DRAFT
    )
    approved_at = models.DateTimeField(null=True, blank=True, editable=False)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    created_by = creator_field()

    class Meta:
        ordering = ["name", "id"]
        verbose_name_plural = "processing activities"
        constraints = [
            # Names are unique whatever their case ("CRM" and "crm" are one activity).
            models.UniqueConstraint(
                models.F("tenant"), Lower("name"), name="processing_activity_name"
            ),
            models.CheckConstraint(
                condition=models.Q(privacy_impact_score__gte=1, privacy_impact_score__lte=10),
                name="processing_activity_impact",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def dpia_reasons(self) -> list[str]:
        return dpia_reasons(
            privacy_impact_score=self.privacy_impact_score,
            profiling_involved=self.profiling_involved,
            automated_processing=self.automated_processing,
            special_categories=self.special_categories,
        )
