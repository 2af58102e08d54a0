from celery import shared_task

from . import services


@shared_task(name="accounts.tasks.purge_expired_auth_tokens")
def purge_expired_auth_tokens() -> int:
    """Beat job (hourly): delete expired hashed tokens, JWT refresh-token records and
    sessions."""
    return services.auth_tokens_purge_expired()


@shared_task(name="accounts.tasks.flush_api_key_usage")
def flush_api_key_usage() -> int:
    """Beat job (every API_KEY_USAGE_FLUSH_SECONDS): write counted API-key usage to the rows."""
    return services.api_key_usage_flush()
