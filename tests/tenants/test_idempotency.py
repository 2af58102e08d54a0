"""Idempotency-Key on money-moving POSTs (tenants.idempotency), through the whole request stack.

The endpoint is a test-only viewset routed by this module's URL conf (in front of the project's
own): `POST /api/v1/payment-probes/{invoice}/pay` captures a payment, which records an audit
event, the effect the tests count. Switches on the class make its provider fail, its worker die
or its capture take a while.
"""

import io
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.http import Http404
from django.urls import include, path
from django.utils import timezone
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from audit.models import AuditEvent
from audit.services import record
from config import urls as project_urls
from config.exceptions import ApplicationError, QuotaExceeded, ServiceUnavailable
from config.routers import OptionalSlashRouter
from tenants.api import TenantContextViewSet
from tenants.idempotency import (
    HEADER,
    REPLAYED_HEADER,
    idempotent,
    is_idempotent,
    provider_idempotency_key,
)
from tenants.models import IdempotencyKey, IdempotencyKeyState, Role
from tenants.services.idempotency import idempotency_keys_prune
from tenants.tasks import prune_idempotency_keys
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, UserFactory, issue_api_key

EFFECT = "test.payment.captured"


class PaymentProbeViewSet(TenantContextViewSet):
    """A money-moving POST: `pay` captures `amount_cents` on an invoice (an audit event)."""

    required_permissions = {"pay": "billing.write"}
    # Every run of the action, rolled back or not: (invoice, the provider's idempotency key).
    runs: list = []
    # The provider refuses (503); an unexpected bug (500); a quota the capture counts is used up
    # (429); the worker is killed mid-request; the capture takes this many seconds; called
    # during the capture.
    provider_down = False
    crash = False
    over_quota = False
    killed = False
    seconds = 0.0
    during = None

    @action(detail=True, methods=["post"])
    @idempotent
    def pay(self, request, pk=None):
        self.runs.append((pk, provider_idempotency_key(request, "charge")))
        if pk == "missing":
            raise Http404
        amount = request.data.get("amount_cents")
        if not isinstance(amount, int) or amount <= 0:
            raise ApplicationError(
                "Invalid payment.", details={"amount_cents": ["A positive number of cents."]}
            )
        event = record(
            tenant=request.tenant,
            event_type=EFFECT,
            actor=request.user,
            payload={"invoice": pk, "amount_cents": amount},
        )
        if self.seconds:
            time.sleep(self.seconds)
        if self.during is not None:
            self.during()
        if self.provider_down:
            raise ServiceUnavailable("The payment provider is unavailable.")
        if self.crash:
            raise RuntimeError("a bug")
        if self.over_quota:
            raise QuotaExceeded()
        if self.killed:
            raise SystemExit("worker killed")
        return Response(
            {
                "payment": str(event.pk),
                "invoice": pk,
                "amount_cents": amount,
                "captured_at": event.created_at,
            },
            status=201,
        )


_router = OptionalSlashRouter()
_router.register("payment-probes", PaymentProbeViewSet, basename="payment-probe")
urlpatterns = [path("api/v1/", include(_router.urls)), *project_urls.urlpatterns]
handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

BODY = {"amount_cents": 500}


@pytest.fixture(autouse=True)
def _fresh_probe(monkeypatch):
    monkeypatch.setattr(PaymentProbeViewSet, "runs", [])


def pay(client, body=None, *, key="order-1", invoice="inv-1", slash="/", raw=None):
    """POST a payment, with `key` as the Idempotency-Key (None: no header)."""
    url = f"/api/v1/payment-probes/{invoice}/pay{slash}"
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    if raw is not None:
        return client.generic("POST", url, raw, content_type="application/json", **headers)
    return client.post(url, BODY if body is None else body, format="json", **headers)


def captured(tenant) -> int:
    return AuditEvent.objects.filter(tenant=tenant, event_type=EFFECT).count()


def replayed(response) -> bool:
    return response.headers.get(REPLAYED_HEADER) == "true"


# The decorator ------------------------------------------------------------------------------


def test_the_decorator_keeps_the_action_as_drf_sees_it():
    handler = PaymentProbeViewSet.pay

    assert handler.__name__ == "pay"
    assert handler.mapping == {"post": "pay"}
    assert handler.detail is True
    assert is_idempotent(handler)
    assert handler.__wrapped__.__name__ == "pay"
    assert not is_idempotent(PaymentProbeViewSet.get_serializer_context)


# Replays -------------------------------------------------------------------------------------


def test_without_a_key_every_request_runs_the_action(owner):
    first = pay(owner.client, key=None)
    second = pay(owner.client, key=None)

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["payment"] != second.json()["payment"]
    assert not replayed(second)
    assert captured(owner.tenant) == 2
    assert not IdempotencyKey.objects.exists()


def test_a_retry_gets_the_stored_answer_and_the_effect_happens_once(owner):
    first = pay(owner.client)
    second = pay(owner.client)

    assert first.status_code == 201 and not replayed(first)
    assert second.status_code == 201 and replayed(second)
    assert second.json() == first.json()
    assert captured(owner.tenant) == 1
    assert len(PaymentProbeViewSet.runs) == 1
    stored = IdempotencyKey.objects.get()
    assert (stored.tenant, stored.caller, stored.key) == (
        owner.tenant,
        f"user:{owner.user.pk}",
        "order-1",
    )
    assert stored.state == IdempotencyKeyState.COMPLETED
    assert (stored.response_status, stored.response_body) == (201, first.json())
    assert len(stored.fingerprint) == 64


def test_whitespace_key_order_and_the_trailing_slash_are_the_same_request(owner):
    first = pay(owner.client, raw='{"amount_cents": 500, "note": "late fee"}')
    second = pay(owner.client, raw='{ "note":"late fee",\n  "amount_cents":500 }', slash="")

    assert replayed(second)
    assert second.json() == first.json()
    assert captured(owner.tenant) == 1


def test_the_same_key_with_another_body_is_422(owner):
    first = pay(owner.client, {"amount_cents": 500})

    reused = pay(owner.client, {"amount_cents": 900})

    error = assert_envelope(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    assert "Idempotency-Key" in error["message"]
    assert captured(owner.tenant) == 1
    # The key still answers the request it was first used for.
    again = pay(owner.client, {"amount_cents": 500})
    assert replayed(again) and again.json() == first.json()


def test_the_same_key_on_another_invoice_is_422(owner):
    pay(owner.client, invoice="inv-1")

    reused = pay(owner.client, invoice="inv-2")

    assert_envelope(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    assert captured(owner.tenant) == 1


@pytest.mark.parametrize(
    ("invoice", "body", "status", "code"),
    [
        ("inv-1", {"amount_cents": 0}, 400, "VALIDATION_ERROR"),
        ("missing", BODY, 404, "RESOURCE_NOT_FOUND"),
    ],
)
def test_a_client_error_is_stored_and_replayed(owner, invoice, body, status, code):
    first = pay(owner.client, body, invoice=invoice)
    second = pay(owner.client, body, invoice=invoice)

    first_error = assert_envelope(first, status, code)
    second_error = assert_envelope(second, status, code)
    assert replayed(second) and not replayed(first)
    assert second_error["details"] == first_error["details"]
    # Each answer's request_id is its own (the envelope's rule), the rest is the first answer.
    assert second_error["request_id"] != first_error["request_id"]
    assert len(PaymentProbeViewSet.runs) == 1
    assert IdempotencyKey.objects.get().response_status == status


# Answers that are not stored ---------------------------------------------------------------


def test_a_5xx_is_not_stored_its_writes_roll_back_and_a_retry_runs(owner, monkeypatch):
    monkeypatch.setattr(PaymentProbeViewSet, "provider_down", True)

    failed = pay(owner.client)

    assert_envelope(failed, 503, "SERVICE_UNAVAILABLE")
    assert captured(owner.tenant) == 0
    assert not IdempotencyKey.objects.exists()

    monkeypatch.setattr(PaymentProbeViewSet, "provider_down", False)
    retried = pay(owner.client)

    assert retried.status_code == 201 and not replayed(retried)
    assert captured(owner.tenant) == 1
    # The provider saw the same idempotency key both times: it deduplicates a charge that went
    # through before the answer was lost.
    (_, first_key), (_, second_key) = PaymentProbeViewSet.runs
    assert first_key == second_key


def test_an_unexpected_exception_releases_the_key(owner, monkeypatch):
    monkeypatch.setattr(PaymentProbeViewSet, "crash", True)

    failed = pay(owner.client)

    assert_envelope(failed, 500, "INTERNAL_ERROR")
    assert captured(owner.tenant) == 0
    assert not IdempotencyKey.objects.exists()

    monkeypatch.setattr(PaymentProbeViewSet, "crash", False)
    assert pay(owner.client).status_code == 201
    assert captured(owner.tenant) == 1


def test_a_429_from_the_action_is_not_stored(owner, monkeypatch):
    monkeypatch.setattr(PaymentProbeViewSet, "over_quota", True)

    refused = pay(owner.client)

    assert_envelope(refused, 429, "QUOTA_EXCEEDED")
    assert captured(owner.tenant) == 0
    assert not IdempotencyKey.objects.exists()

    monkeypatch.setattr(PaymentProbeViewSet, "over_quota", False)
    assert pay(owner.client).status_code == 201
    assert captured(owner.tenant) == 1


# The key ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["", "   ", "k" * 256, "bad\x01key"], ids=["empty", "blank", "too-long", "control"]
)
def test_a_malformed_key_is_refused(owner, key):
    response = pay(owner.client, key=key)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert list(error["details"]) == [HEADER]
    assert PaymentProbeViewSet.runs == []
    assert not IdempotencyKey.objects.exists()


def test_a_key_of_255_characters_is_accepted(owner):
    key = "k" * 255

    pay(owner.client, key=key)
    second = pay(owner.client, key=key)

    assert replayed(second)
    assert IdempotencyKey.objects.get().key == key


# Scope --------------------------------------------------------------------------------------


def test_another_member_of_the_tenant_has_keys_of_their_own(owner, make_caller):
    colleague = make_caller(Role.BILLING, tenant=owner.tenant)

    mine = pay(owner.client)
    theirs = pay(colleague.client)

    assert not replayed(theirs)
    assert theirs.json()["payment"] != mine.json()["payment"]
    assert captured(owner.tenant) == 2


def test_the_same_caller_in_another_tenant_has_other_keys(owner):
    other_tenant = MembershipFactory(user=owner.user, role=Role.OWNER).tenant

    pay(owner.client)
    elsewhere = pay(owner.client_for(other_tenant.pk))

    assert elsewhere.status_code == 201 and not replayed(elsewhere)
    assert captured(owner.tenant) == 1
    assert captured(other_tenant) == 1
    assert sorted(IdempotencyKey.objects.values_list("tenant", flat=True)) == sorted(
        [owner.tenant.pk, other_tenant.pk]
    )


def test_an_api_key_holds_keys_apart_from_its_creators_own(owner):
    api_key, raw = issue_api_key(owner.membership, scopes=["write"])
    key_client = APIClient()
    key_client.credentials(HTTP_X_API_KEY=raw)

    by_key = pay(key_client)
    by_key_again = pay(key_client)
    by_creator = pay(owner.client)

    assert replayed(by_key_again) and by_key_again.json() == by_key.json()
    assert by_creator.status_code == 201 and not replayed(by_creator)
    assert captured(owner.tenant) == 2
    assert set(IdempotencyKey.objects.values_list("caller", flat=True)) == {
        f"api_key:{api_key.pk}",
        f"user:{owner.user.pk}",
    }


def _token_client(caller):
    return caller.client


def _jwt_client(caller):
    client = APIClient()
    access = RefreshToken.for_user(caller.user).access_token
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def _session_client(caller):
    client = APIClient()
    client.force_login(caller.user)
    return client


def _api_key_client(caller):
    _, raw = issue_api_key(caller.membership, scopes=["write"])
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client


@pytest.mark.parametrize(
    "client_for",
    [_token_client, _jwt_client, _session_client, _api_key_client],
    ids=["token", "jwt", "session", "api_key"],
)
def test_every_credential_gets_replays(owner, client_for):
    client = client_for(owner)

    first = pay(client)
    second = pay(client)

    assert first.status_code == 201
    assert replayed(second) and second.json() == first.json()
    assert captured(owner.tenant) == 1


def test_provider_keys_differ_by_caller_and_tenant(owner, make_caller):
    colleague = make_caller(Role.BILLING, tenant=owner.tenant)
    other_tenant = MembershipFactory(user=owner.user, role=Role.OWNER).tenant

    pay(owner.client)
    pay(colleague.client)
    pay(owner.client_for(other_tenant.pk))

    keys = [key for _, key in PaymentProbeViewSet.runs]
    assert len(set(keys)) == 3
    assert all(len(key) == 64 for key in keys)


# Requests in flight ---------------------------------------------------------------------------


def _killed_mid_request(caller, monkeypatch):
    """A first request whose worker dies after the capture, before anything commits."""
    monkeypatch.setattr(PaymentProbeViewSet, "killed", True)
    with pytest.raises(SystemExit):
        pay(caller.client)
    monkeypatch.setattr(PaymentProbeViewSet, "killed", False)


def test_the_key_of_a_request_still_running_answers_409(owner, monkeypatch):
    _killed_mid_request(owner, monkeypatch)

    response = pay(owner.client)

    error = assert_envelope(response, 409, "CONFLICT")
    assert "in progress" in error["message"]
    assert IdempotencyKey.objects.get().state == IdempotencyKeyState.RUNNING
    assert captured(owner.tenant) == 0
    assert len(PaymentProbeViewSet.runs) == 1


def test_another_body_while_the_first_runs_is_still_422(owner, monkeypatch):
    _killed_mid_request(owner, monkeypatch)

    assert_envelope(pay(owner.client, {"amount_cents": 1}), 422, "IDEMPOTENCY_KEY_REUSED")


def test_a_claim_whose_lease_has_passed_is_taken_over(owner, monkeypatch):
    _killed_mid_request(owner, monkeypatch)
    dead_token = IdempotencyKey.objects.get().lease_token
    later = timezone.now() + timedelta(seconds=settings.IDEMPOTENCY_KEY_LEASE_SECONDS + 1)

    with time_machine.travel(later, tick=True):
        taken_over = pay(owner.client)
        replay = pay(owner.client)

    assert taken_over.status_code == 201 and not replayed(taken_over)
    assert replayed(replay) and replay.json() == taken_over.json()
    assert captured(owner.tenant) == 1
    stored = IdempotencyKey.objects.get()
    assert stored.state == IdempotencyKeyState.COMPLETED
    assert stored.lease_token != dead_token


def test_a_request_taken_over_while_it_ran_keeps_nothing(owner, monkeypatch):
    def taken_over():
        # What a retry does once this request's lease has passed: a new holder's token.
        IdempotencyKey.objects.update(lease_token=uuid.uuid4())

    monkeypatch.setattr(PaymentProbeViewSet, "during", staticmethod(taken_over))

    response = pay(owner.client)

    error = assert_envelope(response, 409, "CONFLICT")
    assert "took over" in error["message"]
    assert captured(owner.tenant) == 0
    assert IdempotencyKey.objects.get().state == IdempotencyKeyState.RUNNING


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_requests_with_one_key_capture_once(owner, monkeypatch):
    monkeypatch.setattr(PaymentProbeViewSet, "seconds", 0.3)
    parallel = 20
    barrier = threading.Barrier(parallel)

    def send(_):
        client = owner.client_for(owner.tenant.pk)
        try:
            barrier.wait()
            response = pay(client)
            return response.status_code, replayed(response), response.json()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(parallel) as pool:
        answers = list(pool.map(send, range(parallel)))

    originals = [body for status, again, body in answers if status == 201 and not again]
    replays = [body for status, again, body in answers if status == 201 and again]
    conflicts = [body for status, _, body in answers if status == 409]
    assert len(originals) == 1
    assert len(originals) + len(replays) + len(conflicts) == parallel
    assert all(body == originals[0] for body in replays)
    assert all(body["error"]["code"] == "CONFLICT" for body in conflicts)
    assert captured(owner.tenant) == 1
    assert len(PaymentProbeViewSet.runs) == 1
    assert replayed(pay(owner.client))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_retries_take_a_dead_claim_over_once(owner, monkeypatch):
    _killed_mid_request(owner, monkeypatch)
    monkeypatch.setattr(PaymentProbeViewSet, "seconds", 0.3)
    parallel = 10
    barrier = threading.Barrier(parallel)
    later = timezone.now() + timedelta(seconds=settings.IDEMPOTENCY_KEY_LEASE_SECONDS + 1)

    def send(_):
        client = owner.client_for(owner.tenant.pk)
        try:
            barrier.wait()
            response = pay(client)
            return response.status_code, replayed(response)
        finally:
            connections.close_all()

    with time_machine.travel(later, tick=True), ThreadPoolExecutor(parallel) as pool:
        answers = list(pool.map(send, range(parallel)))

    assert answers.count((201, False)) == 1
    assert all(answer in {(201, False), (201, True), (409, False)} for answer in answers)
    assert captured(owner.tenant) == 1
    # The killed run, then the one that took its claim over.
    assert len(PaymentProbeViewSet.runs) == 2


# Expiry and pruning ---------------------------------------------------------------------------


def test_an_expired_key_counts_as_never_sent(owner):
    pay(owner.client, {"amount_cents": 500})
    expired = timezone.now() + timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS, seconds=1)

    with time_machine.travel(expired, tick=True):
        again = pay(owner.client, {"amount_cents": 900})

    assert again.status_code == 201 and not replayed(again)
    assert captured(owner.tenant) == 2
    assert IdempotencyKey.objects.get().response_body["amount_cents"] == 900


def test_pruning_deletes_the_keys_past_their_time_to_live(owner, make_caller):
    start = timezone.now()
    pay(owner.client, key="old-1")
    pay(owner.client, key="old-2")
    with time_machine.travel(start + timedelta(hours=2), tick=True):
        pay(owner.client, key="recent")

    prune_at = start + timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS, minutes=1)

    assert idempotency_keys_prune(now=prune_at) == 2
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["recent"]
    assert idempotency_keys_prune(now=prune_at) == 0


def test_pruning_works_in_batches(owner):
    for number in range(5):
        pay(owner.client, key=f"order-{number}")
    later = timezone.now() + timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS, minutes=1)

    assert idempotency_keys_prune(now=later, batch_size=2) == 5
    assert not IdempotencyKey.objects.exists()


def test_the_hourly_beat_task_prunes(owner):
    pay(owner.client)
    expired = timezone.now() + timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS, minutes=1)

    with time_machine.travel(expired, tick=True):
        assert prune_idempotency_keys() == 1

    assert not IdempotencyKey.objects.exists()
    schedule = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["tenants.tasks.prune_idempotency_keys"]["schedule"].hour == set(range(24))


def test_ops_prune_with_the_same_service(owner):
    pay(owner.client)
    expired = timezone.now() + timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS, minutes=1)
    out = io.StringIO()
    with time_machine.travel(expired, tick=True):
        call_command("prune_idempotency_keys", stdout=out)
    assert "Deleted 1 expired Idempotency-Key(s)." in out.getvalue()
    assert not IdempotencyKey.objects.exists()


# Admin ----------------------------------------------------------------------------------------


def test_the_admin_shows_keys_read_only(client, owner):
    pay(owner.client)
    stored = IdempotencyKey.objects.get()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    listed = client.get("/admin/tenants/idempotencykey/")
    shown = client.get(f"/admin/tenants/idempotencykey/{stored.pk}/change/")
    added = client.get("/admin/tenants/idempotencykey/add/")

    assert listed.status_code == 200 and b"order-1" in listed.content
    assert shown.status_code == 200 and b"order-1" in shown.content
    assert b'name="key"' not in shown.content
    assert added.status_code == 403
