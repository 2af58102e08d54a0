"""Invitations: POST organizations/members/invite (and resend), the emailed link, POST
invitations/accept, seats, expiry, single use, and the admin's view of them."""

import hashlib
import json
import re
import threading
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.core import mail
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from accounts.models import User
from audit import tasks as audit_tasks
from audit.models import AuditEvent
from tenants.models import (
    Invitation,
    InvitationStatus,
    Membership,
    MembershipStatus,
    PlanTier,
    Role,
    TenantStatus,
)
from tenants.services import invitation_accept, member_invite
from tests.conftest import assert_envelope, token_for
from tests.conftest import race as race_together
from tests.factories import (
    TEST_PASSWORD,
    InvitationFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

MEMBERS = "/api/v1/organizations/members"
INVITE = f"{MEMBERS}/invite"
ACCEPT = "/api/v1/invitations/accept"
NEW_PASSWORD = "a-long-and-unusual-passphrase-42"


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """Committed audit events ask for a seal task; keep those off the broker."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)


@pytest.fixture
def tenant():
    return TenantFactory(plan=PlanTier.ENTERPRISE, name="Acme Rockets", slug="acme-rockets")


@pytest.fixture
def owner(make_caller, tenant):
    return make_caller(Role.OWNER, tenant=tenant, name="Olive Owner")


def invite(caller, email="newcomer@example.com", **data):
    return caller.client.post(INVITE, {"email": email, **data}, format="json")


# With no INVITATION_ACCEPT_URL or PUBLIC_BASE_URL, the link is on the inviting request's host.
LINK_PREFIX = "http://testserver/invitations/accept?token="


def token_in(message) -> str:
    match = re.search(re.escape(LINK_PREFIX) + r"([A-Za-z0-9_-]+)", message.body)
    assert match, message.body
    return match.group(1)


def invite_and_get_token(caller, capture, email="newcomer@example.com", **data) -> str:
    with capture(execute=True):
        response = invite(caller, email, **data)
    assert response.status_code == 201, response.content
    return token_in(mail.outbox[-1])


def log_in_again(caller) -> None:
    """A fresh API token for `caller` (after travelling past the old one's lifetime)."""
    caller.token = token_for(caller.user)
    caller.client = caller.client_for(caller.tenant.pk)


def accept(token, client=None, **data):
    return (client or APIClient()).post(ACCEPT, {"token": token, **data}, format="json")


def audit_text() -> str:
    return json.dumps(list(AuditEvent.objects.values("payload", "actor_label")), default=str)


# POST organizations/members/invite ---------------------------------------------------------


def test_invite_creates_an_invited_membership_and_a_pending_invitation(owner, tenant):
    before = timezone.now()

    response = invite(owner, "NewComer@Example.com", role="viewer")

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"success", "message", "timestamp", "member", "expires_at", "email_sent"}
    assert body["success"] is True and body["email_sent"] is True
    assert body["member"]["email"] == "newcomer@example.com"
    assert body["member"]["status"] == "invited"
    assert body["member"]["user_id"] is None
    assert body["member"]["role"] == "viewer"
    assert body["member"]["invited_by"] == str(owner.user.pk)
    membership = Membership.objects.get(pk=body["member"]["id"])
    assert (membership.user, membership.invited_email) == (None, "newcomer@example.com")
    invitation = Invitation.objects.get(membership=membership)
    assert invitation.status == InvitationStatus.PENDING
    assert invitation.email == "newcomer@example.com"
    assert re.fullmatch(r"[0-9a-f]{64}", invitation.token_digest)
    expected_expiry = before + timedelta(days=settings.INVITATION_TTL_DAYS)
    assert abs(invitation.expires_at - expected_expiry) < timedelta(seconds=5)
    assert parse_datetime(body["expires_at"]) == invitation.expires_at
    assert body["member"]["invitation_expires_at"] == body["expires_at"]
    (event,) = AuditEvent.objects.filter(event_type="member.invited")
    assert event.tenant == tenant and event.actor == owner.user
    assert event.payload["email"] == "newcomer@example.com"
    assert event.payload["invitation_id"] == str(invitation.pk)


def test_inviting_an_existing_account_binds_the_membership_to_it(owner):
    user = UserFactory(email="known@example.com")

    response = invite(owner, "known@example.com")

    assert response.status_code == 201
    assert Membership.objects.get(pk=response.json()["member"]["id"]).user == user


def test_an_invitation_reveals_nothing_of_an_existing_account(owner):
    UserFactory(email="known@example.com", name="Known Person")

    known = invite(owner, "Known@Example.com").json()["member"]
    unknown = invite(owner, "nobody@example.com").json()["member"]

    # The same shape either way: what the inviter typed, nothing of the account.
    for member in (known, unknown):
        assert member["user_id"] is None
        assert member["name"] == ""
        assert member["last_active"] is None
        assert member["status"] == "invited"
    assert known["email"] == "known@example.com"
    assert set(known) == set(unknown)


def test_the_members_list_reveals_nothing_of_an_invited_account(owner):
    UserFactory(email="known@example.com", name="Known Person")
    invite(owner, "known@example.com")

    rows = owner.client.get(MEMBERS).json()["results"]
    by_name = owner.client.get(MEMBERS, {"search": "Known Person"}).json()

    (row,) = [row for row in rows if row["status"] == "invited"]
    assert (row["user_id"], row["name"], row["last_active"]) == (None, "", None)
    assert by_name["count"] == 0  # a search by the account's name does not find it either


def test_the_email_goes_out_after_commit_with_a_working_link(
    owner, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = invite(owner, "newcomer@example.com", role="member")
    assert response.status_code == 201
    assert mail.outbox == []  # nothing is sent before the commit

    for callback in callbacks:
        callback()

    (message,) = mail.outbox
    assert message.to == ["newcomer@example.com"]
    assert message.from_email == settings.DEFAULT_FROM_EMAIL
    assert "Acme Rockets" in message.subject and "Olive Owner" in message.subject
    assert "Member" in message.body
    token = token_in(message)
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    assert f'href="{LINK_PREFIX}{token}"' in html

    accepted = accept(token, name="New Comer", password=NEW_PASSWORD)

    assert accepted.status_code == 200, accepted.content


def test_a_rolled_back_invitation_sends_no_email(
    owner, monkeypatch, django_capture_on_commit_callbacks
):
    from tenants.services import members

    def fail(**kwargs):
        raise RuntimeError("the audit write failed")

    monkeypatch.setattr(members, "record", fail)

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        members.member_invite(tenant=owner.tenant, actor=owner.user, email="x@example.com")

    assert mail.outbox == []
    assert not Invitation.objects.exists()


def test_an_email_failure_is_logged_without_the_token(
    owner, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    from django.core.mail import EmailMultiAlternatives

    def broken_send(self, fail_silently=False):
        raise OSError("SMTP server unreachable")

    monkeypatch.setattr(EmailMultiAlternatives, "send", broken_send)

    with django_capture_on_commit_callbacks(execute=True):
        response = invite(owner)

    assert response.status_code == 201
    assert "could not be sent" in caplog.text
    invitation = Invitation.objects.get()
    assert str(invitation.pk) in caplog.text
    assert "invitations/accept" not in caplog.text


def test_no_email_and_no_link_when_send_email_is_false(owner, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = invite(owner, send_email=False)

    assert response.status_code == 201
    assert response.json()["email_sent"] is False
    assert "resend" in response.json()["message"]
    assert mail.outbox == []
    assert "invitations/accept" not in response.content.decode()
    assert AuditEvent.objects.get(event_type="member.invited").payload["email_sent"] is False


def test_the_token_is_stored_only_as_its_digest_and_never_audited(
    owner, django_capture_on_commit_callbacks
):
    token = invite_and_get_token(owner, django_capture_on_commit_callbacks)

    invitation = Invitation.objects.get()
    assert len(token) >= 43  # 256 bits, URL-safe base64
    assert invitation.token_digest == hashlib.sha256(token.encode()).hexdigest()
    stored = json.dumps(list(Invitation.objects.values()), default=str)
    stored += json.dumps(list(Membership.objects.values()), default=str)
    assert token not in stored
    assert token not in audit_text()


def test_invite_applies_custom_permissions(owner):
    response = invite(
        owner,
        role="viewer",
        custom_permissions={
            "documents": {"read": True, "write": True},
            "analytics": {"read": False},
        },
    )

    assert response.status_code == 201, response.content
    member = response.json()["member"]
    assert member["permissions"]["documents"] == {"read": True, "write": True, "delete": False}
    assert member["permissions"]["analytics"] == {"read": False, "write": False}
    assert member["custom_permissions"]["analytics"] == {"read": False}


@pytest.mark.parametrize(
    "custom_permissions",
    [{"reports": {"read": True}}, {"documents": {"shred": True}}, {"documents": {"read": 1}}],
)
def test_invite_refuses_unknown_permissions(owner, custom_permissions):
    response = invite(owner, custom_permissions=custom_permissions)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "custom_permissions" in error["details"]
    assert not Membership.objects.filter(status=MembershipStatus.INVITED).exists()


@pytest.mark.parametrize("data", [{"email": "not-an-address"}, {"role": "emperor"}, {}])
def test_invite_validates_its_input(owner, data):
    body = {"email": "ok@example.com", **data} if data else {}
    response = owner.client.post(INVITE, body, format="json")

    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_inviting_an_existing_member_is_a_conflict(owner, tenant):
    member = MembershipFactory(tenant=tenant, user=UserFactory(email="member@example.com"))

    response = invite(owner, "Member@Example.com")

    assert_envelope(response, 409, "CONFLICT")
    assert Membership.objects.filter(tenant=tenant, user=member.user).count() == 1


def test_inviting_a_suspended_member_is_a_conflict(owner, tenant):
    MembershipFactory(
        tenant=tenant,
        user=UserFactory(email="resting@example.com"),
        status=MembershipStatus.SUSPENDED,
    )

    assert_envelope(invite(owner, "resting@example.com"), 409, "CONFLICT")


def test_inviting_an_address_with_a_pending_invitation_is_a_conflict(owner):
    assert invite(owner, "twice@example.com").status_code == 201

    error = assert_envelope(invite(owner, "TWICE@example.com"), 409, "CONFLICT")

    assert "pending invitation" in error["message"]
    assert Invitation.objects.count() == 1


def test_inviting_again_after_expiry_renews_the_invitation(
    owner, django_capture_on_commit_callbacks
):
    old_token = invite_and_get_token(owner, django_capture_on_commit_callbacks, role="viewer")
    later = timezone.now() + timedelta(days=settings.INVITATION_TTL_DAYS, minutes=1)

    with time_machine.travel(later, tick=False):
        log_in_again(owner)
        new_token = invite_and_get_token(owner, django_capture_on_commit_callbacks, role="member")
        refused = accept(old_token, name="N", password=NEW_PASSWORD)
        accepted = accept(new_token, name="New Comer", password=NEW_PASSWORD)

    assert_envelope(refused, 400, "VALIDATION_ERROR")
    assert "revoked or replaced" in refused.json()["error"]["message"]
    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["role"] == "member"
    assert Membership.objects.filter(invited_email="newcomer@example.com").count() == 1
    invited = AuditEvent.objects.filter(event_type="member.invited").order_by("created_at")
    assert [event.payload["renewed"] for event in invited] == [False, True]


def test_only_an_owner_invites_an_owner(make_caller, owner, tenant):
    admin = make_caller(Role.ADMIN, tenant=tenant)

    assert_envelope(invite(admin, role="owner"), 403, "INSUFFICIENT_PERMISSIONS")
    assert invite(owner, role="owner").status_code == 201


def test_nobody_invites_with_permissions_they_do_not_hold(make_caller, tenant):
    manager = make_caller(Role.MEMBER, tenant=tenant, permissions={"members": {"write": True}})

    as_admin = invite(manager, "a@example.com", role="admin")
    with_billing = invite(
        manager, "b@example.com", role="viewer", custom_permissions={"billing": {"write": True}}
    )
    as_viewer = invite(manager, "c@example.com", role="viewer")

    assert_envelope(as_admin, 403, "INSUFFICIENT_PERMISSIONS")
    error = assert_envelope(with_billing, 403, "INSUFFICIENT_PERMISSIONS")
    assert error["details"] == {"custom_permissions": ["You do not hold: billing.write."]}
    assert as_viewer.status_code == 201


# Seats (maxUsers) --------------------------------------------------------------------------


def test_invitations_count_against_max_users(make_caller):
    tenant = TenantFactory(plan=PlanTier.FREE)  # 3 users
    owner = make_caller(Role.OWNER, tenant=tenant)

    first, second = invite(owner, "one@example.com"), invite(owner, "two@example.com")
    third = invite(owner, "three@example.com")

    assert first.status_code == second.status_code == 201
    error = assert_envelope(third, 429, "QUOTA_EXCEEDED")
    assert error["details"] == {"resource": "users", "limit": 3, "current": 3}
    assert not Membership.objects.filter(invited_email="three@example.com").exists()


def test_the_tenants_max_users_setting_is_the_limit(make_caller):
    tenant = TenantFactory(plan=PlanTier.ENTERPRISE, settings={"maxUsers": 1})
    owner = make_caller(Role.OWNER, tenant=tenant)

    assert_envelope(invite(owner), 429, "QUOTA_EXCEEDED")


def test_an_expired_invitation_frees_its_seat(make_caller):
    tenant = TenantFactory(settings={"maxUsers": 2})
    owner = make_caller(Role.OWNER, tenant=tenant)
    assert invite(owner, "one@example.com").status_code == 201
    assert_envelope(invite(owner, "two@example.com"), 429, "QUOTA_EXCEEDED")

    with time_machine.travel(timezone.now() + timedelta(days=8), tick=False):
        log_in_again(owner)
        response = invite(owner, "two@example.com")

    assert response.status_code == 201


def test_suspended_members_do_not_hold_a_seat(make_caller):
    tenant = TenantFactory(settings={"maxUsers": 2})
    owner = make_caller(Role.OWNER, tenant=tenant)
    MembershipFactory(tenant=tenant, status=MembershipStatus.SUSPENDED)

    assert invite(owner).status_code == 201


def test_accepting_needs_a_free_seat_among_active_members(make_caller):
    tenant = TenantFactory(settings={"maxUsers": 2})
    make_caller(Role.OWNER, tenant=tenant)
    invitation = InvitationFactory(tenant=tenant)
    MembershipFactory(tenant=tenant)  # e.g. a member reactivated since the invitation

    response = accept(invitation.token, name="Late Comer", password=NEW_PASSWORD)

    error = assert_envelope(response, 429, "QUOTA_EXCEEDED")
    assert error["details"]["limit"] == 2
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.PENDING
    assert not User.objects.filter(email=invitation.email).exists()


# POST invitations/accept -------------------------------------------------------------------


def test_accepting_as_a_new_address_creates_the_account_and_joins(
    owner, tenant, django_capture_on_commit_callbacks
):
    token = invite_and_get_token(owner, django_capture_on_commit_callbacks, role="viewer")

    response = accept(token, name="New Comer", password=NEW_PASSWORD)

    assert response.status_code == 200, response.content
    body = response.json()
    user = User.objects.get(email="newcomer@example.com")
    membership = Membership.objects.get(tenant=tenant, user=user)
    assert body["success"] is True
    assert body["organization"] == {
        "id": str(tenant.pk),
        "slug": "acme-rockets",
        "name": "Acme Rockets",
    }
    assert body["role"] == "viewer"
    assert body["membership_id"] == str(membership.pk)
    assert body["user_id"] == str(user.pk)
    assert body["account_created"] is True
    assert user.name == "New Comer" and user.check_password(NEW_PASSWORD)
    assert membership.status == MembershipStatus.ACTIVE and membership.joined_at is not None
    invitation = Invitation.objects.get()
    assert invitation.status == InvitationStatus.ACCEPTED and invitation.accepted_at is not None
    joined = AuditEvent.objects.get(event_type="member.joined")
    assert joined.tenant == tenant and joined.actor == user
    assert joined.payload["account_created"] is True
    assert AuditEvent.objects.filter(event_type="user.created", tenant=None).count() == 1
    assert token not in audit_text()


def test_the_new_member_can_log_in_and_use_the_organization(
    owner, tenant, django_capture_on_commit_callbacks
):
    token = invite_and_get_token(owner, django_capture_on_commit_callbacks)
    accept(token, name="New Comer", password=NEW_PASSWORD)
    client = APIClient()

    login = client.post(
        "/api/v1/auth/login", {"email": "newcomer@example.com", "password": NEW_PASSWORD}
    )
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {login.json()['access_token']}")
    members = client.get(MEMBERS)

    assert login.status_code == 200
    assert login.json()["user"]["organization_id"] == str(tenant.pk)
    assert members.status_code == 200
    assert members.json()["count"] == 2


def test_a_new_address_needs_a_name_and_a_password(owner, django_capture_on_commit_callbacks):
    token = invite_and_get_token(owner, django_capture_on_commit_callbacks)

    error = assert_envelope(accept(token), 400, "VALIDATION_ERROR")

    assert set(error["details"]) == {"name", "password"}
    assert Invitation.objects.get().status == InvitationStatus.PENDING


@pytest.mark.parametrize("password", ["12345678", "short", "password123", "newcomer-example"])
def test_a_weak_password_is_refused_by_the_validators(
    owner, django_capture_on_commit_callbacks, password
):
    token = invite_and_get_token(owner, django_capture_on_commit_callbacks)

    error = assert_envelope(accept(token, name="New", password=password), 400, "VALIDATION_ERROR")

    assert error["details"]["password"]
    assert not User.objects.filter(email="newcomer@example.com").exists()
    assert Invitation.objects.get().status == InvitationStatus.PENDING


def test_an_existing_account_joins_with_the_token_alone(
    owner, tenant, django_capture_on_commit_callbacks
):
    user = UserFactory(email="known@example.com")
    token = invite_and_get_token(owner, django_capture_on_commit_callbacks, "known@example.com")

    response = accept(token, name="Someone Else", password="another-long-passphrase-99")

    assert response.status_code == 200, response.content
    assert response.json()["account_created"] is False
    assert response.json()["user_id"] == str(user.pk)
    user.refresh_from_db()
    assert user.check_password(TEST_PASSWORD)  # the given password is ignored
    assert user.name != "Someone Else"
    assert Membership.objects.get(tenant=tenant, user=user).status == MembershipStatus.ACTIVE
    assert not AuditEvent.objects.filter(event_type="user.created").exists()


def test_an_account_created_after_the_invitation_is_the_one_that_joins(owner, tenant):
    invitation = InvitationFactory(tenant=tenant, email="later@example.com")
    user = UserFactory(email="later@example.com")

    response = accept(invitation.token)

    assert response.status_code == 200, response.content
    assert response.json()["user_id"] == str(user.pk)
    invitation.membership.refresh_from_db()
    assert invitation.membership.user == user


def test_an_invitation_is_single_use(owner, django_capture_on_commit_callbacks):
    token = invite_and_get_token(owner, django_capture_on_commit_callbacks)
    assert accept(token, name="New Comer", password=NEW_PASSWORD).status_code == 200

    error = assert_envelope(accept(token), 400, "VALIDATION_ERROR")

    assert "already been accepted" in error["message"]
    assert error["details"] == {"token": [error["message"]]}
    assert AuditEvent.objects.filter(event_type="member.joined").count() == 1


def test_an_expired_invitation_is_refused(owner, tenant, django_capture_on_commit_callbacks):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        token = invite_and_get_token(owner, django_capture_on_commit_callbacks)
    expires_at = Invitation.objects.get().expires_at
    assert expires_at == start + timedelta(days=settings.INVITATION_TTL_DAYS)

    with time_machine.travel(expires_at, tick=False):
        expired = accept(token, name="New Comer", password=NEW_PASSWORD)
    with time_machine.travel(expires_at - timedelta(seconds=1), tick=False):
        in_time = accept(token, name="New Comer", password=NEW_PASSWORD)

    error = assert_envelope(expired, 400, "VALIDATION_ERROR")
    assert "expired" in error["message"]
    assert in_time.status_code == 200, in_time.content


@pytest.mark.parametrize("token", ["", "x" * 201])
def test_a_malformed_token_is_a_validation_error(token):
    assert_envelope(accept(token), 400, "VALIDATION_ERROR")


def test_an_unknown_token_is_refused_without_naming_the_organization(owner, tenant):
    InvitationFactory(tenant=tenant)

    response = accept("not-a-real-token-" + "x" * 30)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    text = response.content.decode()
    assert "not valid" in error["message"]
    assert tenant.name not in text and tenant.slug not in text and str(tenant.pk) not in text


def test_refusals_never_name_the_organization(owner, tenant, django_capture_on_commit_callbacks):
    token = invite_and_get_token(owner, django_capture_on_commit_callbacks)
    accept(token, name="New Comer", password=NEW_PASSWORD)

    used = accept(token)

    assert_envelope(used, 400, "VALIDATION_ERROR")
    for secret in (tenant.name, tenant.slug, str(tenant.pk)):
        assert secret not in used.content.decode()


def test_accepting_into_a_suspended_organization_is_refused(owner, tenant):
    invitation = InvitationFactory(tenant=tenant)
    tenant.status = TenantStatus.SUSPENDED
    tenant.save()

    response = accept(invitation.token, name="New Comer", password=NEW_PASSWORD)

    assert_envelope(response, 403, "TENANT_SUSPENDED")
    assert tenant.name not in response.content.decode()
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.PENDING


def test_stale_credentials_never_block_accepting(owner, tenant):
    invitation = InvitationFactory(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token expired-or-garbage")

    response = accept(invitation.token, client=client, name="New Comer", password=NEW_PASSWORD)

    assert response.status_code == 200, response.content


def test_accepting_is_throttled_with_the_auth_rate():
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "auth": "2/min"}
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    ):
        first, second = accept("guess-1"), accept("guess-2")
        third = accept("guess-3")

    assert first.status_code == second.status_code == 400
    assert first["X-RateLimit-Limit"] == "2"
    assert_envelope(third, 429, "RATE_LIMIT_EXCEEDED")
    assert "Retry-After" in third


@pytest.mark.postgres
def test_two_concurrent_accepts_of_one_token_succeed_once(transactional_db, monkeypatch):
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    invitation = InvitationFactory(tenant=TenantFactory(plan=PlanTier.ENTERPRISE))
    outcomes = race(
        2, lambda: invitation_accept(token=invitation.token, name="Racer", password=NEW_PASSWORD)
    )

    assert sorted(outcomes) == ["InvitationNotAcceptable", "ok"]
    assert Membership.objects.get(pk=invitation.membership_id).status == MembershipStatus.ACTIVE
    assert User.objects.filter(email=invitation.email).count() == 1
    assert AuditEvent.objects.filter(event_type="member.joined").count() == 1


@pytest.mark.postgres
def test_concurrent_accepts_cannot_overfill_the_seats(transactional_db, monkeypatch):
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    tenant = TenantFactory(settings={"maxUsers": 3})
    MembershipFactory(tenant=tenant, role=Role.OWNER)
    first, second = InvitationFactory(tenant=tenant), InvitationFactory(tenant=tenant)
    MembershipFactory(tenant=tenant)  # one seat left for two invitations
    tokens = iter([first.token, second.token])
    lock = threading.Lock()

    def accept_next():
        with lock:
            token = next(tokens)
        invitation_accept(token=token, name="Racer", password=NEW_PASSWORD)

    outcomes = race(2, accept_next)

    assert sorted(outcomes) == ["QuotaExceeded", "ok"]
    active = Membership.objects.filter(tenant=tenant, status=MembershipStatus.ACTIVE)
    assert active.count() == 3


def race(count: int, work) -> list[str]:
    """`work` in `count` threads released together (tests.conftest.race); each outcome is "ok"
    or the name of the exception it raised."""

    def outcome():
        try:
            work()
        except Exception as exc:
            return type(exc).__name__
        return "ok"

    return race_together(count, outcome)


# How many invitations an organization may issue -------------------------------------------------


def test_an_address_is_sent_at_most_the_daily_invitations(
    owner, settings, django_capture_on_commit_callbacks
):
    """Inviting and resending count alike: past INVITATIONS_PER_ADDRESS_PER_DAY in 24 hours,
    429 with Retry-After, no email and no event; a day after the first, one more may go."""
    settings.INVITATIONS_PER_ADDRESS_PER_DAY = 2
    invite_and_get_token(owner, django_capture_on_commit_callbacks)
    member_id = Membership.objects.get(invited_email="newcomer@example.com").pk
    with django_capture_on_commit_callbacks(execute=True):
        assert owner.client.post(f"{MEMBERS}/{member_id}/resend").status_code == 200
    sent, events = len(mail.outbox), AuditEvent.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.post(f"{MEMBERS}/{member_id}/resend")

    error = assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
    assert error["details"]["invitations_to_address"] == 2
    assert error["details"]["limit"] == 2
    assert 86_000 < error["details"]["retry_after_seconds"] <= 86_400
    assert response["Retry-After"] == str(error["details"]["retry_after_seconds"])
    assert "at most 2 a day" in error["message"]
    assert (len(mail.outbox), AuditEvent.objects.count()) == (sent, events)
    assert Invitation.objects.filter(email="newcomer@example.com").count() == 2

    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=5)):
        log_in_again(owner)
        assert owner.client.post(f"{MEMBERS}/{member_id}/resend").status_code == 200


def test_an_organization_issues_at_most_the_daily_invitations(owner, settings, make_caller):
    settings.INVITATIONS_PER_TENANT_PER_DAY = 2
    other = make_caller(Role.OWNER, tenant=TenantFactory(plan=PlanTier.ENTERPRISE))
    assert invite(owner, "first@example.com").status_code == 201
    assert invite(owner, "second@example.com").status_code == 201
    assert invite(other, "third@example.com").status_code == 201  # another organization's

    response = invite(owner, "third@example.com")

    error = assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
    assert error["details"]["invitations"] == 2 and error["details"]["limit"] == 2
    assert "Retry-After" in response
    assert not Membership.objects.filter(tenant=owner.tenant, invited_email="third@example.com")


@pytest.mark.postgres
def test_parallel_invitations_stop_at_the_daily_limit(transactional_db, monkeypatch, make_caller):
    """Six invitations at once with room for two (the count is taken under the organization's
    lock): two are issued, four refused."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    caller = make_caller(Role.OWNER, tenant=TenantFactory(plan=PlanTier.ENTERPRISE))
    addresses = iter(f"racer{n}@example.com" for n in range(6))
    lock = threading.Lock()

    def invite_next():
        with lock:
            email = next(addresses)
        member_invite(tenant=caller.tenant, actor=caller.user, email=email, send_email=False)

    with override_settings(INVITATIONS_PER_TENANT_PER_DAY=2):
        outcomes = race(6, invite_next)

    assert sorted(outcomes) == ["RateLimitExceeded"] * 4 + ["ok"] * 2
    assert Invitation.objects.filter(tenant=caller.tenant).count() == 2


# POST organizations/members/{id}/resend ----------------------------------------------------


def test_resend_emails_a_fresh_link_and_retires_the_old_one(
    owner, tenant, django_capture_on_commit_callbacks
):
    old_token = invite_and_get_token(owner, django_capture_on_commit_callbacks)
    membership = Membership.objects.get(invited_email="newcomer@example.com")
    later = timezone.now() + timedelta(days=3)

    with time_machine.travel(later, tick=False), django_capture_on_commit_callbacks(execute=True):
        log_in_again(owner)
        response = owner.client.post(f"{MEMBERS}/{membership.pk}/resend")

    assert response.status_code == 200, response.content
    assert response.json()["email_sent"] is True
    new_token = token_in(mail.outbox[-1])
    assert new_token != old_token
    assert parse_datetime(response.json()["expires_at"]) == later + timedelta(
        days=settings.INVITATION_TTL_DAYS
    )
    assert_envelope(accept(old_token), 400, "VALIDATION_ERROR")
    assert accept(new_token, name="New Comer", password=NEW_PASSWORD).status_code == 200
    (event,) = AuditEvent.objects.filter(event_type="invitation.resent")
    assert new_token not in audit_text() and old_token not in audit_text()
    assert event.actor == owner.user


def test_resend_delivers_an_invitation_created_without_email(
    owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        member_id = invite(owner, send_email=False).json()["member"]["id"]
        owner.client.post(f"{MEMBERS}/{member_id}/resend")

    (message,) = mail.outbox
    assert accept(token_in(message), name="New Comer", password=NEW_PASSWORD).status_code == 200


def test_resend_for_a_member_who_joined_is_a_conflict(owner):
    response = owner.client.post(f"{MEMBERS}/{owner.membership.pk}/resend")

    assert_envelope(response, 409, "CONFLICT")


# The admin ---------------------------------------------------------------------------------


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def admin_client(client):
    client.user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(client.user)
    return client


def test_invitation_admin_lists_and_searches_without_the_digest(admin_client, tenant):
    invitation = InvitationFactory(tenant=tenant, email="findme@example.com")
    InvitationFactory(email="other@example.com")

    listed = admin_client.get(admin_url(Invitation, "changelist"), {"q": "findme"})
    by_tenant = admin_client.get(admin_url(Invitation, "changelist"), {"q": "acme-rockets"})
    change = admin_client.get(admin_url(Invitation, "change", invitation.pk))

    assert listed.status_code == change.status_code == 200
    assert b"findme@example.com" in listed.content
    assert b"other@example.com" not in listed.content
    assert b"findme@example.com" in by_tenant.content
    for page in (listed, change):
        assert invitation.token_digest.encode() not in page.content
        assert invitation.token.encode() not in page.content
    assert b'name="email"' not in change.content  # read-only


def test_invitation_admin_filters_by_status(admin_client):
    InvitationFactory(email="pending@example.com")
    InvitationFactory(email="done@example.com", status=InvitationStatus.ACCEPTED)

    response = admin_client.get(admin_url(Invitation, "changelist"), {"status__exact": "accepted"})

    assert b"done@example.com" in response.content
    assert b"pending@example.com" not in response.content


def test_invitation_admin_revoke_action_goes_through_the_service(admin_client, tenant):
    pending = InvitationFactory(tenant=tenant)
    accepted = InvitationFactory(tenant=tenant, status=InvitationStatus.ACCEPTED)

    response = admin_client.post(
        admin_url(Invitation, "changelist"),
        {"action": "revoke_invitations", "_selected_action": [str(pending.pk), str(accepted.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    assert not Membership.objects.filter(pk=pending.membership_id).exists()
    assert Invitation.objects.filter(pk=accepted.pk).exists()
    (event,) = AuditEvent.objects.filter(event_type="invitation.revoked")
    assert event.actor == admin_client.user
    assert b"Revoked 1 invitation" in response.content
    assert_envelope(accept(pending.token), 400, "VALIDATION_ERROR")


def test_membership_admin_shows_and_finds_an_invited_address(admin_client, tenant):
    invitation = InvitationFactory(tenant=tenant, email="pending-person@example.com")
    MembershipFactory(user=UserFactory(email="someone@example.com"))

    response = admin_client.get(admin_url(Membership, "changelist"), {"q": "pending-person"})
    filtered = admin_client.get(admin_url(Membership, "changelist"), {"status__exact": "invited"})

    assert b"pending-person@example.com" in response.content
    assert b"someone@example.com" not in response.content
    assert admin_url(Membership, "change", invitation.membership.pk).encode() in filtered.content
    assert b"someone@example.com" not in filtered.content


def test_membership_admin_suspends_and_reactivates_through_the_service(admin_client, tenant):
    MembershipFactory(tenant=tenant, role=Role.OWNER)
    member = MembershipFactory(tenant=tenant)
    last_owner = MembershipFactory(tenant=TenantFactory(), role=Role.OWNER)

    admin_client.post(
        admin_url(Membership, "changelist"),
        {"action": "suspend_members", "_selected_action": [str(member.pk), str(last_owner.pk)]},
    )

    member.refresh_from_db()
    last_owner.refresh_from_db()
    assert member.status == MembershipStatus.SUSPENDED
    assert last_owner.status == MembershipStatus.ACTIVE  # refused: the last active owner
    assert AuditEvent.objects.filter(event_type="member.updated").count() == 1

    admin_client.post(
        admin_url(Membership, "changelist"),
        {"action": "reactivate_members", "_selected_action": [str(member.pk)]},
    )

    member.refresh_from_db()
    assert member.status == MembershipStatus.ACTIVE


def test_invitation_changelist_queries_do_not_grow_with_rows(admin_client):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(admin_url(Invitation, "changelist"))
        assert response.status_code == 200
        return len(captured)

    InvitationFactory.create_batch(2, invited_by=UserFactory())
    few = queries()
    InvitationFactory.create_batch(10, invited_by=UserFactory())

    assert queries() == few
