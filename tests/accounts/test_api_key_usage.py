"""API-key usage statistics: counted in the cache on the request path, written to the
database in batches by a flush, exact whatever runs concurrently."""

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts import usage
from accounts.models import APIKey
from accounts.services import api_key_usage_flush
from accounts.tasks import flush_api_key_usage
from tests.conftest import assert_envelope
from tests.factories import issue_api_key

from .conftest import key_client

pytestmark = pytest.mark.django_db

ORG_URL = "/api/v1/organizations/current"
EVENTS_URL = "/api/v1/audit/events/"
ORG_ROUTE = "/api/v1/organizations/current/"
EVENT_ROUTE = "/api/v1/audit/events/{id}/"


def usage_of(caller, key) -> dict:
    response = caller.client.get(f"/api/v1/api-keys/{key.pk}/usage/")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def keyed(owner):
    """(owner, key row, client authenticated by that key with scope read)."""
    key, raw = issue_api_key(owner.membership, scopes=["read"])
    return owner, key, key_client(raw)


def test_route_templates_name_the_route_not_the_path():
    assert usage.route_template("api/v1/^audit/events/(?P<pk>[^/.]+)/?$") == EVENT_ROUTE
    assert usage.route_template("api/v1/^organizations/current/?$") == ORG_ROUTE
    assert (
        usage.route_template("api/v1/^tenants/(?P<slug>[^/.]+)/quota/?$")
        == "/api/v1/tenants/{slug}/quota/"
    )


def test_figures_are_exact_after_a_flush(keyed):
    owner, key, client = keyed
    for _ in range(3):
        assert client.get(ORG_URL).status_code == 200
    for _ in range(2):
        assert client.get(f"{EVENTS_URL}{uuid.uuid4()}/").status_code == 404
    assert client.get(f"{EVENTS_URL}{uuid.uuid4()}").status_code == 404

    written = api_key_usage_flush()

    assert written == 6
    figures = usage_of(owner, key)
    assert figures["total_requests"] == 6
    assert figures["success_requests"] == 3
    assert figures["failed_requests"] == 3
    assert figures["requests_by_endpoint"] == {EVENT_ROUTE: 3, ORG_ROUTE: 3}
    assert figures["avg_response_time_ms"] > 0
    key.refresh_from_db()
    assert key.usage_count == 6
    assert key.success_count == 3 and key.failed_count == 3
    assert key.requests_by_endpoint == {EVENT_ROUTE: 3, ORG_ROUTE: 3}
    assert key.last_used_at is not None
    assert abs((timezone.now() - key.last_used_at).total_seconds()) < 60


def test_requests_refused_after_authentication_count_as_failed(owner):
    key, raw = issue_api_key(owner.membership, scopes=["documents.read"])

    assert_envelope(key_client(raw).get(EVENTS_URL), 403, "INSUFFICIENT_PERMISSIONS")
    api_key_usage_flush()

    figures = usage_of(owner, key)
    assert figures["total_requests"] == 1
    assert figures["failed_requests"] == 1
    assert figures["requests_by_endpoint"] == {"/api/v1/audit/events/": 1}


def test_a_refused_key_is_not_counted(owner):
    key, raw = issue_api_key(owner.membership)
    key.is_active = False
    key.save()

    assert key_client(raw).get(ORG_URL).status_code == 401
    api_key_usage_flush()

    key.refresh_from_db()
    assert key.usage_count == 0


@pytest.mark.redis
def test_usage_recording_writes_nothing_to_the_database(keyed):
    _, _, client = keyed
    client.get(ORG_URL)  # creates the tenant's api_calls counter

    with CaptureQueriesContext(connection) as captured:
        for _ in range(3):
            assert client.get(ORG_URL).status_code == 200

    # The api_calls quota is counted in Redis too (tenants.api_call_store).
    statements = [q["sql"].lstrip().split()[0].upper() for q in captured]
    assert set(statements) == {"SELECT"}, statements


def test_usage_shows_counted_requests_before_the_flush(keyed):
    owner, key, client = keyed
    client.get(ORG_URL)
    client.get(ORG_URL)

    before = usage_of(owner, key)
    api_key_usage_flush()
    after = usage_of(owner, key)

    assert before["total_requests"] == after["total_requests"] == 2
    assert before["requests_by_endpoint"] == after["requests_by_endpoint"] == {ORG_ROUTE: 2}
    assert owner.client.get(f"/api/v1/api-keys/{key.pk}/").json()["usage_count"] == 2


def test_a_second_flush_adds_nothing(keyed):
    _, key, client = keyed
    client.get(ORG_URL)

    assert api_key_usage_flush() == 1
    assert api_key_usage_flush() == 0

    key.refresh_from_db()
    assert key.usage_count == 1


def test_flushes_accumulate(keyed):
    owner, key, client = keyed
    client.get(ORG_URL)
    api_key_usage_flush()
    client.get(ORG_URL)
    client.get(f"{EVENTS_URL}{uuid.uuid4()}/")
    api_key_usage_flush()

    figures = usage_of(owner, key)
    assert figures["total_requests"] == 3
    assert figures["requests_by_endpoint"] == {ORG_ROUTE: 2, EVENT_ROUTE: 1}


def test_unused_key_has_zero_figures(owner):
    key, _ = issue_api_key(owner.membership)

    assert usage_of(owner, key) == {
        "total_requests": 0,
        "success_requests": 0,
        "failed_requests": 0,
        "avg_response_time_ms": 0.0,
        "requests_by_endpoint": {},
    }


def test_counts_are_exact_while_flushes_run_concurrently(owner):
    """Writers count from several threads while the main thread flushes again and again:
    every request lands in exactly one flush."""
    keys = [issue_api_key(owner.membership)[0] for _ in range(3)]
    store = usage.usage_store()
    per_thread, threads_per_key = 150, 2

    def count(key):
        for _ in range(per_thread):
            store.record(str(key.pk), ok=True, response_time_us=1000, route=ORG_ROUTE, at_ms=1)

    threads = [
        threading.Thread(target=count, args=(key,)) for key in keys for _ in range(threads_per_key)
    ]
    for thread in threads:
        thread.start()
    flushed_while_counting = 0
    while any(thread.is_alive() for thread in threads):
        flushed_while_counting += api_key_usage_flush()
    for thread in threads:
        thread.join()
    api_key_usage_flush()

    expected = per_thread * threads_per_key
    for key in keys:
        key.refresh_from_db()
        assert key.usage_count == expected
        assert key.success_count == expected
        assert key.requests_by_endpoint == {ORG_ROUTE: expected}
        assert key.response_time_us_total == expected * 1000
    assert flushed_while_counting <= expected * len(keys)


def test_the_beat_task_and_the_command_run_the_same_flush(keyed):
    _, key, client = keyed
    client.get(ORG_URL)
    assert flush_api_key_usage() == 1
    client.get(ORG_URL)
    out = StringIO()

    call_command("flush_api_key_usage", stdout=out)

    assert "Flushed 1 API-key request(s)." in out.getvalue()
    key.refresh_from_db()
    assert key.usage_count == 2


def test_the_flush_is_scheduled_on_beat():
    entries = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert flush_api_key_usage.name in entries
    schedule = entries[flush_api_key_usage.name]["schedule"]
    assert schedule.total_seconds() == settings.API_KEY_USAGE_FLUSH_SECONDS


def test_counts_of_a_deleted_key_are_dropped(keyed):
    _, key, client = keyed
    client.get(ORG_URL)
    APIKey.objects.filter(pk=key.pk).delete()

    assert api_key_usage_flush() == 0


# The two stores -----------------------------------------------------------------------------


def test_local_store_puts_back_counts_the_database_refused(keyed, monkeypatch):
    _, key, _ = keyed
    store = usage.LocalUsageStore()
    monkeypatch.setattr(usage, "usage_store", lambda: store)
    store.record(str(key.pk), ok=True, response_time_us=10, route=ORG_ROUTE, at_ms=5)

    def refuse(_usage):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(usage, "_apply", refuse)
    with pytest.raises(RuntimeError):
        usage.flush_api_key_usage()
    monkeypatch.undo()
    monkeypatch.setattr(usage, "usage_store", lambda: store)

    assert usage.flush_api_key_usage() == 1
    key.refresh_from_db()
    assert key.usage_count == 1


def test_local_store_flushes_itself_once_the_interval_passed(keyed, monkeypatch):
    _, key, _ = keyed
    store = usage.LocalUsageStore()
    monkeypatch.setattr(usage, "usage_store", lambda: store)

    with override_settings(API_KEY_USAGE_FLUSH_SECONDS=3600):
        store.record(str(key.pk), ok=True, response_time_us=10, route=ORG_ROUTE, at_ms=5)
        key.refresh_from_db()
        assert key.usage_count == 0
    with override_settings(API_KEY_USAGE_FLUSH_SECONDS=0):
        store.record(str(key.pk), ok=False, response_time_us=10, route=ORG_ROUTE, at_ms=6)

    key.refresh_from_db()
    assert (key.usage_count, key.success_count, key.failed_count) == (2, 1, 1)


@pytest.mark.smoke
@pytest.mark.django_db(transaction=True)
def test_local_store_flushes_on_a_thread_when_due_on_an_event_loop(keyed, monkeypatch):
    _, key, _ = keyed
    store = usage.LocalUsageStore()
    monkeypatch.setattr(usage, "usage_store", lambda: store)

    async def record_on_the_loop():
        store.record(str(key.pk), ok=True, response_time_us=10, route=ORG_ROUTE, at_ms=5)

    with override_settings(API_KEY_USAGE_FLUSH_SECONDS=0):
        asyncio.run(record_on_the_loop())

    assert store.flushing is not None
    store.flushing.join(timeout=30)
    key.refresh_from_db()
    assert key.usage_count == 1


@pytest.mark.smoke
def test_a_failed_flush_fails_no_request_and_keeps_its_counts(keyed, monkeypatch, caplog):
    _, key, _ = keyed
    store = usage.LocalUsageStore()
    monkeypatch.setattr(usage, "usage_store", lambda: store)

    def refuse(_usage):
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(usage, "_apply", refuse)
    with override_settings(API_KEY_USAGE_FLUSH_SECONDS=0):
        store.record(str(key.pk), ok=True, response_time_us=10, route=ORG_ROUTE, at_ms=5)

    assert "flushing buffered counts failed" in caplog.text
    assert store.pending(str(key.pk)).requests == 1
    monkeypatch.undo()
    monkeypatch.setattr(usage, "usage_store", lambda: store)
    assert usage.flush_api_key_usage() == 1


def redis_store() -> usage.RedisUsageStore:
    store = usage.usage_store()
    assert isinstance(store, usage.RedisUsageStore)
    return store


def redis_commands(monkeypatch, store) -> list[str]:
    """The names of the Redis commands sent from now on (by any thread)."""
    calls = []
    original = type(store.client).execute_command

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(store.client), "execute_command", counting)
    return calls


def in_redis(store, key_pk: str) -> usage.Usage:
    """What Redis holds for a key, without this process's buffer."""
    return usage.Usage.from_hash(store.client.hgetall(store._hash_prefix + key_pk))


def count_one(store, key_pk: str, *, ok=True, route=ORG_ROUTE) -> None:
    store.record(key_pk, ok=ok, response_time_us=1000, route=route, at_ms=7)


@pytest.mark.redis
@override_settings(API_KEY_USAGE_BUFFER_SECONDS=3600)
def test_redis_counting_makes_no_round_trip_on_the_request_path(keyed, monkeypatch):
    _, key, client = keyed
    store = redis_store()
    other = str(uuid.uuid4())
    for _ in range(4):
        assert client.get(ORG_URL).status_code == 200
    assert in_redis(store, str(key.pk)).requests == 0
    calls = redis_commands(monkeypatch, store)

    count_one(store, other, ok=False, route="/api/v1/other/")
    assert calls == []

    assert store.push() == 2

    assert calls.count("EVALSHA") == 1
    assert in_redis(store, str(key.pk)).requests == 4
    assert in_redis(store, other).endpoints == {"/api/v1/other/": 1}
    assert store.push() == 0


@pytest.mark.redis
@override_settings(API_KEY_USAGE_BUFFER_SECONDS=0)
def test_without_a_buffer_each_request_is_written_through(monkeypatch):
    store = redis_store()
    key_pk = str(uuid.uuid4())
    count_one(store, key_pk)  # loads the script
    calls = redis_commands(monkeypatch, store)

    count_one(store, key_pk, ok=False)

    assert calls == ["EVALSHA"]
    counted = in_redis(store, key_pk)
    assert (counted.requests, counted.success, counted.failed) == (2, 1, 1)


@pytest.mark.redis
@override_settings(API_KEY_USAGE_BUFFER_SECONDS=0.05)
def test_the_buffer_reaches_redis_within_the_interval_by_itself():
    store = redis_store()
    key_pk = str(uuid.uuid4())

    count_one(store, key_pk)

    deadline = time.monotonic() + 10
    while in_redis(store, key_pk).requests == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert in_redis(store, key_pk).requests == 1
    assert store.buffered(key_pk).requests == 0


@pytest.mark.redis
@override_settings(API_KEY_USAGE_BUFFER_SECONDS=3600)
def test_a_failed_push_keeps_the_counts_for_the_next(keyed, monkeypatch):
    owner, key, client = keyed
    store = redis_store()
    client.get(ORG_URL)
    client.get(ORG_URL)

    def unreachable(_usage):
        raise ConnectionError("Redis unavailable")

    monkeypatch.setattr(store._counts, "_write", unreachable)
    with pytest.raises(ConnectionError):
        store.push()
    client.get(ORG_URL)
    monkeypatch.undo()

    assert usage_of(owner, key)["total_requests"] == 3
    assert api_key_usage_flush() == 3


@pytest.mark.redis
@override_settings(API_KEY_USAGE_BUFFER_SECONDS=3600)
def test_a_forked_child_leaves_the_parents_counts_to_the_parent():
    store = redis_store()
    key_pk = str(uuid.uuid4())
    count_one(store, key_pk)

    child = os.fork()
    if child == 0:  # the child reports what it inherited, and nothing else
        try:
            inherited = store.buffered(key_pk).requests
        finally:
            os._exit(locals().get("inherited", 99))
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert store.buffered(key_pk).requests == 1


@pytest.mark.redis
def test_a_process_pushes_its_buffer_when_it_exits():
    key_pk = str(uuid.uuid4())
    script = (
        "import django; django.setup()\n"
        "from django.test import override_settings\n"
        "from accounts.usage import usage_store\n"
        "with override_settings(API_KEY_USAGE_BUFFER_SECONDS=3600):\n"
        f"    usage_store().record('{key_pk}', ok=True, response_time_us=5, route='/r/', at_ms=9)\n"
    )
    done = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert in_redis(redis_store(), key_pk).requests == 1


@pytest.mark.redis
def test_redis_batch_left_by_a_crashed_flush_is_recovered_once_stale(keyed):
    owner, key, client = keyed
    store = usage.usage_store()
    client.get(ORG_URL)
    client.get(ORG_URL)
    abandoned = store.claim()  # a flusher that claimed, then died before writing
    assert abandoned.usage[str(key.pk)].requests == 2
    client.get(ORG_URL)

    assert api_key_usage_flush() == 1  # the abandoned batch is not stale yet
    later = timezone.now() + timedelta(seconds=usage.STALE_BATCH_SECONDS + 5)
    with time_machine.travel(later):
        assert api_key_usage_flush() == 2
        assert api_key_usage_flush() == 0

    key.refresh_from_db()
    assert key.usage_count == 3
    assert usage_of(owner, key)["total_requests"] == 3


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_flush_that_lost_redis_after_its_commit_is_not_counted_twice(make_caller, monkeypatch):
    """The flush committed the keys' counts, then could not delete its batch from Redis: the
    flush that takes the batch over once it is stale drops it, and the figures stay exact."""
    owner = make_caller()
    key, raw = issue_api_key(owner.membership, scopes=["read"])
    client = key_client(raw)
    client.get(ORG_URL)
    client.get(ORG_URL)
    counts = usage.usage_store()._counts

    def redis_gone(batch, owners):
        raise ConnectionError("Redis went away after the commit")

    monkeypatch.setattr(counts, "release", redis_gone)
    with pytest.raises(ConnectionError):
        api_key_usage_flush()
    monkeypatch.undo()
    key.refresh_from_db()
    assert key.usage_count == 2
    client.get(ORG_URL)

    with time_machine.travel(timezone.now() + timedelta(seconds=usage.STALE_BATCH_SECONDS + 5)):
        assert api_key_usage_flush() == 1

    key.refresh_from_db()
    assert key.usage_count == 3
    assert usage_of(owner, key)["total_requests"] == 3
