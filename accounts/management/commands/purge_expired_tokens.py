from django.core.management.base import BaseCommand

from accounts.services import auth_tokens_purge_expired


class Command(BaseCommand):
    help = (
        "Delete expired hashed tokens, JWT refresh-token records and sessions (the job Celery "
        "beat runs hourly)."
    )

    def handle(self, *args, **options):
        removed = auth_tokens_purge_expired()
        self.stdout.write(self.style.SUCCESS(f"Removed {removed} expired token(s) and session(s)."))
