from celery import shared_task

from .services import idempotency, quotas


@shared_task(name="tenants.tasks.reset_due_quotas")
def reset_due_quotas() -> list[str]:
    """Beat job: restart the periodic quotas of every tenant whose quota_reset_at has passed.
    Safe to run twice at once (each tenant is claimed by a conditional UPDATE)."""
    return quotas.quotas_reset_due()


@shared_task(name="tenants.tasks.sync_api_call_counters")
def sync_api_call_counters() -> int:
    """Beat job (every minute): copy the live api_calls counters (Redis) into the database."""
    return quotas.api_calls_sync()


@shared_task(name="tenants.tasks.prune_idempotency_keys")
def prune_idempotency_keys() -> int:
    """Beat job (hourly): delete the Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_HOURS."""
    return idempotency.idempotency_keys_prune()
