"""Factories of the notifications app's models (registered with tests.factories.factory_for)."""

import json
import uuid

import factory
from django.utils import timezone

from notifications import signing
from notifications.models import (
    DeliveryStatus,
    Notification,
    NotificationPreference,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

TEST_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class WebhookEndpointFactory(factory.django.DjangoModelFactory):
    """An endpoint whose secret is TEST_WEBHOOK_SECRET (created without the service: no URL
    check, no audit event)."""

    class Meta:
        model = WebhookEndpoint

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Endpoint {n}")
    url = factory.Sequence(lambda n: f"https://hooks{n}.example.com/receive")
    events = factory.LazyFunction(lambda: ["*"])
    secret_encrypted = factory.LazyFunction(lambda: signing.encrypt(TEST_WEBHOOK_SECRET))


class WebhookEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookEvent

    id = factory.LazyFunction(uuid.uuid4)
    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    event_type = "organization.member.joined"
    body = factory.LazyAttribute(
        lambda event: json.dumps(
            {
                "id": str(event.id),
                "type": event.event_type,
                "created_at": timezone.now().isoformat(),
                "organization_id": str(event.tenant.pk),
                "data": {},
            }
        )
    )


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookDelivery

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    endpoint = factory.SubFactory(WebhookEndpointFactory, tenant=factory.SelfAttribute("..tenant"))
    event = factory.SubFactory(WebhookEventFactory, tenant=factory.SelfAttribute("..tenant"))
    event_type = factory.SelfAttribute("event.event_type")
    status = DeliveryStatus.PENDING
    next_attempt_at = factory.LazyFunction(timezone.now)


class WebhookAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = WebhookAttempt

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    delivery = factory.SubFactory(WebhookDeliveryFactory, tenant=factory.SelfAttribute("..tenant"))
    number = 1
    succeeded = True
    status_code = 200


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    recipient = factory.SubFactory("tests.accounts.factories.UserFactory")
    title = factory.Sequence(lambda n: f"Notification {n}")
    message = "Something happened."
    status = "sent"


class NotificationPreferenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = NotificationPreference

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    user = factory.SubFactory("tests.accounts.factories.UserFactory")

    class Params:
        # SMS on, to a number its member confirmed (SMS goes to no other).
        confirmed_sms = factory.Trait(
            sms_enabled=True,
            phone_number="+14155550100",
            phone_confirmed_at=factory.LazyFunction(timezone.now),
        )
