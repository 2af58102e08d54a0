"""Factories of the audit app's models (registered with tests.factories.factory_for)."""

import factory
from django.utils import timezone

from audit.models import AuditEvent


class AuditEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditEvent

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    event_type = "test.happened"
    payload = factory.LazyFunction(dict)
    created_at = factory.LazyFunction(timezone.now)
