from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from analytics import capture, services
from tenants.models import Tenant


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"--since: {value!r} is not an ISO date or date-time.") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Build the analytics roll-ups: without --since, fold in the facts recorded since the "
        "last run (what beat does every minute, analytics.build-rollups); with --since, rebuild "
        "every ended hour from that moment from the raw facts (hours past "
        "ANALYTICS_RAW_RETENTION_DAYS keep their roll-ups for requests and queries, whose raw "
        "facts are pruned). The hour under way is built once it ends. Safe to run while beat "
        "runs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="ISO date or date-time (UTC unless it says)")
        parser.add_argument("--tenant", help="a tenant's slug or id (default: every tenant)")

    def handle(self, *args, since=None, tenant=None, **options):
        flushed = capture.flush_request_facts()
        self.stdout.write(f"{flushed} counted request(s) written as facts.")
        if tenant and not since:
            raise CommandError("--tenant needs --since.")
        if since is None:
            built = services.rollups_build()
            self.stdout.write(f"{built} hour(s) rebuilt from new facts.")
            return
        moment = _moment(since)
        if moment > timezone.now():
            raise CommandError("--since is in the future.")
        chosen = None
        if tenant:
            chosen = Tenant.objects.filter(slug=tenant).first()
            if chosen is None:
                try:
                    chosen = Tenant.objects.filter(pk=tenant).first()
                except Exception:
                    chosen = None
            if chosen is None:
                raise CommandError(f"No tenant {tenant!r}.")
        built = services.rollups_rebuild(since=moment, tenant=chosen)
        self.stdout.write(f"{built} hour(s) rebuilt since {moment.isoformat()}.")
