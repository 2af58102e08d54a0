from notifications.management.retention import RetentionCommand
from notifications.services import webhook_deliveries_prune


class Command(RetentionCommand):
    help = (
        "Delete webhook deliveries, their attempts and events older than "
        "WEBHOOK_DELIVERY_RETENTION_DAYS (the job Celery beat runs daily)."
    )
    retention_setting = "WEBHOOK_DELIVERY_RETENTION_DAYS"

    def prune(self, days):
        removed = webhook_deliveries_prune(older_than_days=days)
        return f"Pruned {removed['deliveries']} deliveries and {removed['events']} events."
