"""The quick start's security records (called by `manage.py load_demo_data` after the
tenants), in the `acme` organization, through the real services:

- incidents over the last four weeks: an open unauthorized-access attempt assigned to the
  admin, a PII exposure under investigation, two resolved (one closed), and two personal data
  breaches: one notified to the authority in time and resolved, one 22 hours from its 72-hour
  deadline (its reminder sent, so the dashboard's risk level is high and the notifications
  show it);
- compliance audits: a completed GDPR review (score 85, one finding remediated, one open), an
  ISO 27001 certification audit in progress and a SOC 2 audit planned;
- the register of processing activities: support chat, billing (with a transfer to the US
  under standard contractual clauses), product analytics (profiling: DPIA done) and a draft
  symptom triage on health data whose DPIA is still missing.

Resolution times are then set to a few hours after detection (timestamps only), so the
statistics show realistic figures. Runs once: an organization with incidents keeps them.
"""

from datetime import date, timedelta

from django.utils import timezone

from tenants.models import Membership, Role, Tenant

from .models import Incident
from .services import (
    breach_notifications_remind,
    compliance_audit_create,
    compliance_audit_update,
    incident_create,
    incident_update,
    processing_activity_create,
    processing_activity_update,
)

DEMO_SLUG = "acme"


def _member(tenant, role):
    membership = Membership.objects.filter(tenant=tenant, role=role).select_related("user").first()
    return membership.user if membership else None


def _incidents(tenant, dpo, admin):
    now = timezone.now()
    incident_create(
        tenant=tenant,
        actor=dpo,
        title="Unauthorized access attempt detected",
        description="Multiple failed login attempts from suspicious IP addresses.",
        severity="high",
        category="unauthorized_access",
        assigned_to=admin,
        detected_at=now - timedelta(hours=5),
    )
    exposure = incident_create(
        tenant=tenant,
        actor=dpo,
        title="Customer emails visible in a shared export",
        severity="medium",
        category="pii_exposure",
        affected_users=42,
        data_types_affected=["email"],
        detected_at=now - timedelta(days=2),
    )
    incident_update(incident=exposure, actor=dpo, status="investigating", assigned_to=dpo)
    resolved = []
    for days, title, severity in (
        (20, "Phishing email reported by staff", "low"),
        (12, "Leaked API key revoked", "high"),
    ):
        incident = incident_create(
            tenant=tenant,
            actor=dpo,
            title=title,
            severity=severity,
            category="other" if severity == "low" else "unauthorized_access",
            detected_at=now - timedelta(days=days),
        )
        incident_update(
            incident=incident,
            actor=dpo,
            status="resolved",
            resolution_notes="Contained; credentials rotated and the sender blocked.",
        )
        resolved.append(incident)
    incident_update(incident=resolved[0], actor=dpo, status="closed")
    notified = incident_create(
        tenant=tenant,
        actor=dpo,
        title="Lost laptop with a CRM export",
        severity="critical",
        category="data_breach",
        affected_users=310,
        data_types_affected=["name", "email", "phone"],
        personal_data_breach=True,
        detected_at=now - timedelta(days=9),
    )
    incident_update(
        incident=notified,
        actor=dpo,
        authority_notified_at=now - timedelta(days=8),
        authority_reference="CNIL-2026-1187",
        subjects_notified_at=now - timedelta(days=7),
    )
    incident_update(
        incident=notified,
        actor=dpo,
        status="resolved",
        resolution_notes="Laptop wiped remotely; the affected customers were informed.",
    )
    resolved.append(notified)
    incident_create(
        tenant=tenant,
        actor=dpo,
        title="Misconfigured storage bucket exposed invoices",
        severity="high",
        category="data_breach",
        affected_users=57,
        data_types_affected=["name", "billing_address"],
        personal_data_breach=True,
        assigned_to=dpo,
        detected_at=now - timedelta(hours=50),
    )
    breach_notifications_remind()
    # Resolved a few hours after detection, as a real team would have.
    for hours, incident in zip((6, 30, 18), resolved, strict=True):
        Incident.objects.filter(pk=incident.pk).update(
            resolved_at=incident.detected_at + timedelta(hours=hours)
        )


def _audits(tenant, dpo):
    review = compliance_audit_create(
        tenant=tenant,
        actor=dpo,
        audit_type="internal",
        framework="gdpr",
        title="Q3 GDPR Compliance Review",
        description="Quarterly review of data processing activities",
        scope="All data processing activities involving personal data",
        planned_date=date.today() - timedelta(days=40),
        auditor_name="Acme Data Protection Officer",
    )
    compliance_audit_update(compliance_audit=review, actor=dpo, status="in_progress")
    compliance_audit_update(
        compliance_audit=review,
        actor=dpo,
        status="completed",
        score=85,
        findings=[
            {
                "category": "data_retention",
                "severity": "medium",
                "description": "Some documents lack clear retention policies",
                "recommendation": "Implement automated retention policy enforcement",
                "status": "open",
            },
            {
                "category": "access_control",
                "severity": "high",
                "description": "Two former contractors still had access to the CRM",
                "recommendation": "Review access quarterly",
                "status": "remediated",
            },
        ],
        recommendations="Overall compliance is good. Focus on data retention automation.",
    )
    certification = compliance_audit_create(
        tenant=tenant,
        actor=dpo,
        audit_type="certification",
        framework="iso27001",
        title="ISO/IEC 27001 surveillance audit",
        planned_date=date.today() - timedelta(days=3),
        auditor_name="External certification body",
    )
    compliance_audit_update(compliance_audit=certification, actor=dpo, status="in_progress")
    compliance_audit_create(
        tenant=tenant,
        actor=dpo,
        audit_type="external",
        framework="soc2",
        title="SOC 2 Type II readiness",
        planned_date=date.today() + timedelta(days=45),
    )


ACTIVITIES = (
    {
        "name": "Customer support chat",
        "description": "Processing of customer inquiries and support conversations",
        "purpose": "Provide customer support and improve service quality",
        "legal_basis": "legitimate_interest",
        "data_categories": ["contact_data", "conversation_content"],
        "data_subjects": ["customers", "prospects"],
        "automated_processing": True,
        "retention_period_months": 24,
        "privacy_impact_score": 6,
        "risk_mitigation_measures": "Data encryption, access controls, regular audits",
        "approve": True,
    },
    {
        "name": "Billing and invoicing",
        "purpose": "Invoice customers and collect payments",
        "legal_basis": "contract",
        "data_categories": ["contact_data", "billing_address", "payment_data"],
        "data_subjects": ["customers"],
        "recipients": ["Payment provider", "Tax authority"],
        "third_parties_involved": True,
        "international_transfers": [{"country": "US", "safeguard": "standard_contractual_clauses"}],
        "retention_period_months": 120,
        "privacy_impact_score": 4,
        "approve": True,
    },
    {
        "name": "Product analytics",
        "purpose": "Understand feature usage to prioritise the roadmap",
        "legal_basis": "consent",
        "data_categories": ["usage_data", "device_data"],
        "data_subjects": ["users"],
        "profiling_involved": True,
        "retention_period_months": 13,
        "privacy_impact_score": 7,
        "dpia_completed_on": date.today() - timedelta(days=90),
        "approve": True,
    },
    {
        "name": "Symptom triage assistant",
        "purpose": "Route patients' questions to the right clinician",
        "legal_basis": "consent",
        "data_categories": ["contact_data", "symptoms"],
        "data_subjects": ["patients"],
        "special_categories": ["health_data"],
        "automated_processing": True,
        "retention_period_months": 36,
        "privacy_impact_score": 6,
        "approve": False,
    },
)


def _register(tenant, dpo):
    for fields in ACTIVITIES:
        fields = dict(fields)
        approve = fields.pop("approve")
        activity = processing_activity_create(tenant=tenant, actor=dpo, **fields)
        if approve:
            processing_activity_update(processing_activity=activity, actor=dpo, status="approved")


def load(*, stdout, staff) -> None:
    tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
    if tenant is None or Incident.objects.filter(tenant=tenant).exists():
        return
    dpo = _member(tenant, Role.DPO) or _member(tenant, Role.OWNER)
    admin = _member(tenant, Role.ADMIN) or dpo
    _incidents(tenant, dpo, admin)
    _audits(tenant, dpo)
    _register(tenant, dpo)
    stdout.write("Security: incidents, breaches, audits and the GDPR register in acme.")
