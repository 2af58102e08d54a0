from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tenants.models import Tenant
from tenants.services import quotas


class Command(BaseCommand):
    help = (
        "Reset the periodic quotas (api_calls, tokens) of every tenant whose quota period has "
        "ended: the job Celery beat runs. With --tenant, reset that tenant now even if not due."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", metavar="SLUG", help="reset this tenant now")
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be reset, change nothing"
        )

    def handle(self, *args, tenant=None, dry_run=False, **options):
        if tenant:
            try:
                target = Tenant.objects.get(slug=tenant.lower())
            except Tenant.DoesNotExist:
                raise CommandError(f"No tenant with slug {tenant!r}.") from None
            if dry_run:
                self.stdout.write(f"Would reset {target.slug} now.")
                return
            quotas.quota_reset(tenant=target, actor=None)
            self.stdout.write(self.style.SUCCESS(f"Reset {target.slug}."))
            return
        if dry_run:
            due = list(quotas.quotas_due(now=timezone.now()).values_list("slug", "quota_reset_at"))
            for slug, reset_at in due:
                self.stdout.write(f"Would reset {slug} (due {reset_at:%Y-%m-%d %H:%M}Z).")
            self.stdout.write(f"{len(due)} tenant(s) due.")
            return
        reset = quotas.quotas_reset_due()
        for slug in reset:
            self.stdout.write(f"Reset {slug}.")
        self.stdout.write(self.style.SUCCESS(f"{len(reset)} tenant(s) reset."))
