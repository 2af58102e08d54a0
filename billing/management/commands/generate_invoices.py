from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing import services
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Open the next period of every subscription whose period has ended and issue its "
        "invoice: the job Celery beat runs. Safe to run while beat runs it too."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", metavar="SLUG", help="only this organization")
        parser.add_argument(
            "--dry-run", action="store_true", help="list the subscriptions due, change nothing"
        )

    def handle(self, *args, tenant=None, dry_run=False, **options):
        target = None
        if tenant:
            target = Tenant.objects.filter(slug=tenant.lower()).first()
            if target is None:
                raise CommandError(f"No tenant with slug {tenant!r}.")
        if dry_run:
            due = services.subscriptions_due(now=timezone.now()).select_related("tenant", "plan")
            if target is not None:
                due = due.filter(tenant=target)
            count = 0
            for subscription in due:
                count += 1
                self.stdout.write(
                    f"Would renew {subscription.tenant.slug} ({subscription.plan.code}, "
                    f"period ended {subscription.current_period_end:%Y-%m-%d %H:%M}Z)."
                )
            self.stdout.write(f"{count} subscription(s) due.")
            return
        report = services.subscriptions_renew_due(tenant=target)
        for invoice in report.invoices:
            self.stdout.write(
                f"Issued {invoice.number} to {invoice.tenant.slug}: "
                f"{invoice.total_cents / 100:,.2f} {invoice.currency}."
            )
        for pk in report.failed:
            self.stderr.write(f"Subscription {pk} failed (see the log); the next run retries it.")
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.renewed} subscription(s) renewed, {len(report.invoices)} invoice(s) "
                "issued."
            )
        )
        if report.failed:
            raise CommandError(f"{len(report.failed)} subscription(s) failed.")
