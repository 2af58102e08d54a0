from django.core.management.base import BaseCommand

from playground.services.ledger import gateway_reservations_release_expired


class Command(BaseCommand):
    help = (
        "Give back the tokens of gateway calls whose process died before settling them (a "
        "reservation not settled within GATEWAY_RESERVATION_LEASE_SECONDS). Beat runs the same "
        "every minute."
    )

    def handle(self, *args, **options):
        released = gateway_reservations_release_expired()
        self.stdout.write(f"{released} expired reservations given back")
