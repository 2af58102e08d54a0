"""The Redis client behind the default cache, for the Lua scripts of counters and limits."""

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache


def redis_cache() -> RedisCache | None:
    """The default cache when it is Redis, else None (the local-memory default)."""
    cache = caches["default"]
    return cache if isinstance(cache, RedisCache) else None


def per_cache(cache, name: str, build):
    """The object `build(cache)` made for this cache object on first use. Cache objects are
    per thread (django.core.cache.caches), so what is kept here is too."""
    attribute = f"_control_plane_{name}"
    found = cache.__dict__.get(attribute)
    if found is None:
        found = cache.__dict__[attribute] = build(cache)
    return found


def redis_client(cache: RedisCache):
    """The cache's writer client (one per process and pool: config.cache.RedisCacheClient)."""
    return cache._cache.get_client(write=True)
