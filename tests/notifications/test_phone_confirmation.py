"""A member confirms their phone number with a code sent to it before any SMS goes there: the
code is kept as an HMAC only, good for ten minutes and five tries, replaced by the next one,
and bounded (one a minute, a few a day per member and per number across organizations);
changing the number clears the confirmation."""

import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from notifications.models import Notification, NotificationPreference, PhoneConfirmation
from notifications.services import notifications_deliver
from notifications.services.phone_confirmations import PHONE_CONFIRMATION_ATTEMPTS
from notifications.tasks import prune_phone_confirmations
from tenants.models import Role
from tests.conftest import assert_envelope, race
from tests.factories import MembershipFactory, issue_api_key

pytestmark = pytest.mark.django_db

PREFERENCES_URL = "/api/v1/notifications/preferences"
CODE_URL = f"{PREFERENCES_URL}/phone/code"
CONFIRM_URL = f"{PREFERENCES_URL}/phone/confirm"
NUMBER = "+14155550100"


class RecordingSMS:
    """An SMS provider that keeps what it was given (SMS_PROVIDER names it)."""

    sent: list[tuple[str, str]] = []

    def send(self, to: str, text: str) -> None:
        self.sent.append((to, text))


class BrokenSMS:
    def send(self, to: str, text: str) -> None:
        raise ConnectionError("the SMS provider is down")


@pytest.fixture(autouse=True)
def recorded_sms(settings):
    settings.SMS_PROVIDER = f"{__name__}.RecordingSMS"
    RecordingSMS.sent.clear()
    return RecordingSMS.sent


def last_code(sent) -> str:
    return re.search(r"\b(\d{6})\b", sent[-1][1]).group(1)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def with_number(caller, number=NUMBER, **fields):
    response = caller.client.patch(
        PREFERENCES_URL, {"sms_enabled": True, "phone_number": number, **fields}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def preference(caller) -> NotificationPreference:
    return NotificationPreference.objects.get(tenant=caller.tenant, user=caller.user)


def send_sms(owner, recipient):
    response = owner.client.post(
        "/api/v1/notifications",
        {"user_id": str(recipient.pk), "title": "Alert", "message": "Disk full.", "channel": "sms"},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_a_number_gets_sms_only_once_its_member_confirmed_it(make_caller, recorded_sms):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    assert with_number(member)["phone_number_confirmed"] is False
    # Saying so is not confirming: the field is read-only.
    claimed = member.client.patch(PREFERENCES_URL, {"phone_number_confirmed": True}, format="json")
    assert "phone_number_confirmed" in assert_envelope(claimed, 400)["details"]
    assert preference(member).phone_confirmed_at is None
    assert send_sms(owner, member.user)["status"] == "suppressed"

    sent = member.client.post(CODE_URL)
    assert sent.status_code == 200, sent.content
    assert sent.json()["phone_number"] == NUMBER
    assert recorded_sms[0][0] == NUMBER
    code = last_code(recorded_sms)
    assert code not in json.dumps(sent.json())

    confirmed = member.client.post(CONFIRM_URL, {"code": code}, format="json")

    assert confirmed.status_code == 200, confirmed.content
    assert confirmed.json()["phone_number_confirmed"] is True
    assert member.client.get(PREFERENCES_URL).json()["phone_number_confirmed"] is True
    notification = send_sms(owner, member.user)
    assert notification["status"] == "pending"
    assert notifications_deliver(notification_ids=[notification["id"]]) == 1
    assert recorded_sms[-1] == (NUMBER, "Alert: Disk full.")


def test_the_code_is_kept_as_an_hmac_and_audited_without_number_or_code(make_caller, recorded_sms):
    member = make_caller(Role.MEMBER)
    with_number(member)
    assert member.client.post(CODE_URL).status_code == 200
    code = last_code(recorded_sms)
    member.client.post(CONFIRM_URL, {"code": code}, format="json")

    (confirmation,) = PhoneConfirmation.objects.filter(user=member.user)
    assert code not in confirmation.code_hash and len(confirmation.code_hash) == 64
    events = AuditEvent.objects.filter(
        tenant=member.tenant,
        event_type__in=["notification.phone_confirmation_sent", "notification.phone_confirmed"],
    )
    assert sorted(event.event_type for event in events) == [
        "notification.phone_confirmation_sent",
        "notification.phone_confirmed",
    ]
    for event in events:
        assert event.payload == {"user_id": str(member.user.pk)}
        assert "4155550100" not in json.dumps(event.payload) and code not in json.dumps(
            event.payload
        )
    # The message is fixed: nothing the organization typed (its name) reaches the number.
    assert member.tenant.name not in recorded_sms[0][1]


def test_a_wrong_code_uses_a_try_and_five_end_the_code(make_caller, recorded_sms):
    member = make_caller(Role.MEMBER)
    with_number(member)
    member.client.post(CODE_URL)
    code = last_code(recorded_sms)

    for left in range(PHONE_CONFIRMATION_ATTEMPTS - 1, -1, -1):
        refused = member.client.post(CONFIRM_URL, {"code": wrong(code)}, format="json")
        message = assert_envelope(refused, 400)["details"]["code"][0]
        assert (f"{left} tries left" in message) if left else ("ask for a new one" in message)

    too_many = member.client.post(CONFIRM_URL, {"code": code}, format="json")

    assert "Too many wrong codes" in assert_envelope(too_many, 400)["details"]["code"][0]
    assert preference(member).phone_confirmed_at is None
    assert PhoneConfirmation.objects.get(user=member.user).attempts == PHONE_CONFIRMATION_ATTEMPTS
    with time_machine.travel(timezone.now() + timedelta(minutes=1, seconds=1)):
        assert member.client.post(CODE_URL).status_code == 200
        new_code = last_code(recorded_sms)
        confirmed = member.client.post(CONFIRM_URL, {"code": new_code}, format="json")
    assert confirmed.status_code == 200, confirmed.content


@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", " 12345", 123456, None, ""])
def test_a_code_not_six_digits_is_refused_without_using_a_try(make_caller, code):
    member = make_caller(Role.MEMBER)
    with_number(member)
    member.client.post(CODE_URL)

    response = member.client.post(CONFIRM_URL, {"code": code}, format="json")

    assert "code" in assert_envelope(response, 400)["details"]
    assert PhoneConfirmation.objects.get(user=member.user).attempts == 0


def test_an_expired_code_and_a_replaced_code_do_not_confirm(make_caller, recorded_sms):
    member = make_caller(Role.MEMBER)
    with_number(member)
    member.client.post(CODE_URL)
    first = last_code(recorded_sms)

    with time_machine.travel(timezone.now() + timedelta(minutes=10, seconds=1)):
        expired = member.client.post(CONFIRM_URL, {"code": first}, format="json")
        assert "expired" in assert_envelope(expired, 400)["details"]["code"][0]
        assert member.client.post(CODE_URL).status_code == 200
        second = last_code(recorded_sms)
        if second != first:
            replaced = member.client.post(CONFIRM_URL, {"code": first}, format="json")
            assert "wrong" in assert_envelope(replaced, 400)["details"]["code"][0]
        assert member.client.post(CONFIRM_URL, {"code": second}, format="json").status_code == 200


def test_changing_the_number_clears_its_confirmation(make_caller, recorded_sms):
    owner = make_caller(Role.OWNER)
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    with_number(member)
    member.client.post(CODE_URL)
    member.client.post(CONFIRM_URL, {"code": last_code(recorded_sms)}, format="json")
    pending = send_sms(owner, member.user)
    assert pending["status"] == "pending"

    changed = with_number(member, "+14155550199")

    assert changed["phone_number_confirmed"] is False
    assert send_sms(owner, member.user)["status"] == "suppressed"
    # The notification raised while the old number was confirmed is not sent to the new one.
    assert notifications_deliver(notification_ids=[pending["id"]]) == 0
    failed = Notification.objects.get(pk=pending["id"])
    assert failed.status == "failed" and "no confirmed phone number" in failed.error
    assert len(recorded_sms) == 1
    # Nor does the old number's code confirm the new one.
    stale = member.client.post(CONFIRM_URL, {"code": last_code(recorded_sms)}, format="json")
    assert "No code was sent" in assert_envelope(stale, 400)["details"]["code"][0]
    # Setting the same number again keeps a confirmation.
    with time_machine.travel(timezone.now() + timedelta(minutes=1, seconds=1)):
        assert member.client.post(CODE_URL).status_code == 200
        member.client.post(CONFIRM_URL, {"code": last_code(recorded_sms)}, format="json")
        assert with_number(member, "+14155550199")["phone_number_confirmed"] is True


def test_asking_without_a_number_is_a_400_and_when_confirmed_a_409(make_caller, recorded_sms):
    member = make_caller(Role.MEMBER)

    no_number = member.client.post(CODE_URL)
    nothing_to_confirm = member.client.post(CONFIRM_URL, {"code": "123456"}, format="json")

    assert "phone_number" in assert_envelope(no_number, 400)["details"]
    assert "phone_number" in assert_envelope(nothing_to_confirm, 400)["details"]
    with_number(member)
    member.client.post(CODE_URL)
    member.client.post(CONFIRM_URL, {"code": last_code(recorded_sms)}, format="json")
    assert_envelope(member.client.post(CODE_URL), 409)
    assert_envelope(member.client.post(CONFIRM_URL, {"code": "123456"}, format="json"), 409)
    assert len(recorded_sms) == 1


def test_one_code_a_minute_and_a_few_a_day(make_caller, settings, recorded_sms):
    settings.PHONE_CONFIRMATION_CODES_PER_DAY = 3
    member = make_caller(Role.MEMBER)
    with_number(member)
    start = timezone.now()

    assert member.client.post(CODE_URL).status_code == 200
    too_soon = member.client.post(CODE_URL)
    error = assert_envelope(too_soon, 429)
    assert error["code"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(too_soon["Retry-After"]) <= 60
    for minute in (2, 4):
        with time_machine.travel(start + timedelta(minutes=minute)):
            assert member.client.post(CODE_URL).status_code == 200
    with time_machine.travel(start + timedelta(minutes=6)):
        over = member.client.post(CODE_URL)
    error = assert_envelope(over, 429)
    assert error["details"]["codes_sent"] == 3 and error["details"]["limit"] == 3
    # The oldest code leaves the window a day after it was sent.
    assert 86_000 < int(over["Retry-After"]) <= 86_400
    assert len(recorded_sms) == 3
    with time_machine.travel(start + timedelta(days=1, seconds=5)):
        assert member.client.post(CODE_URL).status_code == 200


def test_codes_to_one_number_are_bounded_across_organizations(make_caller, settings, recorded_sms):
    """Members of different organizations typing one number, spaced differently, share its
    bound: an organization cannot send a number codes by adding members."""
    settings.PHONE_CONFIRMATION_CODES_PER_NUMBER_PER_DAY = 2
    spellings = ["+14155550100", "+1 415 555 0100", "+1 (415) 555-0100"]
    callers = [make_caller(Role.MEMBER) for _ in spellings]
    for caller, spelling in zip(callers, spellings, strict=True):
        with_number(caller, spelling)

    answers = [caller.client.post(CODE_URL) for caller in callers]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert assert_envelope(answers[2], 429)["details"]["limit"] == 2
    assert len(recorded_sms) == 2
    another = make_caller(Role.MEMBER)
    with_number(another, "+14155550111")
    assert another.client.post(CODE_URL).status_code == 200


def test_a_failing_provider_answers_503_and_keeps_nothing(make_caller, settings):
    member = make_caller(Role.MEMBER)
    with_number(member)
    settings.SMS_PROVIDER = f"{__name__}.BrokenSMS"

    response = member.client.post(CODE_URL)

    error = assert_envelope(response, 503)
    assert "SMS provider" in error["message"] and "down" not in json.dumps(error)
    assert not PhoneConfirmation.objects.filter(user=member.user).exists()
    assert not AuditEvent.objects.filter(event_type="notification.phone_confirmation_sent").exists()
    settings.SMS_PROVIDER = f"{__name__}.RecordingSMS"
    assert member.client.post(CODE_URL).status_code == 200  # the failure did not count


def test_confirmation_is_per_organization_and_not_for_api_keys(make_caller, recorded_sms):
    member = make_caller(Role.OWNER)
    other = MembershipFactory(user=member.user, role=Role.MEMBER).tenant
    with_number(member)
    member.client.post(CODE_URL)
    member.client.post(CONFIRM_URL, {"code": last_code(recorded_sms)}, format="json")

    elsewhere = member.client_for(other.pk)
    elsewhere.patch(PREFERENCES_URL, {"phone_number": NUMBER}, format="json")
    assert elsewhere.get(PREFERENCES_URL).json()["phone_number_confirmed"] is False
    _, raw = issue_api_key(member.membership, scopes=("read", "write"))
    with_key = APIClient()
    with_key.credentials(HTTP_X_API_KEY=raw)
    for url, body in ((CODE_URL, None), (CONFIRM_URL, {"code": "123456"})):
        refused = with_key.post(url, body, format="json")
        assert "API key" in assert_envelope(refused, 403, "INSUFFICIENT_PERMISSIONS")["message"]


@pytest.mark.postgres
def test_parallel_wrong_codes_use_exactly_the_tries(transactional_db, make_caller, recorded_sms):
    """Eight wrong codes at once: five are counted, three find the code spent, and the right
    code is refused after them."""
    member = make_caller(Role.MEMBER)
    with_number(member)
    member.client.post(CODE_URL)
    code = last_code(recorded_sms)

    def guess():
        try:
            response = member.client_for(member.tenant.pk).post(
                CONFIRM_URL, {"code": wrong(code)}, format="json"
            )
            assert response.status_code == 400, response.content
            return response.json()["error"]["details"]["code"][0]
        finally:
            connection.close()

    messages = race(8, guess)

    assert sum("Too many wrong codes" in message for message in messages) == 3
    assert PhoneConfirmation.objects.get(user=member.user).attempts == PHONE_CONFIRMATION_ATTEMPTS
    refused = member.client.post(CONFIRM_URL, {"code": code}, format="json")
    assert "Too many wrong codes" in assert_envelope(refused, 400)["details"]["code"][0]


@pytest.mark.postgres
def test_parallel_requests_send_one_code(transactional_db, make_caller, recorded_sms):
    member = make_caller(Role.MEMBER)
    with_number(member)

    def ask():
        try:
            return member.client_for(member.tenant.pk).post(CODE_URL).status_code
        finally:
            connection.close()

    assert sorted(race(6, ask)) == [200, 429, 429, 429, 429, 429]
    assert PhoneConfirmation.objects.filter(user=member.user).count() == 1
    assert len(recorded_sms) == 1


def test_codes_older_than_a_day_are_pruned_hourly(make_caller, recorded_sms, settings):
    member = make_caller(Role.MEMBER)
    with_number(member)
    start = timezone.now()
    member.client.post(CODE_URL)
    with time_machine.travel(start + timedelta(hours=23)):
        member.client.post(CODE_URL)

    with time_machine.travel(start + timedelta(days=1, minutes=1)):
        assert prune_phone_confirmations() == 1

    (kept,) = PhoneConfirmation.objects.filter(user=member.user)
    assert kept.created_at > start + timedelta(hours=22)
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "notifications.tasks.prune_phone_confirmations" in tasks
