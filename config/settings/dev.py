"""Local development: the embedded defaults, debug on."""

from .base import *  # noqa: F403
from .base import REST_FRAMEWORK, env

DEBUG = env.bool("DEBUG", default=True)
# The browsable API, with session login at /api-auth/login/, for exploring by hand.
BROWSABLE_API = True
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_RENDERER_CLASSES": [
        *REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"],
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
