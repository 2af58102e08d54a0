"""Invitation links: where the emailed link points (INVITATION_ACCEPT_URL, PUBLIC_BASE_URL, the
inviting request's host, the fallback), and the admin action that issues a fresh link for staff
to pass on by hand."""

import json
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import hash_secret
from audit import tasks as audit_tasks
from audit.models import AuditEvent
from tenants import emails
from tenants.models import Invitation, InvitationStatus, Membership, PlanTier, Role
from tenants.services import members
from tests.factories import (
    TEST_PASSWORD,
    InvitationFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

MEMBERS = "/api/v1/organizations/members"
ACCEPT = "/api/v1/invitations/accept"
TOKEN = r"([A-Za-z0-9_-]{43,})"
# Neither setting: the link follows the request.
NO_SETTINGS = {"INVITATION_ACCEPT_URL": "", "PUBLIC_BASE_URL": ""}


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """Committed audit events ask for a seal task; keep those off the broker."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)


@pytest.fixture
def owner(make_caller):
    return make_caller(Role.OWNER, tenant=TenantFactory(plan=PlanTier.ENTERPRISE, name="Acme"))


def invite(owner, capture, email="newcomer@example.com", **request_extra):
    with capture(execute=True):
        response = owner.client.post(
            f"{MEMBERS}/invite", {"email": email}, format="json", **request_extra
        )
    assert response.status_code == 201, response.content
    return response


def link_in(message, prefix: str) -> str:
    """The token of the link starting with `prefix`, in the text and in the HTML alike."""
    match = re.search(re.escape(prefix) + TOKEN, message.body)
    assert match, message.body
    html, _ = message.alternatives[0]
    assert f'href="{prefix}{match.group(1)}"' in html
    return match.group(1)


def accept(token):
    return APIClient().post(
        ACCEPT, {"token": token, "name": "New Comer", "password": TEST_PASSWORD}, format="json"
    )


def audit_text() -> str:
    return json.dumps(list(AuditEvent.objects.values("payload", "actor_label")), default=str)


# Where the emailed link points -------------------------------------------------------------------


@override_settings(**NO_SETTINGS)
def test_the_link_uses_the_requests_host_and_port(owner, django_capture_on_commit_callbacks):
    invite(owner, django_capture_on_commit_callbacks, HTTP_HOST="testserver:8011")

    token = link_in(mail.outbox[-1], "http://testserver:8011/invitations/accept?token=")

    assert accept(token).status_code == 200


@override_settings(**NO_SETTINGS)
def test_the_link_keeps_the_requests_scheme(owner, django_capture_on_commit_callbacks):
    invite(owner, django_capture_on_commit_callbacks, HTTP_HOST="testserver:8443", secure=True)

    link_in(mail.outbox[-1], "https://testserver:8443/invitations/accept?token=")


@override_settings(**NO_SETTINGS)
def test_a_resend_uses_the_resending_requests_host(owner, django_capture_on_commit_callbacks):
    member_id = invite(owner, django_capture_on_commit_callbacks).json()["member"]["id"]

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.post(f"{MEMBERS}/{member_id}/resend", HTTP_HOST="localhost:8011")

    assert response.status_code == 200
    assert "localhost:8011" not in response.content.decode()
    token = link_in(mail.outbox[-1], "http://localhost:8011/invitations/accept?token=")
    assert accept(token).status_code == 200


@override_settings(**NO_SETTINGS)
def test_a_host_outside_allowed_hosts_gets_no_invitation(owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.post(
            f"{MEMBERS}/invite",
            {"email": "newcomer@example.com"},
            format="json",
            HTTP_HOST="attacker.example.com",
        )

    assert response.status_code == 400
    assert not Invitation.objects.exists()
    assert mail.outbox == []


@override_settings(INVITATION_ACCEPT_URL="", PUBLIC_BASE_URL="https://cp.example.com/")
def test_public_base_url_wins_over_the_request(owner, django_capture_on_commit_callbacks):
    invite(owner, django_capture_on_commit_callbacks, HTTP_HOST="testserver:8011")

    token = link_in(mail.outbox[-1], "https://cp.example.com/invitations/accept?token=")

    assert "testserver" not in mail.outbox[-1].body
    assert accept(token).status_code == 200


@override_settings(
    INVITATION_ACCEPT_URL="https://app.example.com/join?invite=",
    PUBLIC_BASE_URL="https://cp.example.com",
)
def test_invitation_accept_url_wins_over_both(owner, django_capture_on_commit_callbacks):
    invite(owner, django_capture_on_commit_callbacks, HTTP_HOST="testserver:8011")

    token = link_in(mail.outbox[-1], "https://app.example.com/join?invite=")

    assert "cp.example.com" not in mail.outbox[-1].body
    assert accept(token).status_code == 200


@override_settings(**NO_SETTINGS)
def test_without_a_request_or_a_setting_the_link_uses_the_fallback(
    owner, django_capture_on_commit_callbacks
):
    # As a management command or a Celery task would call it.
    with django_capture_on_commit_callbacks(execute=True):
        members.member_invite(tenant=owner.tenant, actor=None, email="newcomer@example.com")

    assert emails.FALLBACK_LINK_BASE == "http://localhost:8000"
    token = link_in(mail.outbox[-1], "http://localhost:8000/invitations/accept?token=")
    assert accept(token).status_code == 200


@override_settings(**NO_SETTINGS)
def test_the_token_stays_out_of_the_response_and_the_audit_log(
    owner, django_capture_on_commit_callbacks
):
    response = invite(owner, django_capture_on_commit_callbacks, HTTP_HOST="testserver:8011")

    token = link_in(mail.outbox[-1], "http://testserver:8011/invitations/accept?token=")
    assert token not in response.content.decode()
    assert "invitations/accept" not in response.content.decode()
    assert token not in audit_text()


# The admin: a fresh link for staff to pass on ---------------------------------------------------


def admin_url(model, view: str) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}")


@pytest.fixture
def admin_client(client):
    client.user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(client.user)
    return client


def run_action(client, model, action: str, objects, **extra):
    return client.post(
        admin_url(model, "changelist"),
        {"action": action, "_selected_action": [str(obj.pk) for obj in objects]},
        follow=True,
        **extra,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@override_settings(**NO_SETTINGS)
def test_the_admin_shows_a_fresh_link_once_and_the_old_one_stops_working(
    admin_client, owner, django_capture_on_commit_callbacks
):
    invite(owner, django_capture_on_commit_callbacks)
    old_token = link_in(mail.outbox[-1], "http://testserver/invitations/accept?token=")
    old = Invitation.objects.get()
    sent = len(mail.outbox)

    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(
            admin_client, Invitation, "issue_links", [old], HTTP_HOST="testserver:8011"
        )

    (shown,) = messages_of(response)
    assert "newcomer@example.com" in shown and "previous link no longer works" in shown
    match = re.search(re.escape("http://testserver:8011/invitations/accept?token=") + TOKEN, shown)
    new_token = match.group(1)
    assert new_token != old_token
    assert len(mail.outbox) == sent  # shown to staff, not emailed
    # Shown once: the next page no longer carries it.
    again = admin_client.get(admin_url(Invitation, "changelist"))
    assert new_token.encode() not in again.content
    assert messages_of(again) == []
    # Only the digest is stored; the old invitation is retired.
    old.refresh_from_db()
    assert old.status == InvitationStatus.REVOKED
    fresh = Invitation.objects.get(status=InvitationStatus.PENDING)
    assert fresh.token_digest == hash_secret(new_token)
    (event,) = AuditEvent.objects.filter(event_type="invitation.link_issued")
    assert event.actor == admin_client.user
    assert event.tenant == owner.tenant
    assert event.payload["invitation_id"] == str(fresh.pk)
    assert event.payload["email"] == "newcomer@example.com"
    assert new_token not in audit_text() and old_token not in audit_text()

    assert accept(old_token).status_code == 400
    assert accept(new_token).status_code == 200


@override_settings(**NO_SETTINGS)
def test_the_membership_admin_issues_links_for_invited_members_only(admin_client, owner):
    invitation = InvitationFactory(tenant=owner.tenant)

    response = run_action(
        admin_client,
        Membership,
        "issue_invitation_links",
        [invitation.membership, owner.membership],
    )

    (shown,) = messages_of(response)
    token = re.search(re.escape("http://testserver/invitations/accept?token=") + TOKEN, shown)
    assert invitation.email in shown
    assert AuditEvent.objects.filter(event_type="invitation.link_issued").count() == 1
    assert accept(invitation.token).status_code == 400
    assert accept(token.group(1)).status_code == 200


def test_a_link_for_an_expired_invitation_needs_a_free_seat(admin_client):
    tenant = TenantFactory(settings={"maxUsers": 1})
    MembershipFactory(tenant=tenant, role=Role.OWNER)  # the one seat
    expired = InvitationFactory(tenant=tenant, expires_at=timezone.now() - timedelta(days=1))

    response = run_action(admin_client, Invitation, "issue_links", [expired])

    (error,) = messages_of(response)
    assert expired.email in error and "limit of 1 users" in error
    assert "invitations/accept" not in error
    assert list(Invitation.objects.values_list("pk", "status")) == [
        (expired.pk, InvitationStatus.PENDING)
    ]
    assert not AuditEvent.objects.filter(event_type="invitation.link_issued").exists()


def test_a_live_invitation_keeps_its_seat_when_its_link_is_renewed(admin_client):
    tenant = TenantFactory(settings={"maxUsers": 2})
    MembershipFactory(tenant=tenant, role=Role.OWNER)
    live = InvitationFactory(tenant=tenant)  # the second seat

    response = run_action(admin_client, Invitation, "issue_links", [live])

    (shown,) = messages_of(response)
    assert "invitations/accept?token=" in shown
    assert AuditEvent.objects.filter(event_type="invitation.link_issued").count() == 1


def test_accepted_invitations_get_no_link(admin_client):
    accepted = InvitationFactory(status=InvitationStatus.ACCEPTED)

    response = run_action(admin_client, Invitation, "issue_links", [accepted])

    assert messages_of(response) == []
    assert Invitation.objects.count() == 1
    assert not AuditEvent.objects.filter(event_type="invitation.link_issued").exists()
