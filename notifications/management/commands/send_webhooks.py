from django.core.management.base import BaseCommand

from notifications.services import webhook_deliveries_send


class Command(BaseCommand):
    help = (
        "Run the webhook relay once: send every due delivery (the job Celery beat runs every "
        "few seconds), then report what was sent."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency", type=int, default=None, help="concurrent senders (default: setting)"
        )
        parser.add_argument(
            "--max", type=int, default=None, dest="max_deliveries", help="stop after this many"
        )

    def handle(self, *args, concurrency=None, max_deliveries=None, **options):
        report = webhook_deliveries_send(concurrency=concurrency, max_deliveries=max_deliveries)
        for endpoint_id in report.disabled_endpoints:
            self.stdout.write(self.style.WARNING(f"Disabled failing endpoint {endpoint_id}."))
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.claimed} deliveries sent: {report.succeeded} succeeded, "
                f"{report.failed} failed."
            )
        )
