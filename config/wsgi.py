"""The WSGI application (gunicorn's sync workers, `manage.py runserver`). Once it is built,
what it loaded is frozen out of the garbage collector's walks (config.memory)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from config.connections import limit_statement_time
from config.memory import freeze_loaded_objects

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

# Before the first connection: web statements are bounded (config.connections).
limit_statement_time(settings.DATABASES, settings.DATABASE_STATEMENT_TIMEOUT)
application = get_wsgi_application()
freeze_loaded_objects()
