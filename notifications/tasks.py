"""Celery tasks of the notifications app: thin, each calls a service.

`send_webhooks` is the outbox relay: beat runs it every WEBHOOK_RELAY_INTERVAL_SECONDS and a
commit that writes deliveries queues it (notifications.services.events), so no delivery waits
on a Celery countdown (a Redis broker redelivers long countdowns).
"""

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from . import services
from .services.events import RELAY_REQUESTED_KEY


@shared_task(name="notifications.tasks.send_webhooks")
def send_webhooks() -> dict:
    """Send the due deliveries; stops claiming after a beat interval's worth of work, and
    then gives back what still waits behind a slow endpoint, so runs do not pile up (the next
    run goes on where this one stopped)."""
    # Cleared first: a delivery committed from now on queues a new run.
    cache.delete(RELAY_REQUESTED_KEY)
    report = services.webhook_deliveries_send(
        time_budget_seconds=max(settings.WEBHOOK_RELAY_INTERVAL_SECONDS, 1)
    )
    return {
        "claimed": report.claimed,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "given_back": report.given_back,
        "disabled_endpoints": len(report.disabled_endpoints),
    }


@shared_task(name="notifications.tasks.prune_webhook_deliveries")
def prune_webhook_deliveries() -> dict:
    """Beat job (daily): delete deliveries and events older than the retention."""
    return services.webhook_deliveries_prune()


@shared_task(name="notifications.tasks.prune_notifications")
def prune_notifications() -> int:
    """Beat job (daily): delete notifications older than NOTIFICATIONS_RETENTION_DAYS."""
    return services.notifications_prune()


@shared_task(name="notifications.tasks.prune_phone_confirmations")
def prune_phone_confirmations() -> int:
    """Beat job (hourly): delete phone confirmation codes older than a day."""
    return services.phone_confirmations_prune()


@shared_task(name="notifications.tasks.deliver_notifications")
def deliver_notifications(notification_ids: list[str]) -> int:
    """Send pending email and SMS notifications (queued on commit)."""
    return services.notifications_deliver(notification_ids=notification_ids)


@shared_task(name="notifications.tasks.deliver_overdue_notifications")
def deliver_overdue_notifications() -> dict:
    """Beat job (every minute): send the email and SMS notifications still pending (their
    task's message lost, or their channel down at the last try); give up those pending for
    NOTIFICATIONS_DELIVERY_HOURS."""
    return vars(services.notifications_deliver_overdue())
