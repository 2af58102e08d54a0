"""The Redis cache backend: Django's, with one client (and so one connection pool) per process,
and one redis-py client object per pool.

Django keeps cache objects per context (django.core.cache.caches is context-local). Under WSGI
a context is a thread, which lives long; under ASGI every request is a context of its own, so
Django's RedisCache built a new client, a new connection pool and a new TCP connection (with
its HELLO handshake) for every request. Sharing the client is safe: redis-py's connection pool
is thread-safe and resets itself in a forked child.

Django's client also built a new `redis.Redis` object on every cache call (get_client), and
redis-py's constructor fills a case-insensitive table of its response callbacks each time: a
tenth of the gateway's CPU went there for one `get_many` per call. A `redis.Redis` is only a
handle on its pool, safe to share, so one is kept per pool.
"""

import os
import threading

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient
from django.utils.functional import cached_property

_clients: dict = {}
_lock = threading.Lock()


class RedisCacheClient(DjangoRedisCacheClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._clients: dict = {}  # pool index -> redis.Redis

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            # Two threads may both build one here; either is fine, both use the same pool.
            client = self._clients[index] = self._client(
                connection_pool=self._get_connection_pool(write)
            )
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = RedisCacheClient

    @cached_property
    def _cache(self):
        key = (os.getpid(), tuple(self._servers), repr(sorted(self._options.items())))
        client = _clients.get(key)
        if client is None:
            with _lock:
                client = _clients.get(key)
                if client is None:
                    client = _clients[key] = self._class(self._servers, **self._options)
        return client
