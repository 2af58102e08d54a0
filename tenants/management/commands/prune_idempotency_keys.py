from django.core.management.base import BaseCommand

from tenants.services.idempotency import idempotency_keys_prune


class Command(BaseCommand):
    help = (
        "Delete the Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_HOURS: the job Celery beat "
        "runs hourly. An expired key already counts as never sent; this frees its row."
    )

    def handle(self, *args, **options):
        deleted = idempotency_keys_prune()
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} expired Idempotency-Key(s)."))
