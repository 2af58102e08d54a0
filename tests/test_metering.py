"""config.metering: the one primitive for windows, meters and buffered counts."""

import uuid
from collections import Counter

import pytest
from django.conf import settings

from config import metering
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
