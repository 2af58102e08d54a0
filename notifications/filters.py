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


ALL_CHANNELS = "all"


class NotificationFilter(django_filters.FilterSet):
    """The list is the caller's in-app inbox: `channel` defaults to `in_app` (one row per
    event, not one per channel it also went out on); `channel=email`, `sms` or `all` shows
    what was sent on the others."""

    is_read = django_filters.BooleanFilter()
    channel = django_filters.ChoiceFilter(
        choices=[*Channel.choices, (ALL_CHANNELS, "All channels")],
        method="filter_channel",
        help_text="Default in_app (the inbox); `all` for every channel.",
    )
    type = django_filters.ChoiceFilter(choices=NotificationType.choices)
    event_type = django_filters.CharFilter(max_length=100)

    class Meta:
        model = Notification
        fields = ["is_read", "channel", "type", "event_type"]

    def filter_channel(self, queryset, name, value):
        return queryset if value == ALL_CHANNELS else queryset.filter(channel=value)

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        # The default narrows lists only: one notification by id is found on any channel.
        detail = (getattr(self.request, "parser_context", None) or {}).get("kwargs", {})
        if not self.data.get("channel") and "pk" not in detail:
            queryset = queryset.filter(channel=Channel.IN_APP)
        return queryset
