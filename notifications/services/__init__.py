"""Notifications state changes, one module per area: the one place their rules live.

    events              the audit hook: public events, their deliveries and notifications
    endpoints           webhook endpoints: create, update, delete, rotate the secret, disable,
                        test, replay; re-queue a delivery
    relay               sending due deliveries (the outbox relay) and pruning old ones
    phone_confirmations a member confirming their phone number with a code sent by SMS
    user_notifications  notifications to members, their delivery, preferences, retention

Services are keyword-only, run in a transaction and record their audit event;
tests/audit/test_service_coverage.py holds each to it.
"""

from .endpoints import (
    webhook_delivery_retry,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_disable,
    webhook_endpoint_replay,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_test,
    webhook_endpoint_update,
)
from .phone_confirmations import (
    phone_confirmation_confirm,
    phone_confirmation_send,
    phone_confirmations_prune,
)
from .relay import webhook_deliveries_prune, webhook_deliveries_send, webhook_delivery_send_now
from .user_notifications import (
    notification_mark_read,
    notification_preferences_update,
    notification_send,
    notifications_deliver,
    notifications_deliver_overdue,
    notifications_mark_all_read,
    notifications_prune,
)

__all__ = [
    "notification_mark_read",
    "notification_preferences_update",
    "notification_send",
    "notifications_deliver",
    "notifications_deliver_overdue",
    "notifications_mark_all_read",
    "notifications_prune",
    "phone_confirmation_confirm",
    "phone_confirmation_send",
    "phone_confirmations_prune",
    "webhook_deliveries_prune",
    "webhook_deliveries_send",
    "webhook_delivery_retry",
    "webhook_delivery_send_now",
    "webhook_endpoint_create",
    "webhook_endpoint_delete",
    "webhook_endpoint_disable",
    "webhook_endpoint_replay",
    "webhook_endpoint_rotate_secret",
    "webhook_endpoint_test",
    "webhook_endpoint_update",
]
