"""Compliance audits, the register of processing activities (GDPR Art. 30) and the security
reports: the generic battery for both resources, audit status moves with their score,
completion time and findings, the DPIA rule and the activity lifecycle, the GDPR register in
JSON and CSV, the dashboard's risk level and every recommendation rule, constant query counts,
and the roles that may (or may not) use all of it."""

import csv
import io
import json
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from notifications.models import Channel, Notification, WebhookDelivery, WebhookEvent
from security.models import AUDIT_TRANSITIONS, ComplianceAudit, ProcessingActivity
from security.selectors import PRIORITY_ORDER, RULES
from tenants.models import Role
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import TenantFactory
from tests.notifications.factories import WebhookEndpointFactory

from .factories import ComplianceAuditFactory, IncidentFactory, ProcessingActivityFactory

pytestmark = pytest.mark.django_db

AUDITS = "/api/v1/security/audits/"
ACTIVITIES = "/api/v1/security/data-processing/"
REGISTER = "/api/v1/security/reports/gdpr-register/"
DASHBOARD = "/api/v1/security/reports/security-dashboard/"

AUDIT_BODY = {
    "audit_type": "internal",
    "framework": "gdpr",
    "title": "Q1 2026 GDPR compliance review",
    "scope": "Customer data",
    "planned_date": "2026-03-01",
}
ACTIVITY_BODY = {
    "name": "Customer support",
    "purpose": "Answer customer requests",
    "legal_basis": "contract",
    "retention_period_months": 24,
    "privacy_impact_score": 3,
    "data_categories": ["contact_data"],
    "data_subjects": ["customers"],
}
FINDING = {"category": "data_retention", "severity": "medium", "description": "Logs kept too long"}


def audit_url(audit) -> str:
    return f"{AUDITS}{audit.pk}/"


def activity_url(activity) -> str:
    return f"{ACTIVITIES}{activity.pk}/"


def call(client, method: str, url: str, body=None):
    if body is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, body, format="json")


def events(tenant, event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, event_type=event_type))


def completed_audit(
    tenant, *, framework="gdpr", score=90, days_ago=10, findings=(), status="completed", **fields
):
    """A concluded audit (completed unless told), `days_ago` days ago."""
    return ComplianceAuditFactory(
        tenant=tenant,
        framework=framework,
        status=status,
        score=score,
        started_at=timezone.now() - timedelta(days=days_ago + 1),
        completed_at=timezone.now() - timedelta(days=days_ago),
        findings=list(findings),
        **fields,
    )


# The generic battery ----------------------------------------------------------------------------


class TestComplianceAudits(ResourceBattery):
    url = AUDITS
    create_data = AUDIT_BODY
    update_data = {"title": "Q1 2026 GDPR review (revised)", "status": "in_progress"}
    audit_prefix = "compliance.audit"
    filter_examples = {
        "planned_after": lambda audit: "2000-01-01",
        "planned_before": lambda audit: "2100-01-01",
    }


class TestProcessingActivities(ResourceBattery):
    url = ACTIVITIES
    create_data = ACTIVITY_BODY
    update_data = {"name": "Customer support (revised)", "privacy_impact_score": 5}
    audit_prefix = "processing_activity"


# Compliance audits ------------------------------------------------------------------------------


def test_planning_an_audit_answers_it_planned_with_its_creator_and_records_the_event(owner):
    response = owner.client.post(AUDITS, AUDIT_BODY, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "planned"
    assert body["score"] is None
    assert body["findings"] == []
    assert body["started_at"] is None and body["completed_at"] is None
    assert body["planned_date"] == "2026-03-01"
    assert body["created_by"]["email"] == owner.user.email
    [event] = events(owner.tenant, "compliance.audit.created")
    assert event.payload["audit_id"] == body["id"]


@pytest.mark.parametrize(
    "extra", [{"status": "completed"}, {"score": 90}, {"completed_at": "2026-01-01T00:00:00Z"}]
)
def test_an_audit_is_planned_first_status_score_and_completion_are_not_given_at_creation(
    owner, extra
):
    error = assert_envelope(
        owner.client.post(AUDITS, {**AUDIT_BODY, **extra}, format="json"), 400, "VALIDATION_ERROR"
    )
    assert set(extra) <= set(error["details"])
    assert not ComplianceAudit.objects.exists()


def test_an_audit_cannot_be_deleted(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant)

    assert_envelope(owner.client.delete(audit_url(audit)), 405)

    assert ComplianceAudit.objects.filter(pk=audit.pk).exists()


def test_audit_filters_take_several_values_a_planned_range_search_and_ordering(owner):
    tenant = owner.tenant
    gdpr = ComplianceAuditFactory(
        tenant=tenant, framework="gdpr", planned_date="2026-01-10", auditor_name="Acme Audit"
    )
    iso = completed_audit(tenant, framework="iso27001", score=60, audit_type="external")
    soc2 = completed_audit(tenant, framework="soc2", score=95, audit_type="certification")
    hds = ComplianceAuditFactory(tenant=tenant, framework="hds", planned_date="2026-06-01")
    ComplianceAuditFactory(tenant=TenantFactory(), framework="gdpr", auditor_name="Acme Audit")

    def ids(**params):
        response = owner.client.get(AUDITS, params)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert set(ids(framework="gdpr,soc2")) == {str(gdpr.pk), str(soc2.pk)}
    assert set(ids(status="completed")) == {str(iso.pk), str(soc2.pk)}
    assert set(ids(audit_type="external,certification")) == {str(iso.pk), str(soc2.pk)}
    assert ids(planned_after="2026-01-01", planned_before="2026-03-31") == [str(gdpr.pk)]
    assert ids(planned_after="2026-06-01") == [str(hds.pk)]
    assert ids(search="acme") == [str(gdpr.pk)]
    assert ids(status="completed", ordering="-score") == [str(soc2.pk), str(iso.pk)]
    assert ids(status="completed", ordering="score") == [str(iso.pk), str(soc2.pk)]
    assert_envelope(owner.client.get(AUDITS, {"framework": "gdpr,pci"}), 400, "VALIDATION_ERROR")


LEGAL_MOVES = [
    (source, target) for source, targets in AUDIT_TRANSITIONS.items() for target in sorted(targets)
]
EVENT_OF_MOVE = {"completed": "compliance.audit.completed", "failed": "compliance.audit.failed"}


@pytest.mark.parametrize(("source", "target"), LEGAL_MOVES)
def test_each_legal_status_move_is_made_and_records_its_event(owner, source, target):
    audit = ComplianceAuditFactory(tenant=owner.tenant, status=source)
    body = {"status": target, **({"score": 75} if target == "completed" else {})}

    response = owner.client.patch(audit_url(audit), body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == target
    [event] = events(owner.tenant, EVENT_OF_MOVE.get(target, "compliance.audit.updated"))
    assert event.payload["previous_status"] == source
    assert event.payload["status"] == target


CONCLUDED_MOVES = [
    (source, target)
    for source in ("completed", "failed")
    for target in ("planned", "in_progress", "completed", "failed")
    if source != target
]


@pytest.mark.parametrize(("source", "target"), CONCLUDED_MOVES)
def test_a_concluded_audit_keeps_its_outcome_a_status_move_is_409(owner, source, target):
    audit = completed_audit(owner.tenant, status=source, score=80)
    body = {"status": target, **({"score": 80} if target == "completed" else {})}

    error = assert_envelope(owner.client.patch(audit_url(audit), body, format="json"), 409)

    assert error["code"] == "CONFLICT"
    assert "status" in error["details"]["fields"]
    audit.refresh_from_db()
    assert audit.status == source


def test_starting_an_audit_sets_started_at_and_going_back_to_planned_keeps_it(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant)

    with time_machine.travel(timezone.now(), tick=False):
        started = owner.client.patch(audit_url(audit), {"status": "in_progress"}, format="json")
        now = timezone.now()
    back = owner.client.patch(audit_url(audit), {"status": "planned"}, format="json")

    assert started.status_code == 200, started.content
    audit.refresh_from_db()
    assert audit.started_at == now
    assert back.json()["status"] == "planned"
    assert back.json()["started_at"] == started.json()["started_at"]


@pytest.mark.parametrize("source", ["planned", "in_progress"])
def test_completing_without_a_score_is_400_and_changes_nothing(owner, source):
    audit = ComplianceAuditFactory(tenant=owner.tenant, status=source)

    for body in ({"status": "completed"}, {"status": "completed", "score": None}):
        error = assert_envelope(
            owner.client.patch(audit_url(audit), body, format="json"), 400, "VALIDATION_ERROR"
        )
        assert "score" in error["details"]

    audit.refresh_from_db()
    assert audit.status == source
    assert audit.completed_at is None
    assert not events(owner.tenant, "compliance.audit.completed")


@pytest.mark.parametrize(("score", "accepted"), [(0, True), (100, True), (101, False), (-1, False)])
def test_the_score_is_0_to_100(owner, score, accepted):
    audit = ComplianceAuditFactory(tenant=owner.tenant, status="in_progress")

    response = owner.client.patch(
        audit_url(audit), {"status": "completed", "score": score}, format="json"
    )

    if accepted:
        assert response.status_code == 200, response.content
        assert response.json()["score"] == score
    else:
        assert "score" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
        audit.refresh_from_db()
        assert (audit.status, audit.score) == ("in_progress", None)


def test_completing_sets_completed_at_now_and_a_planned_audit_also_gets_started_at(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant)

    with time_machine.travel(timezone.now(), tick=False):
        response = owner.client.patch(
            audit_url(audit), {"status": "completed", "score": 85}, format="json"
        )
        now = timezone.now()

    assert response.status_code == 200, response.content
    audit.refresh_from_db()
    assert audit.completed_at == now
    assert audit.started_at == now
    [event] = events(owner.tenant, "compliance.audit.completed")
    assert event.payload["score"] == 85
    assert event.payload["previous_status"] == "planned"


def test_completing_with_a_past_completed_at_keeps_that_time(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant, status="in_progress")
    when = (timezone.now() - timedelta(days=3)).replace(microsecond=0)

    response = owner.client.patch(
        audit_url(audit),
        {"status": "completed", "score": 70, "completed_at": when.isoformat()},
        format="json",
    )

    assert response.status_code == 200, response.content
    audit.refresh_from_db()
    assert audit.completed_at == when


def test_a_completed_at_in_the_future_is_400(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant, status="in_progress")
    future = (timezone.now() + timedelta(hours=1)).isoformat()

    error = assert_envelope(
        owner.client.patch(
            audit_url(audit),
            {"status": "completed", "score": 70, "completed_at": future},
            format="json",
        ),
        400,
        "VALIDATION_ERROR",
    )

    assert "completed_at" in error["details"]
    audit.refresh_from_db()
    assert audit.status == "in_progress"


@pytest.mark.parametrize("body", [{}, {"status": "in_progress"}, {"status": "planned"}])
def test_a_completed_at_given_while_not_concluding_is_400(owner, body):
    audit = ComplianceAuditFactory(tenant=owner.tenant, status="in_progress")
    past = (timezone.now() - timedelta(days=1)).isoformat()

    error = assert_envelope(
        owner.client.patch(audit_url(audit), {**body, "completed_at": past}, format="json"),
        400,
        "VALIDATION_ERROR",
    )

    assert "completed_at" in error["details"]
    audit.refresh_from_db()
    assert audit.completed_at is None


def test_completion_is_a_public_event_for_subscribed_endpoints_and_security_roles(make_caller):
    owner = make_caller(Role.OWNER)
    tenant = owner.tenant
    admin = make_caller(Role.ADMIN, tenant=tenant)
    dpo = make_caller(Role.DPO, tenant=tenant)
    make_caller(Role.VIEWER, tenant=tenant)
    make_caller(Role.MEMBER, tenant=tenant)
    subscribed = WebhookEndpointFactory(tenant=tenant, events=["compliance.audit.completed"])
    other = WebhookEndpointFactory(tenant=tenant, events=["organization.member.joined"])
    audit = ComplianceAuditFactory(tenant=tenant, status="in_progress")
    findings = [FINDING, {**FINDING, "status": "remediated"}]

    response = dpo.client.patch(
        audit_url(audit), {"status": "completed", "score": 82, "findings": findings}, format="json"
    )

    assert response.status_code == 200, response.content
    [delivery] = WebhookDelivery.objects.filter(tenant=tenant)
    assert delivery.endpoint_id == subscribed.pk
    assert delivery.event_type == "compliance.audit.completed"
    assert not WebhookDelivery.objects.filter(endpoint=other).exists()
    data = json.loads(WebhookEvent.objects.get(pk=delivery.event_id).body)["data"]
    assert data["audit_id"] == str(audit.pk)
    assert (data["score"], data["findings_count"], data["open_findings"]) == (82, 2, 1)
    recipients = set(
        Notification.objects.filter(
            tenant=tenant, event_type="compliance.audit.completed", channel=Channel.IN_APP
        ).values_list("recipient", flat=True)
    )
    assert recipients == {owner.user.pk, admin.user.pk, dpo.user.pk}


def test_failing_an_audit_records_the_failed_event_sets_completed_at_and_is_not_public(owner):
    WebhookEndpointFactory(tenant=owner.tenant, events=["*"])
    audit = ComplianceAuditFactory(tenant=owner.tenant, status="in_progress")

    response = owner.client.patch(audit_url(audit), {"status": "failed"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "failed"
    assert body["score"] is None
    assert body["completed_at"] is not None
    assert len(events(owner.tenant, "compliance.audit.failed")) == 1
    assert not events(owner.tenant, "compliance.audit.completed")
    assert not WebhookDelivery.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_a_concluded_audit_still_takes_findings_and_recommendations(owner, outcome):
    audit = completed_audit(owner.tenant, status=outcome, findings=[FINDING])
    remediated = [{**FINDING, "status": "remediated"}]

    response = owner.client.patch(
        audit_url(audit),
        {"findings": remediated, "recommendations": "Shorten log retention"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["findings"][0]["status"] == "remediated"
    assert response.json()["recommendations"] == "Shorten log retention"
    assert len(events(owner.tenant, "compliance.audit.updated")) == 1


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"title": "Renamed"}, ["title"]),
        ({"score": 10}, ["score"]),
        ({"framework": "soc2", "findings": []}, ["framework"]),
        (
            {"auditor_name": "Someone else", "planned_date": "2027-01-01"},
            ["auditor_name", "planned_date"],
        ),
    ],
)
def test_a_concluded_audit_refuses_other_changes_with_409_naming_the_fields(owner, body, fields):
    audit = completed_audit(owner.tenant, score=80, findings=[FINDING])

    error = assert_envelope(owner.client.patch(audit_url(audit), body, format="json"), 409)

    assert error["code"] == "CONFLICT"
    assert error["details"]["fields"] == fields
    audit.refresh_from_db()
    assert audit.title != "Renamed" and audit.score == 80 and audit.findings == [FINDING]


def test_a_concluded_audit_put_back_as_shown_with_new_recommendations_is_accepted(owner):
    audit = completed_audit(owner.tenant, score=80, findings=[FINDING])
    shown = owner.client.get(audit_url(audit)).json()

    response = owner.client.put(
        audit_url(audit), {**shown, "recommendations": "Review yearly"}, format="json"
    )

    assert response.status_code == 200, response.content
    audit.refresh_from_db()
    assert audit.recommendations == "Review yearly"
    assert audit.status == "completed" and audit.score == 80


def test_a_finding_defaults_to_open_with_an_empty_recommendation(owner):
    response = owner.client.post(AUDITS, {**AUDIT_BODY, "findings": [FINDING]}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["findings"] == [{**FINDING, "recommendation": "", "status": "open"}]


@pytest.mark.parametrize(
    "findings",
    [
        [{**FINDING, "cvss": 9.8}],
        [{"category": "access", "severity": "high"}],
        [{**FINDING, "severity": "urgent"}],
        [{**FINDING, "status": "fixed"}],
        ["Logs kept too long"],
        FINDING,
    ],
    ids=["unknown key", "no description", "bad severity", "bad status", "not an object", "no list"],
)
def test_a_bad_finding_is_400_on_create_and_put_and_changes_nothing(owner, findings):
    audit = ComplianceAuditFactory(tenant=owner.tenant, findings=[FINDING])
    events_before = AuditEvent.objects.filter(tenant=owner.tenant).count()

    for response in (
        owner.client.post(AUDITS, {**AUDIT_BODY, "findings": findings}, format="json"),
        owner.client.put(audit_url(audit), {"findings": findings}, format="json"),
    ):
        error = assert_envelope(response, 400, "VALIDATION_ERROR")
        assert "findings" in error["details"]

    audit.refresh_from_db()
    assert audit.findings == [FINDING]
    assert ComplianceAudit.objects.count() == 1
    assert AuditEvent.objects.filter(tenant=owner.tenant).count() == events_before


# In a PATCH DRF skips the required fields and defaults of nested serializers: each item is
# validated whole all the same (security.serializers._WholeItems).


@pytest.mark.parametrize(
    "findings",
    [
        [{**FINDING, "cvss": 9.8}],
        [{**FINDING, "severity": "urgent"}],
        [{**FINDING, "status": "fixed"}],
        ["Logs kept too long"],
        [{"category": "access", "severity": "high"}],
        [{}],
    ],
    ids=["unknown key", "bad severity", "bad status", "not an object", "no description", "empty"],
)
def test_a_bad_finding_is_400_on_patch_and_changes_nothing(owner, findings):
    audit = ComplianceAuditFactory(tenant=owner.tenant, findings=[FINDING])
    owner.client.raise_request_exception = False

    response = owner.client.patch(audit_url(audit), {"findings": findings}, format="json")

    assert "findings" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    audit.refresh_from_db()
    assert audit.findings == [FINDING]
    assert owner.client.get(audit_url(audit)).status_code == 200


def test_a_transfer_without_its_safeguard_is_400_on_patch_and_changes_nothing(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant)
    owner.client.raise_request_exception = False

    response = owner.client.patch(
        activity_url(activity), {"international_transfers": [{"country": "US"}]}, format="json"
    )

    assert_envelope(response, 400, "VALIDATION_ERROR")
    activity.refresh_from_db()
    assert activity.international_transfers == []
    assert owner.client.get(REGISTER, {"format": "csv"}).status_code == 200


def test_an_audit_holds_at_most_200_findings(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant)

    too_many = owner.client.patch(audit_url(audit), {"findings": [FINDING] * 201}, format="json")
    enough = owner.client.patch(audit_url(audit), {"findings": [FINDING] * 200}, format="json")

    assert "findings" in assert_envelope(too_many, 400, "VALIDATION_ERROR")["details"]
    assert enough.status_code == 200, enough.content
    audit.refresh_from_db()
    assert len(audit.findings) == 200


def test_an_unknown_finding_key_named_like_an_audit_field_is_refused_on_update(owner):
    audit = ComplianceAuditFactory(tenant=owner.tenant, framework="gdpr")

    response = owner.client.patch(
        audit_url(audit), {"findings": [{**FINDING, "framework": "gdpr"}]}, format="json"
    )

    assert_envelope(response, 400, "VALIDATION_ERROR")
    audit.refresh_from_db()
    assert audit.findings == []


# The register of processing activities ----------------------------------------------------------


def test_creating_an_activity_makes_a_draft_with_its_fields_and_normalised_transfers(owner):
    body = {
        **ACTIVITY_BODY,
        "special_categories": ["health_data"],
        "recipients": ["Helpdesk SaaS"],
        "international_transfers": [{"country": "us", "safeguard": "standard_contractual_clauses"}],
        "third_parties_involved": True,
        "status": "draft",
    }

    response = owner.client.post(ACTIVITIES, body, format="json")

    assert response.status_code == 201, response.content
    shown = response.json()
    assert shown["status"] == "draft"
    assert shown["approved_at"] is None and shown["approved_by"] is None
    assert shown["created_by"]["email"] == owner.user.email
    assert shown["international_transfers"] == [
        {"country": "US", "safeguard": "standard_contractual_clauses"}
    ]
    assert shown["special_categories"] == ["health_data"]
    assert shown["dpia_required"] is False and shown["dpia_reasons"] == []
    stored = ProcessingActivity.objects.get(pk=shown["id"])
    assert stored.international_transfers == [
        {"country": "US", "safeguard": "standard_contractual_clauses"}
    ]
    assert len(events(owner.tenant, "processing_activity.created")) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"legal_basis": "because"}, "legal_basis"),
        ({"special_categories": ["shoe_size"]}, "special_categories"),
        ({"special_categories": ["health_data", "health_data"]}, "special_categories"),
        (
            {"international_transfers": [{"country": "XX", "safeguard": "adequacy_decision"}]},
            "international_transfers",
        ),
        (
            {"international_transfers": [{"country": "USA", "safeguard": "adequacy_decision"}]},
            "international_transfers",
        ),
        (
            {"international_transfers": [{"country": "US", "safeguard": "pinky_promise"}]},
            "international_transfers",
        ),
        ({"international_transfers": [{"country": "US"}]}, "international_transfers"),
        ({"privacy_impact_score": 0}, "privacy_impact_score"),
        ({"privacy_impact_score": 11}, "privacy_impact_score"),
        ({"retention_period_months": 0}, "retention_period_months"),
        ({"retention_period_months": 1201}, "retention_period_months"),
        ({"dpia_required": True}, "dpia_required"),
        ({"dpia_required": False}, "dpia_required"),
        ({"status": "approved"}, "status"),
        ({"status": "deprecated"}, "status"),
    ],
)
def test_a_bad_activity_is_400_naming_the_field_and_nothing_is_created(owner, change, field):
    error = assert_envelope(
        owner.client.post(ACTIVITIES, {**ACTIVITY_BODY, **change}, format="json"),
        400,
        "VALIDATION_ERROR",
    )

    assert field in error["details"]
    assert not ProcessingActivity.objects.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"privacy_impact_score": 1, "retention_period_months": 1},
        {"privacy_impact_score": 10, "retention_period_months": 1200},
    ],
)
def test_score_and_retention_bounds_are_accepted(owner, change):
    response = owner.client.post(ACTIVITIES, {**ACTIVITY_BODY, **change}, format="json")
    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("change", "required", "reasons"),
    [
        ({"privacy_impact_score": 7}, True, 1),
        ({"privacy_impact_score": 6}, False, 0),
        ({"special_categories": ["health_data"], "profiling_involved": True}, True, 1),
        ({"special_categories": ["biometric_data"], "automated_processing": True}, True, 1),
        (
            {
                "privacy_impact_score": 9,
                "special_categories": ["genetic_data"],
                "profiling_involved": True,
                "automated_processing": True,
            },
            True,
            3,
        ),
        ({"special_categories": ["health_data"]}, False, 0),
        ({"profiling_involved": True, "automated_processing": True}, False, 0),
    ],
    ids=[
        "score 7",
        "score 6",
        "special with profiling",
        "special with automation",
        "all three",
        "special alone",
        "profiling and automation without special",
    ],
)
def test_dpia_required_follows_each_rule(owner, change, required, reasons):
    response = owner.client.post(ACTIVITIES, {**ACTIVITY_BODY, **change}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["dpia_required"] is required
    assert len(response.json()["dpia_reasons"]) == reasons
    assert ProcessingActivity.objects.get().dpia_required is required


def test_dpia_required_is_recomputed_on_every_update(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant, privacy_impact_score=3)
    url = activity_url(activity)

    def patch(body):
        response = owner.client.patch(url, body, format="json")
        assert response.status_code == 200, response.content
        return response.json()["dpia_required"]

    assert patch({"privacy_impact_score": 8}) is True
    assert patch({"privacy_impact_score": 2}) is False
    assert patch({"special_categories": ["health_data"]}) is False
    assert patch({"profiling_involved": True}) is True
    assert patch({"special_categories": []}) is False
    assert patch({"special_categories": ["trade_union_membership"]}) is True
    assert patch({"profiling_involved": False, "automated_processing": True}) is True
    assert patch({"automated_processing": False}) is False
    activity.refresh_from_db()
    assert activity.dpia_required is False


def test_dpia_required_sent_back_unchanged_is_accepted_but_never_written(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant, privacy_impact_score=3)

    same = owner.client.patch(
        activity_url(activity), {"dpia_required": False, "purpose": "New purpose"}, format="json"
    )
    forced = owner.client.patch(activity_url(activity), {"dpia_required": True}, format="json")

    assert same.status_code == 200, same.content
    assert same.json()["purpose"] == "New purpose"
    assert "dpia_required" in assert_envelope(forced, 400, "VALIDATION_ERROR")["details"]
    activity.refresh_from_db()
    assert activity.dpia_required is False


def test_an_activity_put_back_as_shown_with_a_higher_score_recomputes_dpia_required(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant, privacy_impact_score=3)
    shown = owner.client.get(activity_url(activity)).json()
    assert shown["dpia_required"] is False

    response = owner.client.put(
        activity_url(activity), {**shown, "privacy_impact_score": 9}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["dpia_required"] is True
    assert len(response.json()["dpia_reasons"]) == 1
    activity.refresh_from_db()
    assert activity.dpia_required is True


def test_approving_records_who_and_when_and_the_approved_event(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant)

    with time_machine.travel(timezone.now(), tick=False):
        response = owner.client.patch(activity_url(activity), {"status": "approved"}, format="json")
        now = timezone.now()

    assert response.status_code == 200, response.content
    assert response.json()["approved_by"]["email"] == owner.user.email
    activity.refresh_from_db()
    assert activity.status == "approved"
    assert activity.approved_at == now
    assert activity.approved_by_id == owner.user.pk
    [event] = events(owner.tenant, "processing_activity.approved")
    assert event.payload["previous_status"] == "draft"


def test_an_approved_activity_goes_back_to_draft_for_a_revision_then_is_deprecated(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant, status="approved")
    url = activity_url(activity)

    back = owner.client.patch(url, {"status": "draft", "purpose": "Revised"}, format="json")
    approved = owner.client.patch(url, {"status": "approved"}, format="json")
    deprecated = owner.client.patch(url, {"status": "deprecated"}, format="json")

    assert back.status_code == 200, back.content
    assert back.json()["status"] == "draft"
    assert approved.json()["status"] == "approved"
    assert deprecated.status_code == 200, deprecated.content
    assert deprecated.json()["status"] == "deprecated"
    assert len(events(owner.tenant, "processing_activity.deprecated")) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"status": "draft"},
        {"status": "approved"},
        {"name": "Another name"},
        {"privacy_impact_score": 9},
        {"international_transfers": [{"country": "FR", "safeguard": "adequacy_decision"}]},
    ],
)
def test_a_deprecated_activity_is_final_any_change_is_409(owner, body):
    activity = ProcessingActivityFactory(tenant=owner.tenant, status="deprecated")
    events_before = AuditEvent.objects.filter(tenant=owner.tenant).count()

    assert_envelope(
        owner.client.patch(activity_url(activity), body, format="json"), 409, "CONFLICT"
    )

    refreshed = ProcessingActivity.objects.get(pk=activity.pk)
    assert refreshed.status == "deprecated"
    assert refreshed.name == activity.name
    assert refreshed.privacy_impact_score == activity.privacy_impact_score
    assert AuditEvent.objects.filter(tenant=owner.tenant).count() == events_before


def test_deleting_a_draft_removes_it_and_records_the_event(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant)

    response = owner.client.delete(activity_url(activity))

    assert response.status_code == 204, response.content
    assert not ProcessingActivity.objects.filter(pk=activity.pk).exists()
    assert len(events(owner.tenant, "processing_activity.deleted")) == 1


@pytest.mark.parametrize("status", ["approved", "deprecated"])
def test_an_approved_or_deprecated_activity_cannot_be_deleted(owner, status):
    activity = ProcessingActivityFactory(tenant=owner.tenant, status=status)

    assert_envelope(owner.client.delete(activity_url(activity)), 409, "CONFLICT")

    assert ProcessingActivity.objects.filter(pk=activity.pk).exists()
    assert not events(owner.tenant, "processing_activity.deleted")


def test_activity_names_are_unique_per_tenant_whatever_their_case(make_caller):
    owner = make_caller(Role.OWNER)
    elsewhere = make_caller(Role.OWNER)
    payroll = {**ACTIVITY_BODY, "name": "Payroll"}
    assert owner.client.post(ACTIVITIES, payroll, format="json").status_code == 201
    other = ProcessingActivityFactory(tenant=owner.tenant, name="Recruiting")

    created_twice = owner.client.post(ACTIVITIES, {**payroll, "name": "PAYROLL"}, format="json")
    renamed = owner.client.patch(activity_url(other), {"name": "payroll"}, format="json")
    in_another_tenant = elsewhere.client.post(ACTIVITIES, payroll, format="json")

    assert "name" in assert_envelope(created_twice, 409, "CONFLICT")["details"]
    assert_envelope(renamed, 409, "CONFLICT")
    assert in_another_tenant.status_code == 201, in_another_tenant.content
    assert ProcessingActivity.objects.filter(tenant=owner.tenant).count() == 2
    other.refresh_from_db()
    assert other.name == "Recruiting"


def test_an_activity_may_be_renamed_to_its_own_name_in_another_case(owner):
    activity = ProcessingActivityFactory(tenant=owner.tenant, name="Payroll")

    response = owner.client.patch(activity_url(activity), {"name": "PAYROLL"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["name"] == "PAYROLL"


# The GDPR register -------------------------------------------------------------------------------


@pytest.fixture
def register(owner):
    """Three activities the register lists by default, one deprecated it leaves out."""
    tenant = owner.tenant
    return {
        "health": ProcessingActivityFactory(
            tenant=tenant,
            name="Health coaching",
            status="approved",
            legal_basis="consent",
            special_categories=["health_data"],
            automated_processing=True,
            international_transfers=[
                {"country": "US", "safeguard": "standard_contractual_clauses"}
            ],
        ),
        "payroll": ProcessingActivityFactory(
            tenant=tenant,
            name="Payroll",
            legal_basis="contract",
            privacy_impact_score=8,
            third_parties_involved=True,
            dpia_completed_on="2026-01-15",
        ),
        "support": ProcessingActivityFactory(tenant=tenant, name="Customer support"),
        "old": ProcessingActivityFactory(
            tenant=tenant, name="Old newsletter", legal_basis="consent", status="deprecated"
        ),
    }


def test_the_register_lists_drafts_and_approved_with_its_summary_and_groups(owner, register):
    ProcessingActivityFactory(tenant=TenantFactory(), name="Elsewhere")

    response = owner.client.get(REGISTER)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["organization_id"] == str(owner.tenant.pk)
    assert body["organization_name"] == owner.tenant.name
    assert body["generated_at"]
    assert [a["name"] for a in body["activities"]] == [
        "Customer support",
        "Health coaching",
        "Payroll",
    ]
    assert body["summary"] == {
        "total_activities": 3,
        "high_risk_activities": 2,
        "automated_processing_count": 1,
        "third_party_processing_count": 1,
        "special_category_count": 1,
        "international_transfer_count": 1,
        "missing_dpia_count": 1,
    }
    by_basis = body["by_legal_basis"]
    assert set(by_basis) == {
        "consent",
        "contract",
        "legal_obligation",
        "vital_interests",
        "public_task",
        "legitimate_interest",
    }
    assert by_basis["consent"] == [{"id": str(register["health"].pk), "name": "Health coaching"}]
    assert [a["name"] for a in by_basis["contract"]] == ["Payroll"]
    assert [a["name"] for a in by_basis["legitimate_interest"]] == ["Customer support"]
    assert (
        by_basis["legal_obligation"] == by_basis["vital_interests"] == by_basis["public_task"] == []
    )
    high_risk = {a["name"]: a for a in body["high_risk_activities"]}
    assert set(high_risk) == {"Health coaching", "Payroll"}
    assert high_risk["Payroll"]["privacy_impact_score"] == 8
    assert high_risk["Payroll"]["dpia_completed_on"] == "2026-01-15"
    assert len(high_risk["Payroll"]["reasons"]) == 1
    assert high_risk["Health coaching"]["dpia_completed_on"] is None
    assert high_risk["Health coaching"]["reasons"] == register["health"].dpia_reasons


@pytest.mark.parametrize(
    ("status", "names"),
    [
        ("deprecated", ["Old newsletter"]),
        ("approved,deprecated", ["Health coaching", "Old newsletter"]),
        ("draft", ["Customer support", "Payroll"]),
        (
            "draft,approved,deprecated",
            ["Customer support", "Health coaching", "Old newsletter", "Payroll"],
        ),
    ],
)
def test_the_register_status_parameter_narrows_the_listing(owner, register, status, names):
    response = owner.client.get(REGISTER, {"status": status})

    assert response.status_code == 200, response.content
    assert [a["name"] for a in response.json()["activities"]] == names
    assert response.json()["summary"]["total_activities"] == len(names)


@pytest.mark.parametrize("status", ["archived", "draft,nope", ",", "Draft"])
def test_a_bad_register_status_is_400(owner, status):
    error = assert_envelope(owner.client.get(REGISTER, {"status": status}), 400, "VALIDATION_ERROR")
    assert "status" in error["details"]


def read_csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize("how", ["format", "accept"])
def test_the_register_as_csv_is_an_attachment_with_one_row_per_activity(owner, register, how):
    if how == "format":
        response = owner.client.get(REGISTER, {"format": "csv"})
    else:
        response = owner.client.get(REGISTER, HTTP_ACCEPT="text/csv")

    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == (
        f'attachment; filename="gdpr-register-{owner.tenant.slug}.csv"'
    )
    header, *rows = read_csv(response)
    assert header[:5] == ["id", "name", "status", "purpose", "legal_basis"]
    assert len(rows) == 3
    assert all(len(row) == len(header) for row in rows)
    by_name = {row[1]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(by_name) == {"Customer support", "Health coaching", "Payroll"}
    health = by_name["Health coaching"]
    assert health["id"] == str(register["health"].pk)
    assert health["international_transfers"] == "US: standard_contractual_clauses"
    assert health["special_categories"] == "health_data"
    assert health["data_categories"] == "contact_data; conversation_content"
    assert health["automated_processing"] == "yes"
    assert health["dpia_required"] == "yes"
    assert health["dpia_completed_on"] == ""
    assert by_name["Payroll"]["dpia_completed_on"] == "2026-01-15"
    assert by_name["Customer support"]["dpia_required"] == "no"


def test_an_empty_register_as_csv_is_its_header_row_only(owner):
    ProcessingActivityFactory(tenant=TenantFactory())

    rows = read_csv(owner.client.get(REGISTER, {"format": "csv"}))

    assert len(rows) == 1
    assert rows[0][0] == "id"


def test_the_register_csv_honours_the_status_parameter(owner, register):
    response = owner.client.get(REGISTER, {"format": "csv", "status": "deprecated"})

    assert response.status_code == 200, response.content
    _, *rows = read_csv(response)
    assert [row[1] for row in rows] == ["Old newsletter"]


def test_register_csv_cells_that_would_run_as_formulas_are_neutralised(owner):
    ProcessingActivityFactory(
        tenant=owner.tenant,
        name='=HYPERLINK("http://evil.example","x")',
        purpose="+SUM(1,2)",
        data_categories=["@cmd", "email"],
        recipients=["-2+3", "Acme"],
        risk_mitigation_measures="\tTabbed",
    )

    header, row = read_csv(owner.client.get(REGISTER, {"format": "csv"}))
    cells = dict(zip(header, row, strict=True))

    assert cells["name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert cells["purpose"] == "'+SUM(1,2)"
    assert cells["data_categories"] == "'@cmd; email"
    assert cells["recipients"] == "'-2+3; Acme"
    assert cells["risk_mitigation_measures"] == "'\tTabbed"
    assert cells["retention_period_months"] == "24"


def test_register_errors_stay_json_even_when_csv_is_asked(make_caller, owner):
    viewer = make_caller(Role.VIEWER, tenant=owner.tenant)

    forbidden = viewer.client.get(REGISTER, {"format": "csv"})
    forbidden_by_accept = viewer.client.get(REGISTER, HTTP_ACCEPT="text/csv")
    bad_status = owner.client.get(REGISTER, {"format": "csv", "status": "nope"})

    assert_envelope(forbidden, 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(forbidden_by_accept, 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(bad_status, 400, "VALIDATION_ERROR")


def _register_rows(tenant, user, count: int) -> None:
    for n in range(count):
        ProcessingActivityFactory(
            tenant=tenant,
            legal_basis=["consent", "contract", "legitimate_interest"][n % 3],
            privacy_impact_score=8 if n % 2 else 3,
            special_categories=["health_data"] if n % 3 == 0 else [],
            international_transfers=[{"country": "US", "safeguard": "adequacy_decision"}],
            created_by=user,
            status="approved",
            approved_by=user,
            approved_at=timezone.now(),
        )


def _register_query_count(make_caller, rows: int, params: dict) -> int:
    caller = make_caller(Role.OWNER)
    _register_rows(caller.tenant, caller.user, rows)
    with CaptureQueriesContext(connection) as captured:
        response = caller.client.get(REGISTER, params)
    assert response.status_code == 200, response.content
    return len(captured)


def test_the_register_csv_takes_a_constant_number_of_queries(make_caller):
    assert _register_query_count(make_caller, 2, {"format": "csv"}) == _register_query_count(
        make_caller, 12, {"format": "csv"}
    )


def test_the_register_takes_a_constant_number_of_queries(make_caller):
    assert _register_query_count(make_caller, 2, {}) == _register_query_count(make_caller, 12, {})


# The security dashboard --------------------------------------------------------------------------


def dashboard(caller, **params) -> dict:
    response = caller.client.get(DASHBOARD, params)
    assert response.status_code == 200, response.content
    return response.json()


def rule_ids(caller, **params) -> list[str]:
    return [item["rule"] for item in dashboard(caller, **params)["recommendations"]]


def hours_ago(hours: float):
    return timezone.now() - timedelta(hours=hours)


def test_an_empty_tenants_dashboard_is_low_risk_with_zero_counts(owner):
    body = dashboard(owner)

    assert body["organization_id"] == str(owner.tenant.pk)
    assert body["period"]["days"] == 30
    posture = body["security_posture"]
    assert posture["risk_level"] == "low"
    assert posture["incidents_summary"] == {
        "total_incidents": 0,
        "critical_incidents": 0,
        "open_incidents": 0,
        "unresolved_incidents": 0,
        "unresolved_by_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0},
        "avg_resolution_hours": None,
    }
    assert posture["breach_notifications"] == {"overdue": 0, "due_within_24h": 0}
    assert posture["compliance_score"] is None
    assert posture["compliance_by_framework"] == {}
    assert posture["pii_incidents"] == 0
    assert body["recent_audits"] == []
    assert {r["rule"] for r in body["recommendations"]} == {"no_recent_audit", "empty_register"}


@pytest.mark.parametrize("days", [0, 366, "x"])
def test_the_dashboard_period_is_1_to_365_days(owner, days):
    error = assert_envelope(owner.client.get(DASHBOARD, {"days": days}), 400, "VALIDATION_ERROR")
    assert "days" in error["details"]


@pytest.mark.parametrize(
    ("incidents", "level"),
    [
        ([], "low"),
        ([("medium", "open")], "medium"),
        ([("low", "open"), ("high", "investigating"), ("medium", "open")], "high"),
        ([("critical", "resolved"), ("critical", "closed"), ("low", "investigating")], "low"),
        ([("critical", "investigating")], "critical"),
    ],
)
def test_the_risk_level_is_the_highest_severity_among_unresolved_incidents(owner, incidents, level):
    for severity, status in incidents:
        IncidentFactory(
            tenant=owner.tenant, severity=severity, status=status, detected_at=hours_ago(24 * 60)
        )

    assert dashboard(owner)["security_posture"]["risk_level"] == level


@pytest.mark.parametrize(
    ("severity", "detected_hours_ago", "notified", "level"),
    [
        ("low", 73, False, "critical"),
        ("low", 73, True, "low"),
        ("medium", 50, False, "high"),
        ("critical", 50, False, "critical"),
        ("low", 40, False, "low"),
    ],
    ids=["overdue", "overdue but notified", "due soon", "due soon and critical", "not due soon"],
)
def test_breach_deadlines_raise_the_risk_level(
    owner, severity, detected_hours_ago, notified, level
):
    IncidentFactory(
        tenant=owner.tenant,
        severity=severity,
        category="data_breach",
        personal_data_breach=True,
        detected_at=hours_ago(detected_hours_ago),
        authority_notified_at=timezone.now() if notified else None,
    )

    posture = dashboard(owner)["security_posture"]

    assert posture["risk_level"] == level
    overdue = detected_hours_ago > 72 and not notified
    soon = 48 < detected_hours_ago <= 72 and not notified
    assert posture["breach_notifications"] == {"overdue": int(overdue), "due_within_24h": int(soon)}


def test_an_overdue_notification_of_a_resolved_breach_still_makes_the_risk_critical(owner):
    IncidentFactory(
        tenant=owner.tenant,
        severity="low",
        status="resolved",
        personal_data_breach=True,
        detected_at=hours_ago(100),
        resolved_at=hours_ago(90),
    )

    assert dashboard(owner)["security_posture"]["risk_level"] == "critical"


def test_the_incidents_summary_covers_the_period_and_unresolved_covers_all(owner):
    tenant = owner.tenant
    IncidentFactory(tenant=tenant, severity="critical", detected_at=hours_ago(2))
    IncidentFactory(
        tenant=tenant, severity="high", status="investigating", detected_at=hours_ago(24 * 3)
    )
    IncidentFactory(
        tenant=tenant,
        severity="low",
        status="resolved",
        detected_at=hours_ago(30),
        resolved_at=hours_ago(20),
    )
    IncidentFactory(
        tenant=tenant,
        severity="medium",
        status="closed",
        detected_at=hours_ago(50),
        resolved_at=hours_ago(30),
    )
    IncidentFactory(tenant=tenant, severity="medium", detected_at=hours_ago(24 * 20))
    IncidentFactory(tenant=TenantFactory(), severity="critical")

    summary = dashboard(owner, days=7)["security_posture"]["incidents_summary"]

    assert summary == {
        "total_incidents": 4,
        "critical_incidents": 1,
        "open_incidents": 1,
        "unresolved_incidents": 3,
        "unresolved_by_severity": {"critical": 1, "high": 1, "medium": 1, "low": 0},
        "avg_resolution_hours": 15.0,
    }
    assert (
        dashboard(owner, days=30)["security_posture"]["incidents_summary"]["total_incidents"] == 5
    )


def test_pii_incidents_count_flagged_breaches_and_pii_categories_in_the_period(owner):
    tenant = owner.tenant
    IncidentFactory(tenant=tenant, category="unauthorized_access", personal_data_breach=True)
    IncidentFactory(tenant=tenant, category="data_breach")
    IncidentFactory(tenant=tenant, category="pii_exposure")
    IncidentFactory(tenant=tenant, category="system_compromise")
    IncidentFactory(tenant=tenant, category="pii_exposure", detected_at=hours_ago(24 * 40))

    assert dashboard(owner, days=30)["security_posture"]["pii_incidents"] == 3
    assert dashboard(owner, days=60)["security_posture"]["pii_incidents"] == 4


def test_the_compliance_score_is_the_mean_of_each_frameworks_latest_completed_audit(owner):
    tenant = owner.tenant
    completed_audit(tenant, framework="gdpr", score=100, days_ago=200)
    completed_audit(tenant, framework="gdpr", score=70, days_ago=20)
    completed_audit(tenant, framework="iso27001", score=85, days_ago=40)
    ComplianceAuditFactory(
        tenant=tenant, framework="iso27001", status="failed", completed_at=timezone.now()
    )
    ComplianceAuditFactory(tenant=tenant, framework="soc2", status="planned")
    ComplianceAuditFactory(tenant=tenant, framework="hds", status="in_progress", score=10)
    completed_audit(TenantFactory(), framework="soc2", score=5)

    posture = dashboard(owner)["security_posture"]

    assert posture["compliance_by_framework"] == {"gdpr": 70, "iso27001": 85}
    assert posture["compliance_score"] == 77.5


def test_recent_audits_are_the_five_newest_whatever_their_status(owner):
    created = [ComplianceAuditFactory(tenant=owner.tenant, title=f"Audit {n}") for n in range(7)]
    completed_audit(TenantFactory())

    recent = dashboard(owner)["recent_audits"]

    assert [a["id"] for a in recent] == [str(a.pk) for a in reversed(created)][:5]
    assert set(recent[0]) == {
        "id",
        "title",
        "framework",
        "audit_type",
        "status",
        "score",
        "planned_date",
        "completed_at",
    }


# Recommendation rules: a healthy tenant gets none; each scenario makes exactly one rule hold.


@pytest.fixture
def healthy(owner):
    """An approved activity needing no DPIA and a recent, good, clean audit: no rule holds."""
    ProcessingActivityFactory(tenant=owner.tenant, status="approved", privacy_impact_score=3)
    audit = completed_audit(owner.tenant, framework="gdpr", score=90, days_ago=10)
    return audit


def _incident(caller, **fields):
    fields.setdefault("severity", "low")
    fields.setdefault("assigned_to", caller.user)
    return IncidentFactory(tenant=caller.tenant, **fields)


RULE_SCENARIOS = {
    "breach_notification_overdue": lambda c, audit: _incident(
        c, personal_data_breach=True, detected_at=hours_ago(73)
    ),
    "breach_notification_due_soon": lambda c, audit: _incident(
        c, personal_data_breach=True, detected_at=hours_ago(50)
    ),
    "unresolved_critical_incidents": lambda c, audit: _incident(c, severity="critical"),
    "unresolved_high_incidents": lambda c, audit: _incident(
        c, severity="high", status="investigating"
    ),
    "unassigned_incidents": lambda c, audit: _incident(c, assigned_to=None),
    "slow_resolution": lambda c, audit: _incident(
        c, status="resolved", detected_at=hours_ago(30), resolved_at=timezone.now()
    ),
    "low_compliance_score": lambda c, audit: completed_audit(
        c.tenant, framework="iso27001", score=40
    ),
    "open_serious_findings": lambda c, audit: completed_audit(
        c.tenant, days_ago=1, findings=[{**FINDING, "severity": "critical"}]
    ),
    "open_findings": lambda c, audit: completed_audit(
        c.tenant, days_ago=1, findings=[{**FINDING, "severity": "low"}]
    ),
    "no_recent_audit": lambda c, audit: ComplianceAudit.objects.filter(pk=audit.pk).update(
        completed_at=timezone.now() - timedelta(days=400)
    ),
    "missing_dpias": lambda c, audit: ProcessingActivityFactory(
        tenant=c.tenant, privacy_impact_score=8
    ),
    "empty_register": lambda c, audit: ProcessingActivity.objects.filter(tenant=c.tenant).update(
        status="deprecated"
    ),
}

# Situations close to each rule's condition where it does not hold.
NEAR_MISSES = {
    "breach_notification_overdue": lambda c, audit: _incident(
        c, personal_data_breach=True, detected_at=hours_ago(80), authority_notified_at=hours_ago(10)
    ),
    "breach_notification_due_soon": lambda c, audit: _incident(
        c, personal_data_breach=True, detected_at=hours_ago(40)
    ),
    "unresolved_critical_incidents": lambda c, audit: _incident(
        c,
        severity="critical",
        status="resolved",
        detected_at=hours_ago(5),
        resolved_at=hours_ago(4),
    ),
    "unresolved_high_incidents": lambda c, audit: _incident(
        c, severity="high", status="closed", detected_at=hours_ago(5), resolved_at=hours_ago(4)
    ),
    "unassigned_incidents": lambda c, audit: _incident(
        c, assigned_to=None, status="closed", detected_at=hours_ago(5), resolved_at=hours_ago(4)
    ),
    "slow_resolution": lambda c, audit: (
        _incident(c, status="resolved", detected_at=hours_ago(20), resolved_at=timezone.now()),
        # Slow, but resolved outside the 30-day period.
        _incident(
            c, status="resolved", detected_at=hours_ago(24 * 40), resolved_at=hours_ago(24 * 35)
        ),
    ),
    "low_compliance_score": lambda c, audit: (
        # (90 + 50) / 2 = 70: on the target is not below it; failed audits do not count.
        completed_audit(c.tenant, framework="soc2", score=50),
        ComplianceAuditFactory(tenant=c.tenant, framework="hds", status="failed"),
    ),
    "open_serious_findings": lambda c, audit: (
        completed_audit(
            c.tenant, days_ago=1, findings=[{**FINDING, "severity": "high", "status": "remediated"}]
        ),
        # An older audit of the framework is not the latest: its findings do not count.
        completed_audit(c.tenant, days_ago=300, findings=[{**FINDING, "severity": "high"}]),
    ),
    "open_findings": lambda c, audit: completed_audit(
        c.tenant, days_ago=1, findings=[{**FINDING, "status": "remediated"}]
    ),
    "no_recent_audit": lambda c, audit: ComplianceAudit.objects.filter(pk=audit.pk).update(
        completed_at=timezone.now() - timedelta(days=364)
    ),
    "missing_dpias": lambda c, audit: (
        ProcessingActivityFactory(
            tenant=c.tenant, privacy_impact_score=8, dpia_completed_on="2026-01-01"
        ),
        ProcessingActivityFactory(tenant=c.tenant, privacy_impact_score=9, status="deprecated"),
    ),
    "empty_register": lambda c, audit: ProcessingActivityFactory(tenant=c.tenant, status="draft"),
}


def test_every_rule_has_a_scenario_and_a_near_miss():
    assert set(RULE_SCENARIOS) == set(NEAR_MISSES) == {rule.id for rule in RULES}


def test_a_healthy_tenant_gets_no_recommendation_and_a_low_risk(owner, healthy):
    body = dashboard(owner)
    assert body["recommendations"] == []
    assert body["security_posture"]["risk_level"] == "low"


@pytest.mark.parametrize("rule", sorted(RULE_SCENARIOS))
def test_each_rule_fires_when_its_condition_holds(owner, healthy, rule):
    RULE_SCENARIOS[rule](owner, healthy)

    [recommendation] = dashboard(owner)["recommendations"]

    expected = next(r for r in RULES if r.id == rule)
    assert recommendation["rule"] == rule
    assert recommendation["priority"] == expected.priority
    assert recommendation["category"] == expected.category
    assert recommendation["title"] == expected.title
    assert recommendation["description"]


@pytest.mark.parametrize("rule", sorted(NEAR_MISSES))
def test_each_rule_stays_silent_just_short_of_its_condition(owner, healthy, rule):
    NEAR_MISSES[rule](owner, healthy)

    assert rule_ids(owner) == []


@pytest.mark.parametrize(("target", "fires"), [(12, True), (24, False), (48, False)])
def test_slow_resolution_follows_the_resolution_target_setting(owner, healthy, target, fires):
    _incident(owner, status="resolved", detected_at=hours_ago(20), resolved_at=timezone.now())

    with override_settings(SECURITY_RESOLUTION_TARGET_HOURS=target):
        ids = rule_ids(owner)

    assert ids == (["slow_resolution"] if fires else [])


@pytest.mark.parametrize(("target", "fires"), [(95, True), (91, True), (90, False), (60, False)])
def test_low_compliance_score_follows_the_target_score_setting(owner, healthy, target, fires):
    with override_settings(SECURITY_COMPLIANCE_TARGET_SCORE=target):
        ids = rule_ids(owner)

    assert ids == (["low_compliance_score"] if fires else [])


def test_the_slow_resolution_description_names_the_average_and_target(owner, healthy):
    _incident(owner, status="resolved", detected_at=hours_ago(30), resolved_at=timezone.now())

    with override_settings(SECURITY_RESOLUTION_TARGET_HOURS=10):
        [item] = dashboard(owner)["recommendations"]

    assert "30.0 hours" in item["description"]
    assert "10-hour target" in item["description"]


def test_recommendations_are_sorted_critical_high_medium_low_in_rule_order_within(owner):
    # No approved activity, no completed audit: empty_register and no_recent_audit hold too.
    for rule in (
        "breach_notification_overdue",
        "breach_notification_due_soon",
        "unresolved_critical_incidents",
        "unresolved_high_incidents",
        "unassigned_incidents",
        "missing_dpias",
        "open_findings",
    ):
        RULE_SCENARIOS[rule](owner, None)
    ComplianceAudit.objects.update(completed_at=timezone.now() - timedelta(days=500))

    items = dashboard(owner)["recommendations"]

    assert [item["rule"] for item in items] == [
        "breach_notification_overdue",
        "unresolved_critical_incidents",
        "breach_notification_due_soon",
        "unresolved_high_incidents",
        "missing_dpias",
        "unassigned_incidents",
        "no_recent_audit",
        "empty_register",
        "open_findings",
    ]
    ranks = [PRIORITY_ORDER[item["priority"]] for item in items]
    assert ranks == sorted(ranks)


def _dashboard_rows(caller, scale: int) -> None:
    tenant = caller.tenant
    for n in range(scale):
        IncidentFactory(
            tenant=tenant,
            severity=["low", "medium", "high", "critical"][n % 4],
            status=["open", "investigating", "resolved"][n % 3],
            personal_data_breach=n % 2 == 0,
            detected_at=hours_ago(10 + 20 * n),
            resolved_at=hours_ago(5) if n % 3 == 2 else None,
            assigned_to=caller.user if n % 2 else None,
        )
        completed_audit(
            tenant,
            framework=["gdpr", "iso27001", "soc2", "hds", "custom"][n % 5],
            score=50 + n,
            days_ago=n,
            findings=[FINDING, {**FINDING, "severity": "high"}],
            created_by=caller.user,
        )
        ProcessingActivityFactory(
            tenant=tenant,
            privacy_impact_score=8 if n % 2 else 2,
            status=["draft", "approved", "deprecated"][n % 3],
            created_by=caller.user,
        )


def test_the_dashboard_takes_a_constant_number_of_queries(make_caller):
    def count(scale: int) -> int:
        caller = make_caller(Role.OWNER)
        _dashboard_rows(caller, scale)
        with CaptureQueriesContext(connection) as captured:
            dashboard(caller)
        return len(captured)

    assert count(1) == count(12)


# Roles and tenants -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.BILLING])
def test_roles_without_security_permissions_are_refused_everywhere(make_caller, role):
    caller = make_caller(role)
    audit = ComplianceAuditFactory(tenant=caller.tenant)
    activity = ProcessingActivityFactory(tenant=caller.tenant)
    calls = [
        ("get", AUDITS, None),
        ("post", AUDITS, AUDIT_BODY),
        ("get", audit_url(audit), None),
        ("patch", audit_url(audit), {"title": "Changed"}),
        ("put", audit_url(audit), {**AUDIT_BODY, "title": "Changed"}),
        ("get", ACTIVITIES, None),
        ("post", ACTIVITIES, ACTIVITY_BODY),
        ("get", activity_url(activity), None),
        ("patch", activity_url(activity), {"status": "approved"}),
        ("put", activity_url(activity), {**ACTIVITY_BODY, "name": "Changed"}),
        ("delete", activity_url(activity), None),
        ("get", REGISTER, None),
        ("get", f"{REGISTER}?format=csv", None),
        ("get", DASHBOARD, None),
    ]

    for method, url, body in calls:
        response = call(caller.client, method, url, body)
        assert response.status_code == 403, (method, url, response.status_code)
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")

    assert ComplianceAudit.objects.get().title == audit.title
    assert ProcessingActivity.objects.get().status == "draft"


def test_a_dpo_runs_audits_the_register_and_the_reports(make_caller):
    dpo = make_caller(Role.DPO)

    created = dpo.client.post(AUDITS, AUDIT_BODY, format="json")
    completed = dpo.client.patch(
        f"{AUDITS}{created.json()['id']}/", {"status": "completed", "score": 88}, format="json"
    )
    activity = dpo.client.post(ACTIVITIES, ACTIVITY_BODY, format="json")
    approved = dpo.client.patch(
        f"{ACTIVITIES}{activity.json()['id']}/", {"status": "approved"}, format="json"
    )

    assert created.status_code == 201, created.content
    assert completed.status_code == 200, completed.content
    assert activity.status_code == 201, activity.content
    assert approved.status_code == 200, approved.content
    assert dpo.client.get(AUDITS).status_code == 200
    assert dpo.client.get(ACTIVITIES).status_code == 200
    assert dpo.client.get(REGISTER).json()["summary"]["total_activities"] == 1
    assert dpo.client.get(REGISTER, {"format": "csv"}).status_code == 200
    assert dashboard(dpo)["security_posture"]["compliance_score"] == 88.0


def test_another_tenants_audit_or_activity_is_not_found_for_every_method(owner):
    other = TenantFactory()
    audit = ComplianceAuditFactory(tenant=other)
    activity = ProcessingActivityFactory(tenant=other)
    events_before = AuditEvent.objects.count()

    for method, url, body in [
        ("get", audit_url(audit), None),
        ("patch", audit_url(audit), {"title": "Mine now"}),
        ("put", audit_url(audit), {**AUDIT_BODY, "title": "Mine now"}),
        ("get", activity_url(activity), None),
        ("patch", activity_url(activity), {"status": "approved"}),
        ("put", activity_url(activity), {**ACTIVITY_BODY, "name": "Mine now"}),
        ("delete", activity_url(activity), None),
    ]:
        assert_envelope(call(owner.client, method, url, body), 404, "RESOURCE_NOT_FOUND")

    audit.refresh_from_db()
    activity.refresh_from_db()
    assert audit.title != "Mine now"
    assert (activity.status, activity.name) != ("approved", "Mine now")
    assert AuditEvent.objects.count() == events_before
