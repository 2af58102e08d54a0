from django.apps import AppConfig


class SecurityConfig(AppConfig):
    # A model without a declared primary key is refused, never given a bigint one: models
    # take their UUID `id` from config.models.UUIDModel (see ExplicitPrimaryKeyRequired).
    default_auto_field = "config.models.ExplicitPrimaryKeyRequired"
    name = "security"
