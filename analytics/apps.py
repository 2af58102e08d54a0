"""The analytics app's configuration.

Every project app refuses a model without a declared primary key (below), so each model takes
its UUID `id` from its base class. `ready()` is added only for a registration that has no
other place (accounts registers its OpenAPI extensions there); side effects of a change are
the service's, called explicitly, not signal receivers connected here.
"""

from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    # A model without a declared primary key is refused, never given a bigint one: models
    # take their UUID `id` from config.models.UUIDModel (see ExplicitPrimaryKeyRequired).
    default_auto_field = "config.models.ExplicitPrimaryKeyRequired"
    name = "analytics"

    def ready(self):
        # The request path cannot import analytics (it sits below it): it calls the response
        # observers registered here (config.observers).
        from config import observers

        from .capture import observe_request

        observers.register(observe_request)
