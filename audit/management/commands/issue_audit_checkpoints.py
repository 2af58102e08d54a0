from django.core.management.base import BaseCommand

from audit.services import checkpoint_issue

from ._chains import add_chain_arguments, selected_chains


class Command(BaseCommand):
    help = "Sign the head of audit chains whose head moved since their last checkpoint."

    def add_arguments(self, parser):
        add_chain_arguments(parser)

    def handle(self, *args, **options):
        for label, tenant_id in selected_chains(options):
            checkpoint = checkpoint_issue(tenant_id=tenant_id)
            if checkpoint is None:
                self.stdout.write(f"{label}: no new sealed events since the last checkpoint")
            else:
                self.stdout.write(f"{label}: checkpoint at seq {checkpoint.seq}")
