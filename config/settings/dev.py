"""Local development: the embedded defaults, debug on."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE, REST_FRAMEWORK, env_bool

DEBUG = env_bool("DEBUG", True)
# The browsable API, with session login at /api-auth/login/, for exploring by hand. It shows
# successful reads only: errors and the answers to writes stay JSON (tenants.api).
BROWSABLE_API = True
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_RENDERER_CLASSES": [
        *REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"],
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
# Static files through WhiteNoise, as in production, instead of runserver's own handler: that
# handler answers a missing file with Django's HTML debug page, outside every middleware, where
# the JSON error envelope cannot reach it.
INSTALLED_APPS = ["whitenoise.runserver_nostatic", *INSTALLED_APPS]
MIDDLEWARE = [*MIDDLEWARE]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    # WhiteNoise, async-capable (config.middleware): ASGI keeps the gateway on the event loop.
    "config.middleware.StaticFilesMiddleware",
)
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
# Local receivers (http://127.0.0.1:...) are what development points webhooks at.
WEBHOOKS_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOKS_ALLOW_PRIVATE_TARGETS", True)
WEBHOOKS_ALLOW_HTTP = env_bool("WEBHOOKS_ALLOW_HTTP", True)
