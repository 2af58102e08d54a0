"""The ASGI application: the serving model of the LLM gateway (docs/gateway.md).

`POST /api/v1/chat/completions` is an async view: under ASGI an LLM call that takes seconds
waits on the event loop, holding no worker and no thread. Every other view is sync and runs on
a thread of its own per request, which is why database connections come from a pool here
(DATABASE_POOL; a persistent connection per thread would be opened per request).

    gunicorn config.asgi:application -k uvicorn_worker.UvicornWorker --workers 4
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
os.environ.setdefault("DATABASE_POOL", "true")

application = get_asgi_application()
