"""Security state changes, one module per area: the one place their rules live.

    incidents   incidents (logged, moved through their statuses, assigned), personal data
                breaches and their 72-hour deadline's reminders
    detection   incidents the platform raises itself: a broken audit chain, a burst of
                locked-out logins
    audits      compliance audits with their findings and score
    processing  the register of processing activities (GDPR Art. 30)

Services are keyword-only, run in a transaction and record their audit event;
tests/audit/test_service_coverage.py holds each to it.
"""

from .audits import compliance_audit_create, compliance_audit_update
from .detection import audit_chain_check, login_lockout_bursts_check
from .incidents import (
    breach_notifications_remind,
    incident_create,
    incident_raise,
    incident_update,
)
from .processing import (
    processing_activity_create,
    processing_activity_delete,
    processing_activity_update,
)

__all__ = [
    "audit_chain_check",
    "breach_notifications_remind",
    "compliance_audit_create",
    "compliance_audit_update",
    "incident_create",
    "incident_raise",
    "incident_update",
    "login_lockout_bursts_check",
    "processing_activity_create",
    "processing_activity_delete",
    "processing_activity_update",
]
