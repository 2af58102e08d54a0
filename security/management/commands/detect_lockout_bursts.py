from django.core.management.base import BaseCommand

from security.services import login_lockout_bursts_check


class Command(BaseCommand):
    help = (
        "Open an unauthorized_access incident in each organization whose members had at least "
        "SECURITY_LOCKOUT_BURST_THRESHOLD locked-out logins in the current or previous window "
        "(once per window). Beat runs the same every 5 minutes (security.detect-lockout-bursts)."
    )

    def handle(self, *args, **options):
        opened = login_lockout_bursts_check()
        for incident in opened:
            self.stdout.write(f"{incident.tenant.slug}: incident {incident.pk} opened")
        self.stdout.write(f"{len(opened)} lockout burst incident(s) opened.")
