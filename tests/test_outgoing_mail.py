"""Outgoing mail through a real SMTP server (aiosmtpd, on a local port): the account the settings
name signs in and the message arrives; a mail server that stops answering fails the email after
EMAIL_TIMEOUT, and what sent it goes on: the inviting request answers (its invitation can be
sent again), a notification waits for beat's sweep to send it once the server is back; a
recipient the server refuses for good fails the notification."""

import logging
import smtplib
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
import time_machine
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from django.test import override_settings
from django.utils import timezone

from notifications.models import Channel, Notification, NotificationStatus
from notifications.services.user_notifications import (
    notifications_deliver,
    notifications_deliver_overdue,
)
from tenants.models import Invitation, PlanTier, Role
from tests.factories import TenantFactory
from tests.test_dependency_outages import closed_port, silent_port

pytestmark = pytest.mark.django_db

INVITE = "/api/v1/organizations/members/invite"
ACCOUNT = ("mailer@example.com", "smtp-password-1")
SMTP = "django.core.mail.backends.smtp.EmailBackend"


class Mailbox:
    """aiosmtpd's handler: keeps each message and the account its session signed in with, and
    refuses the recipients `refuse` names with their reply."""

    def __init__(self, refuse: dict[str, str] | None = None):
        self.messages: list[tuple[str, list[str], str]] = []
        self.logins: list[tuple[str, str]] = []
        self.refuse = refuse or {}
        self.received = threading.Event()

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = (auth_data.login.decode(), auth_data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == ACCOUNT)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        body = envelope.content.decode("utf-8", errors="replace")
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), body))
        self.received.set()
        return "250 Message accepted for delivery"


@contextmanager
def running_mailbox(refuse: dict[str, str] | None = None):
    """A real SMTP server on a local port, and the settings that send through it."""
    box = Mailbox(refuse)
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=closed_port(),
        authenticator=box.authenticate,
        auth_require_tls=False,  # on loopback; STARTTLS is Django's, not ours to test
    )
    controller.start()
    try:
        with override_settings(
            EMAIL_BACKEND=SMTP,
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=controller.port,
            EMAIL_HOST_USER=ACCOUNT[0],
            EMAIL_HOST_PASSWORD=ACCOUNT[1],
        ):
            yield box
    finally:
        controller.stop()


@pytest.fixture
def mailbox():
    with running_mailbox() as box:
        yield box


@pytest.fixture
def mailbox_server():
    """`running_mailbox`, started when the test says."""
    return running_mailbox


@pytest.fixture
def silent_mail_server():
    """A mail server that takes the connection and never answers (not even its greeting)."""
    with (
        silent_port() as port,
        override_settings(
            EMAIL_BACKEND=SMTP, EMAIL_HOST="127.0.0.1", EMAIL_PORT=port, EMAIL_TIMEOUT=0.5
        ),
    ):
        yield port


@pytest.fixture
def owner(make_caller):
    return make_caller(Role.OWNER, tenant=TenantFactory(plan=PlanTier.ENTERPRISE))


def invite(owner, email: str):
    return owner.client.post(INVITE, {"email": email}, format="json")


def test_an_invitation_is_emailed_through_the_configured_server_and_account(
    owner, mailbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = invite(owner, "newcomer@example.com")

    assert response.status_code == 201, response.content
    assert mailbox.logins == [ACCOUNT]
    [(sender, recipients, body)] = mailbox.messages
    assert recipients == ["newcomer@example.com"]
    assert "/invitations/accept?token=" in body
    assert sender == "no-reply@localhost"


def test_a_mail_server_that_never_answers_fails_the_email_and_the_invitation_stands(
    owner, silent_mail_server, django_capture_on_commit_callbacks, caplog
):
    with (
        caplog.at_level(logging.ERROR, logger="tenants.emails"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = invite(owner, "newcomer@example.com")

    assert response.status_code == 201, response.content
    assert Invitation.objects.filter(email="newcomer@example.com").count() == 1
    [record] = caplog.records
    assert record.getMessage().startswith("The email for invitation ")
    error = record.exc_info[1]
    assert isinstance(error, smtplib.SMTPServerDisconnected)
    assert str(error) == "Connection unexpectedly closed: timed out"


@pytest.mark.postgres
def test_an_invitation_whose_email_failed_says_so_and_the_resend_sends_it(
    transactional_db, owner, mailbox_server
):
    """Committed for real (the email leaves at the service's commit, before the view answers):
    a mail server that refuses the connection gives `email_sent: false` and a message naming
    the resend action, not "sent"; the resend, once the server is back, sends it."""
    with override_settings(EMAIL_BACKEND=SMTP, EMAIL_HOST="127.0.0.1", EMAIL_PORT=closed_port()):
        response = invite(owner, "newcomer@example.com")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["email_sent"] is False
    assert "could not be sent" in body["message"] and "resend" in body["message"]
    member_id = body["member"]["id"]

    with mailbox_server() as box:
        resent = owner.client.post(f"/api/v1/organizations/members/{member_id}/resend")
    assert resent.status_code == 200, resent.content
    assert resent.json()["email_sent"] is True
    assert resent.json()["message"] == "Invitation sent successfully"
    [(_, recipients, _)] = box.messages
    assert recipients == ["newcomer@example.com"]


def email_notification(owner, title: str = "Quota warning") -> Notification:
    return Notification.objects.create(
        tenant=owner.tenant,
        recipient=owner.user,
        channel=Channel.EMAIL,
        title=title,
        message="80% of the month's tokens are used.",
    )


def test_a_notification_to_a_mail_server_that_never_answers_waits_and_goes_when_it_is_back(
    owner, silent_mail_server, mailbox_server, settings
):
    """The timeout is a failure that may pass: the notification is pending again, its reason
    kept, and beat's sweep sends it once the server answers."""
    notification = email_notification(owner)

    sent = notifications_deliver(notification_ids=[notification.pk])

    assert sent == 0
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.PENDING
    assert notification.sent_at is None
    assert notification.error == (
        "SMTPServerDisconnected: Connection unexpectedly closed: timed out"
    )

    with (
        mailbox_server() as mailbox,
        time_machine.travel(timezone.now() + timedelta(minutes=1, seconds=1)),
    ):
        assert notifications_deliver_overdue().sent == 1
    [(_, recipients, body)] = mailbox.messages
    assert recipients == [owner.user.email] and "80% of the month's tokens" in body
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.SENT


def test_a_mail_server_that_refuses_connections_leaves_the_rest_untried(owner, settings):
    settings.EMAIL_BACKEND, settings.EMAIL_HOST = SMTP, "127.0.0.1"
    settings.EMAIL_PORT = closed_port()
    notifications = [email_notification(owner, f"Warning {n}") for n in range(3)]

    assert notifications_deliver(notification_ids=[n.pk for n in notifications]) == 0

    errors = sorted(Notification.objects.values_list("status", "error"))
    assert errors == [
        ("pending", ""),
        ("pending", ""),
        ("pending", "ConnectionRefusedError: [Errno 111] Connection refused"),
    ]


@pytest.mark.parametrize(
    ("reply", "status"),
    [("550 5.1.1 No such mailbox", "failed"), ("450 4.2.0 Mailbox busy", "pending")],
)
def test_a_refused_recipient_fails_for_good_and_a_busy_one_waits(
    owner, mailbox_server, reply, status
):
    notification = email_notification(owner)

    with mailbox_server(refuse={owner.user.email: reply}) as mailbox:
        assert notifications_deliver(notification_ids=[notification.pk]) == 0

    assert mailbox.messages == []
    notification.refresh_from_db()
    assert notification.status == status
    assert notification.error.startswith("SMTPRecipientsRefused: ")
    assert reply.split()[0] in notification.error
