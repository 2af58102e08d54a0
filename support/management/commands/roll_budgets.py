from django.core.management.base import BaseCommand

from support.services import budgets_roll


class Command(BaseCommand):
    help = (
        "Move every budget whose period has ended into the period holding now (spent back to "
        "zero, alerts re-armed), recording budget.period_rolled; safe to run twice. Beat runs "
        "the same every five minutes (support.roll-budgets)."
    )

    def handle(self, *args, **options):
        self.stdout.write(f"{budgets_roll()} budget(s) rolled into their next period.")
