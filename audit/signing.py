"""The Ed25519 key that signs checkpoints. Anyone with the public key can verify them, so an
export is verifiable offline without any secret."""

import base64
import hashlib
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings


@cache
def _private_key(configured: str, secret_key: str) -> Ed25519PrivateKey:
    if configured:
        seed = base64.b64decode(configured)
        if len(seed) != 32:
            raise ValueError("AUDIT_CHECKPOINT_KEY must be 32 bytes, base64-encoded")
    else:
        seed = hashlib.sha256(b"audit-checkpoint-key:" + secret_key.encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


def private_key() -> Ed25519PrivateKey:
    return _private_key(settings.AUDIT_CHECKPOINT_KEY, settings.SECRET_KEY)


def public_key() -> str:
    """The verifying key, base64 of its 32 raw bytes."""
    raw = (
        private_key()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def key_id() -> str:
    return hashlib.sha256(public_key().encode()).hexdigest()[:16]


def sign(message: bytes) -> str:
    return base64.b64encode(private_key().sign(message)).decode()
