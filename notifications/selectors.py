"""Reads of the notifications app that more than one caller needs (views, services, the
admin)."""

from .models import NotificationPreference, WebhookDelivery


def deliveries_with_attempts(*, tenant=None):
    """Deliveries with their event and attempts, in constant queries per page."""
    queryset = WebhookDelivery.objects.select_related("event").prefetch_related("attempts")
    return queryset if tenant is None else queryset.filter(tenant=tenant)


def preferences_of(*, tenant_id, user_id) -> NotificationPreference:
    """The member's preferences; the defaults (unsaved) when they never set any."""
    found = NotificationPreference.objects.filter(tenant_id=tenant_id, user_id=user_id).first()
    return found or NotificationPreference(tenant_id=tenant_id, user_id=user_id)
