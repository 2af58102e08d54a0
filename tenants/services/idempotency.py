"""Idempotency keys: pruning the expired ones (tenants.idempotency stores and answers them)."""

from django.utils import timezone

from config.db import delete_in_batches

from ..models import IdempotencyKey

PRUNE_BATCH_SIZE = 1000


def idempotency_keys_prune(*, now=None, batch_size: int = PRUNE_BATCH_SIZE) -> int:
    """Delete the keys older than IDEMPOTENCY_KEY_TTL_HOURS, in batches; returns how many went.

    Safe to run twice at once (config.db.delete_in_batches: by id, counting only the rows it
    deleted). Not audited: an expired key already counts as never sent (tenants.idempotency),
    so deleting it changes no tenant's state."""
    expired = IdempotencyKey.objects.expired(now=now or timezone.now())
    return delete_in_batches(expired, batch_size=batch_size)
