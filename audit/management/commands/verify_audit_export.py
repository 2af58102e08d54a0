import json
import sys

from django.core.management.base import BaseCommand, CommandError

from audit.offline import ExportError, verify_export


class Command(BaseCommand):
    help = "Verify a JSON Lines audit export offline (no database); exit 1 if it is broken."
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument(
            "--public-key",
            help="base64 Ed25519 key obtained independently (default: the export's own)",
        )

    def handle(self, *args, **options):
        try:
            with open(options["file"], encoding="utf-8") as export:
                result = verify_export(export, public_key=options["public_key"])
        except (OSError, ExportError, ValueError, KeyError, TypeError) as exc:
            raise CommandError(f"Cannot verify {options['file']}: {exc}") from exc
        self.stdout.write(json.dumps(result.as_dict(), indent=2))
        if not result.chain_valid:
            sys.exit(1)
