"""Notifications to members: each reads only their own, sending one (settings.write) reaches an
active member on the channel their preferences allow, preferences are validated, and the
catalogue's events notify the roles it names."""

import json
import logging
import uuid
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from notifications.models import Notification, NotificationPreference
from notifications.services import (
    notification_send,
    notifications_deliver,
    webhook_endpoint_disable,
)
from tenants.models import MembershipStatus, Role, Tenant
from tenants.services import invitation_accept, membership_add
from tenants.services.quotas import quota_consume
from tests.conftest import assert_envelope, race
from tests.factories import (
    TEST_PASSWORD,
    InvitationFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
    issue_api_key,
)

from .factories import (
    NotificationFactory,
    NotificationPreferenceFactory,
    WebhookEndpointFactory,
)

pytestmark = pytest.mark.django_db

URL = "/api/v1/notifications"
PREFERENCES_URL = f"{URL}/preferences"
DEFAULTS = {
    "email_enabled": True,
    "in_app_enabled": True,
    "sms_enabled": False,
    "phone_number": "",
    "phone_number_confirmed": False,
    "disabled_event_types": [],
}
QUOTA_WARNING = "organization.quota.warning"
MEMBER_JOINED = "organization.member.joined"


def ids(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def fresh(notification) -> Notification:
    return Notification.objects.get(pk=notification.pk)


# Reading one's own ----------------------------------------------------------------------------


def test_the_list_shows_only_the_callers_own_notifications_in_this_tenant(make_caller):
    caller = make_caller(Role.MEMBER)
    colleague = make_caller(Role.ADMIN, tenant=caller.tenant)
    own = {str(NotificationFactory(tenant=caller.tenant, recipient=caller.user).pk) for _ in "ab"}
    colleagues = NotificationFactory(tenant=caller.tenant, recipient=colleague.user)
    elsewhere = NotificationFactory(tenant=TenantFactory(), recipient=caller.user)

    assert ids(caller.client.get(URL)) == own
    for foreign in (colleagues, elsewhere):
        assert_envelope(caller.client.get(f"{URL}/{foreign.pk}"), 404)
    assert caller.client.get(f"{URL}/{next(iter(own))}").status_code == 200


def test_a_notification_being_sent_shows_no_sending_time_yet(make_caller):
    """`sent_at` is the claim's time while a worker sends it (the daily allowance counts it):
    the API shows it once the notification is `sent`."""
    caller = make_caller(Role.MEMBER)
    now = timezone.now()
    sending = NotificationFactory(
        tenant=caller.tenant, recipient=caller.user, channel="email", status="sending", sent_at=now
    )
    sent = NotificationFactory(
        tenant=caller.tenant, recipient=caller.user, channel="email", status="sent", sent_at=now
    )

    listed = caller.client.get(URL, {"channel": "email"}).json()["results"]
    shown = {row["id"]: row for row in listed}

    assert (shown[str(sending.pk)]["status"], shown[str(sending.pk)]["sent_at"]) == (
        "sending",
        None,
    )
    assert shown[str(sent.pk)]["sent_at"] is not None


def test_the_list_filters_on_is_read(make_caller):
    caller = make_caller(Role.VIEWER)
    read = NotificationFactory(tenant=caller.tenant, recipient=caller.user, is_read=True)
    unread = NotificationFactory(tenant=caller.tenant, recipient=caller.user)

    assert ids(caller.client.get(URL, {"is_read": "true"})) == {str(read.pk)}
    assert ids(caller.client.get(URL, {"is_read": "false"})) == {str(unread.pk)}


def test_marking_read_sets_read_at_once_by_post_or_put(make_caller):
    caller = make_caller(Role.VIEWER)
    first, second = (
        NotificationFactory(tenant=caller.tenant, recipient=caller.user) for _ in range(2)
    )

    answered = caller.client.post(f"{URL}/{first.pk}/read")
    read_at = fresh(first).read_at
    again = caller.client.post(f"{URL}/{first.pk}/read")
    by_put = caller.client.put(f"{URL}/{second.pk}/read")

    assert answered.status_code == 200, answered.content
    assert answered.json()["is_read"] is True and answered.json()["read_at"] is not None
    assert read_at is not None
    assert again.status_code == 200 and fresh(first).read_at == read_at
    assert by_put.status_code == 200, by_put.content
    assert fresh(second).is_read and fresh(second).read_at is not None


@pytest.mark.parametrize("already_read", [False, True], ids=["unread", "already-read"])
def test_marking_read_a_notification_deleted_meanwhile_is_not_found(already_read, make_caller):
    """Read by the view, then deleted by another request before the mark: the answer is the
    404 of any write on a row that is gone, not the notification as it was."""
    from config.db import DeletedMeanwhile
    from notifications.services import notification_mark_read

    caller = make_caller(Role.VIEWER)
    notification = NotificationFactory(
        tenant=caller.tenant,
        recipient=caller.user,
        is_read=already_read,
        read_at=timezone.now() if already_read else None,
    )
    Notification.objects.filter(pk=notification.pk).delete()

    with pytest.raises(DeletedMeanwhile):
        notification_mark_read(notification=notification)
    assert not Notification.objects.filter(pk=notification.pk).exists()


def test_nobody_marks_another_members_notification_read(make_caller):
    caller = make_caller(Role.OWNER)
    theirs = NotificationFactory(
        tenant=caller.tenant, recipient=make_caller(Role.MEMBER, tenant=caller.tenant).user
    )

    assert_envelope(caller.client.post(f"{URL}/{theirs.pk}/read"), 404)
    assert not fresh(theirs).is_read


def test_read_all_marks_only_the_callers_unread_in_this_tenant(make_caller):
    caller = make_caller(Role.MEMBER)
    mine = [NotificationFactory(tenant=caller.tenant, recipient=caller.user) for _ in range(2)]
    NotificationFactory(tenant=caller.tenant, recipient=caller.user, is_read=True)
    colleagues = NotificationFactory(
        tenant=caller.tenant, recipient=make_caller(Role.MEMBER, tenant=caller.tenant).user
    )
    elsewhere = NotificationFactory(tenant=TenantFactory(), recipient=caller.user)

    response = caller.client.post(f"{URL}/read-all")
    again = caller.client.post(f"{URL}/read-all")

    assert response.status_code == 200, response.content
    assert response.json() == {"updated": 2}
    assert again.json() == {"updated": 0}
    assert all(fresh(n).is_read and fresh(n).read_at for n in mine)
    assert not fresh(colleagues).is_read
    assert not fresh(elsewhere).is_read


# Sending --------------------------------------------------------------------------------------


def test_the_list_is_the_in_app_inbox_and_other_channels_are_a_filter_away(make_caller):
    caller = make_caller(Role.MEMBER)
    in_app = NotificationFactory(tenant=caller.tenant, recipient=caller.user, channel="in_app")
    email = NotificationFactory(tenant=caller.tenant, recipient=caller.user, channel="email")

    def listed(**params):
        response = caller.client.get(URL, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert listed() == {str(in_app.pk)}
    assert listed(channel="email") == {str(email.pk)}
    assert listed(channel="all") == {str(in_app.pk), str(email.pk)}
    assert caller.client.get(f"{URL}/{email.pk}").json()["channel"] == "email"
    assert_envelope(caller.client.get(URL, {"channel": "pigeon"}), 400)


def test_read_all_marks_the_inbox_only(make_caller):
    caller = make_caller(Role.MEMBER)
    NotificationFactory(tenant=caller.tenant, recipient=caller.user, channel="in_app")
    email = NotificationFactory(tenant=caller.tenant, recipient=caller.user, channel="email")

    response = caller.client.post(f"{URL}/read-all")

    assert response.json() == {"updated": 1}
    email.refresh_from_db()
    assert email.is_read is False


def send(caller, to, **overrides):
    body = {
        "user_id": str(to.pk),
        "title": "Maintenance",
        "message": "Tonight at 22:00.",
        "type": "warning",
        "channel": "in_app",
        "metadata": {"ticket": "OPS-12"},
        **overrides,
    }
    return caller.client.post(URL, body, format="json")


def test_sending_in_app_reaches_the_member_and_is_audited(make_caller):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)

    response = send(owner, member.user)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "sent" and body["sent_at"] is not None
    assert body["user_id"] == str(member.user.pk)
    assert body["sent_by"] == str(owner.user.pk)
    assert (body["title"], body["type"], body["channel"]) == ("Maintenance", "warning", "in_app")
    assert body["metadata"] == {"ticket": "OPS-12"}
    assert ids(member.client.get(URL)) == {body["id"]}
    assert ids(owner.client.get(URL)) == set()
    event = AuditEvent.objects.get(tenant=owner.tenant, event_type="notification.sent")
    assert event.payload["notification_id"] == body["id"]
    assert event.payload["recipient_id"] == str(member.user.pk)
    assert event.actor_id == owner.user.pk


def test_an_email_notification_waits_then_is_mailed_once(make_caller):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)

    response = send(owner, member.user, channel="email")

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "pending"
    assert mail.outbox == []
    notification_id = response.json()["id"]
    assert notifications_deliver(notification_ids=[notification_id]) == 1
    assert notifications_deliver(notification_ids=[notification_id]) == 0
    (message,) = mail.outbox
    assert message.to == [member.user.email]
    assert message.subject == "Maintenance" and message.body == "Tonight at 22:00."
    notification = Notification.objects.get(pk=notification_id)
    assert notification.status == "sent" and notification.sent_at is not None


def test_an_email_to_a_member_who_turned_email_off_is_suppressed(make_caller):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    NotificationPreferenceFactory(tenant=owner.tenant, user=member.user, email_enabled=False)

    response = send(owner, member.user, channel="email")

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "suppressed"
    assert notifications_deliver(notification_ids=[response.json()["id"]]) == 0
    assert mail.outbox == []


def test_an_sms_goes_through_the_local_provider_to_the_log(make_caller, caplog):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    NotificationPreferenceFactory(tenant=owner.tenant, user=member.user, confirmed_sms=True)

    response = send(owner, member.user, channel="sms")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "pending"
    with caplog.at_level(logging.INFO, logger="notifications.channels"):
        assert notifications_deliver(notification_ids=[response.json()["id"]]) == 1

    (logged,) = [r for r in caplog.records if r.name == "notifications.channels"]
    assert "+14155550100" in logged.getMessage()
    assert "Maintenance: Tonight at 22:00." in logged.getMessage()
    assert Notification.objects.get(pk=response.json()["id"]).status == "sent"


def test_a_member_is_sent_at_most_the_days_messages_on_each_channel(make_caller, settings):
    """Past NOTIFICATIONS_PER_RECIPIENT_PER_DAY on a channel in 24 hours, a notification stays
    `suppressed` with the reason and is not sent; the other channel, another member and, a day
    later, the same member are not held back."""
    settings.NOTIFICATIONS_PER_RECIPIENT_PER_DAY = 2
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    other = make_caller(Role.MEMBER, tenant=owner.tenant)
    NotificationPreferenceFactory(tenant=owner.tenant, user=member.user, confirmed_sms=True)
    emails = [send(owner, member.user, channel="email").json()["id"] for _ in range(3)]
    sms = send(owner, member.user, channel="sms").json()["id"]
    to_other = send(owner, other.user, channel="email").json()["id"]

    assert notifications_deliver(notification_ids=[*emails, sms, to_other]) == 4

    assert sorted(message.to[0] for message in mail.outbox) == sorted(
        [member.user.email, member.user.email, other.user.email]
    )
    statuses = {pk: Notification.objects.get(pk=pk).status for pk in [*emails, sms, to_other]}
    assert sorted(statuses.values()) == ["sent", "sent", "sent", "sent", "suppressed"]
    (held_back,) = Notification.objects.filter(status="suppressed")
    assert held_back.channel == "email" and held_back.recipient == member.user
    assert "at most 2 a day" in held_back.error

    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=5)):
        later = notification_send(
            tenant=owner.tenant,
            actor=owner.user,
            recipient=member.user,
            title="Later",
            message="A day on.",
            channel="email",
        )
        assert notifications_deliver(notification_ids=[later.pk]) == 1


@pytest.mark.postgres
def test_parallel_deliveries_stop_at_the_days_messages(transactional_db, make_caller, settings):
    """Six deliveries at once to one member with room for two: two are sent."""
    settings.NOTIFICATIONS_PER_RECIPIENT_PER_DAY = 2
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    pending = [
        NotificationFactory(
            tenant=owner.tenant, recipient=member.user, channel="email", status="pending"
        ).pk
        for _ in range(6)
    ]

    def deliver():
        try:
            return notifications_deliver(notification_ids=[pending.pop()])
        finally:
            connection.close()

    assert sorted(race(6, deliver)) == [0, 0, 0, 0, 1, 1]
    assert Notification.objects.filter(status="sent").count() == 2
    assert Notification.objects.filter(status="suppressed").count() == 4
    assert len(mail.outbox) == 2


def test_an_sms_to_a_member_without_sms_is_suppressed(make_caller):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)

    response = send(owner, member.user, channel="sms")

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "suppressed"


def test_the_recipient_must_be_an_active_member_of_the_tenant(make_caller):
    owner = make_caller(Role.OWNER)
    invited = MembershipFactory(
        tenant=owner.tenant, user=UserFactory(), status=MembershipStatus.INVITED
    )
    suspended = MembershipFactory(tenant=owner.tenant, status=MembershipStatus.SUSPENDED)
    strangers = [
        make_caller(Role.MEMBER).user,  # another tenant's member
        UserFactory(),
        invited.user,
        suspended.user,
    ]

    for recipient in strangers:
        error = assert_envelope(send(owner, recipient), 400, "VALIDATION_ERROR")
        assert "user_id" in error["details"]
    error = assert_envelope(send(owner, UserFactory(), user_id=str(uuid.uuid4())), 400)
    assert "user_id" in error["details"]
    assert not Notification.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": ""}, "title"),
        ({"message": 12}, "message"),
        ({"type": "panic"}, "type"),
        ({"channel": "pigeon"}, "channel"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": {"blob": "x" * 5000}}, "metadata"),
        ({"user_id": "not-a-uuid"}, "user_id"),
        ({"recipient": "someone"}, "recipient"),
    ],
)
def test_sending_refuses_an_invalid_body(make_caller, overrides, field):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)

    error = assert_envelope(send(owner, member.user, **overrides), 400, "VALIDATION_ERROR")

    assert field in error["details"]
    assert not Notification.objects.exists()


def test_sending_needs_settings_write(make_caller):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)

    assert_envelope(send(member, owner.user), 403, "INSUFFICIENT_PERMISSIONS")
    assert send(make_caller(Role.ADMIN, tenant=owner.tenant), member.user).status_code == 201
    assert Notification.objects.filter(recipient=owner.user).count() == 0


def test_an_api_key_with_settings_write_may_send_and_a_read_only_one_may_not(owner):
    member = MembershipFactory(tenant=owner.tenant, role=Role.MEMBER).user
    clients = {}
    for scopes in (("read", "write"), ("read",)):
        _, raw = issue_api_key(owner.membership, scopes=scopes)
        clients[scopes] = APIClient()
        clients[scopes].credentials(HTTP_X_API_KEY=raw)
    body = {"user_id": str(member.pk), "title": "Hi", "message": "From the CI."}

    allowed = clients[("read", "write")].post(URL, body, format="json")
    refused = clients[("read",)].post(URL, body, format="json")
    listing = clients[("read", "write")].get(URL)

    assert allowed.status_code == 201, allowed.content
    assert_envelope(refused, 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(listing, 403, "INSUFFICIENT_PERMISSIONS")


# Preferences ----------------------------------------------------------------------------------


def test_preferences_start_at_the_defaults(make_caller):
    response = make_caller(Role.VIEWER).client.get(PREFERENCES_URL)

    assert response.status_code == 200, response.content
    assert response.json() == DEFAULTS
    assert not NotificationPreference.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email_enabled": True, "in_app_enabled": True}, "sms_enabled"),
        ({"email_enabled": True, "sms_enabled": False}, "in_app_enabled"),
        ({"in_app_enabled": True, "sms_enabled": False}, "email_enabled"),
        ({**DEFAULTS, "email_enabled": "yes"}, "email_enabled"),
        ({**DEFAULTS, "in_app_enabled": 1}, "in_app_enabled"),
        ({**DEFAULTS, "sms_enabled": True}, "phone_number"),
        ({**DEFAULTS, "phone_number": "call me"}, "phone_number"),
        ({**DEFAULTS, "disabled_event_types": ["organization.exploded"]}, "disabled_event_types"),
        ({**DEFAULTS, "disabled_event_types": ["webhook.test"]}, "disabled_event_types"),
        ({**DEFAULTS, "disabled_event_types": QUOTA_WARNING}, "disabled_event_types"),
    ],
)
def test_put_refuses_an_invalid_body(make_caller, body, field):
    caller = make_caller(Role.VIEWER)

    error = assert_envelope(caller.client.put(PREFERENCES_URL, body, format="json"), 400)

    assert field in error["details"]
    assert not NotificationPreference.objects.filter(user=caller.user).exists()


def test_put_sets_every_preference_and_patch_only_what_it_names(make_caller):
    caller = make_caller(Role.ADMIN)
    wanted = {
        "email_enabled": False,
        "in_app_enabled": True,
        "sms_enabled": True,
        "phone_number": "+14155550100",
        "disabled_event_types": [QUOTA_WARNING, MEMBER_JOINED, QUOTA_WARNING],
    }

    put = caller.client.put(PREFERENCES_URL, wanted, format="json")
    patched = caller.client.patch(PREFERENCES_URL, {"email_enabled": True}, format="json")

    expected = {
        **wanted,
        "phone_number_confirmed": False,
        "disabled_event_types": sorted({QUOTA_WARNING, MEMBER_JOINED}),
    }
    assert put.status_code == 200, put.content
    assert put.json() == expected
    assert patched.status_code == 200, patched.content
    assert patched.json() == {**expected, "email_enabled": True}
    assert caller.client.get(PREFERENCES_URL).json() == {**expected, "email_enabled": True}
    unset_phone = caller.client.patch(PREFERENCES_URL, {"phone_number": ""}, format="json")
    assert "phone_number" in assert_envelope(unset_phone, 400)["details"]


def test_preferences_are_per_tenant(make_caller):
    caller = make_caller(Role.MEMBER)
    other = MembershipFactory(user=caller.user, role=Role.MEMBER).tenant

    response = caller.client.patch(PREFERENCES_URL, {"email_enabled": False}, format="json")

    assert response.status_code == 200, response.content
    assert caller.client.get(PREFERENCES_URL).json()["email_enabled"] is False
    assert caller.client_for(other.pk).get(PREFERENCES_URL).json() == DEFAULTS


def test_the_preferences_audit_event_names_fields_only(make_caller):
    caller = make_caller(Role.MEMBER)

    response = caller.client.patch(
        PREFERENCES_URL, {"sms_enabled": True, "phone_number": "+14155550100"}, format="json"
    )
    unchanged = caller.client.patch(PREFERENCES_URL, {"sms_enabled": True}, format="json")

    assert response.status_code == 200 and unchanged.status_code == 200
    event = AuditEvent.objects.get(
        tenant=caller.tenant, event_type="notification.preferences_updated"
    )
    assert event.payload == {
        "user_id": str(caller.user.pk),
        "changed": ["phone_number", "sms_enabled"],
    }
    assert "4155550100" not in json.dumps(event.payload)


def test_every_phone_number_the_field_accepts_is_stored(make_caller):
    caller = make_caller(Role.MEMBER)
    phone = "+44 (0) 20 7946 0958 123"  # 24 characters, accepted by validate_phone

    response = caller.client.patch(
        PREFERENCES_URL, {"sms_enabled": True, "phone_number": phone}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["phone_number"] == phone


def test_a_phone_number_too_long_is_refused_naming_the_field(make_caller):
    caller = make_caller(Role.MEMBER)

    response = caller.client.patch(
        PREFERENCES_URL, {"sms_enabled": True, "phone_number": "+1" + "2" * 40}, format="json"
    )

    assert "phone_number" in assert_envelope(response, 400)["details"]


# Notifications raised by catalogue events ----------------------------------------------------


def members_of(tenant, *roles):
    return {role: MembershipFactory(tenant=tenant, role=role).user for role in roles}


def rows(event_type, user) -> set[str]:
    return set(
        Notification.objects.filter(event_type=event_type, recipient=user).values_list(
            "channel", flat=True
        )
    )


def warn_about_documents(tenant):
    Tenant.objects.filter(pk=tenant.pk).update(settings={"maxDocuments": 1})
    tenant.refresh_from_db()
    quota_consume(tenant=tenant, resource="documents")


def test_a_quota_warning_notifies_owners_and_admins_per_their_preferences(make_caller):
    tenant = TenantFactory()
    users = members_of(tenant, Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER, Role.BILLING)
    opted_out, no_in_app, with_sms, unconfirmed = (
        MembershipFactory(tenant=tenant, role=role).user
        for role in (Role.ADMIN, Role.OWNER, Role.ADMIN, Role.ADMIN)
    )
    NotificationPreferenceFactory(
        tenant=tenant, user=opted_out, disabled_event_types=[QUOTA_WARNING]
    )
    NotificationPreferenceFactory(tenant=tenant, user=no_in_app, in_app_enabled=False)
    NotificationPreferenceFactory(tenant=tenant, user=with_sms, confirmed_sms=True)
    NotificationPreferenceFactory(
        tenant=tenant, user=unconfirmed, sms_enabled=True, phone_number="+14155550111"
    )
    # The same people in another tenant hear nothing of this one.
    elsewhere = TenantFactory()
    MembershipFactory(tenant=elsewhere, user=users[Role.OWNER], role=Role.OWNER)

    warn_about_documents(tenant)

    assert rows(QUOTA_WARNING, users[Role.OWNER]) == {"in_app", "email"}
    assert rows(QUOTA_WARNING, users[Role.ADMIN]) == {"in_app", "email"}
    for role in (Role.MEMBER, Role.VIEWER, Role.BILLING):
        assert rows(QUOTA_WARNING, users[role]) == set(), role
    assert rows(QUOTA_WARNING, opted_out) == set()
    assert rows(QUOTA_WARNING, no_in_app) == {"email"}
    assert rows(QUOTA_WARNING, with_sms) == {"in_app", "email", "sms"}
    assert rows(QUOTA_WARNING, unconfirmed) == {"in_app", "email"}
    assert not Notification.objects.filter(tenant=elsewhere).exists()
    in_app = Notification.objects.get(recipient=users[Role.ADMIN], channel="in_app")
    assert (in_app.tenant_id, in_app.type, in_app.status) == (tenant.pk, "warning", "sent")
    assert in_app.title == "Quota warning: documents"
    assert in_app.message == "documents is at 1 of 1 this period."
    assert in_app.metadata == {"event": QUOTA_WARNING}
    email = Notification.objects.get(recipient=users[Role.OWNER], channel="email")
    assert email.status == "pending"
    assert notifications_deliver(notification_ids=[email.pk]) == 1
    assert [message.to for message in mail.outbox] == [[users[Role.OWNER].email]]


def test_the_admin_sees_the_quota_warning_in_their_list(make_caller):
    admin = make_caller(Role.ADMIN)

    warn_about_documents(admin.tenant)

    response = admin.client.get(URL, {"event_type": QUOTA_WARNING, "channel": "in_app"})
    (row,) = response.json()["results"]
    assert row["title"] == "Quota warning: documents" and row["is_read"] is False


def _accept_an_invitation(tenant):
    invitation = InvitationFactory(tenant=tenant, email="ada@example.com")
    return invitation_accept(token=invitation.token, name="Ada", password=TEST_PASSWORD).membership


def _add_a_member(tenant):
    user = UserFactory(email="ada@example.com")
    return membership_add(tenant=tenant, user=user, role=Role.MEMBER, actor=None)


@pytest.mark.parametrize("join", [_accept_an_invitation, _add_a_member], ids=["accept", "add"])
def test_a_member_joining_notifies_the_admins_only(join):
    tenant = TenantFactory(settings={"maxUsers": 10})
    users = members_of(tenant, Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER)

    joined = join(tenant)

    assert rows(MEMBER_JOINED, users[Role.ADMIN]) == {"in_app", "email"}
    for role in (Role.OWNER, Role.MEMBER, Role.VIEWER):
        assert rows(MEMBER_JOINED, users[role]) == set(), role
    assert rows(MEMBER_JOINED, joined.user) == set()
    notice = Notification.objects.get(recipient=users[Role.ADMIN], channel="in_app")
    assert notice.title == "New member: ada@example.com"
    assert notice.message == "ada@example.com joined the organization as member."
    assert notice.metadata == {
        "event": MEMBER_JOINED,
        "membership_id": str(joined.pk),
        "user_id": str(joined.user_id),
    }


def test_a_disabled_webhook_endpoint_notifies_owners_and_admins_as_an_error():
    tenant = TenantFactory()
    users = members_of(tenant, Role.OWNER, Role.ADMIN, Role.MEMBER)
    endpoint = WebhookEndpointFactory(tenant=tenant, name="Orders")

    webhook_endpoint_disable(webhook_endpoint=endpoint, reason="Failing for 5 days.")

    disabled = "webhook.endpoint.disabled"
    for role in (Role.OWNER, Role.ADMIN):
        assert rows(disabled, users[role]) == {"in_app", "email"}, role
    assert rows(disabled, users[Role.MEMBER]) == set()
    notice = Notification.objects.get(recipient=users[Role.OWNER], channel="in_app")
    assert (notice.type, notice.title) == ("error", "Webhook endpoint disabled: Orders")
    assert notice.message == f"{endpoint.url} was disabled: Failing for 5 days."
    assert notice.metadata == {"event": disabled, "endpoint_id": str(endpoint.pk)}
