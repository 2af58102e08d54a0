"""The Redis cache backend: Django's, with one client (and so one connection pool) per process.

Django keeps cache objects per context (django.core.cache.caches is context-local). Under WSGI
a context is a thread, which lives long; under ASGI every request is a context of its own, so
Django's RedisCache built a new client, a new connection pool and a new TCP connection (with
its HELLO handshake) for every request. Sharing the client is safe: redis-py's connection pool
is thread-safe and resets itself in a forked child.
"""

import os
import threading

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.utils.functional import cached_property

_clients: dict = {}
_lock = threading.Lock()


class RedisCache(DjangoRedisCache):
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
