from django.core.management.base import BaseCommand, CommandError

from security.services import audit_chain_check
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Verify the audit chain of every organization (or those named by slug): each new broken "
        "link opens a critical system_compromise incident there, once. Beat runs the same "
        "daily (security.detect-broken-chains)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slugs", nargs="*", help="Organizations to verify (default: all).")

    def handle(self, *args, slugs, **options):
        tenants = Tenant.objects.order_by("slug")
        if slugs:
            tenants = tenants.filter(slug__in=slugs)
            missing = sorted(set(slugs) - set(tenants.values_list("slug", flat=True)))
            if missing:
                raise CommandError(f"No organization with slug: {', '.join(missing)}")
        broken = 0
        for tenant in tenants.iterator():
            for incident in audit_chain_check(tenant=tenant):
                broken += 1
                self.stdout.write(f"{tenant.slug}: chain broken, incident {incident.pk} opened")
        self.stdout.write(f"{tenants.count()} chain(s) verified, {broken} new incident(s).")
