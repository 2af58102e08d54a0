"""The notifications' retention (notifications_prune, beat daily, `manage.py
prune_notifications`): rows older than NOTIFICATIONS_RETENTION_DAYS go, in batches, whatever
their channel or whether they were read; one still to be sent stays until it is sent or given
up. Audited when any went."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit.models import AuditEvent
from notifications.models import Notification
from notifications.services import notifications_prune
from notifications.tasks import prune_notifications

from .factories import NotificationFactory

pytestmark = pytest.mark.django_db


def aged(days: float, **fields) -> Notification:
    notification = NotificationFactory(**fields)
    Notification.objects.filter(pk=notification.pk).update(
        created_at=timezone.now() - timedelta(days=days)
    )
    return notification


def titles() -> set[str]:
    return set(Notification.objects.values_list("title", flat=True))


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_notifications_past_the_retention_go_and_those_to_be_sent_stay(settings, batch_size):
    settings.NOTIFICATIONS_RETENTION_DAYS = 180
    aged(181, title="old read", is_read=True)
    aged(181, title="old unread")
    aged(181, title="old email", channel="email", status="sent")
    aged(181, title="old failed", channel="sms", status="failed")
    aged(181, title="old suppressed", channel="email", status="suppressed")
    aged(181, title="old pending", channel="email", status="pending")
    aged(181, title="old sending", channel="email", status="sending")
    aged(179, title="recent")

    assert notifications_prune(batch_size=batch_size) == 5

    assert titles() == {"old pending", "old sending", "recent"}
    event = AuditEvent.objects.get(event_type="notifications.pruned")
    assert event.tenant_id is None
    assert event.payload == {"notifications": 5, "older_than_days": 180}


def test_nothing_to_prune_records_nothing(settings):
    aged(10, title="recent")

    assert notifications_prune() == 0

    assert titles() == {"recent"}
    assert not AuditEvent.objects.filter(event_type="notifications.pruned").exists()


def test_a_retention_longer_than_the_calendar_prunes_nothing():
    aged(400, title="old")
    assert notifications_prune(older_than_days=10**9) == 0
    assert titles() == {"old"}


def test_the_task_applies_the_setting(settings):
    settings.NOTIFICATIONS_RETENTION_DAYS = 30
    aged(31, title="old")
    aged(29, title="recent")

    assert prune_notifications() == 1
    assert titles() == {"recent"}


def test_the_command_takes_days_and_refuses_a_negative_number():
    aged(8, title="old")
    aged(6, title="recent")
    out = io.StringIO()

    call_command("prune_notifications", "--days", "7", stdout=out)

    assert out.getvalue().strip() == "Pruned 1 notifications."
    assert titles() == {"recent"}
    with pytest.raises(CommandError, match="--days must be 0 or more"):
        call_command("prune_notifications", "--days", "-1")
