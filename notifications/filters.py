"""FilterSets of the notifications app (django-filter), each named by a viewset's
`filterset_class`. The querysets they narrow are already the request tenant's (and, for
notifications, the caller's own)."""

import django_filters

from config.filters import UTCDateTimeFilter

from .models import (
    Channel,
    DeliveryStatus,
    Notification,
    NotificationType,
    WebhookDelivery,
    WebhookEndpoint,
)


class WebhookEndpointFilter(django_filters.FilterSet):
    is_active = django_filters.BooleanFilter()

    class Meta:
        model = WebhookEndpoint
        fields = ["is_active"]


class WebhookDeliveryFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeliveryStatus.choices)
    event_type = django_filters.CharFilter(max_length=100)
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = WebhookDelivery
        fields = ["status", "event_type", "since", "until"]


class NotificationFilter(django_filters.FilterSet):
    is_read = django_filters.BooleanFilter()
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    type = django_filters.ChoiceFilter(choices=NotificationType.choices)
    event_type = django_filters.CharFilter(max_length=100)

    class Meta:
        model = Notification
        fields = ["is_read", "channel", "type", "event_type"]
