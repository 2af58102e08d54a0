"""Security incidents over the API: the generic battery, the legal status moves and what each
one stamps (timeline, timestamps, one audit event), assignees, personal data breaches and their
72-hour deadline, filters and ordering, statistics in a fixed number of queries, the roles and
permission overrides that reach them, and two concurrent closes of one incident."""

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from config.exceptions import ApplicationError, Conflict
from notifications.models import Notification
from security.models import (
    BREACH_NOTIFICATION_WINDOW,
    INCIDENT_TRANSITIONS,
    Incident,
    IncidentStatus,
)
from security.services import incident_update
from tenants.models import MembershipStatus, Role
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, TenantFactory, UserFactory

from .factories import IncidentFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/security/incidents/"
STATS = f"{URL}stats/"
CREATE = {
    "title": "Suspicious login activity",
    "description": "Multiple failed login attempts from suspicious IP addresses",
    "severity": "high",
    "category": "unauthorized_access",
    "affected_users": 5,
    "data_types_affected": ["email", "login_history"],
}


def detail(incident) -> str:
    return f"{URL}{incident.pk}/"


def events(tenant, event_type=None):
    queryset = AuditEvent.objects.filter(tenant=tenant, event_type__startswith="security.incident.")
    return queryset.filter(event_type=event_type) if event_type else queryset


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def kinds(body) -> list[str]:
    return [entry["kind"] for entry in body["timeline"]]


def at(incident, status, **fields):
    """`incident` moved to `status` directly in the database (a test's starting point)."""
    Incident.objects.filter(pk=incident.pk).update(status=status, **fields)
    incident.refresh_from_db()
    return incident


@pytest.fixture
def dpo(make_caller):
    return make_caller(Role.DPO)


# The generic battery -----------------------------------------------------------------------------


class TestIncidents(ResourceBattery):
    url = URL
    create_data = CREATE
    update_data = {"title": "Renamed incident", "severity": "critical", "status": "investigating"}
    audit_prefix = "security.incident"
    filter_examples = {
        "detected_after": lambda incident: "2000-01-01T00:00:00Z",
        "detected_before": lambda incident: "2100-01-01T00:00:00Z",
        "notification_overdue": lambda incident: "false",
        "assigned_to": lambda incident: str(uuid.uuid4()),
    }


# Creating --------------------------------------------------------------------------------------


def test_creating_an_incident_opens_it_with_a_timeline_and_one_created_event(dpo):
    response = dpo.client.post(URL, CREATE, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "open"
    assert body["raised_by"] == "member"
    assert body["reported_by"]["email"] == dpo.user.email
    assert body["data_types_affected"] == ["email", "login_history"]
    assert body["resolved_at"] is None and body["closed_at"] is None
    assert body["personal_data_breach"] is False
    assert body["authority_notification_due_at"] is None
    assert kinds(body) == ["created"]
    assert body["timeline"][0]["to_status"] == "open"
    (event,) = events(dpo.tenant)
    assert event.event_type == "security.incident.created"
    assert event.payload["incident_id"] == body["id"]
    assert event.actor_id == dpo.user.pk


def test_create_defaults_detected_at_to_now(dpo):
    moment = timezone.now() + timedelta(hours=1)
    with time_machine.travel(moment, tick=False):
        body = dpo.client.post(URL, CREATE, format="json").json()

    incident = Incident.objects.get(pk=body["id"])
    assert incident.detected_at == moment


def test_an_incident_cannot_be_created_with_a_status(dpo):
    response = dpo.client.post(URL, {**CREATE, "status": "resolved"}, format="json")

    assert "status" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert not Incident.objects.exists()


def test_detected_at_in_the_future_is_refused(dpo):
    future = (timezone.now() + timedelta(hours=1)).isoformat()

    response = dpo.client.post(URL, {**CREATE, "detected_at": future}, format="json")

    assert "detected_at" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert not Incident.objects.exists()
    assert not events(dpo.tenant).exists()


def test_creating_with_an_assignee_records_the_assignment(dpo):
    colleague = MembershipFactory(tenant=dpo.tenant, role=Role.ADMIN).user

    response = dpo.client.post(URL, {**CREATE, "assigned_to": str(colleague.pk)}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["assigned_to"] == str(colleague.pk)
    assert body["assignee"]["email"] == colleague.email
    assert kinds(body) == ["created", "assigned"]
    assert events(dpo.tenant).count() == 1


def _foreign_member(caller):
    return MembershipFactory(tenant=TenantFactory()).user.pk


def _suspended_member(caller):
    return MembershipFactory(tenant=caller.tenant, status=MembershipStatus.SUSPENDED).user.pk


def _deactivated_user(caller):
    """An active membership of a user whose account was deactivated."""
    return MembershipFactory(tenant=caller.tenant, user=UserFactory(is_active=False)).user.pk


def _random_id(caller):
    return uuid.uuid4()


ASSIGNEES = pytest.mark.parametrize(
    "assignee",
    [_foreign_member, _suspended_member, _deactivated_user, _random_id],
    ids=["another tenant's member", "suspended member", "deactivated user", "random id"],
)
NO_SUCH_MEMBER = {"assigned_to": ["No active member of the organization has this id."]}


@ASSIGNEES
def test_an_assignee_must_be_an_active_member_on_create(dpo, assignee):
    body = {**CREATE, "assigned_to": str(assignee(dpo))}

    response = dpo.client.post(URL, body, format="json")

    assert assert_envelope(response, 400, "VALIDATION_ERROR")["details"] == NO_SUCH_MEMBER
    assert not Incident.objects.exists()
    assert not events(dpo.tenant).exists()


@ASSIGNEES
def test_an_assignee_must_be_an_active_member_on_update(dpo, assignee):
    incident = IncidentFactory(tenant=dpo.tenant)

    response = dpo.client.patch(
        detail(incident), {"assigned_to": str(assignee(dpo))}, format="json"
    )

    assert assert_envelope(response, 400, "VALIDATION_ERROR")["details"] == NO_SUCH_MEMBER
    incident.refresh_from_db()
    assert incident.assigned_to_id is None
    assert not events(dpo.tenant).exists()


# Status moves ----------------------------------------------------------------------------------

LEGAL = sorted(
    (origin, target) for origin, targets in INCIDENT_TRANSITIONS.items() for target in targets
)
ILLEGAL = sorted(
    (origin, target)
    for origin in IncidentStatus.values
    for target in IncidentStatus.values
    if target != origin and target not in INCIDENT_TRANSITIONS[origin]
)
EVENT_OF_MOVE = {
    ("open", "investigating"): "security.incident.updated",
    ("investigating", "open"): "security.incident.updated",
    ("open", "resolved"): "security.incident.resolved",
    ("investigating", "resolved"): "security.incident.resolved",
    ("resolved", "closed"): "security.incident.closed",
    ("resolved", "open"): "security.incident.reopened",
    ("resolved", "investigating"): "security.incident.reopened",
}


def test_the_transition_table_is_the_documented_one():
    assert set(LEGAL) == set(EVENT_OF_MOVE)
    assert INCIDENT_TRANSITIONS["closed"] == frozenset()


@pytest.mark.parametrize(("origin", "target"), LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
def test_each_legal_move_records_one_event_and_a_timeline_entry(dpo, origin, target):
    resolved_at = timezone.now() - timedelta(hours=1) if origin == "resolved" else None
    incident = at(
        IncidentFactory(tenant=dpo.tenant),
        origin,
        resolution_notes="Blocked the IPs" if origin == "resolved" else "",
        resolved_at=resolved_at,
    )
    body = {"status": target}
    if target == "resolved":
        body["resolution_notes"] = "Rotated the credentials."

    response = dpo.client.patch(detail(incident), body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == target
    (event,) = events(dpo.tenant)
    assert event.event_type == EVENT_OF_MOVE[(origin, target)]
    assert event.payload["previous_status"] == origin
    assert event.payload["status"] == target
    (entry,) = response.json()["timeline"]
    assert (entry["from_status"], entry["to_status"]) == (origin, target)
    reopened = origin == "resolved" and target != "closed"
    assert entry["kind"] == ("reopened" if reopened else "status_changed")
    assert entry["actor"]["id"] == str(dpo.user.pk)


@pytest.mark.parametrize(("origin", "target"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
def test_an_illegal_move_is_a_conflict_and_changes_nothing(dpo, origin, target):
    incident = at(IncidentFactory(tenant=dpo.tenant), origin, resolution_notes="Done.")
    before = Incident.objects.values().get(pk=incident.pk)

    response = dpo.client.patch(
        detail(incident), {"status": target, "title": "Changed"}, format="json"
    )

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {
        "status": origin,
        "allowed": sorted(INCIDENT_TRANSITIONS[origin]),
    }
    assert Incident.objects.values().get(pk=incident.pk) == before
    assert not incident.timeline.exists()
    assert not events(dpo.tenant).exists()


def test_closed_incident_cannot_reopen(dpo):
    incident = at(IncidentFactory(tenant=dpo.tenant), "closed", resolution_notes="Done.")

    for target in ("open", "investigating", "resolved"):
        error = assert_envelope(
            dpo.client.patch(detail(incident), {"status": target}, format="json"), 409, "CONFLICT"
        )
        assert "closed is final" in error["message"]
    assert Incident.objects.get(pk=incident.pk).status == "closed"


@pytest.mark.parametrize("notes", [None, "", "   \n"], ids=["missing", "empty", "blank"])
def test_resolving_needs_resolution_notes(dpo, notes):
    incident = IncidentFactory(tenant=dpo.tenant, status="investigating")
    body = (
        {"status": "resolved"}
        if notes is None
        else {"status": "resolved", "resolution_notes": notes}
    )

    response = dpo.client.patch(detail(incident), body, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "resolution_notes" in error["details"]
    incident.refresh_from_db()
    assert (incident.status, incident.resolved_at) == ("investigating", None)
    assert not events(dpo.tenant).exists()


def test_notes_already_on_the_incident_are_enough_to_resolve(dpo):
    incident = IncidentFactory(tenant=dpo.tenant, resolution_notes="Firewall rule added.")

    response = dpo.client.patch(detail(incident), {"status": "resolved"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["timeline"][-1]["note"] == "Firewall rule added."


def test_resolve_close_stamp_their_times_and_reopen_clears_resolved_at(dpo):
    incident = IncidentFactory(tenant=dpo.tenant)
    start = timezone.now()
    resolved_moment = start + timedelta(hours=2)
    reopened_moment = start + timedelta(hours=3)
    resolved_again_moment = start + timedelta(hours=4)
    closed_moment = start + timedelta(hours=5)

    with time_machine.travel(resolved_moment, tick=False):
        body = dpo.client.patch(
            detail(incident),
            {"status": "resolved", "resolution_notes": "Blocked the IP range."},
            format="json",
        ).json()
    assert datetime.fromisoformat(body["resolved_at"]) == resolved_moment
    assert body["closed_at"] is None

    with time_machine.travel(reopened_moment, tick=False):
        body = dpo.client.patch(detail(incident), {"status": "open"}, format="json").json()
    assert body["status"] == "open"
    assert body["resolved_at"] is None

    with time_machine.travel(resolved_again_moment, tick=False):
        dpo.client.patch(
            detail(incident), {"status": "resolved", "resolution_notes": "Again."}, format="json"
        )
    with time_machine.travel(closed_moment, tick=False):
        body = dpo.client.patch(detail(incident), {"status": "closed"}, format="json").json()
    assert body["status"] == "closed"
    assert datetime.fromisoformat(body["closed_at"]) == closed_moment
    assert datetime.fromisoformat(body["resolved_at"]) == resolved_again_moment
    assert kinds(body) == ["status_changed", "reopened", "status_changed", "status_changed"]
    assert [e.event_type for e in events(dpo.tenant).order_by("created_at")] == [
        "security.incident.resolved",
        "security.incident.reopened",
        "security.incident.resolved",
        "security.incident.closed",
    ]


def test_an_update_that_changes_nothing_records_nothing(dpo):
    incident = IncidentFactory(tenant=dpo.tenant, title="Same")

    response = dpo.client.patch(
        detail(incident), {"title": "Same", "status": "open"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["timeline"] == []
    assert not events(dpo.tenant).exists()


def test_a_resolved_incident_keeps_its_resolution_notes(dpo):
    incident = at(
        IncidentFactory(tenant=dpo.tenant),
        "resolved",
        resolution_notes="Rotated the keys.",
        resolved_at=timezone.now(),
    )

    response = dpo.client.patch(detail(incident), {"resolution_notes": " "}, format="json")

    assert "resolution_notes" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert Incident.objects.get(pk=incident.pk).resolution_notes == "Rotated the keys."


@pytest.mark.parametrize("status", ["resolved", "closed"])
@pytest.mark.parametrize("notes", ["", "   "], ids=["empty", "blank"])
def test_the_resolution_notes_of_a_settled_incident_cannot_be_blanked(dpo, status, notes):
    incident = at(
        IncidentFactory(tenant=dpo.tenant),
        status,
        resolution_notes="Rotated the keys.",
        resolved_at=timezone.now(),
    )
    before = Incident.objects.values().get(pk=incident.pk)

    response = dpo.client.patch(
        detail(incident), {"resolution_notes": notes, "title": "Changed"}, format="json"
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"resolution_notes": ["Say how it was resolved."]}
    assert Incident.objects.values().get(pk=incident.pk) == before
    assert not incident.timeline.exists()
    assert not events(dpo.tenant).exists()


@pytest.mark.parametrize("status", ["resolved", "closed"])
def test_the_service_refuses_whitespace_resolution_notes_on_a_settled_incident(dpo, status):
    incident = at(
        IncidentFactory(tenant=dpo.tenant),
        status,
        resolution_notes="Rotated the keys.",
        resolved_at=timezone.now(),
    )

    with pytest.raises(ApplicationError) as raised:
        incident_update(incident=incident, actor=dpo.user, resolution_notes=" \n\t ")

    assert "resolution_notes" in raised.value.details
    assert Incident.objects.get(pk=incident.pk).resolution_notes == "Rotated the keys."


def test_closing_with_blanked_resolution_notes_is_refused(dpo):
    incident = at(
        IncidentFactory(tenant=dpo.tenant),
        "resolved",
        resolution_notes="Rotated the keys.",
        resolved_at=timezone.now(),
    )

    response = dpo.client.patch(
        detail(incident), {"status": "closed", "resolution_notes": ""}, format="json"
    )

    assert "resolution_notes" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    incident.refresh_from_db()
    assert (incident.status, incident.closed_at) == ("resolved", None)
    assert incident.resolution_notes == "Rotated the keys."


def test_the_resolution_notes_of_a_resolved_incident_may_be_rewritten(dpo):
    incident = at(
        IncidentFactory(tenant=dpo.tenant),
        "resolved",
        resolution_notes="Rotated the keys.",
        resolved_at=timezone.now(),
    )

    response = dpo.client.patch(
        detail(incident), {"resolution_notes": "Rotated the keys and the tokens."}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["resolution_notes"] == "Rotated the keys and the tokens."
    assert [(e["kind"], e["note"]) for e in response.json()["timeline"]] == [
        ("updated", "resolution_notes")
    ]


@pytest.mark.parametrize("status", ["open", "investigating"])
def test_the_notes_of_an_unresolved_incident_may_be_blanked(dpo, status):
    incident = IncidentFactory(tenant=dpo.tenant, status=status, resolution_notes="A lead.")

    response = dpo.client.patch(detail(incident), {"resolution_notes": ""}, format="json")

    assert response.status_code == 200, response.content
    assert Incident.objects.get(pk=incident.pk).resolution_notes == ""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("data_types_affected", ["email", "email"]),
        ("affected_users", -1),
        ("severity", "catastrophic"),
        ("category", "alien_invasion"),
        ("title", 42),
    ],
)
def test_bad_fields_are_refused_naming_the_field(dpo, field, value):
    response = dpo.client.post(URL, {**CREATE, field: value}, format="json")

    assert field in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert not Incident.objects.exists()


def test_reassigning_and_unassigning_are_on_the_timeline(dpo):
    first, second = (MembershipFactory(tenant=dpo.tenant).user for _ in range(2))
    incident = IncidentFactory(tenant=dpo.tenant, assigned_to=first)

    dpo.client.patch(detail(incident), {"assigned_to": str(second.pk)}, format="json")
    body = dpo.client.patch(detail(incident), {"assigned_to": None}, format="json").json()

    assert body["assigned_to"] is None and body["assignee"] is None
    assert [(e["kind"], e["note"]) for e in body["timeline"]] == [
        ("assigned", second.email),
        ("assigned", ""),
    ]
    assert events(dpo.tenant, "security.incident.updated").count() == 2


def test_detected_at_is_not_writable_on_update(dpo):
    incident = IncidentFactory(tenant=dpo.tenant)
    earlier = (incident.detected_at - timedelta(days=1)).isoformat()

    response = dpo.client.patch(detail(incident), {"detected_at": earlier}, format="json")

    assert "detected_at" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert Incident.objects.get(pk=incident.pk).detected_at == incident.detected_at


def test_an_incident_cannot_be_deleted(dpo):
    incident = IncidentFactory(tenant=dpo.tenant)

    assert_envelope(dpo.client.delete(detail(incident)), 405)

    assert Incident.objects.filter(pk=incident.pk).exists()


# PUT: seed-style partial bodies and a GET document sent back --------------------------------


def test_put_takes_a_seed_style_partial_body(dpo):
    analyst = MembershipFactory(tenant=dpo.tenant).user
    incident = IncidentFactory(tenant=dpo.tenant, title="Kept")
    body = {
        "status": "investigating",
        "assigned_to": str(analyst.pk),
        "resolution_notes": "Investigating the source IPs.",
    }

    response = dpo.client.put(detail(incident), body, format="json")

    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["status"], data["assigned_to"], data["title"]) == (
        "investigating",
        str(analyst.pk),
        "Kept",
    )
    assert data["resolution_notes"] == "Investigating the source IPs."
    assert kinds(data) == ["status_changed", "assigned"]
    assert events(dpo.tenant).count() == 1


def test_put_accepts_a_get_document_sent_back_with_a_change(dpo):
    analyst = MembershipFactory(tenant=dpo.tenant).user
    incident = IncidentFactory(
        tenant=dpo.tenant,
        assigned_to=analyst,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=5),
    )
    dpo.client.patch(detail(incident), {"status": "investigating"}, format="json")
    document = dpo.client.get(detail(incident)).json()
    document["severity"] = "critical"

    response = dpo.client.put(detail(incident), document, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["severity"] == "critical"
    *kept, added = response.json()["timeline"]
    assert kept == document["timeline"]
    assert (added["kind"], added["note"]) == ("updated", "severity")
    assert events(dpo.tenant).count() == 2


def test_put_refuses_a_changed_read_only_key(dpo):
    incident = IncidentFactory(tenant=dpo.tenant)
    document = dpo.client.get(detail(incident)).json()
    document["raised_by"] = "audit_chain"

    response = dpo.client.put(detail(incident), document, format="json")

    assert "raised_by" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert not events(dpo.tenant).exists()


def test_a_get_document_sent_back_keeps_an_assignee_since_suspended(dpo):
    membership = MembershipFactory(tenant=dpo.tenant)
    incident = IncidentFactory(tenant=dpo.tenant, assigned_to=membership.user)
    document = dpo.client.get(detail(incident)).json()
    membership.status = MembershipStatus.SUSPENDED
    membership.save(update_fields=["status"])
    document["severity"] = "critical"

    response = dpo.client.put(detail(incident), document, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["assigned_to"] == str(membership.user_id)


def test_a_get_document_sent_back_keeps_an_assignee_since_deactivated(dpo):
    analyst = MembershipFactory(tenant=dpo.tenant).user
    incident = IncidentFactory(tenant=dpo.tenant, assigned_to=analyst)
    document = dpo.client.get(detail(incident)).json()
    analyst.is_active = False
    analyst.save(update_fields=["is_active"])
    document["severity"] = "critical"

    response = dpo.client.put(detail(incident), document, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["assigned_to"] == str(analyst.pk)
    assert "assigned" not in kinds(response.json())


def test_an_assignee_since_deactivated_cannot_be_assigned_again(dpo):
    analyst = MembershipFactory(tenant=dpo.tenant).user
    incident = IncidentFactory(tenant=dpo.tenant, assigned_to=analyst)
    dpo.client.patch(detail(incident), {"assigned_to": None}, format="json")
    analyst.is_active = False
    analyst.save(update_fields=["is_active"])

    response = dpo.client.patch(detail(incident), {"assigned_to": str(analyst.pk)}, format="json")

    assert assert_envelope(response, 400, "VALIDATION_ERROR")["details"] == NO_SUCH_MEMBER
    assert Incident.objects.get(pk=incident.pk).assigned_to_id is None
    assert events(dpo.tenant).count() == 1


def test_resending_the_current_assignee_changes_nothing(dpo):
    membership = MembershipFactory(tenant=dpo.tenant)
    incident = IncidentFactory(tenant=dpo.tenant, assigned_to=membership.user)
    membership.status = MembershipStatus.SUSPENDED
    membership.save(update_fields=["status"])

    response = dpo.client.patch(
        detail(incident), {"assigned_to": str(membership.user_id)}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["timeline"] == []
    assert not events(dpo.tenant).exists()


# Personal data breaches ------------------------------------------------------------------------


def test_a_breach_is_due_72_hours_after_its_detection(dpo):
    detected = (timezone.now() - timedelta(hours=10)).replace(microsecond=0)
    body = {**CREATE, "personal_data_breach": True, "detected_at": detected.isoformat()}

    data = dpo.client.post(URL, body, format="json").json()

    due = datetime.fromisoformat(data["authority_notification_due_at"])
    assert due == detected + timedelta(hours=72)
    assert data["notification_overdue"] is False


def test_flagging_a_breach_later_starts_the_clock_at_detection(dpo):
    incident = IncidentFactory(tenant=dpo.tenant, detected_at=timezone.now() - timedelta(hours=80))

    data = dpo.client.patch(detail(incident), {"personal_data_breach": True}, format="json").json()

    incident.refresh_from_db()
    assert (
        incident.authority_notification_due_at == incident.detected_at + BREACH_NOTIFICATION_WINDOW
    )
    assert data["notification_overdue"] is True
    assert kinds(data) == ["breach_flagged"]


def test_a_breach_becomes_overdue_after_72_hours_until_notified(dpo):
    incident = IncidentFactory(tenant=dpo.tenant, personal_data_breach=True)
    detected = incident.detected_at

    with time_machine.travel(detected + timedelta(hours=71), tick=False):
        assert dpo.client.get(detail(incident)).json()["notification_overdue"] is False
    with time_machine.travel(detected + timedelta(hours=73), tick=False):
        assert dpo.client.get(detail(incident)).json()["notification_overdue"] is True
        notified = (detected + timedelta(hours=72, minutes=30)).isoformat()
        data = dpo.client.patch(
            detail(incident),
            {"authority_notified_at": notified, "authority_reference": "CNIL-2026-042"},
            format="json",
        ).json()
    assert data["notification_overdue"] is False
    # Under the frozen clock both entries share one created_at: compared as a set.
    assert {(e["kind"], e["note"]) for e in data["timeline"]} == {
        ("authority_notified", "CNIL-2026-042"),
        ("updated", "authority_reference"),
    }


NOTIFICATION_FIELDS = pytest.mark.parametrize(
    "field", ["authority_notified_at", "subjects_notified_at"]
)


@NOTIFICATION_FIELDS
def test_notification_times_belong_to_a_breach_only_on_create(dpo, field):
    detected = timezone.now() - timedelta(hours=2)
    when = timezone.now() - timedelta(hours=1)
    body = {**CREATE, "detected_at": detected.isoformat(), field: when.isoformat()}

    response = dpo.client.post(URL, body, format="json")

    assert field in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert not Incident.objects.exists()
    # The same times on a breach are accepted.
    response = dpo.client.post(URL, {**body, "personal_data_breach": True}, format="json")
    assert datetime.fromisoformat(response.json()[field]) == when


@NOTIFICATION_FIELDS
def test_notification_times_belong_to_a_breach_only_on_update(dpo, field):
    incident = IncidentFactory(tenant=dpo.tenant, detected_at=timezone.now() - timedelta(hours=2))
    when = (timezone.now() - timedelta(hours=1)).isoformat()

    response = dpo.client.patch(detail(incident), {field: when}, format="json")

    assert field in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert getattr(Incident.objects.get(pk=incident.pk), field) is None


def test_notification_times_given_on_create_are_on_the_timeline(dpo):
    detected = timezone.now() - timedelta(hours=5)
    body = {
        **CREATE,
        "personal_data_breach": True,
        "detected_at": detected.isoformat(),
        "authority_notified_at": (detected + timedelta(hours=2)).isoformat(),
        "authority_reference": "CNIL-2026-007",
        "subjects_notified_at": (detected + timedelta(hours=3)).isoformat(),
    }

    response = dpo.client.post(URL, body, format="json")

    assert response.status_code == 201, response.content
    assert [(e["kind"], e["note"]) for e in response.json()["timeline"]] == [
        ("created", ""),
        ("authority_notified", "CNIL-2026-007"),
        ("subjects_notified", ""),
    ]
    assert {e["actor"]["id"] for e in response.json()["timeline"]} == {str(dpo.user.pk)}
    assert events(dpo.tenant).count() == 1


@NOTIFICATION_FIELDS
def test_one_notification_time_given_on_create_adds_its_entry_only(dpo, field):
    detected = timezone.now() - timedelta(hours=5)
    body = {
        **CREATE,
        "personal_data_breach": True,
        "detected_at": detected.isoformat(),
        field: (detected + timedelta(hours=1)).isoformat(),
    }

    response = dpo.client.post(URL, body, format="json")

    assert response.status_code == 201, response.content
    assert kinds(response.json()) == ["created", field.removesuffix("_at")]


@pytest.mark.parametrize(
    ("field", "offset"),
    [("authority_notified_at", timedelta(hours=-1)), ("subjects_notified_at", timedelta(hours=1))],
)
def test_notification_times_on_create_lie_between_detection_and_now(dpo, field, offset):
    detected = timezone.now() - timedelta(hours=2)
    reference = detected if offset < timedelta(0) else timezone.now()
    body = {
        **CREATE,
        "personal_data_breach": True,
        "detected_at": detected.isoformat(),
        field: (reference + offset).isoformat(),
    }

    response = dpo.client.post(URL, body, format="json")

    assert field in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert not Incident.objects.exists()


@NOTIFICATION_FIELDS
@pytest.mark.parametrize(
    ("offset", "message"),
    [(timedelta(hours=-3), "Cannot be before detected_at."), (timedelta(hours=1), "future")],
    ids=["before detection", "in the future"],
)
def test_notification_times_lie_between_detection_and_now(dpo, field, offset, message):
    now = timezone.now()
    incident = IncidentFactory(
        tenant=dpo.tenant, personal_data_breach=True, detected_at=now - timedelta(hours=2)
    )
    reference = incident.detected_at if offset < timedelta(0) else now

    response = dpo.client.patch(
        detail(incident), {field: (reference + offset).isoformat()}, format="json"
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert message in error["details"][field][0]
    assert getattr(Incident.objects.get(pk=incident.pk), field) is None


def test_a_breach_whose_authority_was_notified_stays_a_breach(dpo):
    incident = IncidentFactory(
        tenant=dpo.tenant,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=5),
    )
    Incident.objects.filter(pk=incident.pk).update(authority_notified_at=timezone.now())

    response = dpo.client.patch(detail(incident), {"personal_data_breach": False}, format="json")

    assert_envelope(response, 409, "CONFLICT")
    incident.refresh_from_db()
    assert incident.personal_data_breach is True
    assert incident.authority_notification_due_at is not None
    assert not events(dpo.tenant).exists()


def notified_breach(tenant, **times):
    """A personal data breach detected 5 hours ago with these notification times recorded."""
    incident = IncidentFactory(
        tenant=tenant,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=5),
    )
    Incident.objects.filter(pk=incident.pk).update(**times)
    incident.refresh_from_db()
    return incident


@NOTIFICATION_FIELDS
def test_a_recorded_notification_time_cannot_be_removed(dpo, field):
    incident = notified_breach(dpo.tenant, **{field: timezone.now() - timedelta(hours=1)})
    before = Incident.objects.values().get(pk=incident.pk)

    response = dpo.client.patch(detail(incident), {field: None, "title": "Changed"}, format="json")

    error = assert_envelope(response, 409, "CONFLICT")
    assert set(error["details"]) == {field}
    assert field in error["message"]
    assert Incident.objects.values().get(pk=incident.pk) == before
    assert not incident.timeline.exists()
    assert not events(dpo.tenant).exists()


@NOTIFICATION_FIELDS
def test_a_recorded_notification_time_may_be_corrected(dpo, field):
    incident = notified_breach(dpo.tenant, **{field: timezone.now() - timedelta(hours=1)})
    corrected = timezone.now() - timedelta(hours=2)

    response = dpo.client.patch(detail(incident), {field: corrected.isoformat()}, format="json")

    assert response.status_code == 200, response.content
    assert datetime.fromisoformat(response.json()[field]) == corrected
    assert getattr(Incident.objects.get(pk=incident.pk), field) == corrected


@NOTIFICATION_FIELDS
def test_a_notification_time_never_recorded_may_be_sent_as_null(dpo, field):
    incident = notified_breach(dpo.tenant)

    response = dpo.client.patch(detail(incident), {field: None}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["timeline"] == []
    assert not events(dpo.tenant).exists()


@NOTIFICATION_FIELDS
def test_unflagging_a_notified_breach_while_clearing_its_time_is_a_conflict(dpo, field):
    incident = notified_breach(dpo.tenant, **{field: timezone.now() - timedelta(hours=1)})
    before = Incident.objects.values().get(pk=incident.pk)

    response = dpo.client.patch(
        detail(incident), {"personal_data_breach": False, field: None}, format="json"
    )

    assert_envelope(response, 409, "CONFLICT")
    assert Incident.objects.values().get(pk=incident.pk) == before
    assert not incident.timeline.exists()
    assert not events(dpo.tenant).exists()


def test_the_service_judges_unflagging_on_the_stored_notification_times(dpo):
    notified = timezone.now() - timedelta(hours=1)
    incident = notified_breach(
        dpo.tenant, authority_notified_at=notified, subjects_notified_at=notified
    )

    for times in (
        {"authority_notified_at": None, "subjects_notified_at": None},
        {"subjects_notified_at": None},
        {},
    ):
        with pytest.raises(Conflict):
            incident_update(incident=incident, actor=dpo.user, personal_data_breach=False, **times)

    incident.refresh_from_db()
    assert incident.personal_data_breach is True
    assert (incident.authority_notified_at, incident.subjects_notified_at) == (notified, notified)
    assert incident.authority_notification_due_at is not None


def test_clearing_an_unnotified_breach_clears_its_deadline(dpo):
    incident = IncidentFactory(tenant=dpo.tenant, personal_data_breach=True)

    data = dpo.client.patch(detail(incident), {"personal_data_breach": False}, format="json").json()

    assert data["personal_data_breach"] is False
    assert data["authority_notification_due_at"] is None
    assert kinds(data) == ["breach_unflagged"]


def test_personal_data_breach_takes_a_json_boolean_only(dpo):
    response = dpo.client.post(URL, {**CREATE, "personal_data_breach": "yes"}, format="json")

    assert "personal_data_breach" in assert_envelope(response, 400)["details"]


def test_notifying_the_data_subjects_is_on_the_timeline(dpo):
    incident = IncidentFactory(
        tenant=dpo.tenant,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=5),
    )
    when = timezone.now() - timedelta(hours=1)

    data = dpo.client.patch(
        detail(incident), {"subjects_notified_at": when.isoformat()}, format="json"
    ).json()

    assert datetime.fromisoformat(data["subjects_notified_at"]) == when
    assert kinds(data) == ["subjects_notified"]
    # The subjects were told: it stays a personal data breach.
    response = dpo.client.patch(detail(incident), {"personal_data_breach": False}, format="json")
    assert_envelope(response, 409, "CONFLICT")


def test_a_notified_breach_get_document_goes_back_unchanged(dpo):
    incident = IncidentFactory(
        tenant=dpo.tenant,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=80),
    )
    notified = (timezone.now() - timedelta(hours=2)).isoformat()
    dpo.client.patch(detail(incident), {"authority_notified_at": notified}, format="json")
    document = dpo.client.get(detail(incident)).json()
    document["description"] = "Updated after the authority's questions."

    response = dpo.client.put(detail(incident), document, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["authority_notified_at"] == document["authority_notified_at"]
    assert response.json()["notification_overdue"] is False
    assert kinds(response.json()) == ["authority_notified", "updated"]
    assert response.json()["timeline"][-1]["note"] == "description"


# The timeline of changed details ---------------------------------------------------------------

DESCRIBED_CHANGES = {
    "title": "Renamed",
    "description": "More detail.",
    "severity": "critical",
    "category": "data_breach",
    "affected_users": 12,
    "affected_documents": 3,
    "data_types_affected": ["iban"],
    "resolution_notes": "Looking at the firewall logs.",
    "authority_reference": "CNIL-2026-001",
}


@pytest.mark.parametrize(("field", "value"), DESCRIBED_CHANGES.items(), ids=DESCRIBED_CHANGES)
def test_changing_a_detail_adds_an_updated_entry_naming_it(dpo, field, value):
    incident = IncidentFactory(tenant=dpo.tenant)

    response = dpo.client.patch(detail(incident), {field: value}, format="json")

    assert response.status_code == 200, response.content
    (entry,) = response.json()["timeline"]
    assert (entry["kind"], entry["note"]) == ("updated", field)
    assert (entry["from_status"], entry["to_status"]) == ("", "")
    assert entry["actor"]["id"] == str(dpo.user.pk)
    (event,) = events(dpo.tenant)
    assert event.event_type == "security.incident.updated"
    assert event.payload["changed"] == [field]


def test_one_updated_entry_lists_every_changed_detail_sorted(dpo):
    incident = IncidentFactory(tenant=dpo.tenant, severity="high", affected_users=0)

    response = dpo.client.patch(detail(incident), DESCRIBED_CHANGES, format="json")

    assert response.status_code == 200, response.content
    (entry,) = response.json()["timeline"]
    assert entry["kind"] == "updated"
    assert entry["note"] == ", ".join(sorted(DESCRIBED_CHANGES))


def test_details_sent_unchanged_are_not_listed(dpo):
    incident = IncidentFactory(tenant=dpo.tenant, title="Kept", severity="high")

    response = dpo.client.patch(
        detail(incident),
        {"title": "Kept", "severity": "low", "description": incident.description},
        format="json",
    )

    assert [(e["kind"], e["note"]) for e in response.json()["timeline"]] == [
        ("updated", "severity")
    ]


def test_a_status_move_with_details_adds_both_entries(dpo):
    incident = IncidentFactory(tenant=dpo.tenant)

    response = dpo.client.patch(
        detail(incident),
        {"status": "investigating", "title": "Renamed", "severity": "low"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert [(e["kind"], e["note"]) for e in response.json()["timeline"]] == [
        ("status_changed", ""),
        ("updated", "severity, title"),
    ]
    assert events(dpo.tenant).count() == 1


def test_resolution_notes_given_with_a_resolution_are_in_its_status_entry_only(dpo):
    incident = IncidentFactory(tenant=dpo.tenant, status="investigating")

    response = dpo.client.patch(
        detail(incident),
        {"status": "resolved", "resolution_notes": "Keys rotated.", "affected_users": 4},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert [(e["kind"], e["note"]) for e in response.json()["timeline"]] == [
        ("status_changed", "Keys rotated."),
        ("updated", "affected_users"),
    ]


def test_resolution_notes_given_with_any_status_move_are_not_listed(dpo):
    incident = IncidentFactory(tenant=dpo.tenant)

    response = dpo.client.patch(
        detail(incident),
        {"status": "investigating", "resolution_notes": "A lead."},
        format="json",
    )

    assert kinds(response.json()) == ["status_changed"]


@pytest.mark.parametrize(
    "change",
    [
        {"assigned_to": "analyst"},
        {"personal_data_breach": True},
        {"status": "investigating"},
    ],
    ids=["assignment", "breach flag", "status"],
)
def test_changes_with_entries_of_their_own_add_no_updated_entry(dpo, change):
    analyst = MembershipFactory(tenant=dpo.tenant).user
    incident = IncidentFactory(tenant=dpo.tenant)
    body = {key: str(analyst.pk) if value == "analyst" else value for key, value in change.items()}

    response = dpo.client.patch(detail(incident), body, format="json")

    assert response.status_code == 200, response.content
    assert len(response.json()["timeline"]) == 1
    assert "updated" not in kinds(response.json())


def test_notifying_the_authority_with_its_reference_lists_the_reference(dpo):
    incident = IncidentFactory(
        tenant=dpo.tenant,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=5),
    )
    notified = (timezone.now() - timedelta(hours=1)).isoformat()

    response = dpo.client.patch(
        detail(incident),
        {"authority_notified_at": notified, "authority_reference": "CNIL-2026-042"},
        format="json",
    )

    assert [(e["kind"], e["note"]) for e in response.json()["timeline"]] == [
        ("authority_notified", "CNIL-2026-042"),
        ("updated", "authority_reference"),
    ]


# Filters, search and ordering ------------------------------------------------------------------


def test_filters_take_several_values_and_a_detection_range(dpo):
    tenant = dpo.tenant
    low = IncidentFactory(tenant=tenant, severity="low", category="other")
    critical = IncidentFactory(tenant=tenant, severity="critical", status="investigating")
    old = IncidentFactory(
        tenant=tenant,
        severity="medium",
        category="data_breach",
        detected_at=datetime(2024, 1, 15, tzinfo=UTC),
    )
    raised = IncidentFactory(tenant=tenant, raised_by="audit_chain", source_key="audit_chain:1")

    def listed(**params):
        return set(ids(dpo.client.get(URL, {**params, "page_size": 100})))

    assert listed(severity="low,critical") == {str(low.pk), str(critical.pk)}
    assert listed(status="investigating") == {str(critical.pk)}
    assert listed(category="other,data_breach") == {str(low.pk), str(old.pk)}
    assert listed(raised_by="audit_chain") == {str(raised.pk)}
    assert listed(
        detected_after="2024-01-01T00:00:00Z", detected_before="2024-02-01T00:00:00Z"
    ) == {str(old.pk)}
    assert_envelope(dpo.client.get(URL, {"severity": "low,nope"}), 400, "VALIDATION_ERROR")


def test_filter_by_assignee_breach_and_overdue_notification(dpo):
    tenant = dpo.tenant
    analyst = MembershipFactory(tenant=tenant).user
    assigned = IncidentFactory(tenant=tenant, assigned_to=analyst)
    overdue = IncidentFactory(
        tenant=tenant,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=80),
    )
    fresh_breach = IncidentFactory(tenant=tenant, personal_data_breach=True)

    def listed(**params):
        return set(ids(dpo.client.get(URL, params)))

    assert listed(assigned_to=str(analyst.pk)) == {str(assigned.pk)}
    assert listed(personal_data_breach="true") == {str(overdue.pk), str(fresh_breach.pk)}
    assert listed(notification_overdue="true") == {str(overdue.pk)}
    assert listed(notification_overdue="false") == {str(assigned.pk), str(fresh_breach.pk)}


def test_search_looks_at_title_and_description(dpo):
    by_title = IncidentFactory(tenant=dpo.tenant, title="Phishing wave", description="")
    by_description = IncidentFactory(tenant=dpo.tenant, description="A phishing e-mail")
    IncidentFactory(tenant=dpo.tenant, title="Lost laptop", description="Left on a train")

    assert set(ids(dpo.client.get(URL, {"search": "phishing"}))) == {
        str(by_title.pk),
        str(by_description.pk),
    }


def test_severity_sorts_by_rank_not_alphabetically(dpo):
    for severity in ("medium", "critical", "low", "high"):
        IncidentFactory(tenant=dpo.tenant, severity=severity, title=severity)

    rows = dpo.client.get(URL, {"ordering": "severity"}).json()["results"]
    assert [row["severity"] for row in rows] == ["low", "medium", "high", "critical"]
    rows = dpo.client.get(URL, {"ordering": "-severity"}).json()["results"]
    assert [row["severity"] for row in rows] == ["critical", "high", "medium", "low"]


def test_the_list_is_newest_detection_first(dpo):
    now = timezone.now()
    older = IncidentFactory(tenant=dpo.tenant, detected_at=now - timedelta(days=2))
    newer = IncidentFactory(tenant=dpo.tenant, detected_at=now - timedelta(hours=1))

    assert ids(dpo.client.get(URL)) == [str(newer.pk), str(older.pk)]


# Statistics ------------------------------------------------------------------------------------


def test_stats_count_the_period_by_severity_status_and_day(dpo):
    # Noon tomorrow: frozen, and after the tokens were issued.
    now = (timezone.now() + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    tenant = dpo.tenant
    with time_machine.travel(now, tick=False):
        IncidentFactory(tenant=tenant, severity="critical", detected_at=now - timedelta(hours=1))
        IncidentFactory(tenant=tenant, severity="low", detected_at=now - timedelta(days=1))
        IncidentFactory(
            tenant=tenant,
            severity="high",
            status="resolved",
            detected_at=now - timedelta(days=1),
            resolved_at=now - timedelta(days=1) + timedelta(hours=4),
        )
        IncidentFactory(
            tenant=tenant,
            severity="critical",
            status="closed",
            detected_at=now - timedelta(days=2),
            resolved_at=now - timedelta(days=2) + timedelta(hours=8),
            closed_at=now,
        )
        IncidentFactory(tenant=tenant, status="investigating", detected_at=now - timedelta(days=2))
        # Outside the period, and another tenant's.
        IncidentFactory(tenant=tenant, severity="critical", detected_at=now - timedelta(days=10))
        IncidentFactory(severity="critical", detected_at=now)

        response = dpo.client.get(STATS, {"days": 7})

    assert response.status_code == 200, response.content
    stats = response.json()
    assert stats["organization_id"] == str(tenant.pk)
    assert stats["period"] == {
        "days": 7,
        "start_date": (now.date() - timedelta(days=6)).isoformat(),
        "end_date": now.date().isoformat(),
    }
    assert stats["summary"] == {
        "total_incidents": 5,
        "critical_incidents": 2,
        "open_incidents": 2,
        "avg_resolution_hours": 6.0,
    }
    assert stats["by_severity"] == {"critical": 2, "high": 2, "medium": 0, "low": 1}
    assert stats["by_status"] == {"open": 2, "investigating": 1, "resolved": 1, "closed": 1}
    assert len(stats["trends"]) == 7
    assert [t["count"] for t in stats["trends"]] == [0, 0, 0, 0, 2, 2, 1]
    assert stats["trends"][-1]["date"] == now.date().isoformat()


def test_stats_default_to_30_days_and_an_empty_tenant_has_zeros(dpo):
    stats = dpo.client.get(STATS).json()

    assert stats["period"]["days"] == 30
    assert len(stats["trends"]) == 30
    assert stats["summary"] == {
        "total_incidents": 0,
        "critical_incidents": 0,
        "open_incidents": 0,
        "avg_resolution_hours": None,
    }
    assert set(stats["by_status"].values()) == {0}


@pytest.mark.parametrize("days", ["0", "366", "-1", "week"])
def test_stats_days_must_be_between_1_and_365(dpo, days):
    error = assert_envelope(dpo.client.get(STATS, {"days": days}), 400, "VALIDATION_ERROR")
    assert "days" in error["details"]


def test_stats_cost_a_constant_number_of_queries(make_caller):
    def count(rows: int) -> int:
        caller = make_caller(Role.DPO)
        now = timezone.now()
        for n in range(rows):
            IncidentFactory(
                tenant=caller.tenant,
                severity=("low", "high", "critical")[n % 3],
                status=("open", "resolved")[n % 2],
                detected_at=now - timedelta(days=n % 20, hours=1),
                resolved_at=now if n % 2 else None,
            )
        with CaptureQueriesContext(connection) as captured:
            response = caller.client.get(STATS, {"days": 30})
        assert response.json()["summary"]["total_incidents"] == rows
        return len(captured)

    assert count(2) == count(15)


# Permissions and tenancy -----------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.BILLING])
def test_roles_without_security_permissions_are_refused(make_caller, role):
    caller = make_caller(role)
    incident = IncidentFactory(tenant=caller.tenant)

    for response in (
        caller.client.get(URL),
        caller.client.get(detail(incident)),
        caller.client.get(STATS),
        caller.client.post(URL, CREATE, format="json"),
        caller.client.patch(detail(incident), {"title": "Nope"}, format="json"),
    ):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert Incident.objects.filter(tenant=caller.tenant).count() == 1
    assert Incident.objects.get(pk=incident.pk).title != "Nope"


@pytest.mark.parametrize("role", [Role.DPO, Role.ADMIN, Role.OWNER])
def test_security_roles_read_and_write(make_caller, role):
    caller = make_caller(role)

    created = caller.client.post(URL, CREATE, format="json")

    assert created.status_code == 201, created.content
    assert ids(caller.client.get(URL)) == [created.json()["id"]]
    assert caller.client.get(STATS).json()["summary"]["total_incidents"] == 1


def test_a_read_override_lets_a_viewer_read_but_not_write(make_caller):
    viewer = make_caller(Role.VIEWER, permissions={"security": {"read": True}})
    incident = IncidentFactory(tenant=viewer.tenant)

    assert ids(viewer.client.get(URL)) == [str(incident.pk)]
    assert viewer.client.get(detail(incident)).json()["id"] == str(incident.pk)
    assert viewer.client.get(STATS).status_code == 200
    assert_envelope(viewer.client.post(URL, CREATE, format="json"), 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(
        viewer.client.patch(detail(incident), {"status": "investigating"}, format="json"),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    assert Incident.objects.get(pk=incident.pk).status == "open"


def test_a_write_override_off_stops_a_dpo_from_writing(make_caller):
    dpo = make_caller(Role.DPO, permissions={"security": {"write": False}})
    incident = IncidentFactory(tenant=dpo.tenant)

    assert dpo.client.get(detail(incident)).status_code == 200
    assert_envelope(
        dpo.client.put(detail(incident), {"title": "x"}, format="json"),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )


def test_another_tenants_incident_is_not_found_like_a_random_id(dpo):
    foreign = IncidentFactory(tenant=TenantFactory())

    errors = [
        assert_envelope(dpo.client.get(f"{URL}{pk}/"), 404, "RESOURCE_NOT_FOUND")
        for pk in (foreign.pk, uuid.uuid4())
    ]
    patched = dpo.client.patch(detail(foreign), {"status": "investigating"}, format="json")

    assert errors[0]["message"] == errors[1]["message"]
    assert_envelope(patched, 404, "RESOURCE_NOT_FOUND")
    assert Incident.objects.get(pk=foreign.pk).status == "open"


def test_stats_never_count_another_tenants_incidents(dpo):
    IncidentFactory.create_batch(3, tenant=TenantFactory())

    assert dpo.client.get(STATS).json()["summary"]["total_incidents"] == 0


# Events and notifications ----------------------------------------------------------------------


def security_team(tenant):
    return {
        role: MembershipFactory(tenant=tenant, role=role).user for role in (Role.DPO, Role.MEMBER)
    }


def in_app(tenant, user, event_type):
    return Notification.objects.filter(
        tenant=tenant, recipient=user, event_type=event_type, channel="in_app"
    )


def test_creating_an_incident_notifies_the_security_roles(owner):
    team = security_team(owner.tenant)

    owner.client.post(URL, CREATE, format="json")

    created = "security.incident.created"
    assert events(owner.tenant, created).count() == 1
    notice = in_app(owner.tenant, team[Role.DPO], created).get()
    assert notice.title == f"Security incident: {CREATE['title']}"
    assert notice.type == "warning"
    assert not in_app(owner.tenant, team[Role.MEMBER], created).exists()


def test_resolving_an_incident_notifies_the_security_roles(owner):
    team = security_team(owner.tenant)
    incident = IncidentFactory(tenant=owner.tenant, title="Leaked token")

    owner.client.patch(
        detail(incident),
        {"status": "resolved", "resolution_notes": "Token revoked."},
        format="json",
    )

    resolved = "security.incident.resolved"
    (event,) = events(owner.tenant, resolved)
    assert event.payload["resolved_at"] is not None
    notice = in_app(owner.tenant, team[Role.DPO], resolved).get()
    assert notice.title == "Incident resolved: Leaked token"
    assert not in_app(owner.tenant, team[Role.MEMBER], resolved).exists()


def test_the_audit_payload_never_names_the_assignee_by_email(dpo):
    analyst = MembershipFactory(tenant=dpo.tenant).user

    dpo.client.post(URL, {**CREATE, "assigned_to": str(analyst.pk)}, format="json")

    (event,) = events(dpo.tenant)
    assert analyst.email not in str(event.payload)


# Concurrency (PostgreSQL) ----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_closes_close_the_incident_once(is_postgres):
    if not is_postgres:
        pytest.skip("needs PostgreSQL row locks")
    tenant = TenantFactory()
    actor = MembershipFactory(tenant=tenant, role=Role.DPO).user
    incident = IncidentFactory(
        tenant=tenant, status="resolved", resolution_notes="Done.", resolved_at=timezone.now()
    )
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def close():
        try:
            start.wait()
            incident_update(incident=incident, actor=actor, status="closed")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=close) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    incident.refresh_from_db()
    assert incident.status == "closed" and incident.closed_at is not None
    closes = incident.timeline.filter(kind="status_changed", to_status="closed")
    assert closes.count() == 1
    assert events(tenant, "security.incident.closed").count() == 1
    assert events(tenant).count() == 1
