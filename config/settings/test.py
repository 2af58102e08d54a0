"""Test settings: PostgreSQL and Redis when DATABASE_URL / REDIS_URL are given (the test command
starts them), the embedded SQLite default otherwise (the smoke part)."""

import atexit
import os
import shutil
import tempfile
from urllib.parse import urlsplit

from .base import *  # noqa: F403
from .base import API_PLAN_RATES, CACHES, PASSWORD_HASHERS, REDIS_URL, REST_FRAMEWORK, STORAGES

DEBUG = False
# Argon2 stays in the list (and is what base/production use); tests hash with MD5 for speed.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *PASSWORD_HASHERS]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {
        **REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
        "anon": "100000/min",
        "user": "100000/min",
        "auth": "100000/min",
        "stylesheet": "100000/min",
        # 10/min per tenant in production; tests/billing/test_api.py checks it with its own.
        "billing": "100000/min",
        "provider_webhooks": "100000/min",
    },
}
# Tests that check plan rates set them; the rest must not trip over the free tier's 100/hour.
API_PLAN_RATES = {
    tier: {**rates, "tenant": "1000000/hour"} for tier, rates in API_PLAN_RATES.items()
}
CELERY_TASK_ALWAYS_EAGER = False
# Tests deliver webhooks to receivers on loopback; the SSRF tests turn both off.
WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
WEBHOOKS_ALLOW_HTTP = True
# Tests change catalogue rows directly: read it on every call (a test sets a TTL to check it;
# benchmarks on these settings set the production default through the environment).
GATEWAY_CATALOGUE_CACHE_SECONDS = float(os.environ.get("GATEWAY_CATALOGUE_CACHE_SECONDS", "0"))

# Parallel test workers (pytest-xdist) each get their own Redis database, so one worker's
# cache.clear() and throttle counters never touch another's.
_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
# Their Celery broker too (databases 9 to 15): a real worker started by one test process must
# never take the messages of another's (another database's runs and jobs).
if REDIS_URL and _xdist_worker.startswith("gw"):
    _number = int(_xdist_worker[2:])
    _location = urlsplit(REDIS_URL)._replace(path=f"/{1 + _number % 8}").geturl()
    CACHES = {"default": {**CACHES["default"], "LOCATION": _location}}
    CELERY_BROKER_URL = urlsplit(REDIS_URL)._replace(path=f"/{9 + _number % 7}").geturl()

# Without Redis (the SQLite smoke run) tasks queued on commit go to an in-memory broker, not to
# files under var/.
if not REDIS_URL:
    CELERY_BROKER_URL = "memory://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
    # The web process flushes its own request counts after a request once this has passed
    # (analytics.capture): never in the middle of a test counting a request's SQL statements.
    ANALYTICS_FLUSH_SECONDS = 10**9

# Job artifacts go to a folder of this test process (a worker it starts is given the same one
# through ARTIFACTS_ROOT), never to the project's var/.
ARTIFACTS_ROOT = os.environ.get("ARTIFACTS_ROOT") or tempfile.mkdtemp(prefix="artifacts-")
if "ARTIFACTS_ROOT" not in os.environ:
    atexit.register(shutil.rmtree, ARTIFACTS_ROOT, ignore_errors=True)
ATTACHMENTS_ROOT = tempfile.mkdtemp(prefix="attachments-")
atexit.register(shutil.rmtree, ATTACHMENTS_ROOT, ignore_errors=True)
STORAGES = {
    **STORAGES,
    "artifacts": {
        **STORAGES["artifacts"],
        "OPTIONS": {"location": ARTIFACTS_ROOT, "base_url": None},
    },
    "attachments": {
        **STORAGES["attachments"],
        "OPTIONS": {"location": ATTACHMENTS_ROOT, "base_url": None},
    },
}
