"""The outbox relay: the retry schedule (with jitter and Retry-After), what each answer does to a
delivery, the attempt rows, disabling an endpoint that keeps failing, two relays at once,
expired leases, retry and replay through the API, retention, and the commands and tasks that
run it. Every request goes over real HTTP to a loopback receiver."""

import email.utils
import json
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from audit.models import AuditEvent
from notifications.models import (
    Channel,
    DeliveryStatus,
    Notification,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from notifications.sender import AttemptResult
from notifications.services import relay, webhook_deliveries_send
from notifications.services.relay import _claim, retry_delay
from notifications.tasks import prune_webhook_deliveries
from tenants.models import MembershipStatus, Role
from tenants.services import member_invite, member_update
from tests.conftest import assert_envelope, race
from tests.factories import MembershipFactory, TenantFactory

from .factories import WebhookAttemptFactory, WebhookDeliveryFactory, WebhookEndpointFactory
from .receiver import Answer, Receiver, Unanswering

DEFAULT_SCHEDULE = [5, 300, 1800, 7200, 18000, 36000, 36000]


@pytest.fixture(scope="module")
def _running_receiver():
    with Receiver() as running:
        yield running


@pytest.fixture
def receiver(_running_receiver):
    """The module's loopback receiver, emptied: no requests, nothing scripted, answers 200."""
    _running_receiver.requests.clear()
    _running_receiver.scripted.clear()
    _running_receiver.default = Answer()
    return _running_receiver


@pytest.fixture
def frozen(time_machine):
    """Time stands still (at a whole second) until the test moves it: `now` is exact."""
    start = timezone.now().replace(microsecond=0)
    time_machine.move_to(start, tick=False)
    return start


@pytest.fixture
def no_jitter(settings):
    settings.WEBHOOK_RETRY_JITTER = 0


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks"


def _attempts(delivery) -> list[WebhookAttempt]:
    return list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))


def _send_one():
    report = webhook_deliveries_send(concurrency=1)
    assert report.claimed == 1, report
    return report


# The retry schedule -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_failing_delivery_follows_the_schedule_and_fails_after_the_eighth_attempt(
    settings, no_jitter, frozen, time_machine, receiver
):
    receiver.default = Answer(503)
    schedule = settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
    assert schedule == DEFAULT_SCHEDULE
    delivery = WebhookDeliveryFactory(endpoint__url=receiver.url)

    now = frozen
    for number in range(1, len(schedule) + 1):
        _send_one()
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.RETRYING
        assert delivery.attempt_count == number
        assert delivery.claim == ""
        assert delivery.last_attempt_at == now
        assert delivery.next_attempt_at == now + timedelta(seconds=schedule[number - 1])
        # Not due a second early...
        time_machine.move_to(delivery.next_attempt_at - timedelta(seconds=1), tick=False)
        assert webhook_deliveries_send(concurrency=1).claimed == 0
        # ...and due on time.
        now = delivery.next_attempt_at
        time_machine.move_to(now, tick=False)

    report = _send_one()

    assert report.failed == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.next_attempt_at is None
    assert delivery.attempt_count == 8
    attempts = _attempts(delivery)
    assert [attempt.number for attempt in attempts] == list(range(1, 9))
    assert all(a.status_code == 503 and not a.succeeded for a in attempts)
    assert len(receiver.requests) == 8
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(delivery.event_id)}
    time_machine.move_to(now + timedelta(days=2), tick=False)
    assert webhook_deliveries_send(concurrency=1).claimed == 0


def test_retry_delay_jitter_stays_within_its_bounds_and_varies(settings):
    settings.WEBHOOK_RETRY_JITTER = 0.1
    failure = AttemptResult(succeeded=False, retryable=True, status_code=503)
    for number, base in enumerate(settings.WEBHOOK_RETRY_SCHEDULE_SECONDS, start=1):
        delays = [retry_delay(number, failure).total_seconds() for _ in range(400)]
        low, high = base * 0.9 - 1e-6, base * 1.1 + 1e-6
        assert all(low <= delay <= high for delay in delays), (number, min(delays), max(delays))
        assert min(delays) < base < max(delays)


def test_retry_delay_ends_after_the_schedule_and_for_a_final_failure(settings):
    schedule = settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
    retryable = AttemptResult(succeeded=False, retryable=True, status_code=503)
    final = AttemptResult(succeeded=False, retryable=False, status_code=400)

    assert retry_delay(len(schedule), retryable) is not None
    assert retry_delay(len(schedule) + 1, retryable) is None
    assert retry_delay(1, final) is None


@pytest.mark.django_db
def test_the_relay_jitters_the_next_attempt_within_bounds(settings, frozen, receiver):
    settings.WEBHOOK_RETRY_JITTER = 0.1
    receiver.default = Answer(503)
    deliveries = _deliveries_to(receiver.url, 20)

    webhook_deliveries_send(concurrency=1)

    waits = [
        (WebhookDelivery.objects.get(pk=d.pk).next_attempt_at - frozen).total_seconds()
        for d in deliveries
    ]
    assert all(4.5 - 1e-6 <= wait <= 5.5 + 1e-6 for wait in waits), waits
    assert len(set(waits)) > 1


def _deliveries_to(url: str, count: int, **fields) -> list[WebhookDelivery]:
    endpoint = WebhookEndpointFactory(url=url)
    return WebhookDeliveryFactory.create_batch(
        count, tenant=endpoint.tenant, endpoint=endpoint, **fields
    )


def _due_since(url: str, count: int, *, seconds_ago: float, tenant=None) -> list[WebhookDelivery]:
    """`count` deliveries of one organization (a new one unless given), created and due
    `seconds_ago` seconds ago, the first the oldest (also when the test froze time)."""
    endpoint = WebhookEndpointFactory(url=url, **({"tenant": tenant} if tenant else {}))
    now = timezone.now()
    deliveries = []
    for number in range(count):
        due = now - timedelta(seconds=seconds_ago - number / 1000)
        delivery = WebhookDeliveryFactory(
            tenant=endpoint.tenant, endpoint=endpoint, next_attempt_at=due
        )
        WebhookDelivery.objects.filter(pk=delivery.pk).update(created_at=due)
        deliveries.append(delivery)
    return deliveries


def _sent_ids(receiver) -> list[str]:
    return [request.headers["webhook-id"] for request in receiver.requests]


def _event_ids(deliveries) -> set[str]:
    return {str(delivery.event_id) for delivery in deliveries}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("answers", "failures"),
    [
        pytest.param([200, 200, 200], 0, id="all-succeed"),
        pytest.param([503, 200, 200], 0, id="a-failure-then-successes"),
        pytest.param([200, 503, 404], 2, id="failures-after-the-last-success"),
    ],
)
def test_a_batch_counts_only_the_failures_after_its_last_success(
    frozen, receiver, answers, failures
):
    receiver.answer(*(Answer(status) for status in answers))
    (delivery, *_) = _deliveries_to(receiver.url, len(answers))

    webhook_deliveries_send(concurrency=1)

    endpoint = delivery.endpoint
    endpoint.refresh_from_db()
    assert endpoint.last_success_at == frozen
    assert endpoint.failure_count == failures
    assert endpoint.failing_since == (frozen if failures else None)


@pytest.mark.django_db
def test_a_batch_of_many_endpoints_records_each_ones_own_outcome(frozen, receiver):
    earlier = frozen - timedelta(hours=3)
    deliveries = [_due_since(receiver.url, 2, seconds_ago=60 - n) for n in range(4)]
    endpoints = [pair[0].endpoint for pair in deliveries]
    WebhookEndpoint.objects.filter(pk=endpoints[1].pk).update(
        failure_count=3, failing_since=earlier
    )
    WebhookEndpoint.objects.filter(pk=endpoints[3].pk).update(
        failure_count=7, failing_since=earlier
    )
    # Taking turns: each endpoint's first delivery, then each one's second.
    receiver.answer(*(Answer(status) for status in [200, 503, 200, 200, 200, 503, 503, 200]))

    report = webhook_deliveries_send(concurrency=1)

    assert (report.claimed, report.succeeded, report.failed) == (8, 5, 3)
    state = {
        endpoint.pk: (endpoint.last_success_at, endpoint.failure_count, endpoint.failing_since)
        for endpoint in WebhookEndpoint.objects.all()
    }
    assert state[endpoints[0].pk] == (frozen, 0, None)  # both succeeded
    assert state[endpoints[1].pk] == (None, 5, earlier)  # both failed: the run goes on
    assert state[endpoints[2].pk] == (frozen, 1, frozen)  # failed after a success
    assert state[endpoints[3].pk] == (frozen, 0, None)  # a success ends the earlier run
    assert all(endpoint.last_triggered_at == frozen for endpoint in WebhookEndpoint.objects.all())


# Retry-After -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "retry_after", "previous_attempts", "expected_wait"),
    [
        pytest.param(429, "120", 0, 120, id="429-longer-than-schedule-wins"),
        pytest.param(503, "120", 0, 120, id="503-longer-than-schedule-wins"),
        pytest.param(429, "86400", 0, 600, id="capped-at-WEBHOOK_RETRY_AFTER_MAX_SECONDS"),
        pytest.param(429, "10", 1, 300, id="shorter-than-schedule-keeps-schedule"),
        pytest.param(500, "120", 0, 5, id="ignored-on-500"),
    ],
)
def test_retry_after_is_honoured_up_to_the_cap(
    settings, no_jitter, frozen, receiver, status, retry_after, previous_attempts, expected_wait
):
    settings.WEBHOOK_RETRY_AFTER_MAX_SECONDS = 600
    receiver.answer(Answer(status, headers={"Retry-After": retry_after}))
    (delivery,) = _deliveries_to(receiver.url, 1, attempt_count=previous_attempts)

    _send_one()

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.next_attempt_at == frozen + timedelta(seconds=expected_wait)


@pytest.mark.django_db
def test_retry_after_as_an_http_date_is_honoured(no_jitter, frozen, receiver):
    when = email.utils.format_datetime(frozen + timedelta(seconds=240), usegmt=True)
    receiver.answer(Answer(429, headers={"Retry-After": when}))
    (delivery,) = _deliveries_to(receiver.url, 1)

    _send_one()

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.next_attempt_at == frozen + timedelta(seconds=240)


# What each answer does ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_timeout_is_retried(settings, no_jitter, frozen, receiver):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.answer(Answer(200, delay=1.5))
    (delivery,) = _deliveries_to(receiver.url, 1)

    report = _send_one()

    assert report.failed == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.next_attempt_at == frozen + timedelta(seconds=5)
    (attempt,) = _attempts(delivery)
    assert attempt.status_code is None
    assert attempt.error.startswith("Timed out")
    assert attempt.duration_ms >= 300


@contextmanager
def _dripping_receiver(seconds: float):
    """A receiver that answers its status line, then one byte of a header every 0.1 s for
    `seconds`: each read gets data well within any read timeout, the answer never ends."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(int(seconds / 0.1)):
                    if stop.wait(0.1):
                        break
                    conn.sendall(b"a")
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks"
    finally:
        stop.set()
        server.close()
        thread.join(timeout=2)


@pytest.mark.django_db
@pytest.mark.django_db
def test_an_attempt_ends_within_the_timeout_even_when_the_receiver_drips(settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    with _dripping_receiver(seconds=1.5) as url:
        (delivery,) = _deliveries_to(url, 1)
        _send_one()

    (attempt,) = _attempts(delivery)
    assert attempt.duration_ms < 1000, attempt.duration_ms
    assert attempt.error.startswith("Timed out"), attempt.error


@pytest.mark.django_db
def test_a_refused_connection_is_retried(no_jitter, frozen):
    (delivery,) = _deliveries_to(_closed_port_url(), 1)

    _send_one()

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.next_attempt_at == frozen + timedelta(seconds=5)
    (attempt,) = _attempts(delivery)
    assert attempt.status_code is None
    assert attempt.error.startswith("Connection failed: ConnectError")
    endpoint = WebhookEndpoint.objects.get(pk=delivery.endpoint_id)
    assert endpoint.failure_count == 1 and endpoint.failing_since == frozen


@pytest.mark.django_db
@pytest.mark.parametrize("status", [400, 404, 410])
def test_a_client_error_fails_the_delivery_at_once(frozen, time_machine, receiver, status):
    receiver.answer(Answer(status))
    (delivery,) = _deliveries_to(receiver.url, 1)

    _send_one()

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.next_attempt_at is None
    assert delivery.attempt_count == 1
    (attempt,) = _attempts(delivery)
    assert attempt.status_code == status
    assert attempt.error == f"The receiver answered {status}."
    time_machine.move_to(frozen + timedelta(days=1), tick=False)
    assert webhook_deliveries_send(concurrency=1).claimed == 0
    assert len(receiver.requests) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("status", [200, 202])
def test_a_2xx_succeeds_and_clears_the_endpoints_failures(frozen, receiver, status):
    receiver.answer(Answer(status))
    endpoint = WebhookEndpointFactory(
        url=receiver.url, failure_count=4, failing_since=frozen - timedelta(days=2)
    )
    delivery = WebhookDeliveryFactory(tenant=endpoint.tenant, endpoint=endpoint)

    report = _send_one()

    assert report.succeeded == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.succeeded_at == frozen and delivery.last_attempt_at == frozen
    assert delivery.next_attempt_at is None and delivery.claim == ""
    assert delivery.attempt_count == 1
    endpoint.refresh_from_db()
    assert endpoint.last_success_at == frozen
    assert endpoint.last_triggered_at == frozen
    assert endpoint.failure_count == 0
    assert endpoint.failing_since is None


@pytest.mark.django_db
def test_attempt_rows_record_status_duration_excerpt_and_error(settings, receiver):
    settings.WEBHOOK_RESPONSE_EXCERPT_BYTES = 32
    body = b"0123456789" * 30
    receiver.answer(Answer(503, body=body, delay=0.2), Answer(200, body=b'{"ok": 1}'))
    (delivery,) = _deliveries_to(receiver.url, 1)

    _send_one()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    _send_one()

    failed, succeeded = _attempts(delivery)
    assert (failed.number, failed.succeeded, failed.status_code) == (1, False, 503)
    assert failed.duration_ms >= 200
    assert failed.response_excerpt == body[:32].decode()
    assert failed.error == "The receiver answered 503."
    assert failed.tenant_id == delivery.tenant_id
    assert (succeeded.number, succeeded.succeeded, succeeded.status_code) == (2, True, 200)
    assert succeeded.response_excerpt == '{"ok": 1}'
    assert succeeded.error == ""
    assert 0 <= succeeded.duration_ms < 5000


@pytest.mark.django_db
def test_an_answer_of_any_text_is_recorded_as_it_came(receiver):
    """The attempts of a batch are written as one array per column: text that array syntax
    must quote comes back unchanged, and a batch mixes answers with and without a status."""
    awkward = '{"a": "b,c"} \\ "quoted" {braces} NULL, é 漢字\nline'
    receiver.answer(Answer(200, body=awkward.encode()))
    (answered,) = _deliveries_to(receiver.url, 1)
    (refused,) = _deliveries_to(_closed_port_url(), 1)

    report = webhook_deliveries_send(concurrency=2)

    assert (report.succeeded, report.failed) == (1, 1)
    (attempt,) = _attempts(answered)
    assert (attempt.status_code, attempt.response_excerpt) == (200, awkward)
    (failure,) = _attempts(refused)
    assert (failure.status_code, failure.response_excerpt) == (None, "")
    assert failure.error.startswith("Connection failed")


@pytest.mark.django_db
def test_an_attempt_another_relay_numbered_first_stands(receiver):
    """A relay whose lease ran out may number an attempt that the next relay has numbered:
    the first recorded stands, and the late one is not an error."""
    (delivery,) = _deliveries_to(receiver.url, 1)
    first = WebhookAttemptFactory(
        tenant=delivery.tenant, delivery=delivery, number=1, error="recorded first"
    )

    report = _send_one()

    assert report.succeeded == 1
    assert [(a.pk, a.error) for a in _attempts(delivery)] == [(first.pk, "recorded first")]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.SUCCEEDED, 1)


# Disabling an endpoint that keeps failing --------------------------------------------------


@pytest.mark.django_db
def test_an_endpoint_failing_for_the_disable_period_is_disabled_and_admins_are_notified(
    settings, frozen, time_machine, receiver
):
    assert settings.WEBHOOK_DISABLE_AFTER_DAYS == 5
    receiver.default = Answer(503)
    endpoint = WebhookEndpointFactory(url=receiver.url, name="Orders")
    tenant = endpoint.tenant
    owner = MembershipFactory(tenant=tenant, role=Role.OWNER)
    admin = MembershipFactory(tenant=tenant, role=Role.ADMIN)
    member = MembershipFactory(tenant=tenant, role=Role.MEMBER)
    suspended_admin = MembershipFactory(
        tenant=tenant, role=Role.ADMIN, status=MembershipStatus.SUSPENDED
    )
    with Receiver() as healthy:
        watcher = WebhookEndpointFactory(
            tenant=tenant, url=healthy.url, events=["webhook.endpoint.disabled"]
        )

        WebhookDeliveryFactory(tenant=tenant, endpoint=endpoint)
        webhook_deliveries_send(concurrency=1)
        endpoint.refresh_from_db()
        assert endpoint.failing_since == frozen
        assert endpoint.failure_count == 1

        for day in (1, 2, 3, 4):
            time_machine.move_to(frozen + timedelta(days=day), tick=False)
            WebhookDeliveryFactory(tenant=tenant, endpoint=endpoint)
            report = webhook_deliveries_send(concurrency=1)
            assert report.disabled_endpoints == []
            endpoint.refresh_from_db()
            assert endpoint.is_active, f"disabled after {day} days"
            assert endpoint.failing_since == frozen

        disabled_at = frozen + timedelta(days=5, minutes=1)
        time_machine.move_to(disabled_at, tick=False)
        WebhookDeliveryFactory(tenant=tenant, endpoint=endpoint)
        report = webhook_deliveries_send(concurrency=1)

        assert report.disabled_endpoints == [str(endpoint.pk)]
        endpoint.refresh_from_db()
        assert endpoint.is_active is False
        assert endpoint.disabled_at == disabled_at
        assert endpoint.disabled_reason.startswith(
            f"Failing since {frozen:%Y-%m-%d %H:%M} UTC with no success"
        )
        assert not WebhookDelivery.objects.filter(
            endpoint=endpoint, status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING]
        ).exists()

        audit = AuditEvent.objects.get(tenant=tenant, event_type="webhook.endpoint.disabled")
        assert audit.payload["endpoint_id"] == str(endpoint.pk)
        assert audit.actor_id is None and audit.actor_label == "webhook relay"
        event = WebhookEvent.objects.get(tenant=tenant, event_type="webhook.endpoint.disabled")
        data = json.loads(event.body)["data"]
        assert data["endpoint_id"] == str(endpoint.pk)
        assert data["disabled_reason"] == endpoint.disabled_reason
        # The event goes to the endpoints subscribed to it, not to the disabled one.
        assert list(
            WebhookDelivery.objects.filter(event=event).values_list("endpoint_id", flat=True)
        ) == [watcher.pk]

        in_app = Notification.objects.filter(
            tenant=tenant, event_type="webhook.endpoint.disabled", channel=Channel.IN_APP
        )
        assert sorted(in_app.values_list("recipient_id", flat=True)) == sorted(
            [owner.user_id, admin.user_id]
        )
        assert not Notification.objects.filter(
            recipient_id__in=[member.user_id, suspended_admin.user_id]
        ).exists()
        assert all(n.title == "Webhook endpoint disabled: Orders" for n in in_app)

        # Nothing more goes to the disabled endpoint.
        sent = len(receiver.requests)
        time_machine.move_to(disabled_at + timedelta(days=1), tick=False)
        webhook_deliveries_send(concurrency=1)
        assert len(receiver.requests) == sent
        assert len(healthy.requests) == 1


@pytest.mark.django_db
def test_a_success_in_between_restarts_the_failure_period(frozen, time_machine, receiver):
    receiver.default = Answer(503)
    endpoint = WebhookEndpointFactory(url=receiver.url)
    tenant = endpoint.tenant
    WebhookDeliveryFactory(tenant=tenant, endpoint=endpoint)
    webhook_deliveries_send(concurrency=1)
    endpoint.refresh_from_db()
    assert endpoint.failing_since == frozen

    time_machine.move_to(frozen + timedelta(days=3), tick=False)
    receiver.answer(Answer(200))
    assert webhook_deliveries_send(concurrency=1).succeeded == 1
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None and endpoint.failure_count == 0

    time_machine.move_to(frozen + timedelta(days=4), tick=False)
    WebhookDeliveryFactory(tenant=tenant, endpoint=endpoint)
    webhook_deliveries_send(concurrency=1)
    endpoint.refresh_from_db()
    assert endpoint.failing_since == frozen + timedelta(days=4)

    time_machine.move_to(frozen + timedelta(days=5, hours=1), tick=False)
    WebhookDeliveryFactory(tenant=tenant, endpoint=endpoint)
    report = webhook_deliveries_send(concurrency=1)

    assert report.disabled_endpoints == []
    endpoint.refresh_from_db()
    assert endpoint.is_active
    assert endpoint.failing_since == frozen + timedelta(days=4)
    assert not AuditEvent.objects.filter(event_type="webhook.endpoint.disabled").exists()


# Claims and leases ------------------------------------------------------------------------


@pytest.mark.postgres
def test_two_relays_at_once_send_each_delivery_exactly_once(transactional_db, receiver):
    deliveries = _deliveries_to(receiver.url, 200)
    start = threading.Barrier(2)
    reports, errors = [], []

    def relay():
        try:
            start.wait(timeout=10)
            reports.append(webhook_deliveries_send(concurrency=2, batch_size=10))
        except Exception as error:  # reported below, in the test's thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert len(reports) == 2
    assert not any(thread.is_alive() for thread in threads)
    assert len(receiver.requests) == 200
    ids = {request.headers["webhook-id"] for request in receiver.requests}
    assert ids == {str(delivery.event_id) for delivery in deliveries}
    assert sum(report.claimed for report in reports) == 200
    assert WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 200
    attempts = list(WebhookAttempt.objects.values_list("delivery_id", "number"))
    assert len(attempts) == 200
    assert {delivery_id for delivery_id, _ in attempts} == {d.pk for d in deliveries}
    assert {number for _, number in attempts} == {1}


# Fairness between organizations ----------------------------------------------------------------


@pytest.mark.django_db
def test_an_organizations_backlog_does_not_hold_back_the_others(receiver):
    """A replay of thousands of events, or an endpoint that takes the whole timeout to fail,
    used to be sent first because it was due first: every other organization waited for it."""
    backlog = _due_since(receiver.url, 30, seconds_ago=600)
    later = _due_since(receiver.url, 2, seconds_ago=5)
    latest = _due_since(receiver.url, 1, seconds_ago=1)

    report = webhook_deliveries_send(concurrency=1, batch_size=10, max_deliveries=10)

    # The first claim: an equal share each (ceil(10 / 3) = 4), each one's oldest, sent taking
    # turns (one each, then a second each...) so the backlog cannot take every sender first.
    turns = [backlog[0], later[0], latest[0], backlog[1], later[1], backlog[2], backlog[3]]
    assert _sent_ids(receiver)[:7] == [str(d.event_id) for d in turns]
    # Then the rest of the ten from the only organization still waiting, in order.
    assert report.claimed == 10
    assert _sent_ids(receiver)[7:] == [str(d.event_id) for d in backlog[4:7]]
    sent = WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED)
    assert set(sent.values_list("pk", flat=True)) == {d.pk for d in later + latest + backlog[:7]}


@pytest.mark.django_db
def test_an_endpoint_that_never_answers_does_not_take_every_sender(settings, receiver):
    """Its requests hold at most all senders but one (each until the timeout); the other
    organization's go through the one left. Before, they waited for its timeouts."""
    settings.WEBHOOK_TIMEOUT_SECONDS = 120  # it does not answer while the test watches
    # Its failed deliveries come due again only after the run: with the first retry's 5 s, a
    # machine slow enough to keep the run going that long claimed them a second time.
    settings.WEBHOOK_RETRY_SCHEDULE_SECONDS = [3600]
    silent_endpoint = Unanswering()
    silent = _due_since(silent_endpoint.url, 10, seconds_ago=60)
    others = _due_since(receiver.url, 5, seconds_ago=30)
    sent_while_held = threading.Event()

    def watch():
        # The others' requests arrive while the silent endpoint holds its senders; then its
        # requests fail (connection closed or refused) and the relay ends.
        deadline = time.monotonic() + 60
        while len(receiver.requests) < len(others) and time.monotonic() < deadline:
            time.sleep(0.01)
        if len(receiver.requests) == len(others):
            sent_while_held.set()
        silent_endpoint.release()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        report = webhook_deliveries_send(concurrency=4)
    finally:
        silent_endpoint.release()
        watcher.join(timeout=90)

    assert sent_while_held.is_set()
    assert (report.claimed, report.succeeded, report.failed) == (15, 5, 10)
    assert set(_sent_ids(receiver)) == _event_ids(others)
    by_status = dict(
        WebhookDelivery.objects.values_list("status").annotate(count=Count("pk")).order_by()
    )
    assert by_status == {
        DeliveryStatus.SUCCEEDED: len(others),
        DeliveryStatus.RETRYING: len(silent),
    }


@pytest.fixture
def slow_soon(monkeypatch):
    """Requests count as slow after 0.2 s instead of a second: the tests wait less."""
    monkeypatch.setattr(relay, "SLOW_AFTER_SECONDS", 0.2)


@pytest.mark.django_db
def test_what_answered_is_recorded_while_a_silent_endpoints_requests_are_still_out(
    settings, monkeypatch, slow_soon, receiver
):
    """Before, a batch was recorded once all of it had answered, so the others' deliveries
    sent with a silent endpoint's waited for its timeouts to be recorded; and each claim gave
    the silent organization a share again, which its requests then held."""
    settings.WEBHOOK_TIMEOUT_SECONDS = 120  # it does not answer while the test watches
    # Its failed deliveries come due again only after the run: with the first retry's 5 s, a
    # machine slow enough to keep the run going that long claimed them a second time.
    settings.WEBHOOK_RETRY_SCHEDULE_SECONDS = [3600]
    silent_endpoint = Unanswering()
    silent = _due_since(silent_endpoint.url, 30, seconds_ago=60)
    others = _due_since(receiver.url, 20, seconds_ago=30)
    silent_tenant = silent[0].tenant_id
    recorded, silent_claimed_while_held = set(), []
    others_recorded = threading.Event()
    held = threading.Event()
    held.set()

    def recording(answered, **kwargs):
        real_record(answered, **kwargs)
        recorded.update(sending.delivery.pk for sending in answered)
        if {delivery.pk for delivery in others} <= recorded:
            others_recorded.set()

    def claiming(**kwargs):
        claim, batch = real_claim(**kwargs)
        if held.is_set():
            silent_claimed_while_held.extend(
                row.pk for row in batch if row.tenant_id == silent_tenant
            )
        return claim, batch

    real_record, real_claim = relay._record, relay._claim
    monkeypatch.setattr(relay, "_record", recording)
    monkeypatch.setattr(relay, "_claim", claiming)

    def watch():
        others_recorded.wait(timeout=60)
        held.clear()
        silent_endpoint.release()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        report = webhook_deliveries_send(concurrency=4, batch_size=10)
    finally:
        silent_endpoint.release()
        watcher.join(timeout=90)

    # The others' 20 were recorded while every silent request was still out. The silent
    # organization had a share of the two claims made before its first requests were found
    # slow (5 + 5 of 10), and none while they were out; once they had failed (released), it
    # was claimed again, and its endpoint refused the rest.
    assert others_recorded.is_set()
    assert len(silent_claimed_while_held) == 10
    assert (report.claimed, report.succeeded, report.failed, report.given_back) == (50, 20, 30, 0)
    assert set(_sent_ids(receiver)) == _event_ids(others)
    statuses = dict(WebhookDelivery.objects.values_list("pk", "status"))
    assert {statuses[delivery.pk] for delivery in others} == {DeliveryStatus.SUCCEEDED}
    assert {statuses[delivery.pk] for delivery in silent} == {DeliveryStatus.RETRYING}
    # Recording the others' successes by id, not by claim, left the silent rows of the same
    # claims alone.
    assert not WebhookDelivery.objects.filter(
        tenant_id=silent_tenant, succeeded_at__isnull=False
    ).exists()


@pytest.mark.django_db
def test_when_its_time_is_up_a_run_gives_back_what_waits_behind_a_silent_endpoint(
    settings, slow_soon, receiver
):
    """The run claims no more, and the silent organization's requests that have not started
    go back to the queue (due again, not attempted) instead of holding the run until each
    has timed out: 3 at a time, 15 s each, with the default timeout."""
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    silent_endpoint = Unanswering()
    silent = _due_since(silent_endpoint.url, 20, seconds_ago=60)
    others = _due_since(receiver.url, 5, seconds_ago=30)
    try:
        report = webhook_deliveries_send(concurrency=4, time_budget_seconds=0.1)
    finally:
        silent_endpoint.release()

    # 3 silent requests started (all the senders but one) and timed out; 17 never started.
    assert (report.claimed, report.succeeded, report.failed, report.given_back) == (25, 5, 3, 17)
    assert set(_sent_ids(receiver)) == _event_ids(others)
    attempted = WebhookDelivery.objects.filter(pk__in=[delivery.pk for delivery in silent])
    assert attempted.filter(status=DeliveryStatus.RETRYING, attempt_count=1).count() == 3
    given_back = attempted.filter(status=DeliveryStatus.PENDING)
    assert given_back.count() == 17
    assert not given_back.exclude(claim="").exists()
    assert not given_back.filter(next_attempt_at__gt=timezone.now()).exists()
    assert not given_back.exclude(attempt_count=0).exists()
    assert not WebhookAttempt.objects.filter(delivery__in=given_back).exists()


@pytest.mark.django_db
def test_a_run_out_of_time_with_nothing_slow_finishes_what_it_sent(monkeypatch, receiver):
    """Giving back is for requests held up behind a slow endpoint: a batch that answers
    promptly is sent whole even when the time is up while it is in flight."""
    deliveries = _due_since(receiver.url, 30, seconds_ago=10)
    real_claim = relay._claim

    def claim_taking_the_time_left(**kwargs):
        claimed = real_claim(**kwargs)
        time.sleep(0.1)
        return claimed

    monkeypatch.setattr(relay, "_claim", claim_taking_the_time_left)

    report = webhook_deliveries_send(concurrency=4, batch_size=10, time_budget_seconds=0.05)

    assert (report.claimed, report.succeeded, report.given_back) == (10, 10, 0)
    assert set(_sent_ids(receiver)) == _event_ids(deliveries[:10])


@pytest.mark.django_db
def test_when_more_organizations_wait_than_a_claim_holds_the_longest_waiting_go_first(
    receiver,
):
    waiting = [_due_since(receiver.url, 2, seconds_ago=100 - 10 * n)[0] for n in range(5)]

    report = webhook_deliveries_send(concurrency=1, batch_size=3, max_deliveries=3)

    assert report.claimed == 3
    assert set(_sent_ids(receiver)) == _event_ids(waiting[:3])


@pytest.mark.django_db
def test_deliveries_not_yet_due_take_no_share_of_a_claim(receiver):
    due = _due_since(receiver.url, 12, seconds_ago=60)
    later = _due_since(receiver.url, 5, seconds_ago=-300)  # due in five minutes
    leased = _due_since(receiver.url, 1, seconds_ago=30, tenant=later[0].tenant)[0]
    WebhookDelivery.objects.filter(pk=leased.pk).update(
        claim="another-relay", next_attempt_at=timezone.now() + timedelta(minutes=5)
    )

    report = webhook_deliveries_send(concurrency=1, batch_size=10, max_deliveries=10)

    assert report.claimed == 10
    assert _sent_ids(receiver) == [str(d.event_id) for d in due[:10]]


@pytest.mark.postgres
def test_two_relays_at_once_share_many_organizations_and_send_each_delivery_once(
    transactional_db, receiver
):
    deliveries = [
        delivery
        for number in range(8)
        for delivery in _due_since(receiver.url, 10 + 5 * number, seconds_ago=60 - number)
    ]

    reports = race(2, lambda: webhook_deliveries_send(concurrency=2, batch_size=7))

    assert sum(report.claimed for report in reports) == len(deliveries) == 220
    ids = _sent_ids(receiver)
    assert len(ids) == 220
    assert set(ids) == _event_ids(deliveries)
    assert WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 220
    assert set(WebhookAttempt.objects.values_list("number", flat=True)) == {1}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("concurrency", "rounds"),
    [
        # 2 x 10 rows (the batch and the one claimed behind it) over the 3 senders one
        # organization may hold: 7 timeouts one after another.
        pytest.param(4, 7, id="all-senders-but-one"),
        pytest.param(1, 20, id="one-sender"),
    ],
)
def test_a_claim_is_leased_for_its_rows_timing_out_on_the_senders_one_organization_holds(
    settings, frozen, receiver, concurrency, rounds
):
    due = _due_since(receiver.url, 3, seconds_ago=10)

    _, claimed = _claim(limit=10, concurrency=concurrency)

    assert {row.pk for row in claimed} == {delivery.pk for delivery in due}
    lease = timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS * rounds + 60)
    assert set(WebhookDelivery.objects.values_list("next_attempt_at", flat=True)) == {
        frozen + lease
    }


@pytest.mark.django_db
def test_a_delivery_whose_lease_ran_out_is_sent_by_the_next_run(receiver):
    now = timezone.now()
    endpoint = WebhookEndpointFactory(url=receiver.url)
    abandoned = WebhookDeliveryFactory(
        tenant=endpoint.tenant,
        endpoint=endpoint,
        claim="x",
        status=DeliveryStatus.PENDING,
        next_attempt_at=now - timedelta(minutes=1),
    )
    leased = WebhookDeliveryFactory(
        tenant=endpoint.tenant,
        endpoint=endpoint,
        claim="y",
        status=DeliveryStatus.PENDING,
        next_attempt_at=now + timedelta(minutes=5),
    )

    report = _send_one()

    assert report.succeeded == 1
    abandoned.refresh_from_db()
    assert abandoned.status == DeliveryStatus.SUCCEEDED and abandoned.claim == ""
    (request,) = receiver.requests
    assert request.headers["webhook-id"] == str(abandoned.event_id)
    leased.refresh_from_db()
    assert leased.status == DeliveryStatus.PENDING and leased.claim == "y"


@pytest.mark.django_db
def test_a_due_delivery_of_an_inactive_endpoint_fails_unsent(receiver):
    endpoint = WebhookEndpointFactory(url=receiver.url, is_active=False)
    delivery = WebhookDeliveryFactory(tenant=endpoint.tenant, endpoint=endpoint)

    report = _send_one()

    assert report.failed == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.next_attempt_at is None
    (attempt,) = _attempts(delivery)
    assert attempt.error == "Not sent: the endpoint is disabled."
    assert attempt.status_code is None
    assert receiver.requests == []
    endpoint.refresh_from_db()
    assert endpoint.failure_count == 0 and endpoint.last_triggered_at is None


# Retry through the API ---------------------------------------------------------------------


def _failed_delivery(tenant, url, **fields):
    endpoint = WebhookEndpointFactory(tenant=tenant, url=url)
    return WebhookDeliveryFactory(
        tenant=tenant,
        endpoint=endpoint,
        status=fields.pop("status", DeliveryStatus.FAILED),
        attempt_count=1,
        next_attempt_at=None,
        **fields,
    )


def _retry_url(delivery) -> str:
    return f"/api/v1/webhooks/deliveries/{delivery.pk}/retry"


@pytest.mark.django_db
def test_retrying_a_failed_delivery_makes_it_due_now_and_the_relay_sends_it(owner, receiver):
    delivery = _failed_delivery(owner.tenant, receiver.url)
    WebhookAttemptFactory(tenant=owner.tenant, delivery=delivery, succeeded=False, status_code=500)
    before = timezone.now()

    response = owner.client.post(_retry_url(delivery))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == str(delivery.pk) and body["status"] == DeliveryStatus.RETRYING
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING
    assert before <= delivery.next_attempt_at <= timezone.now()
    audit = AuditEvent.objects.get(tenant=owner.tenant, event_type="webhook.delivery.retried")
    assert audit.payload["previous_status"] == DeliveryStatus.FAILED

    report = _send_one()

    assert report.succeeded == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempt_count == 2
    assert [a.number for a in _attempts(delivery)] == [1, 2]
    (request,) = receiver.requests
    assert request.headers["webhook-id"] == str(delivery.event_id)


@pytest.mark.django_db
def test_retrying_a_succeeded_delivery_is_a_conflict(owner):
    delivery = _failed_delivery(owner.tenant, "https://hooks.example.com/x", status="succeeded")

    assert_envelope(owner.client.post(_retry_url(delivery)), 409, "CONFLICT")
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.next_attempt_at is None


@pytest.mark.django_db
def test_retrying_another_tenants_delivery_is_not_found(owner):
    delivery = _failed_delivery(TenantFactory(), "https://hooks.example.com/x")

    assert_envelope(owner.client.post(_retry_url(delivery)), 404)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED


@pytest.mark.django_db
def test_retrying_needs_settings_write(make_caller):
    viewer = make_caller(Role.VIEWER)
    delivery = _failed_delivery(viewer.tenant, "https://hooks.example.com/x")

    assert_envelope(viewer.client.post(_retry_url(delivery)), 403)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.next_attempt_at is None


# Replay through the API --------------------------------------------------------------------


def _invite(caller, email):
    response = caller.client.post(
        "/api/v1/organizations/members/invite", {"email": email, "role": "member"}, format="json"
    )
    assert response.status_code == 201, response.content


def _invited_event(tenant, email) -> WebhookEvent:
    return next(
        event
        for event in WebhookEvent.objects.filter(
            tenant=tenant, event_type="organization.member.invited"
        )
        if json.loads(event.body)["data"]["email"] == email
    )


def _create_endpoint(caller, url, events) -> str:
    response = caller.client.post(
        "/api/v1/webhooks/", {"name": "Replayed", "url": url, "events": events}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


@pytest.fixture
def pro_owner(make_caller):
    """An owner whose plan's user quota leaves room for a few invitations."""
    return make_caller(Role.OWNER, tenant=TenantFactory(plan="pro"))


def _replay(caller, endpoint_id, since):
    return caller.client.post(
        f"/api/v1/webhooks/{endpoint_id}/replay", {"since": since.isoformat()}, format="json"
    )


@pytest.mark.django_db
def test_replay_queues_the_subscribed_events_since_then(pro_owner, receiver):
    owner = pro_owner
    _invite(owner, "before@example.com")
    since = timezone.now()
    _invite(owner, "missed@example.com")  # before the endpoint existed: no delivery yet
    endpoint_id = _create_endpoint(owner, receiver.url, ["organization.member.invited"])
    _invite(owner, "delivered@example.com")
    assert webhook_deliveries_send(concurrency=1).succeeded == 1
    # An event of a type the endpoint does not subscribe to.
    member = MembershipFactory(tenant=owner.tenant, role=Role.MEMBER)
    member_update(membership=member, actor=owner.user, role=Role.ADMIN)
    assert WebhookEvent.objects.filter(
        tenant=owner.tenant, event_type="organization.member.role_changed"
    ).exists()
    # Another tenant's event of the subscribed type.
    other = MembershipFactory(role=Role.OWNER)
    member_invite(tenant=other.tenant, actor=other.user, email="else@example.com", send_email=False)
    receiver.requests.clear()

    response = _replay(owner, endpoint_id, since)

    assert response.status_code == 202, response.content
    assert response.json() == {"queued": 2}
    missed = _invited_event(owner.tenant, "missed@example.com")
    delivered = _invited_event(owner.tenant, "delivered@example.com")
    queued = WebhookDelivery.objects.filter(endpoint_id=endpoint_id)
    assert {d.event_id: d.status for d in queued} == {
        missed.pk: DeliveryStatus.PENDING,
        delivered.pk: DeliveryStatus.RETRYING,
    }
    assert all(d.next_attempt_at <= timezone.now() for d in queued)

    report = webhook_deliveries_send(concurrency=1)

    assert report.succeeded == 2
    assert {r.headers["webhook-id"] for r in receiver.requests} == {
        str(missed.pk),
        str(delivered.pk),
    }
    assert AuditEvent.objects.filter(
        tenant=owner.tenant, event_type="webhook.endpoint.replayed"
    ).exists()


@pytest.mark.django_db
def test_replay_since_a_future_time_is_refused(owner):
    endpoint = WebhookEndpointFactory(tenant=owner.tenant)

    response = _replay(owner, endpoint.pk, timezone.now() + timedelta(hours=1))

    assert_envelope(response, 400, "VALIDATION_ERROR")


@pytest.mark.django_db
def test_replay_to_a_disabled_endpoint_is_a_conflict(owner):
    endpoint = WebhookEndpointFactory(tenant=owner.tenant, is_active=False)
    _invite(owner, "a@example.com")

    response = _replay(owner, endpoint.pk, timezone.now() - timedelta(hours=1))

    assert_envelope(response, 409, "CONFLICT")
    assert not WebhookDelivery.objects.filter(endpoint=endpoint).exists()


@pytest.mark.django_db
def test_replay_of_more_than_the_maximum_events_is_refused(settings, pro_owner):
    owner = pro_owner
    settings.WEBHOOK_REPLAY_MAX_EVENTS = 2
    since = timezone.now()
    for name in ("a", "b", "c"):
        _invite(owner, f"{name}@example.com")
    endpoint = WebhookEndpointFactory(tenant=owner.tenant, events=["organization.member.invited"])

    response = _replay(owner, endpoint.pk, since)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["details"]["since"] == ["3 events match."]
    assert not WebhookDelivery.objects.filter(endpoint=endpoint).exists()


# Retention ---------------------------------------------------------------------------------


def _delivered():
    """A delivery its (one, successful) attempt ended, with its event."""
    return WebhookAttemptFactory(delivery__status=DeliveryStatus.SUCCEEDED).delivery


def _old_and_new(time_machine, settings):
    """A delivery (with an attempt) and its event from past the retention, and new ones."""
    days = settings.WEBHOOK_DELIVERY_RETENTION_DAYS
    now = timezone.now()
    time_machine.move_to(now - timedelta(days=days, hours=1), tick=False)
    old = _delivered()
    time_machine.move_to(now - timedelta(days=days - 1), tick=False)
    recent = _delivered()
    time_machine.move_to(now, tick=True)
    new = _delivered()
    return old, [recent, new]


def _assert_pruned(old, kept):
    assert not WebhookDelivery.objects.filter(pk=old.pk).exists()
    assert not WebhookEvent.objects.filter(pk=old.event_id).exists()
    assert not WebhookAttempt.objects.filter(delivery_id=old.pk).exists()
    for delivery in kept:
        assert WebhookDelivery.objects.filter(pk=delivery.pk).exists()
        assert WebhookEvent.objects.filter(pk=delivery.event_id).exists()
        assert WebhookAttempt.objects.filter(delivery_id=delivery.pk).count() == 1
    audit = AuditEvent.objects.get(tenant=None, event_type="webhook.deliveries.pruned")
    assert audit.payload["deliveries"] == 1 and audit.payload["events"] == 1
    assert audit.payload["older_than_days"] == django_settings.WEBHOOK_DELIVERY_RETENTION_DAYS


@pytest.mark.django_db
def test_the_prune_command_deletes_what_is_past_the_retention(settings, time_machine):
    old, kept = _old_and_new(time_machine, settings)
    out = StringIO()

    call_command("prune_webhook_deliveries", stdout=out)

    assert "Pruned 1 deliveries and 1 events." in out.getvalue()
    _assert_pruned(old, kept)


@pytest.mark.django_db
def test_the_prune_task_deletes_what_is_past_the_retention(settings, time_machine):
    old, kept = _old_and_new(time_machine, settings)

    assert prune_webhook_deliveries() == {"deliveries": 1, "events": 1}

    _assert_pruned(old, kept)


@pytest.mark.django_db
@pytest.mark.parametrize("days", [10**6, 10**12], ids=["past-the-calendar", "past-a-c-int"])
def test_a_retention_longer_than_the_calendar_prunes_nothing(settings, time_machine, days):
    """`--days` is the operator's: one past what a date can go back to keeps everything (it
    was an OverflowError traceback)."""
    old, kept = _old_and_new(time_machine, settings)
    out = StringIO()

    call_command("prune_webhook_deliveries", "--days", str(days), stdout=out)

    assert "Pruned 0 deliveries and 0 events." in out.getvalue()
    assert WebhookDelivery.objects.filter(pk__in=[old.pk, *(d.pk for d in kept)]).count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("status", [DeliveryStatus.PENDING, DeliveryStatus.RETRYING])
def test_a_delivery_still_being_sent_is_kept_past_the_retention_until_it_ends(
    settings, time_machine, status
):
    """Retries can outlast a short retention (the schedule is the operator's, and a replay
    sends old events again): such a delivery, its event and its attempts stay until the relay
    is done with them, even with `--days 0`."""
    now = timezone.now()
    time_machine.move_to(now - timedelta(days=settings.WEBHOOK_DELIVERY_RETENTION_DAYS + 1))
    sending = WebhookAttemptFactory(delivery__status=status, succeeded=False).delivery
    ended = _delivered()
    time_machine.move_to(now, tick=True)
    out = StringIO()

    call_command("prune_webhook_deliveries", "--days", "0", stdout=out)

    assert "Pruned 1 deliveries and 1 events." in out.getvalue()
    assert not WebhookDelivery.objects.filter(pk=ended.pk).exists()
    assert WebhookDelivery.objects.filter(pk=sending.pk, status=status).exists()
    assert WebhookEvent.objects.filter(pk=sending.event_id).exists()
    assert WebhookAttempt.objects.filter(delivery=sending).count() == 1

    WebhookDelivery.objects.filter(pk=sending.pk).update(status=DeliveryStatus.FAILED)
    assert prune_webhook_deliveries() == {"deliveries": 1, "events": 1}
    assert not WebhookEvent.objects.filter(pk=sending.event_id).exists()
    assert not WebhookAttempt.objects.filter(delivery_id=sending.pk).exists()


@pytest.mark.django_db
def test_pruning_nothing_records_nothing():
    WebhookAttemptFactory()

    assert prune_webhook_deliveries() == {"deliveries": 0, "events": 0}

    assert not AuditEvent.objects.filter(event_type="webhook.deliveries.pruned").exists()


# The command and the schedule --------------------------------------------------------------


@pytest.mark.django_db
def test_the_send_command_sends_due_deliveries_and_prints_counts(receiver):
    with Receiver(default=Answer(410)) as gone:
        ok = _deliveries_to(receiver.url, 2)
        (failing,) = _deliveries_to(gone.url, 1)
        WebhookEndpoint.objects.filter(pk=failing.endpoint_id).update(
            failing_since=timezone.now() - timedelta(days=6), failure_count=40
        )
        not_due = _deliveries_to(
            receiver.url, 1, next_attempt_at=timezone.now() + timedelta(hours=1)
        )[0]
        out = StringIO()

        call_command("send_webhooks", "--concurrency=1", stdout=out)

    output = out.getvalue()
    assert "3 deliveries sent: 2 succeeded, 1 failed." in output
    assert f"Disabled failing endpoint {failing.endpoint_id}." in output
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(d.event_id) for d in ok}
    assert len(gone.requests) == 1
    not_due.refresh_from_db()
    assert not_due.status == DeliveryStatus.PENDING and not_due.attempt_count == 0


def test_the_beat_schedule_runs_the_relay_and_the_pruning():
    tasks = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}

    assert "notifications.tasks.send_webhooks" in tasks
    assert "notifications.tasks.prune_webhook_deliveries" in tasks
