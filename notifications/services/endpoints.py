"""Webhook endpoints: their URL (checked by the SSRF guard), subscriptions (checked against the
catalogue and the subscriber's permissions), signing secret, state; and re-queuing deliveries.

Secrets never enter an audit payload, an error or a log: the services return them to the
caller, which shows them once.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import ApplicationError, Conflict, InsufficientPermissions
from config.services import model_update
from tenants.models import Tenant

from .. import signing, targets
from ..catalog import ALL_EVENTS, ALL_EVENTS_PERMISSIONS, EVENT_TYPES, SUBSCRIBABLE
from ..models import DUE_STATUSES, DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from .events import relay_after_commit


def _refused(error: targets.ForbiddenTarget) -> ApplicationError:
    return ApplicationError(str(error), details={"url": [str(error)]})


def _normalized_url(url: str) -> str:
    """The URL as it is stored (targets.normalize: a URI); 400 naming the reason when it cannot
    be a webhook URL at all."""
    try:
        return targets.normalize(url)
    except targets.ForbiddenTarget as error:
        raise _refused(error) from error


# How long an endpoint's creation or update waits for its host's lookup. A host that does not
# resolve is accepted (below), so one whose DNS is slower is too: a name server that never
# answers (anyone can set one up for their own domain) must not hold the request's thread for
# the system resolver's own timeouts, several times this.
URL_LOOKUP_SECONDS = 2.0


def _check_url(url: str) -> str:
    """The URL if webhooks may go there now; 400 naming the reason otherwise. A host that does
    not resolve yet, or not within URL_LOOKUP_SECONDS, is accepted (its DNS may come later):
    sending checks again each time."""
    try:
        targets.check(url, within=URL_LOOKUP_SECONDS)
    except targets.UnresolvableTarget:
        pass
    except targets.ForbiddenTarget as error:
        raise _refused(error) from error
    return url


def _check_events(events: list[str], *, actor_permissions) -> list[str]:
    """The subscription, de-duplicated: catalogue types or ["*"], each one the subscriber may
    read (403 otherwise)."""
    events = list(dict.fromkeys(events))
    if not events:
        raise ApplicationError(
            'Subscribe to at least one event type, or to every one with ["*"].',
            details={"events": ["This list may not be empty."]},
        )
    if ALL_EVENTS in events and len(events) > 1:
        raise ApplicationError(
            '"*" subscribes to every event type: send it alone.',
            details={"events": ['"*" cannot be combined with event types.']},
        )
    unknown = [name for name in events if name != ALL_EVENTS and name not in SUBSCRIBABLE]
    if unknown:
        raise ApplicationError(
            f"Unknown event types: {', '.join(unknown)} (see GET webhooks/event-types).",
            details={"events": [f"{name!r} is not a subscribable event type." for name in unknown]},
        )
    if actor_permissions is not None:
        needed = (
            ALL_EVENTS_PERMISSIONS
            if ALL_EVENTS in events
            else {EVENT_TYPES[name].permission for name in events}
        )
        missing = sorted(set(needed) - set(actor_permissions))
        if missing:
            raise InsufficientPermissions(
                f"Subscribing to these events needs {', '.join(missing)}.",
                details={"missing_permissions": missing},
            )
    return events


def _check_room(tenant: Tenant) -> None:
    """At most WEBHOOK_ENDPOINTS_PER_TENANT endpoints, active or not (a disabled one may be
    enabled again): every event is delivered to each endpoint subscribed to it, by the
    platform's workers and from its addresses, so without a ceiling one organization could
    turn each of its events into any number of outbound requests."""
    Tenant.objects.ensure_room(
        tenant.pk,
        WebhookEndpoint.objects.filter(tenant=tenant),
        limit=settings.WEBHOOK_ENDPOINTS_PER_TENANT,
        counted="webhook_endpoints",
        advice="Delete one it no longer uses, or subscribe one to more event types.",
    )


def _endpoint_payload(endpoint: WebhookEndpoint) -> dict:
    return {
        "endpoint_id": str(endpoint.pk),
        "name": endpoint.name,
        "url": endpoint.url,
        "events": endpoint.events,
    }


@transaction.atomic
def webhook_endpoint_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    url: str,
    events: list[str],
    description: str = "",
    is_active: bool = True,
    secret_key: str | None = None,
    actor_permissions=None,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (generated unless a valid `whsec_` one is given);
    the secret is returned here and on rotation only. At most WEBHOOK_ENDPOINTS_PER_TENANT
    endpoints per organization (`_check_room`)."""
    url = _check_url(_normalized_url(url))
    events = _check_events(events, actor_permissions=actor_permissions)
    _check_room(tenant)
    if secret_key:
        try:
            signing.secret_key_bytes(secret_key)
        except signing.InvalidSecret as error:
            raise ApplicationError(str(error), details={"secret_key": [str(error)]}) from error
    secret = secret_key or signing.new_secret()
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        name=name,
        url=url,
        events=events,
        description=description,
        is_active=is_active,
        secret_encrypted=signing.encrypt(secret),
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    record(
        tenant=tenant,
        event_type="webhook.endpoint.created",
        actor=actor,
        payload={**_endpoint_payload(endpoint), "is_active": is_active},
    )
    return endpoint, secret


def _locked(endpoint: WebhookEndpoint) -> WebhookEndpoint:
    return locked_or_404(WebhookEndpoint.objects, pk=endpoint.pk)


@transaction.atomic
def webhook_endpoint_update(
    *, webhook_endpoint: WebhookEndpoint, actor, actor_permissions=None, **data
) -> WebhookEndpoint:
    """Change name, URL, subscription, description or `is_active`. Enabling an endpoint that
    was disabled clears its failure record; what it missed meanwhile comes back by replay."""
    endpoint = _locked(webhook_endpoint)
    if "url" in data:
        data["url"] = _normalized_url(data["url"])
        if data["url"] != endpoint.url:
            _check_url(data["url"])
    if "events" in data:
        data["events"] = _check_events(data["events"], actor_permissions=actor_permissions)
    enabling = data.get("is_active") is True and not endpoint.is_active
    if enabling:
        data.update(disabled_reason="", disabled_at=None, failure_count=0, failing_since=None)
    elif data.get("is_active") is False and endpoint.is_active:
        data.update(disabled_at=timezone.now())
    changes = model_update(instance=endpoint, data=data)
    if changes:
        record(
            tenant=endpoint.tenant,
            event_type="webhook.endpoint.updated",
            actor=actor,
            payload={**_endpoint_payload(endpoint), "changed": sorted(changes)},
        )
    return endpoint


@transaction.atomic
def webhook_endpoint_delete(*, webhook_endpoint: WebhookEndpoint, actor) -> None:
    """Delete the endpoint with its deliveries and their attempts."""
    endpoint = _locked(webhook_endpoint)
    payload = _endpoint_payload(endpoint)
    endpoint.delete()
    record(
        tenant=webhook_endpoint.tenant,
        event_type="webhook.endpoint.deleted",
        actor=actor,
        payload=payload,
    )


@transaction.atomic
def webhook_endpoint_rotate_secret(
    *, webhook_endpoint: WebhookEndpoint, actor
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the current one keeps signing too (a second signature in each header)
    for WEBHOOK_SECRET_ROTATION_OVERLAP_HOURS, so receivers can switch without a gap."""
    endpoint = _locked(webhook_endpoint)
    secret = signing.new_secret()
    now = timezone.now()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = now + timedelta(
        hours=settings.WEBHOOK_SECRET_ROTATION_OVERLAP_HOURS
    )
    endpoint.secret_encrypted = signing.encrypt(secret)
    endpoint.save(
        update_fields=[
            "previous_secret_encrypted",
            "previous_secret_expires_at",
            "secret_encrypted",
            "updated_at",
        ]
    )
    record(
        tenant=endpoint.tenant,
        event_type="webhook.endpoint.secret_rotated",
        actor=actor,
        payload={
            **_endpoint_payload(endpoint),
            "previous_valid_until": endpoint.previous_secret_expires_at.isoformat(),
        },
    )
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_disable(
    *, webhook_endpoint: WebhookEndpoint, reason: str, actor=None
) -> WebhookEndpoint:
    """Disable a failing endpoint (the relay does, after WEBHOOK_DISABLE_AFTER_DAYS with no
    success): its waiting deliveries fail, and the event notifies the tenant's admins."""
    endpoint = _locked(webhook_endpoint)
    if not endpoint.is_active:
        return endpoint
    now = timezone.now()
    endpoint.is_active = False
    endpoint.disabled_reason = reason[:255]
    endpoint.disabled_at = now
    endpoint.save(update_fields=["is_active", "disabled_reason", "disabled_at", "updated_at"])
    WebhookDelivery.objects.filter(endpoint=endpoint, status__in=DUE_STATUSES, claim="").update(
        status=DeliveryStatus.FAILED, next_attempt_at=None, updated_at=now
    )
    record(
        tenant=endpoint.tenant,
        event_type="webhook.endpoint.disabled",
        actor=actor,
        actor_label="" if actor else "webhook relay",
        payload={**_endpoint_payload(endpoint), "disabled_reason": endpoint.disabled_reason},
    )
    return endpoint


@transaction.atomic
def webhook_endpoint_test(*, webhook_endpoint: WebhookEndpoint, actor) -> WebhookDelivery:
    """Record a `webhook.test` event for this endpoint alone; the caller then sends its
    delivery at once (relay.webhook_delivery_send_now)."""
    # Locked: an endpoint deleted meanwhile is a 404, not an event with no delivery for it.
    webhook_endpoint = _locked(webhook_endpoint)
    _require_active(webhook_endpoint)
    event = record(
        tenant=webhook_endpoint.tenant,
        event_type="webhook.endpoint.tested",
        actor=actor,
        payload={
            "endpoint_id": str(webhook_endpoint.pk),
            "message": "This is a test event.",
        },
    )
    return WebhookDelivery.objects.get(event_id=event.pk, endpoint=webhook_endpoint)


def _require_active(endpoint: WebhookEndpoint) -> None:
    if not endpoint.is_active:
        raise Conflict(
            "The endpoint is disabled: enable it (is_active: true) first.",
            details={"disabled_reason": endpoint.disabled_reason},
        )


@transaction.atomic
def webhook_delivery_retry(*, delivery: WebhookDelivery, actor) -> WebhookDelivery:
    """Send a failed delivery, or one waiting for its next attempt, again now."""
    delivery = locked_or_404(
        WebhookDelivery.objects.select_related("endpoint"), of=(), pk=delivery.pk
    )
    _require_active(delivery.endpoint)
    if delivery.status == DeliveryStatus.SUCCEEDED:
        raise Conflict("The delivery succeeded; there is nothing to retry.")
    if delivery.claim:
        raise Conflict("The delivery is being sent right now.")
    if delivery.status == DeliveryStatus.PENDING:
        raise Conflict("The delivery is already queued.")
    now = timezone.now()
    previous = delivery.status
    delivery.status = DeliveryStatus.RETRYING
    delivery.next_attempt_at = now
    delivery.save(update_fields=["status", "next_attempt_at", "updated_at"])
    record(
        tenant=delivery.tenant,
        event_type="webhook.delivery.retried",
        actor=actor,
        payload={
            "delivery_id": str(delivery.pk),
            "endpoint_id": str(delivery.endpoint_id),
            "event_id": str(delivery.event_id),
            "previous_status": previous,
        },
    )
    relay_after_commit()
    return delivery


@transaction.atomic
def webhook_endpoint_replay(*, webhook_endpoint: WebhookEndpoint, actor, since: datetime) -> int:
    """Queue again every event since `since` that the endpoint subscribes to (for a receiver
    that was down); returns how many. Events are kept WEBHOOK_DELIVERY_RETENTION_DAYS."""
    endpoint = _locked(webhook_endpoint)
    _require_active(endpoint)
    now = timezone.now()
    if since > now:
        raise ApplicationError("since is in the future.", details={"since": ["In the future."]})
    subscribed = SUBSCRIBABLE if ALL_EVENTS in endpoint.events else set(endpoint.events)
    events = WebhookEvent.objects.filter(
        tenant=endpoint.tenant, created_at__gte=since, event_type__in=sorted(subscribed)
    )
    count = events.count()
    if count > settings.WEBHOOK_REPLAY_MAX_EVENTS:
        raise ApplicationError(
            f"{count} events since then; replay at most {settings.WEBHOOK_REPLAY_MAX_EVENTS} "
            "at a time (choose a later `since`).",
            details={"since": [f"{count} events match."]},
        )
    existing = WebhookDelivery.objects.filter(endpoint=endpoint, event__in=events)
    requeued = existing.filter(claim="").exclude(status__in=DUE_STATUSES, next_attempt_at__lte=now)
    requeued.update(status=DeliveryStatus.RETRYING, next_attempt_at=now, updated_at=now)
    have = set(existing.values_list("event_id", flat=True))
    missing = [
        WebhookDelivery(
            tenant_id=endpoint.tenant_id,
            endpoint=endpoint,
            event_id=event_id,
            event_type=event_type,
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
        )
        for event_id, event_type in events.values_list("pk", "event_type")
        if event_id not in have
    ]
    WebhookDelivery.objects.bulk_create(missing, batch_size=1000)
    record(
        tenant=endpoint.tenant,
        event_type="webhook.endpoint.replayed",
        actor=actor,
        payload={
            "endpoint_id": str(endpoint.pk),
            "since": since.isoformat(),
            "events": count,
        },
    )
    if count:
        relay_after_commit()
    return count
