"""Reads of the security app: incident statistics, the security dashboard (its risk level and
recommendation rules) and the GDPR register, each computed in the database in a fixed number
of queries whatever the number of rows.

A selector takes keyword arguments, changes nothing and records nothing; one over
tenant-owned rows takes the tenant and filters by it. A read only one view makes stays in that
view's `scope_queryset()`.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db.models import (
    Avg,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
)
from django.db.models.functions import TruncDate
from django.utils import timezone

from tenants.models import Tenant

from .models import (
    BREACH_REMINDER_LEAD,
    SEVERITY_RANK,
    UNRESOLVED_STATUSES,
    ActivityStatus,
    AuditStatus,
    ComplianceAudit,
    FindingStatus,
    Incident,
    IncidentCategory,
    IncidentStatus,
    LegalBasis,
    ProcessingActivity,
    Severity,
)

# Incidents that count as "PII incidents": flagged personal data breaches, and the categories
# that are about personal data by definition.
PII_CATEGORIES = (IncidentCategory.DATA_BREACH, IncidentCategory.PII_EXPOSURE)
PII_INCIDENT = Q(personal_data_breach=True) | Q(category__in=PII_CATEGORIES)
# Audits the dashboard lists.
RECENT_AUDITS = 5


def incident_timeline(*, incident: Incident):
    return incident.timeline.select_related("actor")


@dataclass(frozen=True)
class Period:
    """The last `days` calendar days (UTC), today included."""

    days: int
    start: datetime
    end: datetime

    @classmethod
    def last(cls, days: int, *, now: datetime | None = None) -> "Period":
        now = now or timezone.now()
        first = now.astimezone(UTC).date() - timedelta(days=days - 1)
        return cls(days=days, start=datetime.combine(first, time.min, tzinfo=UTC), end=now)

    @property
    def dates(self) -> list[date]:
        first = self.start.date()
        return [first + timedelta(days=n) for n in range(self.days)]

    def as_dict(self) -> dict:
        return {
            "days": self.days,
            "start_date": self.start.date(),
            "end_date": self.end.astimezone(UTC).date(),
        }


def _hours(duration: timedelta | None) -> float | None:
    return None if duration is None else round(duration.total_seconds() / 3600, 1)


def _resolution_time():
    return ExpressionWrapper(F("resolved_at") - F("detected_at"), output_field=DurationField())


def _in_period(period: Period) -> Q:
    return Q(detected_at__gte=period.start, detected_at__lte=period.end)


def incident_stats(*, tenant: Tenant, days: int, now: datetime | None = None) -> dict:
    """Incidents detected in the last `days` days: totals, critical, open, the average time
    from detection to resolution, by severity, by status and per day. Two queries."""
    period = Period.last(days, now=now)
    incidents = Incident.objects.filter(tenant=tenant).filter(_in_period(period))
    totals = incidents.aggregate(
        total=Count("id"),
        avg_resolution=Avg(
            _resolution_time(), filter=Q(resolved_at__isnull=False), output_field=DurationField()
        ),
        **{f"severity_{value}": Count("id", filter=Q(severity=value)) for value in Severity},
        **{f"status_{value}": Count("id", filter=Q(status=value)) for value in IncidentStatus},
    )
    per_day = dict(
        incidents.annotate(day=TruncDate("detected_at", tzinfo=UTC))
        .order_by("day")
        .values_list("day")
        .annotate(count=Count("id"))
    )
    return {
        "organization_id": tenant.pk,
        "period": period.as_dict(),
        "summary": {
            "total_incidents": totals["total"],
            "critical_incidents": totals[f"severity_{Severity.CRITICAL}"],
            "open_incidents": totals[f"status_{IncidentStatus.OPEN}"],
            "avg_resolution_hours": _hours(totals["avg_resolution"]),
        },
        "by_severity": {value: totals[f"severity_{value}"] for value in reversed(Severity.values)},
        "by_status": {value: totals[f"status_{value}"] for value in IncidentStatus.values},
        "trends": [{"date": day, "count": per_day.get(day, 0)} for day in period.dates],
        "generated_at": timezone.now(),
    }


# The security dashboard -------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the dashboard's risk level and rules read, gathered in four queries."""

    period: Period
    total: int
    critical: int
    open: int
    pii: int
    avg_resolution_hours: float | None
    unresolved_by_severity: dict
    unassigned: int
    overdue_notifications: int
    notifications_due_soon: int
    compliance_by_framework: dict
    open_serious_findings: int
    open_findings: int
    last_completed_audit: datetime | None
    approved_activities: int
    missing_dpias: int

    @property
    def compliance_score(self) -> float | None:
        scores = list(self.compliance_by_framework.values())
        return round(sum(scores) / len(scores), 1) if scores else None

    @property
    def unresolved(self) -> int:
        return sum(self.unresolved_by_severity.values())


def _incident_facts(tenant: Tenant, period: Period, now: datetime) -> dict:
    unresolved = Q(status__in=UNRESOLVED_STATUSES)
    breach = Q(personal_data_breach=True, authority_notified_at__isnull=True)
    in_period = _in_period(period)
    return Incident.objects.filter(tenant=tenant).aggregate(
        total=Count("id", filter=in_period),
        critical=Count("id", filter=in_period & Q(severity=Severity.CRITICAL)),
        open=Count("id", filter=in_period & Q(status=IncidentStatus.OPEN)),
        pii=Count("id", filter=in_period & PII_INCIDENT),
        avg_resolution=Avg(
            _resolution_time(),
            filter=in_period & Q(resolved_at__isnull=False),
            output_field=DurationField(),
        ),
        unassigned=Count("id", filter=unresolved & Q(assigned_to__isnull=True)),
        overdue=Count("id", filter=breach & Q(authority_notification_due_at__lte=now)),
        due_soon=Count(
            "id",
            filter=breach
            & Q(
                authority_notification_due_at__gt=now,
                authority_notification_due_at__lte=now + BREACH_REMINDER_LEAD,
            ),
        ),
        **{
            f"unresolved_{value}": Count("id", filter=unresolved & Q(severity=value))
            for value in Severity
        },
    )


def _audit_facts(tenant: Tenant) -> dict:
    """The latest completed audit of each framework: its score, and its findings still open."""
    completed = ComplianceAudit.objects.filter(tenant=tenant, status=AuditStatus.COMPLETED)
    newest_of_its_framework = (
        completed.filter(framework=OuterRef("framework"))
        .order_by("-completed_at", "-id")
        .values("pk")[:1]
    )
    latest = {
        framework: (score, completed_at, findings or [])
        for framework, score, completed_at, findings in completed.filter(
            pk=Subquery(newest_of_its_framework)
        ).values_list("framework", "score", "completed_at", "findings")
    }
    open_findings = [
        finding
        for _, _, findings in latest.values()
        for finding in findings
        if isinstance(finding, dict) and finding.get("status") != FindingStatus.REMEDIATED
    ]
    serious = {Severity.HIGH, Severity.CRITICAL}
    return {
        "compliance_by_framework": {name: score for name, (score, _, _) in latest.items()},
        "open_findings": len(open_findings),
        "open_serious_findings": sum(1 for f in open_findings if f.get("severity") in serious),
        "last_completed_audit": max((at for _, at, _ in latest.values()), default=None),
    }


def dashboard_facts(*, tenant: Tenant, days: int, now: datetime | None = None) -> Facts:
    now = now or timezone.now()
    period = Period.last(days, now=now)
    incidents = _incident_facts(tenant, period, now)
    activities = ProcessingActivity.objects.filter(tenant=tenant).aggregate(
        approved=Count("id", filter=Q(status=ActivityStatus.APPROVED)),
        missing_dpias=Count(
            "id",
            filter=Q(dpia_required=True, dpia_completed_on__isnull=True)
            & ~Q(status=ActivityStatus.DEPRECATED),
        ),
    )
    return Facts(
        period=period,
        total=incidents["total"],
        critical=incidents["critical"],
        open=incidents["open"],
        pii=incidents["pii"],
        avg_resolution_hours=_hours(incidents["avg_resolution"]),
        unresolved_by_severity={
            value: incidents[f"unresolved_{value}"] for value in reversed(Severity.values)
        },
        unassigned=incidents["unassigned"],
        overdue_notifications=incidents["overdue"],
        notifications_due_soon=incidents["due_soon"],
        approved_activities=activities["approved"],
        missing_dpias=activities["missing_dpias"],
        **_audit_facts(tenant),
    )


def risk_level(facts: Facts) -> str:
    """The highest severity among unresolved incidents (low with none); an overdue breach
    notification makes it critical, one due within 24 hours at least high."""
    level = max(
        (value for value, count in facts.unresolved_by_severity.items() if count),
        key=lambda value: SEVERITY_RANK[value],
        default=Severity.LOW,
    )
    if facts.overdue_notifications:
        return Severity.CRITICAL
    if facts.notifications_due_soon and SEVERITY_RANK[level] < SEVERITY_RANK[Severity.HIGH]:
        return Severity.HIGH
    return str(level)


@dataclass(frozen=True)
class Rule:
    """One recommendation: shown when `applies(facts)`, with `describe(facts)` as its text."""

    id: str
    priority: str
    category: str
    title: str
    applies: Callable[[Facts], bool]
    describe: Callable[[Facts], str]


def _target_hours() -> int:
    return settings.SECURITY_RESOLUTION_TARGET_HOURS


def _target_score() -> int:
    return settings.SECURITY_COMPLIANCE_TARGET_SCORE


# The rules, in the order they are listed within a priority (docs/security.md explains each).
RULES: tuple[Rule, ...] = (
    Rule(
        id="breach_notification_overdue",
        priority="critical",
        category="data_breach",
        title="Notify the supervisory authority of overdue breaches",
        applies=lambda f: f.overdue_notifications > 0,
        describe=lambda f: (
            f"{f.overdue_notifications} personal data breach(es) passed the 72-hour deadline "
            "without a notification to the authority (GDPR Art. 33). Notify it now and record "
            "the reasons for the delay."
        ),
    ),
    Rule(
        id="breach_notification_due_soon",
        priority="high",
        category="data_breach",
        title="Breach notifications due within 24 hours",
        applies=lambda f: f.notifications_due_soon > 0,
        describe=lambda f: (
            f"{f.notifications_due_soon} personal data breach(es) must be notified to the "
            "authority within the next 24 hours."
        ),
    ),
    Rule(
        id="unresolved_critical_incidents",
        priority="critical",
        category="incident_response",
        title="Resolve critical incidents",
        applies=lambda f: f.unresolved_by_severity[Severity.CRITICAL] > 0,
        describe=lambda f: (
            f"{f.unresolved_by_severity[Severity.CRITICAL]} critical incident(s) are open or "
            "under investigation."
        ),
    ),
    Rule(
        id="unresolved_high_incidents",
        priority="high",
        category="incident_response",
        title="Resolve high-severity incidents",
        applies=lambda f: f.unresolved_by_severity[Severity.HIGH] > 0,
        describe=lambda f: (
            f"{f.unresolved_by_severity[Severity.HIGH]} high-severity incident(s) are open or "
            "under investigation."
        ),
    ),
    Rule(
        id="unassigned_incidents",
        priority="medium",
        category="incident_response",
        title="Assign every open incident",
        applies=lambda f: f.unassigned > 0,
        describe=lambda f: f"{f.unassigned} unresolved incident(s) have nobody assigned.",
    ),
    Rule(
        id="slow_resolution",
        priority="medium",
        category="incident_response",
        title="Improve incident response time",
        applies=lambda f: (
            f.avg_resolution_hours is not None and f.avg_resolution_hours > _target_hours()
        ),
        describe=lambda f: (
            f"Incidents took {f.avg_resolution_hours} hours on average to resolve over the "
            f"last {f.period.days} days, above the {_target_hours()}-hour target."
        ),
    ),
    Rule(
        id="low_compliance_score",
        priority="high",
        category="compliance",
        title="Raise the compliance score",
        applies=lambda f: f.compliance_score is not None and f.compliance_score < _target_score(),
        describe=lambda f: (
            f"The latest audits score {f.compliance_score} on average, below the target of "
            f"{_target_score()}."
        ),
    ),
    Rule(
        id="open_serious_findings",
        priority="high",
        category="compliance",
        title="Remediate high and critical audit findings",
        applies=lambda f: f.open_serious_findings > 0,
        describe=lambda f: (
            f"{f.open_serious_findings} high or critical finding(s) of the latest audits are "
            "not remediated."
        ),
    ),
    Rule(
        id="open_findings",
        priority="low",
        category="compliance",
        title="Remediate audit findings",
        applies=lambda f: f.open_findings > f.open_serious_findings,
        describe=lambda f: (
            f"{f.open_findings - f.open_serious_findings} low or medium finding(s) of the "
            "latest audits are not remediated."
        ),
    ),
    Rule(
        id="no_recent_audit",
        priority="medium",
        category="compliance",
        title="Complete a compliance audit this year",
        applies=lambda f: (
            f.last_completed_audit is None
            or f.last_completed_audit < f.period.end - timedelta(days=365)
        ),
        describe=lambda f: (
            "No audit was completed in the last 12 months."
            if f.last_completed_audit is not None
            else "No audit has been completed yet."
        ),
    ),
    Rule(
        id="missing_dpias",
        priority="high",
        category="gdpr",
        title="Carry out the required impact assessments",
        applies=lambda f: f.missing_dpias > 0,
        describe=lambda f: (
            f"{f.missing_dpias} processing "
            f"{'activity needs' if f.missing_dpias == 1 else 'activities need'} a data "
            "protection impact assessment (GDPR Art. 35) and none is recorded "
            "(dpia_completed_on)."
        ),
    ),
    Rule(
        id="empty_register",
        priority="medium",
        category="gdpr",
        title="Keep the record of processing activities",
        applies=lambda f: f.approved_activities == 0,
        describe=lambda f: (
            "The register of processing activities (GDPR Art. 30) has no approved activity."
        ),
    ),
)
PRIORITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def recommendations(facts: Facts) -> list[dict]:
    """The rules that apply, most urgent first (rule order within a priority)."""
    applying = [rule for rule in RULES if rule.applies(facts)]
    applying.sort(key=lambda rule: PRIORITY_ORDER[rule.priority])
    return [
        {
            "rule": rule.id,
            "priority": rule.priority,
            "category": rule.category,
            "title": rule.title,
            "description": rule.describe(facts),
        }
        for rule in applying
    ]


def security_dashboard(*, tenant: Tenant, days: int, now: datetime | None = None) -> dict:
    facts = dashboard_facts(tenant=tenant, days=days, now=now)
    recent = list(
        ComplianceAudit.objects.filter(tenant=tenant).order_by("-created_at", "-id")[:RECENT_AUDITS]
    )
    return {
        "organization_id": tenant.pk,
        "period": facts.period.as_dict(),
        "security_posture": {
            "risk_level": risk_level(facts),
            "incidents_summary": {
                "total_incidents": facts.total,
                "critical_incidents": facts.critical,
                "open_incidents": facts.open,
                "unresolved_incidents": facts.unresolved,
                "unresolved_by_severity": facts.unresolved_by_severity,
                "avg_resolution_hours": facts.avg_resolution_hours,
            },
            "breach_notifications": {
                "overdue": facts.overdue_notifications,
                "due_within_24h": facts.notifications_due_soon,
            },
            "compliance_score": facts.compliance_score,
            "compliance_by_framework": facts.compliance_by_framework,
            "pii_incidents": facts.pii,
        },
        "recent_audits": recent,
        "recommendations": recommendations(facts),
        "generated_at": timezone.now(),
    }


# The GDPR register ------------------------------------------------------------------------------

# The register shows these unless asked otherwise: deprecated activities are history.
REGISTER_STATUSES = (ActivityStatus.DRAFT, ActivityStatus.APPROVED)


def register_activities(*, tenant: Tenant, statuses=REGISTER_STATUSES):
    return (
        ProcessingActivity.objects.filter(tenant=tenant, status__in=list(statuses))
        .select_related("approved_by", "created_by")
        .order_by("name", "id")
    )


def gdpr_register(*, tenant: Tenant, statuses=REGISTER_STATUSES) -> dict:
    """The record of processing activities (GDPR Art. 30): every activity, grouped by legal
    basis, the high-risk ones (those needing a DPIA) with their reasons, and counts."""
    activities = list(register_activities(tenant=tenant, statuses=statuses))
    high_risk = [activity for activity in activities if activity.dpia_required]
    by_basis: dict = {basis: [] for basis in LegalBasis.values}
    for activity in activities:
        by_basis[activity.legal_basis].append({"id": activity.pk, "name": activity.name})
    return {
        "organization_id": tenant.pk,
        "organization_name": tenant.name,
        "generated_at": timezone.now(),
        "summary": {
            "total_activities": len(activities),
            "high_risk_activities": len(high_risk),
            "automated_processing_count": sum(a.automated_processing for a in activities),
            "third_party_processing_count": sum(a.third_parties_involved for a in activities),
            "special_category_count": sum(bool(a.special_categories) for a in activities),
            "international_transfer_count": sum(
                bool(a.international_transfers) for a in activities
            ),
            "missing_dpia_count": sum(a.dpia_completed_on is None for a in high_risk),
        },
        "activities": activities,
        "by_legal_basis": by_basis,
        "high_risk_activities": [
            {
                "id": activity.pk,
                "name": activity.name,
                "privacy_impact_score": activity.privacy_impact_score,
                "dpia_completed_on": activity.dpia_completed_on,
                "reasons": activity.dpia_reasons,
            }
            for activity in high_risk
        ],
    }
