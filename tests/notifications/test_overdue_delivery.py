"""Email and SMS notifications still pending are sent by beat's sweep
(notifications_deliver_overdue): those whose task's message never came (a broker down at the
commit, or restarted without its queue), and those whose channel failed in a way that may pass.
A failure for good is `failed` and stays so; a notification pending for
NOTIFICATIONS_DELIVERY_HOURS is given up. The claim sends each notification once, however many
sweeps and tasks meet it."""

import io
import smtplib
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from notifications.catalog import EVENT_TYPES
from notifications.channels import ChannelUnavailable, is_temporary
from notifications.models import Notification
from notifications.services import (
    notification_send,
    notifications_deliver,
    notifications_deliver_overdue,
)
from notifications.services.user_notifications import (
    _claim,
    _record_failure,
    _record_sent,
    notify_roles,
)
from notifications.tasks import deliver_overdue_notifications
from tenants.models import Role
from tests.conftest import race

from .factories import NotificationFactory, NotificationPreferenceFactory

pytestmark = pytest.mark.django_db


class DownSMS:
    """A provider whose service is down: it says the message may go later."""

    calls = 0

    def send(self, to: str, text: str) -> None:
        DownSMS.calls += 1
        raise ChannelUnavailable("the SMS service answered 503")


class RefusingSMS:
    """A provider that refuses the message for good."""

    def send(self, to: str, text: str) -> None:
        raise ValueError("the number cannot receive SMS")


class DyingSMS:
    """The worker's process ends in the middle of the send (its hard time limit, a kill, a
    shutdown), after the claim and before the channel answered."""

    def send(self, to: str, text: str) -> None:
        raise SystemExit(1)


class WatchingSMS:
    """Takes the message, noting the notification's state as the channel sees it."""

    seen: list[tuple[str, str]] = []

    def send(self, to: str, text: str) -> None:
        WatchingSMS.seen.extend(
            Notification.objects.filter(channel="sms").values_list("status", "title")
        )


class KeptSMS:
    sent: list[tuple[str, str]] = []

    def send(self, to: str, text: str) -> None:
        KeptSMS.sent.append((to, text))


@pytest.fixture
def pair(make_caller):
    """An owner and a member whose phone number is confirmed."""
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    NotificationPreferenceFactory(tenant=owner.tenant, user=member.user, confirmed_sms=True)
    return owner, member


def notify(pair, channel: str, title: str = "Maintenance") -> Notification:
    owner, member = pair
    return notification_send(
        tenant=owner.tenant,
        actor=owner.user,
        recipient=member.user,
        title=title,
        message="Tonight at 22:00.",
        channel=channel,
    )


def later(seconds: float):
    return time_machine.travel(timezone.now() + timedelta(seconds=seconds))


def status_of(notification: Notification) -> tuple[str, str]:
    notification.refresh_from_db()
    return notification.status, notification.error


def test_an_email_whose_task_never_came_is_sent_by_the_sweep_once(
    pair, settings, django_capture_on_commit_callbacks
):
    """The commit's task is never published (its callbacks are not run): the sweep leaves the
    email to it for NOTIFICATIONS_RETRY_AFTER_SECONDS, then sends it, once."""
    settings.NOTIFICATIONS_RETRY_AFTER_SECONDS = 60
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        email = notify(pair, "email")
    assert len(callbacks) == 1  # the task's publish, which never happens here

    assert vars(notifications_deliver_overdue()) == {"sent": 0, "expired": 0}
    assert mail.outbox == [] and status_of(email)[0] == "pending"

    with later(61):
        assert deliver_overdue_notifications() == {"sent": 1, "expired": 0}
        assert deliver_overdue_notifications() == {"sent": 0, "expired": 0}
    (message,) = mail.outbox
    assert message.to == [pair[1].user.email] and message.subject == "Maintenance"
    assert status_of(email) == ("sent", "")


def test_an_sms_provider_that_is_down_keeps_the_message_for_the_next_sweep(pair, settings):
    """A failure that may pass puts the notification back to pending, its reason kept, and
    leaves the channel's other notifications untried in this run; the email goes. When the
    provider is back, the sweep sends both SMS."""
    settings.SMS_PROVIDER = f"{__name__}.DownSMS"
    DownSMS.calls = 0
    first, second = notify(pair, "sms", "First"), notify(pair, "sms", "Second")
    email = notify(pair, "email")

    assert notifications_deliver(notification_ids=[first.pk, second.pk, email.pk]) == 1

    assert DownSMS.calls == 1  # the second SMS waits for the next sweep, untried
    tried, untried = sorted([status_of(first), status_of(second)], key=lambda s: s[1])[::-1]
    assert tried == ("pending", "ChannelUnavailable: the SMS service answered 503")
    assert untried == ("pending", "")
    assert status_of(email) == ("sent", "")
    assert Notification.objects.filter(status="pending", sent_at__isnull=False).count() == 0

    settings.SMS_PROVIDER = f"{__name__}.KeptSMS"
    KeptSMS.sent.clear()
    with later(settings.NOTIFICATIONS_RETRY_AFTER_SECONDS + 1):
        assert vars(notifications_deliver_overdue()) == {"sent": 2, "expired": 0}
    assert sorted(text for _, text in KeptSMS.sent) == [
        "First: Tonight at 22:00.",
        "Second: Tonight at 22:00.",
    ]
    assert status_of(first)[0] == status_of(second)[0] == "sent"


def test_a_failure_for_good_is_failed_and_never_tried_again(pair, settings):
    settings.SMS_PROVIDER = f"{__name__}.RefusingSMS"
    sms = notify(pair, "sms")

    assert notifications_deliver(notification_ids=[sms.pk]) == 0

    assert status_of(sms) == ("failed", "ValueError: the number cannot receive SMS")
    settings.SMS_PROVIDER = f"{__name__}.KeptSMS"
    KeptSMS.sent.clear()
    with later(settings.NOTIFICATIONS_RETRY_AFTER_SECONDS + 1):
        assert vars(notifications_deliver_overdue()) == {"sent": 0, "expired": 0}
    assert KeptSMS.sent == [] and status_of(sms)[0] == "failed"


def test_a_notification_pending_for_the_delivery_window_is_given_up(pair, settings):
    """Past NOTIFICATIONS_DELIVERY_HOURS the notification is `failed`, its last reason kept
    after the verdict, and not sent: a warning that late would mislead."""
    settings.NOTIFICATIONS_DELIVERY_HOURS = 24
    settings.SMS_PROVIDER = f"{__name__}.DownSMS"
    sms = notify(pair, "sms")
    email = notify(pair, "email")
    with later(23 * 3600):
        assert vars(notifications_deliver_overdue()) == {"sent": 1, "expired": 0}
    assert status_of(sms)[0] == "pending"

    settings.SMS_PROVIDER = f"{__name__}.KeptSMS"
    KeptSMS.sent.clear()
    with later(24 * 3600 + 1):
        assert vars(notifications_deliver_overdue()) == {"sent": 0, "expired": 1}

    assert status_of(sms) == (
        "failed",
        "Not delivered within 24 hours. ChannelUnavailable: the SMS service answered 503",
    )
    assert KeptSMS.sent == [] and status_of(email)[0] == "sent"


def test_the_sweep_sends_the_longest_waiting_first_and_at_most_its_batch(pair, settings):
    settings.SMS_PROVIDER = f"{__name__}.KeptSMS"
    KeptSMS.sent.clear()
    for minute in range(3):
        with later(minute * 60):
            notify(pair, "sms", f"Message {minute}")

    with later(3 * 60 + settings.NOTIFICATIONS_RETRY_AFTER_SECONDS):
        assert vars(notifications_deliver_overdue(limit=2)) == {"sent": 2, "expired": 0}
        assert [text.split(":")[0] for _, text in KeptSMS.sent] == ["Message 0", "Message 1"]
        assert vars(notifications_deliver_overdue(limit=2)) == {"sent": 1, "expired": 0}


def test_a_notification_is_sending_while_its_channel_has_it(pair, settings):
    settings.SMS_PROVIDER = f"{__name__}.WatchingSMS"
    WatchingSMS.seen.clear()
    sms = notify(pair, "sms")

    assert notifications_deliver(notification_ids=[sms.pk]) == 1

    assert WatchingSMS.seen == [("sending", "Maintenance")]
    assert status_of(sms) == ("sent", "")


def test_a_notification_whose_worker_stopped_while_sending_is_sent_again(pair, settings):
    """The worker ends between the claim and the channel's answer: the notification stays
    `sending` (counted in the allowance, as it may have left) for
    NOTIFICATIONS_SENDING_LEASE_SECONDS, then the sweep sends it again, once."""
    settings.NOTIFICATIONS_SENDING_LEASE_SECONDS = 600
    settings.SMS_PROVIDER = f"{__name__}.DyingSMS"
    sms = notify(pair, "sms")
    with pytest.raises(SystemExit):
        notifications_deliver(notification_ids=[sms.pk])
    assert status_of(sms) == ("sending", "")

    settings.SMS_PROVIDER = f"{__name__}.KeptSMS"
    KeptSMS.sent.clear()
    with later(599):
        assert vars(notifications_deliver_overdue()) == {"sent": 0, "expired": 0}
    assert KeptSMS.sent == [] and status_of(sms)[0] == "sending"

    with later(601):
        assert vars(notifications_deliver_overdue()) == {"sent": 1, "expired": 0}
        assert vars(notifications_deliver_overdue()) == {"sent": 0, "expired": 0}
    assert [text for _, text in KeptSMS.sent] == ["Maintenance: Tonight at 22:00."]
    assert status_of(sms) == ("sent", "Its worker stopped while sending it; sent again.")


def test_a_send_that_outlives_its_lease_is_not_made_twice(pair, settings):
    """A send slower than the lease: the sweep has put its notification back to pending when
    the channel takes it. It is `sent` then, and no later run sends it again; a failure of that
    old claim does not undo a newer one."""
    settings.NOTIFICATIONS_SENDING_LEASE_SECONDS = 600
    slow = notify(pair, "email", "Slow")
    claimed_at = _claim(slow)
    with later(601):
        settings.NOTIFICATIONS_RETRY_AFTER_SECONDS = 3600  # the sweep takes it back, no more
        notifications_deliver_overdue(limit=0)
        assert status_of(slow) == ("pending", "Its worker stopped while sending it; sent again.")
        _record_sent(slow, claimed_at)  # the old send ends: the channel took it
        assert status_of(slow)[0] == "sent"
        assert notifications_deliver(notification_ids=[slow.pk]) == 0
    assert mail.outbox == []

    again = notify(pair, "email", "Again")
    old_claim = _claim(again)
    with later(601):
        assert vars(notifications_deliver_overdue()) == {"sent": 1, "expired": 0}
        _record_failure(again, old_claim, "failed", "SMTPDataError: too late")  # the old send
    assert status_of(again) == ("sent", "Its worker stopped while sending it; sent again.")
    assert [message.subject for message in mail.outbox] == ["Again"]


def test_a_sweep_claims_no_more_once_its_time_is_spent(pair, settings):
    """A mail server slow enough to take the sweep's time: the sweep stops claiming (after
    the one it tried) and leaves the rest pending for beat's next run, rather than hold its
    worker for hours while beat starts a new sweep every minute."""
    for number in range(3):
        notify(pair, "email", f"Message {number}")

    with later(settings.NOTIFICATIONS_RETRY_AFTER_SECONDS + 1):
        runs = [notifications_deliver_overdue(time_budget_seconds=0).sent for _ in range(4)]

    assert runs == [1, 1, 1, 0]
    assert [message.subject for message in mail.outbox] == [f"Message {n}" for n in range(3)]


def test_a_commits_task_leaves_what_its_time_did_not_cover_to_the_sweep(pair, settings):
    """An event that notifies many members at once: the commit's task stops claiming when its
    time is spent, and the sweep sends the rest, each once."""
    emails = [notify(pair, "email", f"Message {number}") for number in range(3)]

    assert (
        notifications_deliver(notification_ids=[e.pk for e in emails], time_budget_seconds=0) == 1
    )
    assert [status_of(email)[0] for email in emails] == ["sent", "pending", "pending"]

    with later(settings.NOTIFICATIONS_RETRY_AFTER_SECONDS + 1):
        assert vars(notifications_deliver_overdue()) == {"sent": 2, "expired": 0}
    assert [message.subject for message in mail.outbox] == [f"Message {n}" for n in range(3)]


@pytest.mark.parametrize(
    "leave",
    [
        pytest.param(lambda owner, member: member.membership.delete(), id="removed"),
        pytest.param(
            lambda owner, member: owner.client.patch(
                f"/api/v1/organizations/members/{member.membership.pk}",
                {"status": "suspended"},
                format="json",
            ),
            id="suspended",
        ),
        pytest.param(
            lambda owner, member: (
                type(member.user).objects.filter(pk=member.user.pk).update(is_active=False)
            ),
            id="deactivated",
        ),
    ],
)
@pytest.mark.parametrize("channel", ["email", "sms"])
def test_a_notification_to_someone_who_left_since_is_not_sent(pair, settings, leave, channel):
    """Raised while they were a member, sent after they left (the mail server was down, the
    task late): what the organization tells its members is not theirs any more."""
    settings.SMS_PROVIDER = f"{__name__}.KeptSMS"
    KeptSMS.sent.clear()
    owner, member = pair
    notification = notify(pair, channel)
    leave(owner, member)

    with later(settings.NOTIFICATIONS_RETRY_AFTER_SECONDS + 1):
        assert vars(notifications_deliver_overdue()) == {"sent": 0, "expired": 0}

    assert status_of(notification) == (
        "failed",
        "The recipient is no longer an active member of the organization.",
    )
    assert mail.outbox == [] and KeptSMS.sent == []


def test_an_event_notification_to_someone_no_longer_in_its_roles_is_not_sent(make_caller, settings):
    """A quota warning notifies owners and admins: an admin demoted to member before a late
    send does not get it; the owner does. A refund decision names its requester, whatever
    their role: a member still gets it."""
    owner = make_caller(Role.OWNER)
    admin = make_caller(Role.ADMIN, tenant=owner.tenant)
    requester = make_caller(Role.MEMBER, tenant=owner.tenant)
    tenant_id = owner.tenant.pk
    warned = notify_roles(
        tenant_id=tenant_id,
        entry=EVENT_TYPES["organization.quota.warning"],
        data={"resource": "tokens", "percentage": 80},
    )
    decided = notify_roles(
        tenant_id=tenant_id,
        entry=EVENT_TYPES["refund.approved"],
        data={"requested_by_id": str(requester.user.pk), "order_id": "A-1"},
    )
    admin.membership.role = Role.MEMBER
    admin.membership.save(update_fields=["role"])

    with later(settings.NOTIFICATIONS_RETRY_AFTER_SECONDS + 1):
        notifications_deliver_overdue()

    emails = {n.recipient_id: n for n in [*warned, *decided] if n.channel == "email"}
    assert status_of(emails[owner.user.pk])[0] == "sent"
    assert status_of(emails[admin.user.pk]) == (
        "failed",
        "The recipient no longer holds a role this event notifies.",
    )
    assert status_of(emails[requester.user.pk])[0] == "sent"
    assert sorted(message.to[0] for message in mail.outbox) == sorted(
        [owner.user.email, requester.user.email]
    )


def test_only_pending_notifications_are_swept(pair, settings):
    owner, member = pair
    for state in ("sent", "suppressed", "failed"):
        NotificationFactory(
            tenant=owner.tenant, recipient=member.user, channel="email", status=state
        )

    with later(settings.NOTIFICATIONS_DELIVERY_HOURS * 3600 + 1):
        assert vars(notifications_deliver_overdue()) == {"sent": 0, "expired": 0}
    assert mail.outbox == []


@pytest.mark.postgres
def test_parallel_sweeps_send_each_notification_once(transactional_db, pair, settings):
    """Four sweeps at once over the same five overdue emails: five messages in all."""
    for number in range(5):
        notify(pair, "email", f"Message {number}")

    def sweep():
        try:
            return notifications_deliver_overdue().sent
        finally:
            connection.close()

    with later(settings.NOTIFICATIONS_RETRY_AFTER_SECONDS + 1):
        assert sum(race(4, sweep)) == 5
    assert sorted(message.subject for message in mail.outbox) == [
        f"Message {number}" for number in range(5)
    ]
    assert Notification.objects.filter(channel="email", status="sent").count() == 5


def recipients_refused(*codes: int) -> smtplib.SMTPRecipientsRefused:
    return smtplib.SMTPRecipientsRefused(
        {f"{n}@example.com": (code, b"refused") for n, code in enumerate(codes)}
    )


@pytest.mark.parametrize(
    ("error", "temporary"),
    [
        # The server, the connection or the platform's own account: the operator's to put right.
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), True),
        (smtplib.SMTPConnectError(421, b"Service not available"), True),
        (smtplib.SMTPConnectError(554, b"No service for you"), True),
        (smtplib.SMTPAuthenticationError(535, b"Bad credentials"), True),
        (smtplib.SMTPSenderRefused(553, b"Sender not allowed", "no-reply@localhost"), True),
        (smtplib.SMTPNotSupportedError("SMTPUTF8 not supported"), True),
        (smtplib.SMTPException("SMTP AUTH extension not supported by server."), True),
        (ChannelUnavailable("503 from the provider"), True),
        # "Try again later" about this message or recipient.
        (smtplib.SMTPDataError(452, b"Insufficient storage"), True),
        (recipients_refused(450, 451), True),
        # This message or recipient refused for good, or a provider's own verdict.
        (smtplib.SMTPDataError(554, b"Message rejected"), False),
        (recipients_refused(550), False),
        (recipients_refused(450, 550), False),
        (ValueError("the recipient has no confirmed phone number"), False),
        (RuntimeError("a provider's bug"), False),
    ],
)
def test_which_failures_may_pass(error, temporary):
    assert is_temporary(error) is temporary


def test_the_command_sends_every_overdue_notification_in_batches(pair, settings, monkeypatch):
    monkeypatch.setattr("notifications.management.commands.deliver_notifications.OVERDUE_BATCH", 2)
    for number in range(5):
        notify(pair, "email", f"Message {number}")
    out = io.StringIO()

    with later(settings.NOTIFICATIONS_RETRY_AFTER_SECONDS + 1):
        call_command("deliver_notifications", stdout=out)

    assert out.getvalue().strip() == "Sent 5 notifications; gave up 0 past their window."
    assert len(mail.outbox) == 5
