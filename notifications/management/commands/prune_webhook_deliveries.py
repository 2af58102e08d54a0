from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from notifications.services import webhook_deliveries_prune


class Command(BaseCommand):
    help = (
        "Delete webhook deliveries, their attempts and events older than "
        "WEBHOOK_DELIVERY_RETENTION_DAYS (the job Celery beat runs daily)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"keep this many days (default {settings.WEBHOOK_DELIVERY_RETENTION_DAYS})",
        )

    def handle(self, *args, days=None, **options):
        if days is not None and days < 0:
            raise CommandError("--days must be 0 or more.")
        removed = webhook_deliveries_prune(older_than_days=days)
        self.stdout.write(
            self.style.SUCCESS(
                f"Pruned {removed['deliveries']} deliveries and {removed['events']} events."
            )
        )
