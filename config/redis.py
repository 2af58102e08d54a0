"""The Redis client behind the default cache, for the Lua scripts of counters and limits."""

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache


def redis_cache() -> RedisCache | None:
    """The default cache when it is Redis, else None (the local-memory default)."""
    cache = caches["default"]
    return cache if isinstance(cache, RedisCache) else None


def redis_client(cache: RedisCache):
    """The cache's writer client. Django builds a new client object on every get_client()
    call (about 0.1 ms here); the connection pool is shared, so one per cache object (and
    so per thread) is kept."""
    client = cache.__dict__.get("_control_plane_client")
    if client is None:
        client = cache.__dict__["_control_plane_client"] = cache._cache.get_client(write=True)
    return client
