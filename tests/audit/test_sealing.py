"""Sealing: gapless per-chain seq, prev_hash and the documented hash, on commit and under load."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from audit import tasks
from audit.models import AuditEvent
from audit.services import (
    chain_seal,
    chain_seal_batch,
    chain_verify,
    chains_seal_all,
    record,
    sealed_documents,
)
from config.request_context import RequestContext, activate, deactivate
from tests.factories import AuditEventFactory, TenantFactory, UserFactory

from .chain_helpers import (
    canonical_hash,
    chain_of,
    make_events,
    recipe_document,
    recipe_hash,
    sealed_chain,
)


@pytest.fixture
def queued_seals(monkeypatch):
    """Seal requests sent after commit: seal_audit_chains.apply_async() records its
    arguments instead of sending a message to the broker."""
    queued = []
    monkeypatch.setattr(
        tasks.seal_audit_chains, "apply_async", lambda *args, **kwargs: queued.append(args)
    )
    return queued


def assert_gapless_and_linked(events, expected_count: int) -> None:
    assert [event.seq for event in events] == list(range(1, expected_count + 1))
    prev_hash = ""
    for event in events:
        assert event.prev_hash == prev_hash, event.seq
        assert event.hash == recipe_hash(prev_hash, recipe_document(event)), event.seq
        prev_hash = event.hash


# Order, links and hashes -------------------------------------------------------------------------


@pytest.mark.django_db
def test_sealing_numbers_events_from_one_in_created_at_then_id_order():
    tenant = TenantFactory()
    base = timezone.now() - timedelta(minutes=10)
    # Created out of order, with two events sharing a timestamp (ties go by id).
    late = AuditEventFactory(tenant=tenant, created_at=base + timedelta(minutes=3))
    early = AuditEventFactory(tenant=tenant, created_at=base)
    tie_a = AuditEventFactory(tenant=tenant, created_at=base + timedelta(minutes=1))
    tie_b = AuditEventFactory(tenant=tenant, created_at=base + timedelta(minutes=1))
    first_tie, second_tie = sorted([tie_a, tie_b], key=lambda event: event.pk)

    sealed = chain_seal(tenant_id=tenant.pk)

    assert sealed == 4
    assert [event.pk for event in chain_of(tenant)] == [
        early.pk,
        first_tie.pk,
        second_tie.pk,
        late.pk,
    ]


@pytest.mark.django_db
def test_sealed_hashes_follow_the_documented_recipe():
    tenant = TenantFactory()
    user = UserFactory()
    token = activate(
        RequestContext(request_id="req-7", ip_address="2001:db8::1", user_agent="agent/1")
    )
    try:
        with transaction.atomic():
            record(
                tenant=tenant,
                event_type="member.invited",
                actor=user,
                payload={"email": "zoë@example.com", "roles": ["viewer", "dpo"], "n": 1.5},
            )
            record(tenant=tenant, event_type="tenant.updated", payload={"nested": {"b": 2, "a": 1}})
            record(tenant=tenant, event_type="tenant.suspended", payload={"reason": None})
    finally:
        deactivate(token)

    chain_seal(tenant_id=tenant.pk)

    events = chain_of(tenant)
    assert_gapless_and_linked(events, 3)
    assert events[0].prev_hash == ""
    assert events[0].actor_id == user.pk
    assert recipe_document(events[0])["actor"] == {
        "type": "user",
        "id": str(user.pk),
        "label": user.email,
    }
    assert all(len(event.hash) == 64 for event in events)
    # audit.canonical alone reproduces them too (what an offline verifier uses).
    assert all(canonical_hash(event, prev_hash=event.prev_hash) == event.hash for event in events)


@pytest.mark.django_db
def test_hashed_timestamp_is_utc_with_microseconds():
    tenant = TenantFactory()
    sydney = timezone.get_fixed_timezone(timedelta(hours=10))
    AuditEventFactory(tenant=tenant, created_at=datetime(2024, 1, 2, 13, 4, 5, tzinfo=sydney))
    AuditEventFactory(tenant=tenant, created_at=datetime(2024, 1, 2, 3, 4, 6, 120, tzinfo=UTC))
    chain_seal(tenant_id=tenant.pk)

    documents = [document for document, _, _ in sealed_documents(tenant.pk)]

    assert [document["created_at"] for document in documents] == [
        "2024-01-02T03:04:05.000000Z",
        "2024-01-02T03:04:06.000120Z",
    ]
    assert [document["seq"] for document in documents] == [1, 2]


@pytest.mark.django_db
def test_each_tenant_and_the_platform_have_their_own_chain():
    first, second = TenantFactory(), TenantFactory()
    make_events(first, 3)
    make_events(second, 2)
    make_events(None, 2, event_type="platform.thing")

    assert chains_seal_all() == 7

    for tenant, count in ((first, 3), (second, 2), (None, 2)):
        events = chain_of(getattr(tenant, "pk", None))
        assert_gapless_and_linked(events, count)
        assert {event.tenant_id for event in events} == {getattr(tenant, "pk", None)}
    assert not AuditEvent.objects.filter(seq__isnull=True).exists()


@pytest.mark.django_db
def test_sealing_one_chain_leaves_the_others_unsealed():
    tenant, other = TenantFactory(), TenantFactory()
    make_events(tenant, 2)
    make_events(other, 2)
    make_events(None, 1)

    assert chain_seal(tenant_id=tenant.pk) == 2

    assert AuditEvent.objects.filter(tenant=other, seq__isnull=True).count() == 2
    assert AuditEvent.objects.filter(tenant=None, seq__isnull=True).count() == 1


@pytest.mark.django_db
def test_later_events_continue_the_chain_from_its_head():
    tenant = TenantFactory()
    head = sealed_chain(tenant, 3)[-1]

    events = sealed_chain(tenant, 2)

    assert_gapless_and_linked(events, 5)
    assert events[3].prev_hash == head.hash
    assert events[2].hash == head.hash  # sealed events are not touched again


@pytest.mark.django_db
def test_sealing_again_with_nothing_new_changes_nothing():
    tenant = TenantFactory()
    before = [(event.pk, event.seq, event.hash) for event in sealed_chain(tenant, 3)]

    assert chain_seal(tenant_id=tenant.pk) == 0

    assert [(event.pk, event.seq, event.hash) for event in chain_of(tenant)] == before


@pytest.mark.django_db
def test_one_batch_seals_only_the_oldest_events():
    tenant = TenantFactory()
    events = make_events(tenant, 5)

    assert chain_seal_batch(tenant_id=tenant.pk, batch_size=2) == 2

    assert [event.pk for event in chain_of(tenant)] == [events[0].pk, events[1].pk]
    assert AuditEvent.objects.filter(tenant=tenant, seq__isnull=True).count() == 3


@pytest.mark.django_db
def test_chain_seal_works_through_every_batch(settings):
    settings.AUDIT_SEAL_BATCH_SIZE = 2
    tenant = TenantFactory()
    events = make_events(tenant, 5)

    assert chain_seal(tenant_id=tenant.pk) == 5

    sealed = chain_of(tenant)
    assert [event.pk for event in sealed] == [event.pk for event in events]
    assert_gapless_and_linked(sealed, 5)


# Constraints -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_database_refuses_a_second_event_with_the_same_tenant_and_seq():
    tenant = TenantFactory()
    AuditEventFactory(tenant=tenant, seq=1, prev_hash="", hash="a" * 64)

    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEventFactory(tenant=tenant, seq=1, prev_hash="", hash="b" * 64)

    assert AuditEvent.objects.filter(tenant=tenant).count() == 1


@pytest.mark.django_db
def test_database_refuses_a_second_platform_event_with_the_same_seq():
    AuditEventFactory(tenant=None, seq=1, prev_hash="", hash="a" * 64)

    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEventFactory(tenant=None, seq=1, prev_hash="", hash="b" * 64)

    assert AuditEvent.objects.filter(tenant=None).count() == 1


@pytest.mark.django_db
def test_the_same_seq_in_different_chains_and_many_unsealed_events_are_allowed():
    first, second = TenantFactory(), TenantFactory()

    for tenant in (first, second, None):
        AuditEventFactory(tenant=tenant, seq=1, prev_hash="", hash="a" * 64)
        AuditEventFactory(tenant=tenant, seq=None)
        AuditEventFactory(tenant=tenant, seq=None)

    assert AuditEvent.objects.filter(seq=1).count() == 3
    assert AuditEvent.objects.filter(seq__isnull=True).count() == 6


# Sealing on commit ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_record_queues_one_seal_on_commit_of_its_transaction(
    django_capture_on_commit_callbacks, queued_seals
):
    tenant = TenantFactory()

    with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
        events = [record(tenant=tenant, event_type="tenant.updated") for _ in range(3)]
        record(tenant=None, event_type="platform.thing")

    assert len(callbacks) == 1
    assert queued_seals == []  # nothing is queued before the commit
    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in events], seq__isnull=False).exists()

    callbacks[0]()

    assert queued_seals == [()]


@pytest.mark.django_db
def test_a_rolled_back_savepoint_does_not_take_the_queued_seal_with_it(
    django_capture_on_commit_callbacks, queued_seals
):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            record(tenant=None, event_type="platform.rolled_back")
            raise RuntimeError("roll back the savepoint")
        record(tenant=None, event_type="platform.kept")

    assert queued_seals == [()]
    assert list(AuditEvent.objects.values_list("event_type", flat=True)) == ["platform.kept"]


@pytest.mark.django_db
def test_the_seal_task_seals_every_chain_with_unsealed_events(queued_seals):
    first, second = TenantFactory(), TenantFactory()
    with transaction.atomic():
        for tenant in (first, second, None):
            record(tenant=tenant, event_type="test.recorded")
            record(tenant=tenant, event_type="test.recorded")

    assert tasks.seal_audit_chains() == 6

    for tenant in (first, second, None):
        assert_gapless_and_linked(chain_of(getattr(tenant, "pk", None)), 2)


def test_commits_while_a_seal_is_queued_queue_no_second_one(transactional_db, queued_seals):
    for _ in range(3):
        with transaction.atomic():
            record(tenant=None, event_type="platform.thing")
    assert queued_seals == [()]

    assert tasks.seal_audit_chains() == 3
    with transaction.atomic():
        record(tenant=None, event_type="platform.thing")

    # The task cleared the request when it ran, so the next commit queues a new one.
    assert queued_seals == [(), ()]


@pytest.mark.parametrize("delay", [0.0, 2.5])
def test_the_seal_is_queued_due_after_the_configured_delay(
    transactional_db, monkeypatch, settings, delay
):
    """Commits within the delay share one seal task, queued due AUDIT_SEAL_DELAY_SECONDS
    after the first of them (0: at once)."""
    settings.AUDIT_SEAL_DELAY_SECONDS = delay
    sent = []
    monkeypatch.setattr(
        tasks.seal_audit_chains, "apply_async", lambda *args, **kwargs: sent.append(kwargs)
    )
    for _ in range(3):
        with transaction.atomic():
            record(tenant=None, event_type="platform.thing")
    assert sent == [{"countdown": delay}]


def test_a_broker_failure_after_commit_neither_raises_nor_loses_the_event(
    transactional_db, monkeypatch
):
    """The seal is queued with on_commit(robust=True): the service's change has committed,
    so a failing broker must be logged, not raised (the beat job seals the event later)."""

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.seal_audit_chains, "apply_async", broker_down)

    with transaction.atomic():
        event = record(tenant=None, event_type="platform.thing")

    assert AuditEvent.objects.filter(pk=event.pk).exists()
    assert tasks.seal_audit_chains() == 1
    assert AuditEvent.objects.get(pk=event.pk).seq == 1


# Concurrency (PostgreSQL) ------------------------------------------------------------------------


def run_threads(targets) -> list[BaseException]:
    """Run each callable in its own thread with its own connection; returns their errors."""
    errors: list[BaseException] = []

    def wrapped(target):
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrapped, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    return errors


@pytest.mark.postgres
def test_concurrent_writers_and_two_sealers_build_one_gapless_valid_chain(
    transactional_db, queued_seals
):
    tenant = TenantFactory()
    writers = 50
    start = threading.Barrier(writers + 2)
    writers_done = threading.Event()
    remaining = [writers]
    lock = threading.Lock()
    sealed_by = {"a": 0, "b": 0}

    def writer(number):
        def write():
            start.wait()
            try:
                with transaction.atomic():
                    record(tenant=tenant, event_type="test.concurrent", payload={"w": number})
            finally:
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        writers_done.set()

        return write

    def sealer(name):
        def seal():
            start.wait()
            while True:
                finished = writers_done.is_set()
                sealed_by[name] += chain_seal(tenant_id=tenant.pk)
                if (
                    finished
                    and not AuditEvent.objects.filter(tenant=tenant, seq__isnull=True).exists()
                ):
                    return

        return seal

    errors = run_threads([writer(n) for n in range(writers)] + [sealer("a"), sealer("b")])

    assert errors == []
    events = chain_of(tenant)
    assert [event.seq for event in events] == list(range(1, writers + 1))
    assert sorted(event.payload["w"] for event in events) == list(range(writers))
    # Every event was sealed exactly once, by one sealer or the other.
    assert sealed_by["a"] + sealed_by["b"] == writers
    result = chain_verify(tenant_id=tenant.pk)
    assert result.chain_valid, result.broken_links
    assert result.verified_count == writers
    assert result.last_seq == writers


@pytest.mark.postgres
def test_two_sealers_racing_over_a_backlog_seal_each_event_once(transactional_db, settings):
    settings.AUDIT_SEAL_BATCH_SIZE = 7
    tenant = TenantFactory()
    backlog = make_events(tenant, 120)
    start = threading.Barrier(2)
    sealed = []

    def sealer():
        start.wait()
        sealed.append(chain_seal(tenant_id=tenant.pk))

    errors = run_threads([sealer, sealer])

    assert errors == []
    assert sum(sealed) == 120
    events = chain_of(tenant)
    assert [event.pk for event in events] == [event.pk for event in backlog]
    assert_gapless_and_linked(events, 120)


@pytest.mark.postgres
def test_sealer_racing_new_events_keeps_record_order_and_seals_them_all(
    transactional_db, queued_seals
):
    tenant = TenantFactory()
    count = 40
    writer_done = threading.Event()
    start = threading.Barrier(2)

    def writer():
        start.wait()
        try:
            for number in range(count):
                with transaction.atomic():
                    record(tenant=tenant, event_type="test.racing", payload={"n": number})
        finally:
            writer_done.set()

    def sealer():
        start.wait()
        while not writer_done.is_set():
            chain_seal_batch(tenant_id=tenant.pk, batch_size=3)
        chain_seal(tenant_id=tenant.pk)

    errors = run_threads([writer, sealer])

    assert errors == []
    events = chain_of(tenant)
    # One writer commits in order, so the chain's order is the record order.
    assert [event.payload["n"] for event in events] == list(range(count))
    assert_gapless_and_linked(events, count)
    assert chain_verify(tenant_id=tenant.pk).chain_valid
