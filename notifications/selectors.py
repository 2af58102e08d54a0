"""Reads of the notifications app that more than one caller needs (views, services, the
admin)."""

from .models import WebhookDelivery


def deliveries_with_attempts(*, tenant=None):
    """Deliveries with their event and attempts, in constant queries per page."""
    queryset = WebhookDelivery.objects.select_related("event").prefetch_related("attempts")
    return queryset if tenant is None else queryset.filter(tenant=tenant)
