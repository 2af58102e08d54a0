"""Incidents: reported by members or raised by the platform, moved through their legal statuses,
and, for a personal data breach, held to the 72-hour notification deadline.

Every change appends to the incident's timeline and records one audit event:
`security.incident.created`, `.resolved`, `.closed`, `.reopened` (a resolved incident moved
back) or `.updated`; the deadline's reminders record `security.breach.notification_due`. The
public catalogue (notifications.catalog) turns the created, resolved and due events into
webhooks and notifications.
"""

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import ApplicationError, Conflict
from config.services import UNSET, check_move, given, model_update, person
from tenants.models import Membership, MembershipStatus, Tenant

from ..models import (
    BREACH_NOTIFICATION_WINDOW,
    BREACH_REMINDER_LEAD,
    INCIDENT_TRANSITIONS,
    Incident,
    IncidentStatus,
    IncidentTimelineEntry,
    RaisedBy,
    TimelineKind,
)

# Changes the timeline lists by name (an "updated" entry); the status, the assignment and the
# breach fields have entries of their own.
DESCRIBED_FIELDS = (
    "title",
    "description",
    "severity",
    "category",
    "affected_users",
    "affected_documents",
    "data_types_affected",
    "resolution_notes",
    "authority_reference",
)


# How many breaches one run of the deadline job handles per stage; the next run takes the rest.
REMINDER_BATCH = 500


def _payload(incident: Incident, **extra) -> dict:
    """The audit payload: what the public events are built from (never a member's email)."""
    return {
        "incident_id": str(incident.pk),
        "title": incident.title,
        "severity": incident.severity,
        "category": incident.category,
        "status": incident.status,
        "personal_data_breach": incident.personal_data_breach,
        "raised_by": incident.raised_by,
        "detected_at": incident.detected_at,
        **extra,
    }


def _timeline(incident: Incident, kind: str, actor=None, note: str = "", **statuses) -> None:
    IncidentTimelineEntry.objects.create(
        tenant_id=incident.tenant_id,
        incident=incident,
        kind=kind,
        note=note,
        actor=person(actor),
        from_status=statuses.get("from_status", ""),
        to_status=statuses.get("to_status", ""),
    )


def _assignee(tenant: Tenant, user_id):
    """The active member of `tenant` with this user id; another tenant's member or a random id
    is the same "no such member"."""
    if user_id is None:
        return None
    user_id = getattr(user_id, "pk", user_id)
    membership = (
        Membership.objects.filter(
            tenant=tenant, user_id=user_id, status=MembershipStatus.ACTIVE, user__is_active=True
        )
        .select_related("user")
        .first()
    )
    if membership is None:
        raise ApplicationError(
            "Invalid assignee.",
            details={"assigned_to": ["No active member of the organization has this id."]},
        )
    return membership.user


def _not_in_future(field: str, value: datetime | None, now: datetime) -> None:
    if value is not None and value > now:
        raise ApplicationError(f"Invalid {field}.", details={field: ["Cannot be in the future."]})


def _check_breach_dates(fields: dict, *, detected_at: datetime, breach: bool, now) -> None:
    """The notification times: only on a personal data breach, after its detection, not in the
    future."""
    for field in ("authority_notified_at", "subjects_notified_at"):
        value = fields.get(field)
        if value is None:
            continue
        if not breach:
            raise ApplicationError(
                f"Invalid {field}.",
                details={field: ["Only a personal data breach (personal_data_breach) has it."]},
            )
        _not_in_future(field, value, now)
        if value < detected_at:
            raise ApplicationError(
                f"Invalid {field}.", details={field: ["Cannot be before detected_at."]}
            )


@transaction.atomic
def incident_create(
    *,
    tenant: Tenant,
    actor,
    title: str,
    severity: str,
    category: str,
    description: str = "",
    affected_users: int = 0,
    affected_documents: int = 0,
    data_types_affected: list | None = None,
    assigned_to=None,
    resolution_notes: str = "",
    detected_at: datetime | None = None,
    personal_data_breach: bool = False,
    authority_notified_at: datetime | None = None,
    authority_reference: str = "",
    subjects_notified_at: datetime | None = None,
) -> Incident:
    """Log an incident (status open). `detected_at` (default now, never in the future) starts a
    personal data breach's 72-hour clock."""
    now = timezone.now()
    detected_at = detected_at or now
    _not_in_future("detected_at", detected_at, now)
    dates = {
        "authority_notified_at": authority_notified_at,
        "subjects_notified_at": subjects_notified_at,
    }
    _check_breach_dates(dates, detected_at=detected_at, breach=personal_data_breach, now=now)
    incident = Incident.objects.create(
        tenant=tenant,
        title=title,
        description=description,
        severity=severity,
        category=category,
        affected_users=affected_users,
        affected_documents=affected_documents,
        data_types_affected=list(data_types_affected or []),
        assigned_to=_assignee(tenant, assigned_to),
        resolution_notes=resolution_notes,
        detected_at=detected_at,
        personal_data_breach=personal_data_breach,
        authority_notification_due_at=(
            detected_at + BREACH_NOTIFICATION_WINDOW if personal_data_breach else None
        ),
        authority_reference=authority_reference,
        reported_by=person(actor),
        **dates,
    )
    _timeline(incident, TimelineKind.CREATED, actor, to_status=incident.status)
    if incident.assigned_to is not None:
        _timeline(incident, TimelineKind.ASSIGNED, actor, note=incident.assigned_to.email)
    if incident.authority_notified_at is not None:
        _timeline(incident, TimelineKind.AUTHORITY_NOTIFIED, actor, note=authority_reference)
    if incident.subjects_notified_at is not None:
        _timeline(incident, TimelineKind.SUBJECTS_NOTIFIED, actor)
    record(
        tenant=tenant,
        event_type="security.incident.created",
        actor=actor,
        payload=_payload(incident),
    )
    return incident


@transaction.atomic
def incident_raise(
    *,
    tenant: Tenant,
    raised_by: str,
    source_key: str,
    title: str,
    description: str,
    severity: str,
    category: str,
    detected_at: datetime | None = None,
) -> Incident | None:
    """Open an incident the platform found itself (a broken audit chain, a burst of lockouts),
    once per `source_key`: None when it is already open, or when a concurrent run opened it
    first (the unique key decides, so a doubled beat opens one)."""
    if Incident.objects.filter(tenant=tenant, source_key=source_key).exists():
        return None
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                tenant=tenant,
                title=title[:200],
                description=description,
                severity=severity,
                category=category,
                detected_at=detected_at or timezone.now(),
                raised_by=raised_by,
                source_key=source_key,
            )
    except IntegrityError:
        return None
    _timeline(
        incident, TimelineKind.CREATED, None, note=RaisedBy(raised_by).label, to_status="open"
    )
    record(
        tenant=tenant,
        event_type="security.incident.created",
        payload=_payload(incident, source=source_key),
    )
    return incident


# What a closed incident still records: a breach notification made after it was closed.
AFTER_CLOSING = frozenset({"authority_notified_at", "authority_reference", "subjects_notified_at"})


def _check_closed(incident: Incident, fields: dict) -> None:
    """A closed incident is final: only its breach notifications are still recorded."""
    current = {**{name: getattr(incident, name) for name in fields}}
    if "assigned_to" in fields:
        current["assigned_to"] = incident.assigned_to_id
        fields = {
            **fields,
            "assigned_to": getattr(fields["assigned_to"], "pk", fields["assigned_to"]),
        }
    frozen = sorted(
        name
        for name, value in fields.items()
        if name not in AFTER_CLOSING and current[name] != value
    )
    if frozen:
        raise Conflict(
            "The incident is closed: only a breach notification is still recorded.",
            details={"fields": frozen},
        )


def _event_type(old_status: str, new_status: str) -> str:
    if old_status == new_status:
        return "security.incident.updated"
    if new_status == IncidentStatus.RESOLVED:
        return "security.incident.resolved"
    if new_status == IncidentStatus.CLOSED:
        return "security.incident.closed"
    if old_status == IncidentStatus.RESOLVED:
        return "security.incident.reopened"
    return "security.incident.updated"


def _check_transition(incident: Incident, status: str, resolution_notes: str) -> None:
    if status == incident.status:
        return
    check_move(INCIDENT_TRANSITIONS, incident.status, status, noun="An incident")
    if status == IncidentStatus.RESOLVED and not resolution_notes.strip():
        raise ApplicationError(
            "Resolving an incident needs resolution notes.",
            details={"resolution_notes": ["Say how it was resolved."]},
        )


def _transition_fields(incident: Incident, status: str, now: datetime) -> dict:
    """The timestamps a move sets: resolving sets resolved_at, closing closed_at, reopening
    clears resolved_at (the timeline keeps the earlier resolution)."""
    if status == incident.status:
        return {}
    if status == IncidentStatus.RESOLVED:
        return {"status": status, "resolved_at": now}
    if status == IncidentStatus.CLOSED:
        return {"status": status, "closed_at": now}
    return {"status": status, "resolved_at": None}


def _breach_fields(incident: Incident, fields: dict) -> dict:
    """Setting personal_data_breach starts the deadline (detected_at + 72 h); clearing it, or
    clearing a recorded notification time, is refused once the authority or the subjects were
    notified (a time may be corrected, not removed)."""
    for name in ("authority_notified_at", "subjects_notified_at"):
        if name in fields and fields[name] is None and getattr(incident, name) is not None:
            raise Conflict(
                f"{name} is recorded: it can be corrected, not removed.",
                details={name: getattr(incident, name)},
            )
    if "personal_data_breach" not in fields:
        return fields
    breach = fields["personal_data_breach"]
    if breach == incident.personal_data_breach:
        return fields
    if breach:
        return {
            **fields,
            "authority_notification_due_at": incident.detected_at + BREACH_NOTIFICATION_WINDOW,
            # Flagged again after being cleared: its reminders are due again.
            "breach_due_soon_sent_at": None,
            "breach_overdue_sent_at": None,
        }
    if incident.authority_notified_at is not None or incident.subjects_notified_at is not None:
        raise Conflict(
            "The authority or the data subjects were notified of this breach: it stays a "
            "personal data breach.",
            details={"personal_data_breach": incident.personal_data_breach},
        )
    return {**fields, "authority_notification_due_at": None}


def _timeline_changes(incident, changed: dict, old_status: str, actor) -> None:
    if "status" in changed:
        kind = (
            TimelineKind.REOPENED
            if old_status == IncidentStatus.RESOLVED and incident.status != IncidentStatus.CLOSED
            else TimelineKind.STATUS_CHANGED
        )
        note = incident.resolution_notes if incident.status == IncidentStatus.RESOLVED else ""
        _timeline(
            incident, kind, actor, note=note, from_status=old_status, to_status=incident.status
        )
    if "assigned_to" in changed:
        assignee = incident.assigned_to
        _timeline(incident, TimelineKind.ASSIGNED, actor, note=assignee.email if assignee else "")
    if "personal_data_breach" in changed:
        kind = (
            TimelineKind.BREACH_FLAGGED
            if incident.personal_data_breach
            else TimelineKind.BREACH_UNFLAGGED
        )
        _timeline(incident, kind, actor)
    if changed.get("authority_notified_at", {}).get("to") is not None:
        _timeline(
            incident, TimelineKind.AUTHORITY_NOTIFIED, actor, note=incident.authority_reference
        )
    if changed.get("subjects_notified_at", {}).get("to") is not None:
        _timeline(incident, TimelineKind.SUBJECTS_NOTIFIED, actor)
    described = set(changed) & set(DESCRIBED_FIELDS)
    if "status" in changed:
        # A resolution's notes are in its status entry already.
        described.discard("resolution_notes")
    described = sorted(described)
    if described:
        _timeline(incident, TimelineKind.UPDATED, actor, note=", ".join(described))


@transaction.atomic
def incident_update(
    *,
    incident: Incident,
    actor,
    status=UNSET,
    assigned_to=UNSET,
    title=UNSET,
    description=UNSET,
    severity=UNSET,
    category=UNSET,
    affected_users=UNSET,
    affected_documents=UNSET,
    data_types_affected=UNSET,
    resolution_notes=UNSET,
    personal_data_breach=UNSET,
    authority_notified_at=UNSET,
    authority_reference=UNSET,
    subjects_notified_at=UNSET,
) -> Incident:
    """Change the fields given. A status move must be legal (else 409 CONFLICT): see
    security.models.INCIDENT_TRANSITIONS; resolving needs resolution notes."""
    changes = given(
        title=title,
        description=description,
        severity=severity,
        category=category,
        affected_users=affected_users,
        affected_documents=affected_documents,
        data_types_affected=data_types_affected,
        resolution_notes=resolution_notes,
        personal_data_breach=personal_data_breach,
        authority_notified_at=authority_notified_at,
        authority_reference=authority_reference,
        subjects_notified_at=subjects_notified_at,
    )
    incident = locked_or_404(
        Incident.objects.select_related("assigned_to", "tenant"), pk=incident.pk
    )
    old_status = incident.status
    now = timezone.now()
    fields = dict(changes)
    if status is not UNSET:
        notes = fields.get("resolution_notes", incident.resolution_notes)
        _check_transition(incident, status, notes)
        fields.update(_transition_fields(incident, status, now))
    settled = fields.get("status", incident.status) in (
        IncidentStatus.RESOLVED,
        IncidentStatus.CLOSED,
    )
    if settled and "resolution_notes" in fields and not fields["resolution_notes"].strip():
        raise ApplicationError(
            "A resolved incident keeps its resolution notes.",
            details={"resolution_notes": ["Say how it was resolved."]},
        )
    if old_status == IncidentStatus.CLOSED:
        sent = fields if assigned_to is UNSET else {**fields, "assigned_to": assigned_to}
        _check_closed(incident, sent)
    if assigned_to is not UNSET and getattr(assigned_to, "pk", assigned_to) != (
        incident.assigned_to_id
    ):
        # Checked only when it changes: a document sent back keeps an assignee since suspended.
        fields["assigned_to"] = _assignee(incident.tenant, assigned_to)
    fields = _breach_fields(incident, fields)
    breach = fields.get("personal_data_breach", incident.personal_data_breach)
    given_dates = {
        k: v for k, v in fields.items() if k in ("authority_notified_at", "subjects_notified_at")
    }
    _check_breach_dates(given_dates, detected_at=incident.detected_at, breach=breach, now=now)
    changed = model_update(instance=incident, data=fields)
    if not changed:
        return incident
    _timeline_changes(incident, changed, old_status, actor)
    event_type = _event_type(old_status, incident.status)
    payload = _payload(incident, changed=sorted(changed))
    if old_status != incident.status:
        payload.update(previous_status=old_status, resolved_at=incident.resolved_at)
    record(tenant=incident.tenant, event_type=event_type, actor=actor, payload=payload)
    return incident


# The deadline of a personal data breach ---------------------------------------------------------


def _remind(incident_id, *, stage: str, now: datetime) -> bool:
    """Send one reminder: claim it with a conditional update (a doubled beat's second run
    updates nothing), then the timeline entry and the `security.breach.notification_due` event,
    in one transaction."""
    marker = "breach_due_soon_sent_at" if stage == "due_soon" else "breach_overdue_sent_at"
    with transaction.atomic():
        claimed = Incident.objects.filter(
            pk=incident_id,
            personal_data_breach=True,
            authority_notified_at__isnull=True,
            **{f"{marker}__isnull": True},
        ).update(**{marker: now})
        if not claimed:
            return False
        incident = Incident.objects.get(pk=incident_id)
        due = incident.authority_notification_due_at
        kind = (
            TimelineKind.NOTIFICATION_DUE_SOON
            if stage == "due_soon"
            else TimelineKind.NOTIFICATION_OVERDUE
        )
        _timeline(incident, kind, None, note=f"Due {due.isoformat()}")
        record(
            tenant=incident.tenant,
            event_type="security.breach.notification_due",
            payload=_payload(
                incident,
                stage=stage,
                authority_notification_due_at=due,
                hours_remaining=round((due - now).total_seconds() / 3600, 1),
            ),
        )
    return True


def breach_notifications_remind(*, now: datetime | None = None) -> int:
    """The deadline job: for each unnotified personal data breach, one reminder when its
    deadline is 24 hours away and one when it has passed (a breach flagged late gets the second
    only). Each is sent once, whatever the number of concurrent runs. Returns how many were
    sent."""
    now = now or timezone.now()
    sent = 0
    stages = (
        (
            "due_soon",
            Incident.objects.notification_due_within(BREACH_REMINDER_LEAD, now=now).filter(
                breach_due_soon_sent_at__isnull=True
            ),
        ),
        (
            "overdue",
            Incident.objects.notification_overdue(now=now).filter(
                breach_overdue_sent_at__isnull=True
            ),
        ),
    )
    for stage, due in stages:
        ids = list(
            due.order_by("authority_notification_due_at").values_list("pk", flat=True)[
                :REMINDER_BATCH
            ]
        )
        sent += sum(_remind(incident_id, stage=stage, now=now) for incident_id in ids)
    return sent
