"""What makes the security records records: a closed incident, a concluded audit's findings and
an approved register entry change only in the ways the rules allow; a GET document sent back
is accepted whatever the clock moved since; the admin's actions keep what they do not set."""

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from security.models import ComplianceAudit, Incident, ProcessingActivity
from tests.conftest import assert_envelope
from tests.factories import UserFactory

from .factories import ComplianceAuditFactory, IncidentFactory, ProcessingActivityFactory

pytestmark = pytest.mark.django_db

FINDING = {
    "category": "access_control",
    "severity": "critical",
    "description": "Former contractors keep CRM access",
    "recommendation": "Review access quarterly",
    "status": "open",
}


def incident_url(incident) -> str:
    return f"/api/v1/security/incidents/{incident.pk}/"


def audit_url(audit) -> str:
    return f"/api/v1/security/audits/{audit.pk}/"


def activity_url(activity) -> str:
    return f"/api/v1/security/data-processing/{activity.pk}/"


# A closed incident ------------------------------------------------------------------------------


def _closed(tenant, **fields) -> Incident:
    return IncidentFactory(
        tenant=tenant,
        status="closed",
        resolution_notes="Contained.",
        resolved_at=timezone.now(),
        closed_at=timezone.now(),
        **fields,
    )


@pytest.mark.parametrize(
    "change",
    [
        {"title": "Renamed"},
        {"severity": "low"},
        {"personal_data_breach": True},
        {"resolution_notes": "Rewritten"},
        {"affected_users": 3},
    ],
)
def test_a_closed_incident_changes_no_more(owner, change):
    incident = _closed(owner.tenant)

    response = owner.client.patch(incident_url(incident), change, format="json")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"]["fields"] == sorted(change)
    refreshed = Incident.objects.get(pk=incident.pk)
    assert (refreshed.title, refreshed.severity, refreshed.personal_data_breach) == (
        incident.title,
        incident.severity,
        False,
    )


def test_a_closed_breach_still_records_a_late_notification(owner):
    incident = _closed(
        owner.tenant,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(days=5),
    )
    notified = (timezone.now() - timedelta(hours=1)).isoformat()

    response = owner.client.patch(
        incident_url(incident),
        {"authority_notified_at": notified, "authority_reference": "CNIL-7"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["authority_reference"] == "CNIL-7"
    assert response.json()["notification_overdue"] is False


def test_a_closed_incident_sent_back_unchanged_is_accepted(owner):
    incident = _closed(owner.tenant)
    document = owner.client.get(incident_url(incident)).json()

    response = owner.client.put(incident_url(incident), document, format="json")

    assert response.status_code == 200, response.content


# A GET document sent back ------------------------------------------------------------------------


def test_a_breach_document_sent_back_after_its_deadline_records_the_late_notification(owner):
    incident = IncidentFactory(
        tenant=owner.tenant,
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=71, minutes=59),
    )
    document = owner.client.get(incident_url(incident)).json()
    assert document["notification_overdue"] is False

    with time_machine.travel(timezone.now() + timedelta(hours=2), tick=False):
        document.update(
            authority_notified_at=timezone.now().isoformat(), authority_reference="ICO-2026-11"
        )
        response = owner.client.put(incident_url(incident), document, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["authority_reference"] == "ICO-2026-11"


def test_an_incident_document_sent_back_after_another_change_is_accepted(owner):
    incident = IncidentFactory(tenant=owner.tenant)
    document = owner.client.get(incident_url(incident)).json()
    owner.client.patch(incident_url(incident), {"status": "investigating"}, format="json")
    document.update(title="Renamed", status="investigating")

    response = owner.client.put(incident_url(incident), document, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["title"] == "Renamed"


@pytest.mark.parametrize("status", ["planned", "completed"])
def test_an_audit_document_sent_back_is_accepted(owner, status):
    audit = ComplianceAuditFactory(tenant=owner.tenant, findings=[FINDING])
    if status == "completed":
        owner.client.patch(audit_url(audit), {"status": "completed", "score": 80}, format="json")
    document = owner.client.get(audit_url(audit)).json()
    document["recommendations"] = "Keep going."

    response = owner.client.put(audit_url(audit), document, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["recommendations"] == "Keep going."
    assert response.json()["status"] == status


def test_a_completed_audit_keeps_its_completion_time_against_null(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant)
    owner.client.patch(audit_url(audit), {"status": "completed", "score": 80}, format="json")

    response = owner.client.patch(audit_url(audit), {"completed_at": None}, format="json")

    assert_envelope(response, 409, "CONFLICT")
    assert ComplianceAudit.objects.get(pk=audit.pk).completed_at is not None


# A concluded audit's findings ---------------------------------------------------------------------


@pytest.fixture
def concluded(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant, findings=[FINDING])
    response = owner.client.patch(
        audit_url(audit), {"status": "completed", "score": 40}, format="json"
    )
    assert response.status_code == 200, response.content
    return audit


@pytest.mark.parametrize(
    "findings",
    [
        [],
        [{**FINDING, "severity": "low"}],
        [{**FINDING, "description": "Nothing serious"}],
        [FINDING, {**FINDING, "category": "logging"}],
    ],
    ids=["removed", "downgraded", "reworded", "added"],
)
def test_a_concluded_audits_findings_are_not_rewritten(owner, concluded, findings):
    response = owner.client.patch(audit_url(concluded), {"findings": findings}, format="json")

    assert assert_envelope(response, 409, "CONFLICT")["details"] == {"fields": ["findings"]}
    assert ComplianceAudit.objects.get(pk=concluded.pk).findings == [FINDING]


def test_a_concluded_audits_findings_are_remediated(owner, concluded):
    response = owner.client.patch(
        audit_url(concluded), {"findings": [{**FINDING, "status": "remediated"}]}, format="json"
    )

    assert response.status_code == 200, response.content
    assert ComplianceAudit.objects.get(pk=concluded.pk).findings[0]["status"] == "remediated"


def test_an_audit_cannot_complete_before_it_started(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant)
    owner.client.patch(audit_url(audit), {"status": "in_progress"}, format="json")
    earlier = (timezone.now() - timedelta(days=3)).isoformat()

    response = owner.client.patch(
        audit_url(audit),
        {"status": "completed", "score": 70, "completed_at": earlier},
        format="json",
    )

    assert "completed_at" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert ComplianceAudit.objects.get(pk=audit.pk).status == "in_progress"


def test_too_many_findings_are_refused_before_any_is_checked(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant)

    response = owner.client.patch(audit_url(audit), {"findings": [{}] * 201}, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "200" in str(error["details"]["findings"])


# An approved register entry -----------------------------------------------------------------------


@pytest.fixture
def approved(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant)
    response = owner.client.patch(activity_url(activity), {"status": "approved"}, format="json")
    assert response.status_code == 200, response.content
    return activity


def test_an_approved_activity_is_not_revised_in_place(owner, approved):
    response = owner.client.patch(
        activity_url(approved), {"privacy_impact_score": 9}, format="json"
    )

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"]["fields"] == ["privacy_impact_score"]
    assert ProcessingActivity.objects.get(pk=approved.pk).privacy_impact_score == 4


def test_an_approved_activity_is_revised_as_a_draft(owner, approved):
    response = owner.client.patch(
        activity_url(approved), {"privacy_impact_score": 9, "status": "draft"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["approved_at"], body["approved_by"]) == ("draft", None, None)
    assert body["dpia_required"] is True


def test_an_approved_activity_records_its_dpia(owner, approved):
    response = owner.client.patch(
        activity_url(approved), {"dpia_completed_on": "2026-11-02"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "approved"


# The admin's actions ------------------------------------------------------------------------------


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


CHANGELIST = "/admin/security/incident/"


def test_recording_a_notification_in_the_admin_keeps_the_reference_left_blank(admin_client):
    incident = IncidentFactory(
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=10),
        authority_reference="REF-1",
    )

    admin_client.post(
        CHANGELIST,
        {
            "action": "record_authority_notification",
            "_selected_action": [str(incident.pk)],
            "apply": "1",
            "authority_notified_at": (timezone.now() - timedelta(minutes=5)).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "authority_reference": "",
        },
    )

    refreshed = Incident.objects.get(pk=incident.pk)
    assert refreshed.authority_notified_at is not None
    assert refreshed.authority_reference == "REF-1"


@pytest.mark.parametrize("status", ["open", "investigating"])
def test_the_admin_reopens_only_resolved_incidents(admin_client, status):
    incident = IncidentFactory(status=status)

    response = admin_client.post(
        CHANGELIST,
        {"action": "reopen", "_selected_action": [str(incident.pk)]},
        follow=True,
    )

    assert Incident.objects.get(pk=incident.pk).status == status
    messages = [str(message) for message in response.context["messages"]]
    assert any("Only a resolved incident is reopened" in message for message in messages)
    assert not any("reopened." in message for message in messages)


def test_the_admin_reopens_a_resolved_incident(admin_client):
    incident = IncidentFactory(
        status="resolved", resolution_notes="Done", resolved_at=timezone.now()
    )

    admin_client.post(CHANGELIST, {"action": "reopen", "_selected_action": [str(incident.pk)]})

    refreshed = Incident.objects.get(pk=incident.pk)
    assert (refreshed.status, refreshed.resolved_at) == ("open", None)
    assert refreshed.timeline.filter(kind="reopened").count() == 1


def test_the_database_holds_activity_names_unique_whatever_their_case(owner):
    from django.db import IntegrityError, transaction

    ProcessingActivityFactory(tenant=owner.tenant, name="CRM sync")

    with pytest.raises(IntegrityError), transaction.atomic():
        ProcessingActivityFactory(tenant=owner.tenant, name="crm SYNC")
    ProcessingActivityFactory(name="crm sync")  # another organization's
