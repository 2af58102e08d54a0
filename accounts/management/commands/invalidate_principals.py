from django.core.management.base import BaseCommand

from config.epoch import advance


class Command(BaseCommand):
    help = (
        "Make every process read its callers' users, tokens, memberships and tenants again on "
        "their next request (config.epoch). Writes through the application do this by "
        "themselves; run it after changing those tables outside it (psql)."
    )

    def handle(self, *args, **options):
        advance()
        self.stdout.write(self.style.SUCCESS("Kept caller lookups will be read again."))
