"""Payment providers: the interface (base) and its implementations. `local` is the embedded
default and complete on its own (local.py); BILLING_PAYMENT_PROVIDER names the one new
checkouts and charges use."""

from django.conf import settings
from rest_framework.exceptions import NotFound

from .base import PaymentProvider
from .local import LocalProvider

PROVIDERS: dict[str, type[PaymentProvider]] = {"local": LocalProvider}


def provider(name: str | None = None) -> PaymentProvider:
    """The provider called `name` (default: BILLING_PAYMENT_PROVIDER); an unknown one is 404."""
    name = name or settings.BILLING_PAYMENT_PROVIDER
    try:
        return PROVIDERS[name]()
    except KeyError:
        raise NotFound(f"No payment provider {name[:32]!r}.") from None
