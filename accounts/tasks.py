from celery import shared_task

from . import services


@shared_task(name="accounts.tasks.purge_expired_auth_tokens")
def purge_expired_auth_tokens() -> int:
    """Beat job (hourly): delete expired API tokens."""
    return services.auth_tokens_purge_expired()
