from django.core.management.base import BaseCommand

from notifications.services import notifications_deliver_overdue
from notifications.services.user_notifications import OVERDUE_BATCH


class Command(BaseCommand):
    help = (
        "Send the email and SMS notifications still pending NOTIFICATIONS_RETRY_AFTER_SECONDS "
        "after their last change (their task lost, their channel down at the last try), and "
        "give up those pending NOTIFICATIONS_DELIVERY_HOURS, and send again those whose worker "
        "stopped while sending them: the job Celery beat runs every "
        "minute, run until a batch sends nothing."
    )

    def handle(self, *args, **options):
        sent = expired = 0
        while True:
            run = notifications_deliver_overdue(limit=OVERDUE_BATCH)
            sent, expired = sent + run.sent, expired + run.expired
            # Not `sent < OVERDUE_BATCH`: a batch whose channel went down, or whose recipients
            # were past their allowance, sends fewer while more may be waiting behind it.
            if not run.sent:
                break
        self.stdout.write(
            self.style.SUCCESS(f"Sent {sent} notifications; gave up {expired} past their window.")
        )
