from django.apps import AppConfig


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"

    def ready(self):
        # Registers the OpenAPI extensions for our authentication classes.
        from . import schema  # noqa: F401
