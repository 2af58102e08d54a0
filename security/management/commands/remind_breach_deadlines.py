from django.core.management.base import BaseCommand

from security.services import breach_notifications_remind


class Command(BaseCommand):
    help = (
        "Send the due reminders of personal data breaches: 24 hours before the 72-hour "
        "authority deadline, and once it passed unmet, each once. Beat runs the same every "
        "10 minutes (security.remind-breach-deadlines)."
    )

    def handle(self, *args, **options):
        self.stdout.write(f"{breach_notifications_remind()} breach reminder(s) sent.")
