"""Recording audit events. Every state-changing service calls `record()` inside its transaction,
so an event exists exactly when its change committed."""

import re
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from config import request_context
from tenants.models import Tenant

from .models import ActorType, AuditEvent

REDACTED = "[redacted]"
# A key is secret when any of its parts names a secret, or its last part is a credential noun:
# "password_hash", "private_key", "access_token", "X-Webhook-Signature" are; "tokens_used",
# "key_prefix" are not.
_SECRET_PARTS = frozenset(
    {"password", "passwd", "passphrase", "secret", "authorization", "credential", "credentials"}
)
_SECRET_LAST_PARTS = frozenset({"key", "apikey", "token", "signature", "pwd"})
_WORD_BOUNDARY = re.compile(r"[^a-zA-Z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_key(key: str) -> bool:
    parts = [part.lower() for part in _WORD_BOUNDARY.split(str(key)) if part]
    if not parts:
        return False
    return bool(_SECRET_PARTS.intersection(parts)) or parts[-1] in _SECRET_LAST_PARTS


class AuditOutsideTransaction(RuntimeError):
    """record() was called outside a transaction: the event could outlive a rolled-back change."""


def redact(value: Any) -> Any:
    """A copy of a payload with secret-looking keys' values replaced."""
    if isinstance(value, Mapping):
        return {
            str(key): REDACTED if is_secret_key(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def record(
    *,
    tenant: Tenant | None,
    event_type: str,
    actor=None,
    actor_type: str | None = None,
    actor_label: str = "",
    payload: Mapping | None = None,
) -> AuditEvent:
    """Append an event to the tenant's chain (or the platform chain when tenant is None)."""
    if not transaction.get_connection().in_atomic_block:
        raise AuditOutsideTransaction(
            f"record({event_type!r}) must run inside the service's transaction"
        )
    context = request_context.current()
    if actor is not None and getattr(actor, "is_authenticated", False):
        actor_type = actor_type or ActorType.USER
        actor_label = actor_label or actor.email
    else:
        actor = None
        actor_type = actor_type or ActorType.SYSTEM
    return AuditEvent.objects.create(
        tenant=tenant,
        event_type=event_type,
        actor=actor,
        actor_type=actor_type,
        actor_label=actor_label[:254],
        payload=redact(payload or {}),
        request_id=context.request_id,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        created_at=timezone.now(),
    )
