"""The payment provider interface: what billing asks of a provider, and the signed events a
provider sends back.

A provider takes payments (`charge`), gives money back (`refund`), opens a hosted checkout
(`checkout_url`) and notifies billing of what happened there with events it signs. Billing
verifies each event before it acts (`verify_event`): a valid signature over the exact body,
made within the tolerance (so a captured event cannot be replayed later), and the event is
stored by its id so a provider's retry changes nothing (billing.services.provider_events).

Events are signed the way Stripe signs its own: the header carries the time and an
HMAC-SHA256 of `"<time>.<body>"` under the endpoint's secret, `t=<unix time>,v1=<hex>`.
"""

import hashlib
import hmac
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from config.exceptions import ApplicationError

# How old a signed event may be when it arrives (seconds), in either direction.
SIGNATURE_TOLERANCE_SECONDS = 300


class InvalidEvent(ApplicationError):
    """The event's signature or time is not acceptable: answered 400, nothing changes."""

    default_detail = "The event's signature could not be verified."


class PaymentMethodInvalid(ApplicationError):
    default_detail = "No such payment method."


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    # The provider's id of the charge: the same for a retry with the same idempotency key.
    payment_id: str
    # What the method is, for people ("visa ending 4242"); never a secret.
    method_label: str = ""
    failure_code: str = ""
    failure_message: str = ""


@dataclass(frozen=True)
class RefundResult:
    refund_id: str


@dataclass(frozen=True)
class ProviderEventData:
    """A verified event: its id (unique per provider), type and data."""

    id: str
    type: str
    data: dict = field(default_factory=dict)


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The signature header's value for `body`: `t=<unix time>,v1=<hex HMAC-SHA256>`."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str | None, *, now: float | None = None) -> None:
    """Raise InvalidEvent unless `header` signs `body` with `secret` within the tolerance.
    Several `v1` values are accepted (a provider rolling its secret sends both)."""
    if not header:
        raise InvalidEvent("The event carries no signature.")
    parts = [item.partition("=") for item in header.split(",")]
    timestamps = [value.strip() for key, _, value in parts if key.strip() == "t"]
    signatures = [value.strip() for key, _, value in parts if key.strip() == "v1"]
    raw = timestamps[0] if len(timestamps) == 1 else ""
    # ASCII digits only (str.isdigit also takes "²"), and a sane length (no huge integers).
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12) or not signatures:
        raise InvalidEvent("The event's signature header is malformed.")
    timestamp = int(raw)
    now = time.time() if now is None else now
    if abs(now - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        raise InvalidEvent("The event's signature is too old (or from the future).")
    expected = sign(secret, body, timestamp=timestamp).split("v1=", 1)[1].encode()
    if not any(
        hmac.compare_digest(expected, candidate.encode("utf-8", "surrogatepass"))
        for candidate in signatures
    ):
        raise InvalidEvent()


class PaymentProvider(ABC):
    """What billing asks of a payment provider. `name` is how settings and rows name it."""

    name = ""
    # The header its events carry their signature in.
    signature_header = ""

    @abstractmethod
    def charge(
        self,
        *,
        amount_cents: int,
        currency: str,
        payment_method: str,
        idempotency_key: str,
        description: str,
    ) -> ChargeResult:
        """Take `amount_cents` from `payment_method`. A decline is a result, not an error; the
        same `idempotency_key` never charges twice."""

    @abstractmethod
    def refund(self, *, payment_id: str, amount_cents: int, idempotency_key: str) -> RefundResult:
        """Give `amount_cents` of charge `payment_id` back; the same key refunds once."""

    @abstractmethod
    def checkout_url(self, *, session_id: str, request=None) -> str:
        """Where the payer completes the checkout session `session_id`."""

    @abstractmethod
    def verify_event(self, *, body: bytes, headers) -> ProviderEventData:
        """The event `body` carries, once its signature is verified (else InvalidEvent)."""
