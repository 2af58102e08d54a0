"""From an audit event to its public event: the webhook outbox and the notifications.

`publish` is registered with `audit.services.on_record` (notifications.apps) and runs inside the
transaction of the change, so the public event, its deliveries and its notifications commit
exactly when the change does. An audit type that no catalogue entry names costs one dict
lookup.
"""

import json

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from audit.canonical import format_timestamp
from audit.models import AuditEvent

from ..catalog import BY_SOURCE, EventType
from ..models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from .user_notifications import notify_roles

# A delivery created for a direct send (the test event) waits this long before the relay may
# take it, so the request that sends it now normally does; if that request dies, the relay
# still sends it.
DIRECT_SEND_GRACE_SECONDS = 60


def publish(event: AuditEvent) -> None:
    entry = BY_SOURCE.get(event.event_type)
    if entry is None or event.tenant_id is None:
        return
    data = entry.data(event.payload)
    webhook_event = WebhookEvent.objects.create(
        id=event.id,
        tenant_id=event.tenant_id,
        event_type=entry.type,
        body=event_body(event, entry, data),
    )
    endpoints = _recipients(event, entry)
    if endpoints:
        now = timezone.now()
        due = now
        if not entry.broadcast:
            due = now + timezone.timedelta(seconds=DIRECT_SEND_GRACE_SECONDS)
        WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                tenant_id=event.tenant_id,
                endpoint_id=endpoint_id,
                event=webhook_event,
                event_type=entry.type,
                status=DeliveryStatus.PENDING,
                next_attempt_at=due,
            )
            for endpoint_id in endpoints
        )
        if entry.broadcast:
            relay_after_commit()
    if entry.notify_roles and entry.notice is not None:
        notify_roles(tenant_id=event.tenant_id, entry=entry, data=data)


def event_body(event: AuditEvent, entry: EventType, data: dict) -> str:
    return json.dumps(
        {
            "id": str(event.id),
            "type": entry.type,
            "created_at": format_timestamp(event.created_at),
            "organization_id": str(event.tenant_id),
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _recipients(event: AuditEvent, entry: EventType) -> list:
    """The ids of the endpoints that receive the event."""
    endpoints = WebhookEndpoint.objects.filter(tenant_id=event.tenant_id)
    if not entry.broadcast:
        endpoint_id = event.payload.get("endpoint_id")
        return list(endpoints.filter(pk=endpoint_id).values_list("pk", flat=True))
    return [
        pk
        for pk, events in endpoints.filter(is_active=True).values_list("pk", "events")
        if "*" in events or entry.type in events
    ]


# At most one relay task queued by commits at a time (like audit sealing): the task clears the
# flag before it looks for due deliveries, so a delivery committed later queues the next one.
RELAY_REQUESTED_KEY = "notifications:relay-requested"


def relay_after_commit() -> None:
    """Once per transaction: after it commits, make sure a relay task is queued."""
    if any(
        callback is _request_relay for _, callback, _ in transaction.get_connection().run_on_commit
    ):
        return
    transaction.on_commit(_request_relay, robust=True)


def _request_relay() -> None:
    from ..tasks import send_webhooks

    if cache.add(RELAY_REQUESTED_KEY, 1, timeout=30):
        send_webhooks.delay()
