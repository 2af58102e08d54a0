"""The (prefix, viewset, basename) triples this app registers on the one API router.

`webhooks/deliveries` comes before `webhooks`, whose detail route would otherwise read
"deliveries" as an endpoint id; likewise notifications/preferences.
"""

from .views import (
    NotificationPreferenceViewSet,
    NotificationViewSet,
    WebhookDeliveryViewSet,
    WebhookEndpointViewSet,
)

routes = [
    ("webhooks/deliveries", WebhookDeliveryViewSet, "webhook-delivery"),
    ("webhooks", WebhookEndpointViewSet, "webhook"),
    # notifications/preferences, before NotificationViewSet's detail route.
    ("notifications", NotificationPreferenceViewSet, "notification-preferences"),
    ("notifications", NotificationViewSet, "notification"),
]
