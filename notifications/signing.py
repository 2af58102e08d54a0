"""Webhook signing secrets and signatures (the Standard Webhooks scheme).

A secret is `whsec_` + base64 of 32 random bytes; the HMAC key is the decoded bytes. Each
delivery carries:

    webhook-id: <event id>                     (stable across retries: de-duplicate on it)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>
    X-Webhook-Signature: sha256=<hex HMAC-SHA256(key, body)>

While a rotated-out secret is still valid, both headers carry a second signature, space
separated, made with it.

Secrets are stored encrypted (Fernet, a key derived from SECRET_KEY; SECRET_KEY_FALLBACKS still
decrypt, so rotating SECRET_KEY the Django way keeps the secrets readable).
"""

import base64
import hashlib
import hmac
import secrets
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 32
# Standard Webhooks accepts keys of 24 to 64 bytes; a secret supplied at creation must fit.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


class InvalidSecret(ValueError):
    pass


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret; InvalidSecret when it is not one."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"A signing secret starts with {SECRET_PREFIX!r}.")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError as error:
        raise InvalidSecret("A signing secret is whsec_ followed by base64.") from error
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"A signing secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes "
            f"(this one {len(key)})."
        )
    return key


def standard_signature(key: bytes, *, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def body_signature(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def signature_headers(
    keys: list[bytes], *, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The signing headers of one delivery, with one signature per key (current first)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(key, msg_id=msg_id, timestamp=timestamp, body=body) for key in keys
        ),
        "X-Webhook-Signature": " ".join(body_signature(key, body) for key in keys),
    }


# Encryption at rest ----------------------------------------------------------------------------


def _fernet_key(secret_key: str) -> bytes:
    digest = hashlib.sha256(b"control-plane webhook secrets\x00" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@cache
def _cipher(secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(key)) for key in (secret_key, *fallbacks)])


def cipher() -> MultiFernet:
    return _cipher(settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ())))


def encrypt(secret: str) -> str:
    return cipher().encrypt(secret.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return cipher().decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise InvalidSecret(
            "The stored webhook secret cannot be decrypted: SECRET_KEY changed without the "
            "old one in SECRET_KEY_FALLBACKS. Rotate the endpoint's secret."
        ) from error
