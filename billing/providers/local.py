"""The local payment provider: the embedded default, complete on its own and offline.

It is a real implementation of the interface, not a mock: the hosted checkout page is served
by the control plane (`GET /billing/checkout/<session_id>`), charges and refunds follow the
documented test payment methods, and what happens on the page reaches billing as a signed
event through the same entry point as any provider's webhook
(billing.services.provider_events.provider_event_receive), signature and all.

Test payment methods (the names Stripe uses for its own):

    pm_card_visa                            succeeds   (visa ending 4242)
    pm_card_mastercard                      succeeds   (mastercard ending 4444)
    pm_card_chargeDeclined                  declined   card_declined
    pm_card_chargeDeclinedInsufficientFunds declined   insufficient_funds

Any other method is refused as unknown (400). A charge's id is derived from its idempotency
key, so a retry with the same key is the same charge. Events are signed with
BILLING_LOCAL_WEBHOOK_SECRET (by default derived from SECRET_KEY).
"""

import hashlib
import hmac
import json
import secrets
import time

from django.conf import settings
from django.urls import reverse

from .base import (
    ChargeResult,
    InvalidEvent,
    PaymentMethodInvalid,
    PaymentProvider,
    ProviderEventData,
    RefundResult,
    sign,
    verify,
)

# method -> (label, decline code, decline message); no decline code: it succeeds.
TEST_PAYMENT_METHODS = {
    "pm_card_visa": ("visa ending 4242", "", ""),
    "pm_card_mastercard": ("mastercard ending 4444", "", ""),
    "pm_card_chargeDeclined": ("visa ending 0002", "card_declined", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "visa ending 9995",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
}
SIGNATURE_HEADER = "Local-Signature"


def webhook_secret() -> str:
    """The secret events are signed with: the setting, else one derived from SECRET_KEY (so a
    development install needs no configuration and no two installs share one)."""
    if settings.BILLING_LOCAL_WEBHOOK_SECRET:
        return settings.BILLING_LOCAL_WEBHOOK_SECRET
    derived = hmac.new(settings.SECRET_KEY.encode(), b"billing.local-provider", hashlib.sha256)
    return f"whsec_{derived.hexdigest()}"


def _derived_id(prefix: str, key: str) -> str:
    return f"{prefix}_local_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class LocalProvider(PaymentProvider):
    name = "local"
    signature_header = SIGNATURE_HEADER

    def method(self, payment_method: str) -> tuple[str, str, str]:
        """The test method's (label, decline code, decline message), or PaymentMethodInvalid."""
        try:
            return TEST_PAYMENT_METHODS[payment_method]
        except KeyError:
            raise PaymentMethodInvalid(
                f"No such payment method: {payment_method[:64]!r}.",
                details={"payment_method_id": [f"One of: {', '.join(TEST_PAYMENT_METHODS)}."]},
            ) from None

    def charge(self, *, amount_cents, currency, payment_method, idempotency_key, description):
        label, code, message = self.method(payment_method)
        return ChargeResult(
            succeeded=not code,
            payment_id=_derived_id("py", idempotency_key),
            method_label=label,
            failure_code=code,
            failure_message=message,
        )

    def refund(self, *, payment_id, amount_cents, idempotency_key):
        return RefundResult(refund_id=_derived_id("re", idempotency_key))

    def checkout_url(self, *, session_id, request=None):
        path = reverse("billing-checkout-page", kwargs={"session_id": session_id})
        return request.build_absolute_uri(path) if request is not None else path

    def signed_event(self, event_type: str, data: dict) -> tuple[bytes, dict[str, str]]:
        """A new event as the provider sends it: the body and its signature header."""
        body = json.dumps(
            {
                "id": f"evt_local_{secrets.token_hex(12)}",
                "type": event_type,
                "created": int(time.time()),
                "data": data,
            },
            separators=(",", ":"),
        ).encode()
        return body, {SIGNATURE_HEADER: sign(webhook_secret(), body)}

    def verify_event(self, *, body, headers):
        verify(webhook_secret(), body, headers.get(SIGNATURE_HEADER))
        try:
            event = json.loads(body)
        except ValueError:
            raise InvalidEvent("The event is not JSON.") from None
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and isinstance(event.get("type"), str)
            and isinstance(event.get("data"), dict)
        ):
            raise InvalidEvent("The event lacks its id, type or data.")
        return ProviderEventData(id=event["id"][:255], type=event["type"][:100], data=event["data"])
