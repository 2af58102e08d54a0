"""config.metering: the one primitive for windows, meters and buffered counts."""

import threading
import time
import uuid
from collections import Counter

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction

from config import metering
from config.db import transaction_committed, transaction_id
from config.redis import redis_cache

pytestmark = pytest.mark.django_db

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")


def _namespace() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_a_window_refusal_counts_nothing_in_the_other_windows():
    tight = metering.Window(f"tight:{uuid.uuid4().hex}", 1, 60)
    loose = metering.Window(f"loose:{uuid.uuid4().hex}", 100, 60)

    first = metering.admit([loose, tight])
    second = metering.admit([loose, tight])

    assert first.admitted and not second.admitted
    assert second.refused_window == 1
    assert [state.remaining for state in second.states] == [99, 0]


@needs_redis
def test_admission_loads_its_script_again_after_redis_forgot_it():
    """A restarted or flushed Redis has no scripts: the first admission loads it (NOSCRIPT)."""
    from config.redis import redis_client

    redis_client(redis_cache()).script_flush()
    window = metering.Window(f"flushed:{uuid.uuid4().hex}", 2, 60)

    assert metering.admit([window]).admitted
    assert metering.admit([window]).admitted
    assert not metering.admit([window]).admitted


@needs_redis
def test_a_meter_counts_to_its_limit_exactly_and_marks_what_it_counted():
    store = metering.meter_store(_namespace())
    store.seed("owner", 7, 8, ttl_seconds=60)
    window = metering.Window(f"w:{uuid.uuid4().hex}", 1000, 60)

    answers = [
        metering.admit([window], store.meter("owner", 7, amount=1, limit=10)) for _ in range(3)
    ]

    assert [a.meter_status for a in answers] == [
        metering.METER_COUNTED,
        metering.METER_COUNTED,
        metering.METER_OVER_LIMIT,
    ]
    assert answers[2].states[0].remaining == 998  # the refused call used up no window
    assert store.values([("owner", 7), ("owner", 8)]) == [10, None]
    assert store.claim_dirty() == [("owner", 7, 10)]
    assert store.claim_dirty() == []


@needs_redis
def test_a_missing_meter_is_reported_not_created():
    store = metering.meter_store(_namespace())

    answer = metering.admit([], store.meter("owner", 1, amount=1, limit=10))

    assert answer.meter_status == metering.METER_MISSING
    assert store.values([("owner", 1)]) == [None]


def _redis_counts():
    return metering.RedisBufferedCounts(
        redis_cache().make_key(_namespace()), max_fields=("last",), push_seconds=lambda: 3600
    )


@needs_redis
def test_buffered_counts_sum_fields_keep_maxima_and_land_in_exactly_one_batch():
    counts = _redis_counts()
    counts.record("a", {"n": 1, "last": 5})
    counts.push()
    counts.record("a", {"n": 2, "last": 3})  # still in this process's buffer

    assert counts.pending("a") == Counter({"n": 3, "last": 5})
    batch = counts.claim()
    counts.record("a", {"n": 1, "last": 9})  # after the claim: the next batch

    assert batch.counts == {"a": Counter({"n": 3, "last": 5})}
    counts.release(batch, ["a"])
    assert counts.claim().counts == {"a": Counter({"n": 1, "last": 9})}
    assert counts.claim().counts == {}


@needs_redis
def test_pending_counts_every_event_while_a_push_runs_concurrently():
    # The background pusher takes the buffer and then writes it to Redis; a read in between
    # must still see those counts (the API-key usage endpoint reads pending counts).
    import threading

    counts = _redis_counts()
    stop = threading.Event()

    def push_continuously():
        while not stop.is_set():
            counts.push()

    pusher = threading.Thread(target=push_continuously)
    pusher.start()
    seen = []
    try:
        for recorded in range(1, 301):
            counts.record("a", {"n": 1})
            seen.append((recorded, counts.pending("a")["n"]))
    finally:
        stop.set()
        pusher.join()

    assert [pair for pair in seen if pair[0] != pair[1]] == []


def test_local_buffered_counts_put_back_what_the_database_refused():
    counts = metering.LocalBufferedCounts(max_fields=("last",))
    counts.record("a", {"n": 1, "last": 5})
    batch = counts.claim()

    counts.record("a", {"n": 1, "last": 2})
    counts.restore(batch, ["a"])

    assert counts.pending("a") == Counter({"n": 2, "last": 5})


# Flushing buffered counts: each count written once ------------------------------------------------


def _group_writer(prefix: str):
    """A `write` for flush_batches that writes each owner's count as a Group row (a table
    nothing else in these tests writes), named `prefix:owner:n:<unique>`."""

    def write(counts) -> int:
        Group.objects.bulk_create(
            Group(name=f"{prefix}:{owner}:{counted['n']}:{uuid.uuid4().hex[:8]}")
            for owner, counted in counts.items()
        )
        return sum(counted["n"] for counted in counts.values())

    return write


def _written(prefix: str) -> list[tuple[str, int]]:
    names = Group.objects.filter(name__startswith=f"{prefix}:").values_list("name", flat=True)
    return sorted((name.split(":")[1], int(name.split(":")[2])) for name in names)


def _stale_soon():
    return time_machine.travel(time.time() + metering.STALE_BATCH_SECONDS + 5)


def _batch_keys(counts) -> list:
    return list(counts.client.scan_iter(match=f"{counts._batch_prefix}*"))


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_transaction_committed_answers_for_each_state_of_a_transaction():
    with transaction.atomic():
        committed = transaction_id()
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = transaction_id()
        raise RuntimeError
    with transaction.atomic():
        running = transaction_id()
        assert transaction_committed(running) is None

    assert transaction_committed(committed) is True
    assert transaction_committed(rolled_back) is False
    # Unknown to the database (a failover lost its commit): not committed.
    assert transaction_committed(running + 10**9) is False
    assert len({committed, rolled_back, running}) == 3


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_batch_written_but_not_released_is_dropped_not_written_again(monkeypatch):
    """The flusher committed, then lost Redis before deleting its batch keys: once stale, the
    batch is deleted, not written a second time."""
    counts = _redis_counts()
    write = _group_writer("released")
    counts.record("a", {"n": 2})
    counts.record("b", {"n": 3})

    def redis_gone(batch, owners):
        raise ConnectionError("Redis went away after the commit")

    monkeypatch.setattr(counts, "release", redis_gone)
    with pytest.raises(ConnectionError):
        metering.flush_batches(counts, write, chunk=10)
    monkeypatch.undo()
    assert _written("released") == [("a", 2), ("b", 3)]
    counts.record("a", {"n": 1})

    with _stale_soon():
        assert metering.flush_batches(counts, write, chunk=10) == 1

    assert _written("released") == [("a", 1), ("a", 2), ("b", 3)]
    assert _batch_keys(counts) == []


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_transaction_rolled_back_is_written_once_stale(monkeypatch):
    """The flusher noted its transaction, which then failed to commit: once stale, the batch is
    written, once."""
    counts = _redis_counts()
    write = _group_writer("rolled-back")
    counts.record("a", {"n": 2})
    noted = counts.writing

    def commit_fails(*args):
        noted(*args)
        raise DatabaseError("the commit failed")

    monkeypatch.setattr(counts, "writing", commit_fails)
    with pytest.raises(DatabaseError):
        metering.flush_batches(counts, write, chunk=10)
    monkeypatch.undo()
    assert _written("rolled-back") == []
    assert metering.flush_batches(counts, write, chunk=10) == 0  # not stale yet

    with _stale_soon():
        assert metering.flush_batches(counts, write, chunk=10) == 2
        assert metering.flush_batches(counts, write, chunk=10) == 0

    assert _written("rolled-back") == [("a", 2)]
    assert _batch_keys(counts) == []


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_flusher_whose_batch_was_taken_over_rolls_its_write_back():
    """A flusher holding its batch longer than the stale age: another flush takes the batch
    over and writes it; the first one's chunk is rolled back, so the counts are written once."""
    counts = _redis_counts()
    other = metering.RedisBufferedCounts(
        counts._hash_prefix.removesuffix(":k:"), push_seconds=lambda: 3600
    )
    counts.record("a", {"n": 2})
    counts.record("b", {"n": 1})
    write_here = _group_writer("slow")
    taken_over = []

    def slow_write(chunk) -> int:
        written = write_here(chunk)
        if not taken_over:
            # Meanwhile, on another connection, a flush after the stale age.
            def later_flush():
                try:
                    with _stale_soon():
                        taken_over.append(
                            metering.flush_batches(other, _group_writer("slow"), chunk=10)
                        )
                finally:
                    connection.close()

            thread = threading.Thread(target=later_flush)
            thread.start()
            thread.join()
        return written

    assert metering.flush_batches(counts, slow_write, chunk=1) == 0

    assert taken_over == [3]
    assert _written("slow") == [("a", 2), ("b", 1)]
    assert _batch_keys(counts) == []
