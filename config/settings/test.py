"""Test settings: PostgreSQL and Redis when DATABASE_URL / REDIS_URL are given (the test command
starts them), the embedded SQLite default otherwise (the smoke part)."""

from .base import *  # noqa: F403
from .base import PASSWORD_HASHERS, REST_FRAMEWORK

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
    },
}
CELERY_TASK_ALWAYS_EAGER = False
