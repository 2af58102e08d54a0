from notifications.management.retention import RetentionCommand
from notifications.services import notifications_prune


class Command(RetentionCommand):
    help = (
        "Delete notifications older than NOTIFICATIONS_RETENTION_DAYS, except those still to be "
        "sent (the job Celery beat runs daily)."
    )
    retention_setting = "NOTIFICATIONS_RETENTION_DAYS"

    def prune(self, days):
        return f"Pruned {notifications_prune(older_than_days=days)} notifications."
