"""Reads of the notifications app that more than one caller needs (views, services, the
admin)."""

from .models import NotificationPreference


def with_event_and_attempts(deliveries):
    """Deliveries with their event and attempts, in constant queries per page (the lists and
    the test action's answer)."""
    return deliveries.select_related("event").prefetch_related("attempts")


def preferences_of(*, tenant_id, user_id) -> NotificationPreference:
    """The member's preferences; the defaults (unsaved) when they never set any."""
    found = NotificationPreference.objects.filter(tenant_id=tenant_id, user_id=user_id).first()
    return found or NotificationPreference(tenant_id=tenant_id, user_id=user_id)
