"""The (prefix, viewset, basename) triples this app registers on the one API router.

`webhooks/deliveries` comes before `webhooks`, whose detail route would otherwise read
"deliveries" as an endpoint id.
"""

from .views import NotificationViewSet, WebhookDeliveryViewSet, WebhookEndpointViewSet

routes = [
    ("webhooks/deliveries", WebhookDeliveryViewSet, "webhook-delivery"),
    ("webhooks", WebhookEndpointViewSet, "webhook"),
    ("notifications", NotificationViewSet, "notification"),
]
