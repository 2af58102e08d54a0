"""The Redis behind the default cache, as the platform's own Redis work reaches it."""

import os

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.dispatch import receiver

# The default cache object this process uses for its own Redis work (redis_cache): (pid, cache
# or None). Django keeps cache objects per context, and under ASGI every request is a context
# of its own, so `caches["default"]` built a new cache object on each request's first use, and
# with it what is kept per cache object (per_cache: the meter stores, the client handle). One
# object per process serves every thread: config.cache.RedisCache shares its client, and
# neither it nor what per_cache keeps holds anything of one request.
_shared: tuple[int, RedisCache | None] | None = None


def redis_cache() -> RedisCache | None:
    """The default cache when it is Redis, else None (the local-memory default). The same
    object for every thread of the process (a forked child builds its own)."""
    global _shared
    shared = _shared
    if shared is None or shared[0] != os.getpid():
        cache = caches.create_connection("default")
        shared = _shared = (os.getpid(), cache if isinstance(cache, RedisCache) else None)
    return shared[1]


@receiver(setting_changed)
def _forget_shared_cache(*, setting, **kwargs) -> None:
    """A test that changes CACHES (override_settings) gets the default cache it names."""
    global _shared
    if setting == "CACHES":
        _shared = None


def per_cache(cache, name: str, build):
    """The object `build(cache)` made for this cache object on first use: once per process for
    redis_cache()'s, once per context for another."""
    attribute = f"_control_plane_{name}"
    found = cache.__dict__.get(attribute)
    if found is None:
        found = cache.__dict__[attribute] = build(cache)
    return found


def redis_client(cache: RedisCache):
    """The cache's writer client (one per process and pool: config.cache.RedisCacheClient)."""
    return cache._cache.get_client(write=True)
