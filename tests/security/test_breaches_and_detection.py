"""The security beat jobs: a personal data breach's 72-hour deadline reminders, and the incidents
the platform raises itself (a broken audit chain, a burst of locked-out logins), each sent or
opened once however often (or concurrently) the jobs run."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings
from rest_framework.test import APIClient

from audit import tasks as audit_tasks
from audit.models import AuditEvent
from audit.services import record
from notifications import tasks as notification_tasks
from notifications.models import Channel, Notification, WebhookDelivery, WebhookEvent
from security import tasks
from security.models import (
    Incident,
    IncidentCategory,
    IncidentTimelineEntry,
    RaisedBy,
    Severity,
    TimelineKind,
)
from security.services import (
    audit_chain_check,
    breach_notifications_remind,
    incident_raise,
    incident_update,
    login_lockout_bursts_check,
)
from tenants.models import Role, Tenant
from tests.audit.chain_helpers import protections_off, run_sql, sealed_chain
from tests.conftest import race
from tests.factories import TEST_PASSWORD, MembershipFactory, TenantFactory, UserFactory
from tests.notifications.factories import WebhookEndpointFactory
from tests.security.factories import IncidentFactory

pytestmark = pytest.mark.django_db

DUE = "security.breach.notification_due"
CREATED = "security.incident.created"
# A moment aligned on the 15-minute lockout windows (and well in the past of nothing).
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=15)


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """What commits queue after the change (sealing, webhook relay, email notifications) never
    reaches a broker from these tests."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    monkeypatch.setattr(notification_tasks.send_webhooks, "delay", lambda *a, **k: None)
    monkeypatch.setattr(notification_tasks.deliver_notifications, "delay", lambda *a, **k: None)


def reminders(incident) -> list[str]:
    """The stages of the incident's deadline reminders, oldest first."""
    return list(
        AuditEvent.objects.filter(event_type=DUE, payload__incident_id=str(incident.pk))
        .order_by("created_at", "id")
        .values_list("payload__stage", flat=True)
    )


def timeline_kinds(incident) -> list[str]:
    return list(
        IncidentTimelineEntry.objects.filter(incident=incident)
        .order_by("created_at", "id")
        .values_list("kind", flat=True)
    )


def breach(detected_at, **fields):
    return IncidentFactory(personal_data_breach=True, detected_at=detected_at, **fields)


def member(tenant, role, **user_fields):
    return MembershipFactory(tenant=tenant, role=role, user=UserFactory(**user_fields)).user


# Breach deadline reminders ----------------------------------------------------------------------


def test_no_reminder_before_the_last_24_hours_of_the_deadline():
    incident = breach(T0)

    sent = breach_notifications_remind(now=T0 + timedelta(hours=47, minutes=59))

    assert sent == 0
    assert reminders(incident) == []
    incident.refresh_from_db()
    assert incident.breach_due_soon_sent_at is None


def test_due_soon_reminder_once_the_deadline_is_24_hours_away():
    incident = breach(T0)
    now = T0 + timedelta(hours=48)

    sent = breach_notifications_remind(now=now)

    assert sent == 1
    [event] = AuditEvent.objects.filter(event_type=DUE)
    assert event.tenant_id == incident.tenant_id
    assert event.actor_id is None
    assert event.payload["stage"] == "due_soon"
    assert event.payload["incident_id"] == str(incident.pk)
    assert event.payload["hours_remaining"] == 24.0
    assert event.payload["authority_notification_due_at"].startswith("2026-03-05T10:00:00")
    incident.refresh_from_db()
    assert incident.breach_due_soon_sent_at == now
    assert incident.breach_overdue_sent_at is None


def test_due_soon_reminder_is_sent_once_over_the_last_day():
    incident = breach(T0)

    sent = [
        breach_notifications_remind(now=T0 + timedelta(hours=hours)) for hours in (49, 55, 71.9)
    ]

    assert sent == [1, 0, 0]
    assert reminders(incident) == ["due_soon"]


def test_overdue_reminder_once_the_deadline_passed_unmet():
    incident = breach(T0)

    sent = [
        breach_notifications_remind(now=T0 + timedelta(hours=hours)) for hours in (50, 72, 73, 200)
    ]

    assert sent == [1, 1, 0, 0]
    assert reminders(incident) == ["due_soon", "overdue"]
    overdue = AuditEvent.objects.get(event_type=DUE, payload__stage="overdue")
    assert overdue.payload["hours_remaining"] == 0.0
    incident.refresh_from_db()
    assert incident.breach_overdue_sent_at == T0 + timedelta(hours=72)


def test_overdue_reminder_counts_the_hours_past_the_deadline_as_negative():
    breach(T0)

    breach_notifications_remind(now=T0 + timedelta(hours=75, minutes=30))

    overdue = AuditEvent.objects.get(event_type=DUE)
    assert overdue.payload["stage"] == "overdue"
    assert overdue.payload["hours_remaining"] == -3.5


def test_reminders_append_their_timeline_entries():
    incident = breach(T0)

    breach_notifications_remind(now=T0 + timedelta(hours=60))
    breach_notifications_remind(now=T0 + timedelta(hours=80))

    entries = IncidentTimelineEntry.objects.filter(
        incident=incident,
        kind__in=[TimelineKind.NOTIFICATION_DUE_SOON, TimelineKind.NOTIFICATION_OVERDUE],
    ).order_by("created_at", "id")
    assert [entry.kind for entry in entries] == ["notification_due_soon", "notification_overdue"]
    assert all(entry.note.startswith("Due 2026-03-05T10:00:00") for entry in entries)
    assert all(entry.actor_id is None for entry in entries)


def test_a_breach_flagged_after_its_deadline_gets_only_the_overdue_reminder():
    incident = breach(T0)

    assert breach_notifications_remind(now=T0 + timedelta(hours=90)) == 1
    assert breach_notifications_remind(now=T0 + timedelta(hours=91)) == 0

    assert reminders(incident) == ["overdue"]
    assert TimelineKind.NOTIFICATION_DUE_SOON not in timeline_kinds(incident)


@pytest.mark.parametrize("hours", [50, 80])
def test_a_breach_notified_to_the_authority_gets_no_reminder(hours):
    incident = breach(T0, authority_notified_at=T0 + timedelta(hours=10))

    assert breach_notifications_remind(now=T0 + timedelta(hours=hours)) == 0
    assert reminders(incident) == []


def test_an_incident_that_is_not_a_personal_data_breach_gets_no_reminder():
    IncidentFactory(detected_at=T0)

    assert breach_notifications_remind(now=T0 + timedelta(hours=100)) == 0
    assert not AuditEvent.objects.filter(event_type=DUE).exists()


def test_notifying_the_authority_after_the_first_reminder_stops_the_second():
    incident = breach(T0)
    breach_notifications_remind(now=T0 + timedelta(hours=50))
    incident.authority_notified_at = T0 + timedelta(hours=60)
    incident.save(update_fields=["authority_notified_at"])

    assert breach_notifications_remind(now=T0 + timedelta(hours=80)) == 0
    assert reminders(incident) == ["due_soon"]


def test_running_the_job_twice_changes_nothing():
    now = T0 + timedelta(hours=100)
    soon = [breach(now - timedelta(hours=50)) for _ in range(3)]
    late = [breach(now - timedelta(hours=80)) for _ in range(2)]
    breach(now - timedelta(hours=10))  # not yet within a day of its deadline

    first = breach_notifications_remind(now=now)
    events = AuditEvent.objects.filter(event_type=DUE).count()
    entries = IncidentTimelineEntry.objects.count()
    second = breach_notifications_remind(now=now)

    assert (first, second) == (5, 0)
    assert AuditEvent.objects.filter(event_type=DUE).count() == events == 5
    assert IncidentTimelineEntry.objects.count() == entries
    assert [reminders(incident) for incident in soon] == [["due_soon"]] * 3
    assert [reminders(incident) for incident in late] == [["overdue"]] * 2


def test_reminder_becomes_a_webhook_delivery_for_a_subscribed_endpoint():
    incident = breach(T0)
    subscribed = WebhookEndpointFactory(tenant=incident.tenant, events=[DUE])
    WebhookEndpointFactory(tenant=incident.tenant, events=["security.incident.resolved"])
    WebhookEndpointFactory(tenant=incident.tenant, events=["*"], is_active=False)
    WebhookEndpointFactory(events=["*"])  # another tenant's

    breach_notifications_remind(now=T0 + timedelta(hours=50))

    audit_event = AuditEvent.objects.get(event_type=DUE)
    webhook_event = WebhookEvent.objects.get(pk=audit_event.pk)
    assert webhook_event.event_type == DUE
    assert webhook_event.tenant_id == incident.tenant_id
    [delivery] = WebhookDelivery.objects.all()
    assert (delivery.endpoint_id, delivery.event_id) == (subscribed.pk, webhook_event.pk)
    assert delivery.status == "pending"
    body = json.loads(webhook_event.body)
    assert body["type"] == DUE
    assert body["organization_id"] == str(incident.tenant_id)
    assert body["data"]["stage"] == "due_soon"
    assert body["data"]["incident_id"] == str(incident.pk)
    assert body["data"]["personal_data_breach"] is True


def test_reminder_notifies_the_owner_admin_and_dpo_but_not_a_viewer():
    incident = breach(T0, title="Leaked customer export")
    tenant = incident.tenant
    notified = {member(tenant, role) for role in (Role.OWNER, Role.ADMIN, Role.DPO)}
    viewer = member(tenant, Role.VIEWER)
    plain = member(tenant, Role.MEMBER)
    outsider = member(TenantFactory(), Role.OWNER)

    breach_notifications_remind(now=T0 + timedelta(hours=80))

    notifications = Notification.objects.filter(event_type=DUE, channel=Channel.IN_APP)
    assert {n.recipient for n in notifications} == notified
    assert notifications.count() == 3
    assert not Notification.objects.filter(recipient__in=[viewer, plain, outsider]).exists()
    notification = notifications.first()
    assert notification.tenant_id == tenant.pk
    assert notification.title == "Breach notification deadline: Leaked customer export"
    assert "overdue" in notification.message
    assert notification.type == "error"
    assert notification.metadata["incident_id"] == str(incident.pk)


def test_unflagging_and_flagging_a_breach_again_resets_its_reminders():
    tenant = TenantFactory()
    actor = member(tenant, Role.OWNER)
    incident = breach(T0 - timedelta(hours=100), tenant=tenant)
    assert breach_notifications_remind(now=T0) == 1
    assert reminders(incident) == ["overdue"]

    incident_update(incident=incident, actor=actor, personal_data_breach=False)
    assert breach_notifications_remind(now=T0 + timedelta(minutes=10)) == 0
    incident = incident_update(incident=incident, actor=actor, personal_data_breach=True)

    assert incident.breach_due_soon_sent_at is None
    assert incident.breach_overdue_sent_at is None
    assert breach_notifications_remind(now=T0 + timedelta(minutes=20)) == 1
    assert reminders(incident) == ["overdue", "overdue"]
    kinds = timeline_kinds(incident)
    assert kinds.index("breach_unflagged") < kinds.index("breach_flagged")
    assert kinds.count("notification_overdue") == 2


def test_an_incident_flagged_a_breach_later_gets_its_reminders():
    tenant = TenantFactory()
    actor = member(tenant, Role.OWNER)
    detected = T0 - timedelta(hours=50)
    incident = IncidentFactory(tenant=tenant, detected_at=detected)

    incident_update(incident=incident, actor=actor, personal_data_breach=True)

    assert breach_notifications_remind(now=T0) == 1
    assert reminders(incident) == ["due_soon"]
    incident.refresh_from_db()
    assert incident.authority_notification_due_at == detected + timedelta(hours=72)


def test_the_task_and_the_command_send_the_due_reminders():
    now = T0 + timedelta(hours=50)
    breach(T0)
    breach(T0 - timedelta(hours=30))
    out = StringIO()

    with time_machine.travel(now, tick=False):
        assert tasks.remind_breach_deadlines() == 2
        breach(T0 - timedelta(hours=40))
        call_command("remind_breach_deadlines", stdout=out)
        call_command("remind_breach_deadlines", stdout=out)

    assert out.getvalue().splitlines() == [
        "1 breach reminder(s) sent.",
        "0 breach reminder(s) sent.",
    ]
    assert AuditEvent.objects.filter(event_type=DUE).count() == 3


# Concurrency --------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_reminder_runs_send_each_reminder_exactly_once():
    now = T0 + timedelta(hours=200)
    soon = [breach(now - timedelta(hours=49)) for _ in range(5)]
    late = [breach(now - timedelta(hours=73)) for _ in range(5)]

    results = race(2, lambda: breach_notifications_remind(now=now))

    assert sum(results) == 10
    assert [reminders(incident) for incident in soon] == [["due_soon"]] * 5
    assert [reminders(incident) for incident in late] == [["overdue"]] * 5
    assert (
        IncidentTimelineEntry.objects.filter(
            kind__in=[TimelineKind.NOTIFICATION_DUE_SOON, TimelineKind.NOTIFICATION_OVERDUE]
        ).count()
        == 10
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_raises_with_one_source_key_open_one_incident():
    tenant = TenantFactory()

    def work():
        return incident_raise(
            tenant=tenant,
            raised_by=RaisedBy.LOGIN_LOCKOUTS,
            source_key="login_lockouts:race",
            title="Race",
            description="Two runs at once.",
            severity=Severity.HIGH,
            category=IncidentCategory.UNAUTHORIZED_ACCESS,
        )

    results = race(2, work)

    opened = [incident for incident in results if incident is not None]
    assert len(opened) == 1
    assert Incident.objects.filter(tenant=tenant).count() == 1
    assert AuditEvent.objects.filter(event_type=CREATED, tenant=tenant).count() == 1
    assert IncidentTimelineEntry.objects.filter(incident=opened[0]).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_chain_checks_of_a_broken_chain_open_one_incident():
    tenant = TenantFactory()
    chain = sealed_chain(tenant, 4)
    with transaction.atomic(), protections_off():
        run_sql(
            "UPDATE audit_auditevent SET payload = '{\"forged\": true}'::jsonb WHERE id = %s",
            [str(chain[1].pk)],
        )

    results = race(2, lambda: audit_chain_check(tenant=tenant))

    assert sorted(len(opened) for opened in results) == [0, 1]
    [incident] = Incident.objects.filter(tenant=tenant)
    assert incident.source_key == f"audit_chain:{chain[1].pk}"
    assert AuditEvent.objects.filter(event_type=CREATED, tenant=tenant).count() == 1


# Audit chain verification -----------------------------------------------------------------------


def tamper(event) -> None:
    """Overwrite a sealed event's payload behind the triggers' back."""
    with protections_off():
        run_sql(
            "UPDATE audit_auditevent SET payload = '{\"amount\": 1000000}'::jsonb WHERE id = %s",
            [str(event.pk)],
        )


@pytest.fixture
def tenant():
    return TenantFactory()


@pytest.fixture
def chain(tenant):
    """Five sealed events of the tenant, in seq order."""
    return sealed_chain(tenant, 5, event_type="document.created")


@pytest.mark.postgres
def test_a_tampered_chain_opens_a_critical_system_compromise_incident(tenant, chain):
    tamper(chain[2])

    [incident] = audit_chain_check(tenant=tenant)

    incident.refresh_from_db()
    assert incident.tenant_id == tenant.pk
    assert incident.severity == Severity.CRITICAL
    assert incident.category == IncidentCategory.SYSTEM_COMPROMISE
    assert incident.raised_by == RaisedBy.AUDIT_CHAIN
    assert incident.status == "open"
    assert incident.personal_data_breach is False
    assert incident.reported_by is None
    assert incident.source_key == f"audit_chain:{chain[2].pk}"
    assert incident.title == "Audit log chain broken at event 3 (document.created)"
    assert "1 broken link(s)" in incident.description
    assert str(chain[2].pk) in incident.description
    [entry] = IncidentTimelineEntry.objects.filter(incident=incident)
    assert (entry.kind, entry.note, entry.to_status) == (
        "created",
        "Audit chain verification",
        "open",
    )
    [event] = AuditEvent.objects.filter(event_type=CREATED, tenant=tenant)
    assert event.payload["raised_by"] == "audit_chain"
    assert event.payload["incident_id"] == str(incident.pk)
    assert event.payload["severity"] == "critical"
    assert event.payload["source"] == f"audit_chain:{chain[2].pk}"


def test_the_created_event_of_a_raised_incident_records_its_source_key(tenant):
    incident = incident_raise(
        tenant=tenant,
        raised_by=RaisedBy.AUDIT_CHAIN,
        source_key="audit_chain:seq-7",
        title="Audit log chain broken at event 7 (checkpoint)",
        description="A checkpoint no longer matches.",
        severity=Severity.CRITICAL,
        category=IncidentCategory.SYSTEM_COMPROMISE,
    )

    event = AuditEvent.objects.get(event_type=CREATED, tenant=tenant)
    assert event.payload["incident_id"] == str(incident.pk)
    assert "audit_chain:seq-7" in event.payload.values()
    assert event.payload["source"] == "audit_chain:seq-7"
    assert "source_key" not in event.payload


@pytest.mark.postgres
def test_a_chain_that_stays_broken_is_reported_once(tenant, chain):
    tamper(chain[1])
    first = audit_chain_check(tenant=tenant)

    second = audit_chain_check(tenant=tenant)

    assert len(first) == 1
    assert second == []
    assert Incident.objects.filter(tenant=tenant).count() == 1
    assert AuditEvent.objects.filter(event_type=CREATED, tenant=tenant).count() == 1


@pytest.mark.postgres
def test_an_intact_chain_opens_nothing(tenant, chain):
    assert audit_chain_check(tenant=tenant) == []
    assert not Incident.objects.exists()


def test_a_tenant_without_events_opens_nothing(tenant):
    assert audit_chain_check(tenant=tenant) == []
    assert not Incident.objects.exists()


@pytest.mark.postgres
def test_an_event_deleted_from_the_chain_is_reported_at_the_next_event(tenant, chain):
    with protections_off():
        run_sql("DELETE FROM audit_auditevent WHERE id = %s", [str(chain[2].pk)])

    [incident] = audit_chain_check(tenant=tenant)

    assert incident.source_key == f"audit_chain:{chain[3].pk}"
    assert incident.title.startswith("Audit log chain broken at event 4 ")


@pytest.mark.postgres
def test_a_broken_chain_elsewhere_opens_nothing_in_this_tenant(tenant, chain):
    other = TenantFactory()
    tamper(sealed_chain(other, 3)[0])

    assert audit_chain_check(tenant=tenant) == []
    assert len(audit_chain_check(tenant=other)) == 1
    assert not Incident.objects.filter(tenant=tenant).exists()


@pytest.mark.postgres
def test_a_later_separate_break_opens_its_own_incident(tenant, chain):
    tamper(chain[1])
    [earlier] = audit_chain_check(tenant=tenant)

    tamper(chain[4])
    [later] = audit_chain_check(tenant=tenant)

    assert later.source_key == f"audit_chain:{chain[4].pk}"
    assert later.title == "Audit log chain broken at event 5 (document.created)"
    assert str(chain[4].pk) in later.description
    assert "2 broken link(s) in all" in later.description
    assert earlier.source_key == f"audit_chain:{chain[1].pk}"
    assert earlier.title == "Audit log chain broken at event 2 (document.created)"
    assert Incident.objects.filter(tenant=tenant).count() == 2
    assert AuditEvent.objects.filter(event_type=CREATED, tenant=tenant).count() == 2
    assert audit_chain_check(tenant=tenant) == []


@pytest.mark.postgres
def test_two_tampered_events_at_once_open_two_incidents(tenant, chain):
    tamper(chain[0])
    tamper(chain[3])

    opened = audit_chain_check(tenant=tenant)

    assert [incident.source_key for incident in opened] == [
        f"audit_chain:{chain[0].pk}",
        f"audit_chain:{chain[3].pk}",
    ]
    assert [incident.title for incident in opened] == [
        "Audit log chain broken at event 1 (document.created)",
        "Audit log chain broken at event 4 (document.created)",
    ]
    for incident, event in zip(opened, (chain[0], chain[3]), strict=True):
        assert str(event.pk) in incident.description
        assert "2 broken link(s) in all" in incident.description
        assert (incident.severity, incident.category) == (
            Severity.CRITICAL,
            IncidentCategory.SYSTEM_COMPROMISE,
        )
    created = AuditEvent.objects.filter(event_type=CREATED, tenant=tenant)
    assert sorted(created.values_list("payload__source", flat=True)) == sorted(
        incident.source_key for incident in opened
    )
    assert audit_chain_check(tenant=tenant) == []
    assert Incident.objects.filter(tenant=tenant).count() == 2


@pytest.mark.postgres
def test_a_new_break_beside_a_known_one_opens_only_the_new_incident(tenant, chain):
    tamper(chain[2])
    [known] = audit_chain_check(tenant=tenant)
    tamper(chain[0])
    tamper(chain[4])

    opened = audit_chain_check(tenant=tenant)

    assert sorted(incident.source_key for incident in opened) == sorted(
        [f"audit_chain:{chain[0].pk}", f"audit_chain:{chain[4].pk}"]
    )
    assert known.pk not in {incident.pk for incident in opened}
    assert Incident.objects.filter(tenant=tenant).count() == 3


@pytest.mark.postgres
def test_a_broken_chain_notifies_owners_admins_and_dpos(tenant, chain):
    notified = {member(tenant, role) for role in (Role.OWNER, Role.DPO, Role.ADMIN)}
    bystanders = [member(tenant, Role.VIEWER), member(tenant, Role.MEMBER)]
    tamper(chain[0])

    [incident] = audit_chain_check(tenant=tenant)

    notifications = Notification.objects.filter(event_type=CREATED, channel=Channel.IN_APP)
    assert {n.recipient for n in notifications} == notified
    assert not Notification.objects.filter(recipient__in=bystanders).exists()
    assert {n.title for n in notifications} == {f"Security incident: {incident.title}"}
    assert {n.message for n in notifications} == {
        "A critical system_compromise incident was opened."
    }


def test_the_daily_task_queues_one_verification_per_tenant(monkeypatch):
    queued = []
    monkeypatch.setattr(tasks.detect_broken_chain, "delay", lambda *args: queued.append(args))
    tenants = [TenantFactory() for _ in range(3)]

    count = tasks.detect_broken_chains()

    ids = {str(pk) for pk in Tenant.objects.values_list("pk", flat=True)}
    assert count == len(ids) >= 3
    assert sorted(queued) == sorted((tenant_id,) for tenant_id in ids)
    assert {str(t.pk) for t in tenants} <= {args[0] for args in queued}


@pytest.mark.postgres
def test_the_verification_task_opens_the_incident_once(tenant, chain):
    tamper(chain[3])

    first = tasks.detect_broken_chain(str(tenant.pk))
    second = tasks.detect_broken_chain(str(tenant.pk))

    assert first == [str(Incident.objects.get(tenant=tenant).pk)]
    assert second == []


@pytest.mark.postgres
def test_the_verification_task_returns_every_incident_it_opened(tenant, chain):
    tamper(chain[1])
    tamper(chain[2])

    opened = tasks.detect_broken_chain(str(tenant.pk))

    assert sorted(opened) == sorted(
        str(pk) for pk in Incident.objects.filter(tenant=tenant).values_list("pk", flat=True)
    )
    assert len(opened) == 2


def test_the_verification_task_ignores_a_tenant_that_is_gone():
    gone = TenantFactory()
    tenant_id = str(gone.pk)
    gone.delete()

    assert tasks.detect_broken_chain(tenant_id) == []


@pytest.mark.postgres
def test_the_command_verifies_every_chain_and_reports_the_breaks(tenant, chain):
    other = TenantFactory(slug="zz-intact")
    sealed_chain(other, 2)
    tamper(chain[0])
    out = StringIO()

    call_command("detect_broken_chains", stdout=out)
    incident = Incident.objects.get(tenant=tenant)
    call_command("detect_broken_chains", stdout=out)

    total = Tenant.objects.count()
    assert out.getvalue().splitlines() == [
        f"{tenant.slug}: chain broken, incident {incident.pk} opened",
        f"{total} chain(s) verified, 1 new incident(s).",
        f"{total} chain(s) verified, 0 new incident(s).",
    ]
    assert not Incident.objects.filter(tenant=other).exists()


@pytest.mark.postgres
def test_the_command_verifies_only_the_named_organizations(tenant, chain):
    named = TenantFactory()
    tamper(chain[0])
    out = StringIO()

    call_command("detect_broken_chains", named.slug, stdout=out)

    assert out.getvalue().splitlines() == ["1 chain(s) verified, 0 new incident(s)."]
    assert not Incident.objects.exists()
    out = StringIO()
    call_command("detect_broken_chains", tenant.slug, named.slug, stdout=out)
    assert out.getvalue().splitlines()[-1] == "2 chain(s) verified, 1 new incident(s)."


@pytest.mark.postgres
def test_the_command_reports_each_break_of_a_chain(tenant, chain):
    tamper(chain[1])
    tamper(chain[3])
    out = StringIO()

    call_command("detect_broken_chains", tenant.slug, stdout=out)

    opened = Incident.objects.filter(tenant=tenant)
    *reports, summary = out.getvalue().splitlines()
    assert opened.count() == 2
    assert sorted(reports) == sorted(
        f"{tenant.slug}: chain broken, incident {incident.pk} opened" for incident in opened
    )
    assert summary == "1 chain(s) verified, 2 new incident(s)."


def test_the_command_refuses_an_unknown_slug(tenant):
    with pytest.raises(CommandError, match="No organization with slug: no-such-org"):
        call_command("detect_broken_chains", tenant.slug, "no-such-org", stdout=StringIO())
    assert not Incident.objects.exists()


# Lockout bursts ---------------------------------------------------------------------------------


def lockouts(identifier: str, times: int, *, at: datetime, reason: str = "locked_out") -> None:
    """`times` refused logins for `identifier` on the platform chain, recorded at `at`."""
    with time_machine.travel(at, tick=False), transaction.atomic():
        for _ in range(times):
            record(
                tenant=None,
                event_type="auth.login.failed",
                actor_label=identifier,
                payload={"method": "token", "identifier": identifier, "reason": reason},
            )


def lockout_incidents(tenant=None):
    incidents = Incident.objects.filter(raised_by=RaisedBy.LOGIN_LOCKOUTS)
    return incidents.filter(tenant=tenant) if tenant is not None else incidents


def test_the_burst_settings_default_to_ten_lockouts_in_fifteen_minutes():
    assert settings.SECURITY_LOCKOUT_BURST_THRESHOLD == 10
    assert settings.SECURITY_LOCKOUT_BURST_WINDOW_MINUTES == 15


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_lockouts_at_the_threshold_open_an_unauthorized_access_incident():
    tenant = TenantFactory()
    victim = member(tenant, Role.MEMBER)
    lockouts(victim.email, 3, at=T0 + timedelta(minutes=5))
    now = T0 + timedelta(minutes=6)

    opened = login_lockout_bursts_check(now=now)

    [incident] = opened
    incident.refresh_from_db()
    assert incident.tenant_id == tenant.pk
    assert incident.severity == Severity.HIGH
    assert incident.category == IncidentCategory.UNAUTHORIZED_ACCESS
    assert incident.raised_by == RaisedBy.LOGIN_LOCKOUTS
    assert incident.source_key == f"login_lockouts:{T0.isoformat()}"
    assert incident.detected_at == now
    assert incident.title == "Burst of locked-out logins: 3 attempts against 1 member(s)"
    assert victim.email in incident.description
    assert [entry.note for entry in IncidentTimelineEntry.objects.filter(incident=incident)] == [
        "Burst of locked-out logins"
    ]
    event = AuditEvent.objects.get(event_type=CREATED, tenant=tenant)
    assert event.payload["raised_by"] == "login_lockouts"
    assert victim.email not in str(event.payload)


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_lockouts_below_the_threshold_open_nothing():
    victim = member(TenantFactory(), Role.MEMBER)
    lockouts(victim.email, 2, at=T0 + timedelta(minutes=5))

    assert login_lockout_bursts_check(now=T0 + timedelta(minutes=6)) == []
    assert not lockout_incidents().exists()


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_lockouts_of_several_members_add_up_in_their_tenant():
    tenant = TenantFactory()
    first, second = member(tenant, Role.MEMBER), member(tenant, Role.ADMIN)
    lockouts(first.email, 2, at=T0 + timedelta(minutes=1))
    lockouts(second.email, 2, at=T0 + timedelta(minutes=2))

    [incident] = login_lockout_bursts_check(now=T0 + timedelta(minutes=3))

    assert incident.tenant_id == tenant.pk
    assert incident.title == "Burst of locked-out logins: 4 attempts against 2 member(s)"
    assert first.email in incident.description and second.email in incident.description


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_a_user_in_two_tenants_opens_an_incident_in_each():
    first, second, elsewhere = TenantFactory(), TenantFactory(), TenantFactory()
    victim = member(first, Role.OWNER)
    MembershipFactory(tenant=second, user=victim, role=Role.VIEWER)
    member(elsewhere, Role.OWNER)
    lockouts(victim.email, 3, at=T0 + timedelta(minutes=5))

    opened = login_lockout_bursts_check(now=T0 + timedelta(minutes=6))

    assert sorted(str(incident.tenant_id) for incident in opened) == sorted(
        [str(first.pk), str(second.pk)]
    )
    assert not lockout_incidents(elsewhere).exists()


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_lockouts_of_non_members_open_nothing():
    member(TenantFactory(), Role.OWNER)
    stranger = UserFactory()  # an account with no organization
    lockouts(stranger.email, 5, at=T0 + timedelta(minutes=5))
    lockouts("nobody@example.com", 5, at=T0 + timedelta(minutes=5))

    assert login_lockout_bursts_check(now=T0 + timedelta(minutes=6)) == []
    assert not Incident.objects.exists()


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_failures_with_invalid_credentials_do_not_count():
    victim = member(TenantFactory(), Role.MEMBER)
    lockouts(victim.email, 10, at=T0 + timedelta(minutes=5), reason="invalid_credentials")
    lockouts(victim.email, 2, at=T0 + timedelta(minutes=5))

    assert login_lockout_bursts_check(now=T0 + timedelta(minutes=6)) == []


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_emails_are_matched_case_insensitively():
    tenant = TenantFactory()
    victim = member(tenant, Role.MEMBER, email="alice.burst@example.com")
    lockouts("ALICE.BURST@EXAMPLE.COM", 1, at=T0 + timedelta(minutes=5))
    lockouts("Alice.Burst@Example.com", 1, at=T0 + timedelta(minutes=5))
    lockouts(" alice.burst@example.com ", 1, at=T0 + timedelta(minutes=5))

    [incident] = login_lockout_bursts_check(now=T0 + timedelta(minutes=6))

    assert incident.tenant_id == tenant.pk
    assert incident.title == "Burst of locked-out logins: 3 attempts against 1 member(s)"
    assert victim.email in incident.description


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_a_second_run_in_the_same_window_opens_nothing():
    tenant = TenantFactory()
    victim = member(tenant, Role.MEMBER)
    lockouts(victim.email, 3, at=T0 + timedelta(minutes=2))
    assert len(login_lockout_bursts_check(now=T0 + timedelta(minutes=3))) == 1

    lockouts(victim.email, 3, at=T0 + timedelta(minutes=4))
    again = login_lockout_bursts_check(now=T0 + timedelta(minutes=5))

    assert again == []
    assert lockout_incidents(tenant).count() == 1
    assert AuditEvent.objects.filter(event_type=CREATED, tenant=tenant).count() == 1


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_a_burst_at_the_end_of_the_previous_window_is_still_caught_once():
    tenant = TenantFactory()
    victim = member(tenant, Role.MEMBER)
    lockouts(victim.email, 3, at=T0 + timedelta(minutes=14, seconds=50))

    caught = login_lockout_bursts_check(now=T0 + WINDOW + timedelta(minutes=2))
    later = login_lockout_bursts_check(now=T0 + WINDOW + timedelta(minutes=10))

    assert [incident.source_key for incident in caught] == [f"login_lockouts:{T0.isoformat()}"]
    assert later == []
    assert lockout_incidents(tenant).count() == 1


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_a_burst_two_windows_ago_is_no_longer_looked_at():
    victim = member(TenantFactory(), Role.MEMBER)
    lockouts(victim.email, 3, at=T0 + timedelta(minutes=5))

    assert login_lockout_bursts_check(now=T0 + 2 * WINDOW + timedelta(minutes=1)) == []


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_a_burst_in_a_new_window_opens_a_new_incident():
    tenant = TenantFactory()
    victim = member(tenant, Role.MEMBER)
    lockouts(victim.email, 3, at=T0 + timedelta(minutes=5))
    first = login_lockout_bursts_check(now=T0 + timedelta(minutes=6))
    lockouts(victim.email, 3, at=T0 + 2 * WINDOW + timedelta(minutes=5))

    second = login_lockout_bursts_check(now=T0 + 2 * WINDOW + timedelta(minutes=6))

    assert len(first) == len(second) == 1
    assert sorted(lockout_incidents(tenant).values_list("source_key", flat=True)) == [
        f"login_lockouts:{T0.isoformat()}",
        f"login_lockouts:{(T0 + 2 * WINDOW).isoformat()}",
    ]


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_a_lockout_burst_notifies_the_security_roles():
    tenant = TenantFactory()
    owner_user, dpo = member(tenant, Role.OWNER), member(tenant, Role.DPO)
    victim = member(tenant, Role.VIEWER)
    lockouts(victim.email, 3, at=T0 + timedelta(minutes=5))

    login_lockout_bursts_check(now=T0 + timedelta(minutes=6))

    recipients = set(
        Notification.objects.filter(event_type=CREATED, channel=Channel.IN_APP).values_list(
            "recipient", flat=True
        )
    )
    assert recipients == {owner_user.pk, dpo.pk}


WRONG_PASSWORD = "wrong-password-7a7a7a"


def login(email: str, password: str, address: str):
    return APIClient().post(
        "/api/v1/auth/token/",
        {"username": email, "password": password},
        format="json",
        REMOTE_ADDR=address,
    )


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_real_locked_out_logins_through_the_api_open_one_incident():
    tenant = TenantFactory()
    victim = member(tenant, Role.MEMBER)
    limit = settings.AXES_FAILURE_LIMIT
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        statuses = [
            login(victim.email, WRONG_PASSWORD, "203.0.113.7").status_code for _ in range(limit)
        ]
        # Locked: even the right password is refused, and counted.
        statuses += [login(victim.email, TEST_PASSWORD, "203.0.113.7").status_code]
        statuses += [login(victim.email.upper(), WRONG_PASSWORD, "203.0.113.7").status_code]
    assert statuses == [400] * (limit - 1) + [429] * 3
    reasons = list(
        AuditEvent.objects.filter(event_type="auth.login.failed").values_list(
            "payload__reason", flat=True
        )
    )
    assert sorted(reasons) == sorted(["invalid_credentials"] * (limit - 1) + ["locked_out"] * 3)

    opened = login_lockout_bursts_check(now=T0 + timedelta(minutes=2))

    [incident] = opened
    assert incident.tenant_id == tenant.pk
    assert incident.title == "Burst of locked-out logins: 3 attempts against 1 member(s)"
    assert victim.email in incident.description
    assert "203.0.113.7" in incident.description
    assert login_lockout_bursts_check(now=T0 + timedelta(minutes=3)) == []


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_failed_logins_short_of_a_lockout_through_the_api_open_nothing():
    victim = member(TenantFactory(), Role.MEMBER)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        for _ in range(settings.AXES_FAILURE_LIMIT - 1):
            assert login(victim.email, WRONG_PASSWORD, "203.0.113.8").status_code == 400

    assert login_lockout_bursts_check(now=T0 + timedelta(minutes=2)) == []


@override_settings(SECURITY_LOCKOUT_BURST_THRESHOLD=3)
def test_the_task_and_the_command_detect_bursts():
    first, second = TenantFactory(), TenantFactory()
    lockouts(member(first, Role.MEMBER).email, 3, at=T0 + timedelta(minutes=1))
    out = StringIO()

    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        assert tasks.detect_lockout_bursts() == 1
        assert tasks.detect_lockout_bursts() == 0
        lockouts(member(second, Role.MEMBER).email, 3, at=T0 + timedelta(minutes=3))
    with time_machine.travel(T0 + timedelta(minutes=4), tick=False):
        call_command("detect_lockout_bursts", stdout=out)
        call_command("detect_lockout_bursts", stdout=out)

    incident = lockout_incidents(second).get()
    assert out.getvalue().splitlines() == [
        f"{second.slug}: incident {incident.pk} opened",
        "1 lockout burst incident(s) opened.",
        "0 lockout burst incident(s) opened.",
    ]
    assert lockout_incidents().count() == 2
