"""config.cache.RedisCache: one connection pool and one client object per process."""

import threading

import pytest
from django.conf import settings
from django.core.cache import caches

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")


def _in_another_thread(function):
    found = []
    thread = threading.Thread(target=lambda: found.append(function()))
    thread.start()
    thread.join()
    return found[0]


def test_every_cache_call_uses_the_same_client_object():
    cache = caches["default"]
    client = cache._cache.get_client(write=True)

    cache.set("cache-test:key", "value", 30)

    assert cache.get_many(["cache-test:key"]) == {"cache-test:key": "value"}
    assert cache._cache.get_client() is client
    assert cache._cache.get_client(write=True) is client


def test_cache_objects_of_other_threads_share_the_client_and_its_pool():
    # Django keeps a cache object per thread (and per request under ASGI).
    here = caches["default"]._cache.get_client(write=True)

    there = _in_another_thread(lambda: caches["default"]._cache.get_client(write=True))

    assert there is here
    assert there.connection_pool is here.connection_pool


def test_the_shared_client_reads_what_another_threads_cache_object_wrote():
    _in_another_thread(lambda: caches["default"].set("cache-test:shared", 41, 30))

    assert caches["default"].incr("cache-test:shared") == 42


def test_the_platform_s_redis_work_uses_one_cache_object_per_process():
    # Under ASGI each request is a context of its own: caches["default"] is a new object in
    # each, with what is kept per cache object (the meter stores) built again.
    import contextvars

    from config.metering import meter_store
    from config.redis import redis_cache

    here = redis_cache()

    assert _in_another_thread(redis_cache) is here
    assert contextvars.Context().run(redis_cache) is here
    assert contextvars.Context().run(lambda: caches["default"]) is not caches["default"]
    assert _in_another_thread(lambda: meter_store("quota:api_calls")) is meter_store(
        "quota:api_calls"
    )


def test_a_changed_caches_setting_gives_the_cache_it_names():
    from django.test import override_settings

    from config.redis import redis_cache

    before = redis_cache()
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

    with override_settings(CACHES=locmem):
        assert redis_cache() is None
    after = redis_cache()

    assert after is not None and after is not before
    assert after._servers == before._servers
