from django.core.management.base import BaseCommand

from support.services import sla_breaches_mark


class Command(BaseCommand):
    help = (
        "Mark the tickets whose SLA target has fallen due (each once), recording "
        "support.sla.breached and escalating breached URGENT and HIGH tickets. Beat runs the "
        "same every minute (support.mark-sla-breaches)."
    )

    def handle(self, *args, **options):
        self.stdout.write(f"{sla_breaches_mark()} ticket(s) marked breached.")
