from django.core.management.base import BaseCommand

from billing import services


class Command(BaseCommand):
    help = (
        "Mark unpaid invoices overdue after their due date (their subscriptions past due) and "
        "suspend organizations overdue longer than BILLING_SUSPEND_AFTER_DAYS: the job Celery "
        "beat runs. Safe to run while beat runs it too."
    )

    def handle(self, *args, **options):
        report = services.dunning_run()
        for number in report.overdue:
            self.stdout.write(f"Overdue: {number}.")
        for slug in report.suspended:
            self.stdout.write(f"Suspended: {slug} (payment overdue).")
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(report.overdue)} invoice(s) overdue, {len(report.suspended)} "
                "organization(s) suspended."
            )
        )
