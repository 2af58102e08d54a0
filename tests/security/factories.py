"""Factories of the security app's models (registered with tests.factories.factory_for)."""

import factory
from django.utils import timezone

from security.models import (
    BREACH_NOTIFICATION_WINDOW,
    ComplianceAudit,
    Incident,
    IncidentTimelineEntry,
    ProcessingActivity,
    dpia_required,
)


class IncidentFactory(factory.django.DjangoModelFactory):
    """An open incident detected now; `personal_data_breach=True` sets its deadline."""

    class Meta:
        model = Incident

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    title = factory.Sequence(lambda n: f"Incident {n}")
    description = "Multiple failed login attempts from suspicious IP addresses"
    severity = "high"
    category = "unauthorized_access"
    detected_at = factory.LazyFunction(timezone.now)
    personal_data_breach = False
    authority_notification_due_at = factory.LazyAttribute(
        lambda incident: (
            incident.detected_at + BREACH_NOTIFICATION_WINDOW
            if incident.personal_data_breach
            else None
        )
    )


class IncidentTimelineEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = IncidentTimelineEntry

    incident = factory.SubFactory(IncidentFactory)
    tenant = factory.SelfAttribute("incident.tenant")
    kind = "created"
    to_status = "open"


class ComplianceAuditFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ComplianceAudit

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    audit_type = "internal"
    framework = "gdpr"
    title = factory.Sequence(lambda n: f"Audit {n}")
    scope = "All data processing activities involving personal data"
    auditor_name = "Jane Smith, DPO"


class ProcessingActivityFactory(factory.django.DjangoModelFactory):
    """A draft activity; dpia_required follows its fields as the services compute it."""

    class Meta:
        model = ProcessingActivity

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Processing activity {n}")
    purpose = "Provide customer support and improve service quality"
    legal_basis = "legitimate_interest"
    data_categories = factory.LazyFunction(lambda: ["contact_data", "conversation_content"])
    data_subjects = factory.LazyFunction(lambda: ["customers"])
    retention_period_months = 24
    privacy_impact_score = 4
    special_categories = factory.LazyFunction(list)
    automated_processing = False
    profiling_involved = False
    dpia_required = factory.LazyAttribute(
        lambda activity: dpia_required(
            privacy_impact_score=activity.privacy_impact_score,
            profiling_involved=activity.profiling_involved,
            automated_processing=activity.automated_processing,
            special_categories=activity.special_categories,
        )
    )
