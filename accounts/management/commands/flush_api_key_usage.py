from django.core.management.base import BaseCommand

from accounts.services import api_key_usage_flush


class Command(BaseCommand):
    help = (
        "Write the API-key usage counted in the cache to the database (the job Celery beat runs "
        "every API_KEY_USAGE_FLUSH_SECONDS)."
    )

    def handle(self, *args, **options):
        written = api_key_usage_flush()
        self.stdout.write(self.style.SUCCESS(f"Flushed {written} API-key request(s)."))
