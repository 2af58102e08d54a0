"""Compliance audits: planned, carried out and concluded (completed with a score, or failed).

Completing needs a score (0-100) and records `compliance.audit.completed`, a public event. A
concluded audit keeps its outcome: afterwards only its findings' status (their remediation)
and its recommendations change; anything else, a finding added, removed or reworded included,
is 409.
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import ApplicationError, Conflict
from config.services import UNSET, check_move, given, model_update, person
from tenants.models import Tenant

from ..models import (
    AUDIT_TRANSITIONS,
    CONCLUDED_AUDIT_STATUSES,
    AuditStatus,
    ComplianceAudit,
    FindingStatus,
)

# What a concluded audit still lets change: its recommendations, and its findings' status
# (their remediation), never the findings themselves.
AFTER_CONCLUSION = frozenset({"findings", "recommendations"})
_FINDING_FACTS = ("category", "severity", "description", "recommendation")


def _finding_facts(findings) -> list:
    return [tuple(finding.get(key, "") for key in _FINDING_FACTS) for finding in findings or []]


def _payload(audit: ComplianceAudit, **extra) -> dict:
    findings = audit.findings or []
    return {
        "audit_id": str(audit.pk),
        "title": audit.title,
        "framework": audit.framework,
        "audit_type": audit.audit_type,
        "status": audit.status,
        "score": audit.score,
        "findings_count": len(findings),
        "open_findings": sum(1 for f in findings if f.get("status") != FindingStatus.REMEDIATED),
        "completed_at": audit.completed_at,
        **extra,
    }


@transaction.atomic
def compliance_audit_create(
    *,
    tenant: Tenant,
    actor,
    audit_type: str,
    framework: str,
    title: str,
    description: str = "",
    scope: str = "",
    planned_date=None,
    auditor_name: str = "",
    findings: list | None = None,
    recommendations: str = "",
) -> ComplianceAudit:
    """Plan an audit (status planned); it is started, completed or failed by updates."""
    audit = ComplianceAudit.objects.create(
        tenant=tenant,
        audit_type=audit_type,
        framework=framework,
        title=title,
        description=description,
        scope=scope,
        planned_date=planned_date,
        auditor_name=auditor_name,
        findings=list(findings or []),
        recommendations=recommendations,
        created_by=person(actor),
    )
    record(
        tenant=tenant,
        event_type="compliance.audit.created",
        actor=actor,
        payload=_payload(audit),
    )
    return audit


def _status_fields(audit: ComplianceAudit, status: str, fields: dict, now: datetime) -> dict:
    """Check the move (409 when illegal) and add what it sets: starting sets started_at;
    concluding sets completed_at (the one given, else now); completing needs a score."""
    if status == audit.status:
        return fields
    check_move(AUDIT_TRANSITIONS, audit.status, status, noun="An audit")
    fields = {**fields, "status": status}
    if status == AuditStatus.IN_PROGRESS:
        fields["started_at"] = audit.started_at or now
    if status in CONCLUDED_AUDIT_STATUSES:
        if status == AuditStatus.COMPLETED and fields.get("score", audit.score) is None:
            raise ApplicationError(
                "Completing an audit needs its score.",
                details={"score": ["Required to complete the audit (0-100)."]},
            )
        fields["completed_at"] = fields.get("completed_at") or now
        if audit.started_at is not None and fields["completed_at"] < audit.started_at:
            raise ApplicationError(
                "Invalid completed_at.",
                details={"completed_at": ["Cannot be before the audit started (started_at)."]},
            )
        fields["started_at"] = audit.started_at or fields["completed_at"]
    return fields


@transaction.atomic
def compliance_audit_update(
    *,
    compliance_audit: ComplianceAudit,
    actor,
    status=UNSET,
    audit_type=UNSET,
    framework=UNSET,
    title=UNSET,
    description=UNSET,
    scope=UNSET,
    planned_date=UNSET,
    auditor_name=UNSET,
    score=UNSET,
    findings=UNSET,
    recommendations=UNSET,
    completed_at=UNSET,
) -> ComplianceAudit:
    """Change the fields given; a status move must be legal (security.models.AUDIT_TRANSITIONS)
    and a concluded audit only takes new findings and recommendations."""
    changes = given(
        audit_type=audit_type,
        framework=framework,
        title=title,
        description=description,
        scope=scope,
        planned_date=planned_date,
        auditor_name=auditor_name,
        score=score,
        findings=findings,
        recommendations=recommendations,
        completed_at=completed_at,
    )
    audit = locked_or_404(ComplianceAudit.objects, pk=compliance_audit.pk)
    now = timezone.now()
    fields = dict(changes)
    if "findings" in fields:
        fields["findings"] = list(fields["findings"] or [])
    completed_at = fields.get("completed_at")
    if completed_at is not None and completed_at > now:
        raise ApplicationError(
            "Invalid completed_at.", details={"completed_at": ["Cannot be in the future."]}
        )
    old_status = audit.status
    if old_status in CONCLUDED_AUDIT_STATUSES:
        frozen = sorted(
            name
            for name, value in {**fields, **({} if status is UNSET else {"status": status})}.items()
            if name not in AFTER_CONCLUSION and getattr(audit, name) != value
        )
        if frozen:
            raise Conflict(
                f"The audit is {old_status}: only its findings and recommendations change now.",
                details={"fields": frozen},
            )
        if "findings" in fields and _finding_facts(fields["findings"]) != _finding_facts(
            audit.findings
        ):
            raise Conflict(
                f"The audit is {old_status}: its findings' remediation status changes, not the "
                "findings themselves.",
                details={"fields": ["findings"]},
            )
    elif status is not UNSET:
        fields = _status_fields(audit, status, fields, now)
    if (
        completed_at is not None
        and fields.get("status", audit.status) not in CONCLUDED_AUDIT_STATUSES
    ):
        raise ApplicationError(
            "Invalid completed_at.",
            details={"completed_at": ["Given when the audit is completed or failed."]},
        )
    changed = model_update(instance=audit, data=fields)
    if not changed:
        return audit
    if audit.status != old_status and audit.status == AuditStatus.COMPLETED:
        event_type = "compliance.audit.completed"
    elif audit.status != old_status and audit.status == AuditStatus.FAILED:
        event_type = "compliance.audit.failed"
    else:
        event_type = "compliance.audit.updated"
    payload = _payload(audit, changed=sorted(changed))
    if audit.status != old_status:
        payload["previous_status"] = old_status
    record(tenant=audit.tenant, event_type=event_type, actor=actor, payload=payload)
    return audit
