"""Production: PostgreSQL, Redis, real secrets. Refuses to start on a missing or default key."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import (
    _SECONDS_MAX,
    INSECURE_DEV_SECRET_KEY,
    MIDDLEWARE,
    STORAGES,
    env,
    env_bool,
    env_hosts,
    env_int,
    env_list,
    matching,
)

DEBUG = False
SECRET_KEY = env("SECRET_KEY", default="")
if not SECRET_KEY or SECRET_KEY == INSECURE_DEV_SECRET_KEY or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 50 characters in production "
        "(python -c 'import secrets; print(secrets.token_urlsafe(64))')."
    )
ALLOWED_HOSTS = env_hosts("ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production: the host names served.")

# Static files (admin, API docs) served by the app itself, compressed and cache-busted.
MIDDLEWARE = [*MIDDLEWARE]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    # WhiteNoise, async-capable (config.middleware): ASGI keeps the gateway on the event loop.
    "config.middleware.StaticFilesMiddleware",
)
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Load balancer probes come in over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health/?$", r"^ready/?$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365, maximum=_SECONDS_MAX)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# Origins with their scheme (Django compares them whole): one without never matched, and a
# form posted from it (the admin behind another host name) was refused as forged.
CSRF_TRUSTED_ORIGINS = env_list(
    "CSRF_TRUSTED_ORIGINS",
    [],
    valid=matching(r"https?://(\*\.)?([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"),
    expected="origins with their scheme (https://admin.example.com)",
)
X_FRAME_OPTIONS = "DENY"

EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
