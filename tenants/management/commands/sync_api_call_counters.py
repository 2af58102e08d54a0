from django.core.management.base import BaseCommand

from tenants.services.quotas import api_calls_sync


class Command(BaseCommand):
    help = (
        "Copy the live api_calls counters (Redis) into the database: the job Celery beat runs "
        "every minute. Does nothing without Redis, where the database is the counter."
    )

    def handle(self, *args, **options):
        written = api_calls_sync()
        self.stdout.write(self.style.SUCCESS(f"Copied {written} api_calls counter(s)."))
