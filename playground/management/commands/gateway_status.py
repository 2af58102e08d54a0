from django.core.management.base import BaseCommand, CommandError

from playground import cooldown
from playground.models import LanguageModel
from playground.services.gateway import LOCAL_PROVIDER_NAME


class Command(BaseCommand):
    help = (
        "Show how each catalogue model is served (its upstream, or the local provider when the "
        "upstream is not configured) and which are cooling down; --clear MODEL ends a cooldown."
    )

    def add_arguments(self, parser):
        parser.add_argument("--clear", metavar="MODEL", help="end this model's cooldown")

    def handle(self, *args, clear=None, **options):
        models = list(LanguageModel.objects.select_related("provider").order_by("name"))
        if clear is not None:
            if clear not in {model.name for model in models}:
                raise CommandError(f"No model named {clear!r} in the catalogue.")
            cooldown.clear(clear)
            self.stdout.write(self.style.SUCCESS(f"Cooldown of {clear} cleared."))
            return
        cooling = cooldown.cooling_down((model.name for model in models), read=True)
        for model in models:
            provider = model.provider
            if provider is not None and provider.is_configured:
                served = f"{provider.name} ({provider.kind}) as {model.upstream_model}"
            else:
                served = LOCAL_PROVIDER_NAME
            state = "active" if model.active else "inactive"
            flag = "  COOLING DOWN" if model.name in cooling else ""
            self.stdout.write(f"{model.name:<20} {state:<8} {served}{flag}")
