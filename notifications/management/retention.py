"""What the notifications app's retention commands share: `--days`, defaulting to a setting."""

from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class RetentionCommand(BaseCommand):
    """A command that deletes what is older than `--days` (default: the setting
    `retention_setting` names). Each command defines `prune(days)`, which deletes and returns
    the line to print."""

    retention_setting: str
    prune: Callable[[int | None], str]

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help=f"keep this many days (default {getattr(settings, self.retention_setting)})",
        )

    def handle(self, *args, days=None, **options):
        if days is not None and days < 0:
            raise CommandError("--days must be 0 or more.")
        self.stdout.write(self.style.SUCCESS(self.prune(days)))
