"""The ASGI application: the serving model of the LLM gateway (docs/gateway.md).

`POST /api/v1/chat/completions` is served by playground.serving.GatewayFront: the platform's
request path in one hop to a long-lived thread, then the LLM call, which takes seconds, waits on
the event loop, holding no worker and no thread. Every other request goes to Django's ASGI
handler, where sync views run on a thread of their own per request, which is why database
connections come from a pool here (DATABASE_POOL; a persistent connection per thread would be
opened per request).

    gunicorn config.asgi:application -k uvicorn_worker.UvicornWorker --workers 4
"""

import os

from django.core.asgi import get_asgi_application

from playground.serving import GatewayFront

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
os.environ.setdefault("DATABASE_POOL", "true")

application = GatewayFront(get_asgi_application())
