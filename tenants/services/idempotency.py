"""Idempotency keys: pruning the expired ones (tenants.idempotency stores and answers them)."""

from django.db import transaction
from django.utils import timezone

from ..models import IdempotencyKey

PRUNE_BATCH_SIZE = 1000


def idempotency_keys_prune(*, now=None, batch_size: int = PRUNE_BATCH_SIZE) -> int:
    """Delete the keys older than IDEMPOTENCY_KEY_TTL_HOURS, in batches; returns how many went.

    Safe to run twice at once: each batch deletes by id, and counts only the rows it deleted.
    Not audited: an expired key already counts as never sent (tenants.idempotency), so
    deleting it changes no tenant's state."""
    now = now or timezone.now()
    removed = 0
    while True:
        ids = list(
            IdempotencyKey.objects.expired(now=now)
            .order_by()
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return removed
        with transaction.atomic():
            deleted, _ = IdempotencyKey.objects.filter(pk__in=ids).delete()
        removed += deleted
