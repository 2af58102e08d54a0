import sys

from django.core.management.base import BaseCommand

from audit.services import chain_status, chain_verify

from ._chains import add_chain_arguments, selected_chains


class Command(BaseCommand):
    help = "Recompute audit hash chains against their signed checkpoints; exit 1 if any is broken."

    def add_arguments(self, parser):
        add_chain_arguments(parser)

    def handle(self, *args, **options):
        broken = 0
        for label, tenant_id in selected_chains(options):
            result = chain_verify(tenant_id=tenant_id)
            unsealed = chain_status(tenant_id=tenant_id)["unsealed_count"]
            state = "valid" if result.chain_valid else "BROKEN"
            self.stdout.write(
                f"{label}: {state}, {result.verified_count}/{result.sealed_count} sealed events "
                f"verified, {unsealed} unsealed, {result.checkpoints_checked} checkpoints, "
                f"head {result.chain_head or '-'}"
            )
            for link in result.broken_links:
                self.stdout.write(
                    f"  seq {link.seq} event {link.event_id} ({link.event_type}): {link.reason}"
                )
            broken += not result.chain_valid
        if broken:
            self.stderr.write(self.style.ERROR(f"{broken} chain(s) broken."))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS("All chains valid."))
