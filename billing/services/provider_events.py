"""Provider events: what a payment provider tells billing, received by
`POST billing/webhooks/<provider>` (and by the local provider's hosted page, which takes the
same path without the network).

An event is acted on only once its signature is verified (a bad or stale one is 400 and
changes nothing). It is stored by (provider, event id) in the same transaction as what it
does: a provider's retry, or two deliveries at once, find it stored and change nothing (the
answer is 200 either way, so the provider stops retrying).

Events acted on:
    checkout.session.completed   the payer completed a hosted checkout: subscribe (outcome
                                 "subscribed"; "already complete" for another event of a
                                 session an earlier one completed, which changes nothing)
Any other type is stored and marked ignored; an event billing refuses (a checkout that expired)
is stored with the reason, and answered 200 all the same: retrying it would change nothing.
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from config.exceptions import ApplicationError

from ..models import CheckoutSession, CheckoutStatus, ProviderEvent
from ..providers import provider as payment_provider
from .checkout import checkout_complete


def provider_event_receive(*, provider_name: str, body: bytes, headers) -> ProviderEvent:
    """Verify, store once and act on one provider event; returns the stored event (the first
    delivery's, for a replay)."""
    provider = payment_provider(provider_name)
    data = provider.verify_event(body=body, headers=headers)
    with transaction.atomic():
        try:
            with transaction.atomic():
                event = ProviderEvent.objects.create(
                    provider=provider.name, event_id=data.id, type=data.type, payload=data.data
                )
        except IntegrityError:
            # Delivered before (or by a concurrent request that committed first): nothing to
            # do. The unique index made this one wait for that one's outcome.
            return ProviderEvent.objects.get(provider=provider.name, event_id=data.id)
        _act(event)
        return event


def _act(event: ProviderEvent) -> None:
    if event.type == "checkout.session.completed":
        session_id = str(event.payload.get("session_id", ""))
        # Locked first, as checkout_complete locks it: of two events of one session (the
        # hosted page posted twice at once), the second sees the first's completion.
        session = (
            CheckoutSession.objects.select_for_update()
            .filter(session_id=session_id, provider=event.provider)
            .select_related("tenant")
            .first()
        )
        if session is None:
            outcome = f"no checkout session {session_id[:64]!r}"
        elif session.status == CheckoutStatus.COMPLETE:
            event.organization_id = session.tenant_id
            outcome = "already complete"
        else:
            event.organization_id = session.tenant_id
            try:
                checkout_complete(
                    session=session, payment_method=str(event.payload.get("payment_method", ""))
                )
                outcome = "subscribed"
            except ApplicationError as refusal:
                # Kept, not retried: the provider would send the same event again forever.
                outcome = f"refused: {refusal.message}"
    else:
        outcome = "ignored"
    event.outcome = outcome
    event.processed_at = timezone.now()
    event.save(update_fields=["organization_id", "outcome", "processed_at", "updated_at"])
