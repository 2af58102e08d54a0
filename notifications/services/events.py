"""From an audit event to its public event: the webhook outbox and the notifications.

`publish` is registered with `audit.services.on_record` (notifications.apps) and runs inside the
transaction of the change, so the public event, its deliveries and its notifications commit
exactly when the change does. An audit type that no catalogue entry names costs one dict
lookup.
"""

import json
import time
from datetime import timedelta

from django.core.cache import cache
from django.db import connection, router, transaction
from django.utils import timezone

from audit.canonical import format_timestamp
from audit.models import AuditEvent
from config.db import bulk_insert
from config.prepared import CompiledQuery, fetch_prepared

from ..catalog import BY_SOURCE, EventType
from ..models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from .user_notifications import notify_roles, notify_roles_many

# A delivery created for a direct send (the test event) waits this long before the relay may
# take it, so the request that sends it now normally does; if that request dies, the relay
# still sends it.
DIRECT_SEND_GRACE_SECONDS = 60


def publish(event: AuditEvent) -> None:
    entry = BY_SOURCE.get(event.event_type)
    if entry is None or event.tenant_id is None:
        return
    data = entry.data(event.payload)
    body = _event_body(event, entry, data)
    if entry.broadcast and connection.vendor == "postgresql":
        delivered = _insert_event_and_deliveries(event, entry, body)
    else:
        delivered = _create_event_and_deliveries(event, entry, body)
    if delivered and entry.broadcast:
        relay_after_commit()
    if entry.notifies:
        notify_roles(tenant_id=event.tenant_id, entry=entry, data=data)


def publish_many(events: list[AuditEvent]) -> None:
    """publish for the events of one `audit.services.record_many` (a batch job's), in a
    constant number of queries: the public events, the endpoints of their tenants, the
    deliveries, and the notifications (notify_roles_many). The test event, sent to one endpoint
    only, goes through publish."""
    public = []
    for event in events:
        entry = BY_SOURCE.get(event.event_type)
        if entry is None or event.tenant_id is None:
            continue
        if not entry.broadcast:
            publish(event)
            continue
        public.append((event, entry, entry.data(event.payload)))
    if not public:
        return
    bulk_insert(
        WebhookEvent,
        [
            WebhookEvent(
                id=event.id,
                tenant_id=event.tenant_id,
                event_type=entry.type,
                body=_event_body(event, entry, data),
            )
            for event, entry, data in public
        ],
    )
    endpoints: dict = {}
    for endpoint in WebhookEndpoint.objects.filter(
        tenant_id__in={event.tenant_id for event, _, _ in public}, is_active=True
    ).only("pk", "tenant_id", "events"):
        endpoints.setdefault(endpoint.tenant_id, []).append(endpoint)
    now = timezone.now()
    deliveries = bulk_insert(
        WebhookDelivery,
        [
            WebhookDelivery(
                tenant_id=event.tenant_id,
                endpoint_id=endpoint.pk,
                event_id=event.id,
                event_type=entry.type,
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
            )
            for event, entry, _ in public
            for endpoint in endpoints.get(event.tenant_id, ())
            if endpoint.subscribes_to(entry.type)
        ],
    )
    if deliveries:
        relay_after_commit()
    notify_roles_many(items=[(event.tenant_id, entry, data) for event, entry, data in public])


def _create_event_and_deliveries(event: AuditEvent, entry: EventType, body: str) -> int:
    """The event row, and one delivery per endpoint that receives it; returns how many."""
    webhook_event = WebhookEvent.objects.create(
        id=event.id, tenant_id=event.tenant_id, event_type=entry.type, body=body
    )
    endpoints = _recipients(event, entry)
    now = timezone.now()
    due = now if entry.broadcast else now + timedelta(seconds=DIRECT_SEND_GRACE_SECONDS)
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
    return len(endpoints)


def _publish_sql() -> str:
    event, delivery, endpoint = (
        model._meta.db_table for model in (WebhookEvent, WebhookDelivery, WebhookEndpoint)
    )
    return f"""
        WITH event AS (
            INSERT INTO {event} (id, created_at, updated_at, tenant_id, event_type, body)
            VALUES (%s, %s, %s, %s, %s, %s)
        )
        INSERT INTO {delivery} (
            id, created_at, updated_at, tenant_id, endpoint_id, event_id, event_type, status,
            attempt_count, next_attempt_at, claim
        )
        SELECT gen_random_uuid(), %s, %s, endpoint.tenant_id, endpoint.id, %s, %s, 'pending',
            0, %s, ''
        FROM {endpoint} AS endpoint
        WHERE endpoint.tenant_id = %s AND endpoint.is_active
            AND (endpoint.events @> '["*"]'::jsonb OR endpoint.events @> %s::jsonb)
        RETURNING id
    """  # noqa: S608 (table names from the models, every value a bound parameter)


_PUBLISH_SQL = None


def _insert_event_and_deliveries(event: AuditEvent, entry: EventType, body: str) -> int:
    """As _create_event_and_deliveries, in one prepared statement on PostgreSQL: it runs in
    every write that records a public event, where three ORM round trips cost more than the
    rest of publishing (bench/webhook_relay.py)."""
    global _PUBLISH_SQL
    if _PUBLISH_SQL is None:
        _PUBLISH_SQL = _publish_sql()
    now = timezone.now()
    params = [
        *(event.id, now, now, event.tenant_id, entry.type, body),
        *(now, now, event.id, entry.type, now),
        *(event.tenant_id, json.dumps([entry.type])),
    ]
    alias = router.db_for_write(WebhookDelivery)
    return len(fetch_prepared(alias, _PUBLISH_SQL, params))


def _event_body(event: AuditEvent, entry: EventType, data: dict) -> str:
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


def _active_endpoints_query(tenant_id):
    return (
        WebhookEndpoint.objects.filter(tenant_id=tenant_id, is_active=True)
        .only("pk", "events")
        .order_by()
    )


# Run inside every write that records a public event: compiled once, prepared on PostgreSQL.
_active_endpoints = CompiledQuery(
    _active_endpoints_query, WebhookEndpoint._meta.get_field("tenant")
)


def _recipients(event: AuditEvent, entry: EventType) -> list:
    """The ids of the endpoints that receive the event."""
    if not entry.broadcast:
        endpoint_id = event.payload.get("endpoint_id")
        return list(
            WebhookEndpoint.objects.filter(tenant_id=event.tenant_id, pk=endpoint_id).values_list(
                "pk", flat=True
            )
        )
    return [
        endpoint.pk
        for endpoint in _active_endpoints(event.tenant_id)
        if endpoint.subscribes_to(entry.type)
    ]


# At most one relay task queued by commits at a time (like audit sealing): the task clears the
# flag before it looks for due deliveries, so a delivery committed later queues the next one.
RELAY_REQUESTED_KEY = "notifications:relay-requested"
# And a process asks at most this often: a busy web worker does not pay a cache round trip on
# every write. A delivery committed in between waits for the relay already queued, or at worst
# for beat's next run (WEBHOOK_RELAY_INTERVAL_SECONDS).
RELAY_REQUEST_MIN_INTERVAL_SECONDS = 1.0
_last_relay_request = 0.0


def relay_after_commit() -> None:
    """Once per transaction: after it commits, make sure a relay task is queued."""
    if any(
        callback is _request_relay for _, callback, _ in transaction.get_connection().run_on_commit
    ):
        return
    transaction.on_commit(_request_relay, robust=True)


def _request_relay() -> None:
    from ..tasks import send_webhooks

    global _last_relay_request
    now = time.monotonic()
    if now - _last_relay_request < RELAY_REQUEST_MIN_INTERVAL_SECONDS:
        return
    _last_relay_request = now
    if cache.add(RELAY_REQUESTED_KEY, 1, timeout=30):
        send_webhooks.delay()
