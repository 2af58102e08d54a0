"""The ASGI application: the serving model of the LLM gateway (docs/gateway.md).

`POST /api/v1/chat/completions` is served by playground.serving.GatewayFront: the platform's
request path in one hop to a long-lived thread, then the LLM call, which takes seconds, waits on
the event loop, holding no worker and no thread. Every other HTTP request runs in one hop on the
same long-lived threads. Each of those threads, and each of the gateway's settlement threads,
keeps its database connection between requests (CONN_MAX_AGE), as a WSGI server's threads do
(docs/performance.md, "Kept connections under ASGI"). Once the application is built, what it
loaded is frozen out of the garbage collector's walks (config.memory).

    gunicorn config.asgi:application -k config.workers.BalancedUvicornWorker --workers 4
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from config.connections import limit_statement_time
from config.memory import freeze_loaded_objects
from playground.serving import GatewayFront

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

# Before the first connection: web statements are bounded (config.connections).
limit_statement_time(settings.DATABASES, settings.DATABASE_STATEMENT_TIMEOUT)
application = GatewayFront(get_asgi_application())
freeze_loaded_objects()
