"""The billing app's configuration.

Every project app refuses a model without a declared primary key (below), so each model takes
its UUID `id` from its base class. `ready()` is added only for a registration or a check that
has no other place (accounts registers its OpenAPI extensions there; billing checks that
BILLING_PAYMENT_PROVIDER names a provider, which the settings cannot import); side effects of a
change are the service's, called explicitly, not signal receivers connected here.
"""

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class BillingConfig(AppConfig):
    # A model without a declared primary key is refused, never given a bigint one: models
    # take their UUID `id` from config.models.UUIDModel (see ExplicitPrimaryKeyRequired).
    default_auto_field = "config.models.ExplicitPrimaryKeyRequired"
    name = "billing"

    def ready(self):
        from .providers import PROVIDERS

        # A name that names none made every checkout and charge a 404: stop here instead.
        name = settings.BILLING_PAYMENT_PROVIDER
        if name not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            raise ImproperlyConfigured(f"BILLING_PAYMENT_PROVIDER must be {known}; it is {name!r}.")
