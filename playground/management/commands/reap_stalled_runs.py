from django.core.management.base import BaseCommand

from playground.services.reaper import stalled_jobs_reap


class Command(BaseCommand):
    help = (
        "Recover orchestration runs and workflow jobs whose worker died (an expired lease) or "
        "whose message was lost: queue them again to resume where they stopped, or fail those "
        "out of attempts (JOBS_MAX_ATTEMPTS). Beat runs the same every minute."
    )

    def handle(self, *args, **options):
        for kind, reaped in stalled_jobs_reap().items():
            self.stdout.write(f"{kind}: {reaped.requeued} queued again, {reaped.failed} failed")
