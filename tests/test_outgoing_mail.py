"""Outgoing mail through a real SMTP server (aiosmtpd, on a local port): the account the settings
name signs in and the message arrives; a mail server that stops answering fails the email after
EMAIL_TIMEOUT, and what sent it goes on: the inviting request answers (its invitation can be
sent again), a notification is recorded as failed."""

import logging
import smtplib
import threading

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from django.test import override_settings

from notifications.models import Channel, Notification, NotificationStatus
from notifications.services.user_notifications import notifications_deliver
from tenants.models import Invitation, PlanTier, Role
from tests.factories import TenantFactory
from tests.test_dependency_outages import closed_port, silent_port

pytestmark = pytest.mark.django_db

INVITE = "/api/v1/organizations/members/invite"
ACCOUNT = ("mailer@example.com", "smtp-password-1")
SMTP = "django.core.mail.backends.smtp.EmailBackend"


class Mailbox:
    """aiosmtpd's handler: keeps each message and the account its session signed in with."""

    def __init__(self):
        self.messages: list[tuple[str, list[str], str]] = []
        self.logins: list[tuple[str, str]] = []
        self.received = threading.Event()

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = (auth_data.login.decode(), auth_data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == ACCOUNT)

    async def handle_DATA(self, server, session, envelope):
        body = envelope.content.decode("utf-8", errors="replace")
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), body))
        self.received.set()
        return "250 Message accepted for delivery"


@pytest.fixture
def mailbox():
    box = Mailbox()
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


def test_a_notification_to_a_mail_server_that_never_answers_is_recorded_as_failed(
    owner, silent_mail_server
):
    notification = Notification.objects.create(
        tenant=owner.tenant,
        recipient=owner.user,
        channel=Channel.EMAIL,
        title="Quota warning",
        message="80% of the month's tokens are used.",
    )

    sent = notifications_deliver(notification_ids=[notification.pk])

    assert sent == 0
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.FAILED
    assert notification.error == (
        "SMTPServerDisconnected: Connection unexpectedly closed: timed out"
    )
