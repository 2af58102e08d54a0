from django.core.management.base import BaseCommand

from audit.services import chain_seal

from ._chains import add_chain_arguments, selected_chains


class Command(BaseCommand):
    help = "Seal unsealed audit events (the job Celery runs on commit and every minute)."

    def add_arguments(self, parser):
        add_chain_arguments(parser)

    def handle(self, *args, **options):
        for label, tenant_id in selected_chains(options):
            sealed = chain_seal(tenant_id=tenant_id)
            self.stdout.write(f"{label}: sealed {sealed} event(s)")
