"""config.db.bulk_insert: what bulk_create writes, by COPY on PostgreSQL."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from config.db import bulk_insert
from notifications.models import WebhookEvent
from tests.factories import TenantFactory

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]


def test_rows_are_written_with_every_field_as_bulk_create_would():
    tenant = TenantFactory()
    now = timezone.now()
    events = [
        AuditEvent(
            tenant=tenant,
            event_type="bench.event",
            payload={"n": n, "text": "é\\t\n"},
            created_at=now,
        )
        for n in range(3)
    ]
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        written = bulk_insert(AuditEvent, events)
    assert written == events
    assert all(not event._state.adding for event in events)
    stored = {event.pk: event for event in AuditEvent.objects.filter(event_type="bench.event")}
    assert set(stored) == {event.pk for event in events}
    for event in events:
        row = stored[event.pk]
        assert row.payload == event.payload
        assert row.tenant_id == tenant.pk
        assert row.created_at == now
    # One statement however many rows (a COPY on PostgreSQL, logged like a query).
    assert len(captured) == 1


def test_auto_now_fields_are_filled_in_as_bulk_create_does():
    tenant = TenantFactory()
    with transaction.atomic():
        [event] = bulk_insert(
            WebhookEvent, [WebhookEvent(tenant=tenant, event_type="bench.event", body="{}")]
        )
    stored = WebhookEvent.objects.get(pk=event.pk)
    assert stored.created_at is not None and stored.updated_at is not None


def test_nothing_to_insert_is_no_statement():
    with CaptureQueriesContext(connection) as captured:
        assert bulk_insert(AuditEvent, []) == []
    assert len(captured) == 0
