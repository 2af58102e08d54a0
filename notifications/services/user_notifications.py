"""Notifications to members: sent by a person, or raised by a public event for the roles its
catalogue entry names; delivered per channel (in-app rows, email, SMS) as each recipient's
preferences allow."""

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Q, Subquery, Value
from django.db.models.functions import Concat, Left
from django.utils import timezone

from audit.services import record
from config.db import (
    advisory_xact_lock,
    bulk_insert,
    delete_in_batches,
    deleted_meanwhile,
    locked_or_404,
)
from config.services import model_update
from tenants.models import Membership, MembershipStatus, Tenant

from .. import channels
from ..catalog import EVENT_TYPES
from ..models import Channel, Notification, NotificationPreference, NotificationStatus
from ..selectors import preferences_of

logger = logging.getLogger(__name__)

# The most notifications one sweep sends (notifications_deliver_overdue): beat's next run, a
# minute on, takes the rest.
OVERDUE_BATCH = 500
# How long one run (a commit's task, or the sweep) goes on claiming notifications: a slow mail
# server must not keep a worker on one run for hours (beat starts a sweep every minute); what
# is left stays pending, for the next sweep.
SENDING_SECONDS = 50.0


def _status_for(preference: NotificationPreference, channel: str) -> str:
    if not preference.channel_enabled(channel):
        return NotificationStatus.SUPPRESSED
    return NotificationStatus.SENT if channel == Channel.IN_APP else NotificationStatus.PENDING


@transaction.atomic
def notification_send(
    *,
    tenant: Tenant,
    actor,
    recipient,
    title: str,
    message: str,
    type: str = "info",
    channel: str = Channel.IN_APP,
    metadata: Mapping | None = None,
) -> Notification:
    """Send a notification to a member on one channel. A channel the recipient turned off
    keeps the row, `suppressed`, and sends nothing."""
    preference = preferences_of(tenant_id=tenant.pk, user_id=recipient.pk)
    status = _status_for(preference, channel)
    now = timezone.now()
    notification = Notification.objects.create(
        tenant=tenant,
        recipient=recipient,
        title=title,
        message=message,
        type=type,
        channel=channel,
        metadata=dict(metadata or {}),
        status=status,
        sent_at=now if status == NotificationStatus.SENT else None,
        sent_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    record(
        tenant=tenant,
        event_type="notification.sent",
        actor=actor,
        payload={
            "notification_id": str(notification.pk),
            "recipient_id": str(recipient.pk),
            "channel": channel,
            "type": type,
            "status": status,
        },
    )
    _deliver_after_commit([notification])
    return notification


def notify_roles(*, tenant_id, entry, data: Mapping) -> list[Notification]:
    """The notifications of a public event: each active member holding one of the entry's
    roles, on each channel their preferences enable, unless they opted out of the type. Runs
    in the event's transaction (notifications.services.events)."""
    return notify_roles_many(items=[(tenant_id, entry, data)])


def notify_roles_many(*, items: Iterable[tuple]) -> list[Notification]:
    """notify_roles for many public events, `(tenant_id, entry, data)` each (a batch job's,
    billing's invoice run), in three queries whatever their number: the members, their
    preferences, the notifications."""
    items = [item for item in items if item[1].notifies]
    if not items:
        return []
    tenant_ids = {tenant_id for tenant_id, _, _ in items}
    roles = {role for _, entry, _ in items for role in entry.notify_roles}
    named = {
        str(named_user)
        for _, entry, data in items
        if entry.notify_user_field and (named_user := data.get(entry.notify_user_field))
    }
    members: dict = {}
    for tenant_id, user_id, role in Membership.objects.filter(
        Q(role__in=list(roles)) | Q(user_id__in=list(named)),
        tenant_id__in=tenant_ids,
        status=MembershipStatus.ACTIVE,
        user__isnull=False,
        user__is_active=True,
    ).values_list("tenant_id", "user_id", "role"):
        members.setdefault(tenant_id, []).append((user_id, role))
    if not members:
        return []
    preferences = {
        (preference.tenant_id, preference.user_id): preference
        for preference in NotificationPreference.objects.filter(
            tenant_id__in=list(members),
            user_id__in={user_id for pairs in members.values() for user_id, _ in pairs},
        )
    }
    now = timezone.now()
    rows = []
    for tenant_id, entry, data in items:
        named_user = str(data.get(entry.notify_user_field) or "") if entry.notify_user_field else ""
        recipients = list(
            dict.fromkeys(
                user
                for user, role in members.get(tenant_id, [])
                if role in entry.notify_roles or str(user) == named_user
            )
        )
        if not recipients:
            continue
        fields = _SafeFormat(data)
        title = entry.notice.title.format_map(fields)[:200]
        message = entry.notice.message.format_map(fields)
        for user_id in recipients:
            preference = preferences.get((tenant_id, user_id)) or NotificationPreference()
            if entry.type in (preference.disabled_event_types or []):
                continue
            for channel in Channel.values:
                if not preference.channel_enabled(channel):
                    continue
                status = _status_for(preference, channel)
                rows.append(
                    Notification(
                        tenant_id=tenant_id,
                        recipient_id=user_id,
                        title=title,
                        message=message,
                        type=entry.notice.type,
                        channel=channel,
                        event_type=entry.type,
                        metadata={"event": entry.type, **_ids(data)},
                        status=status,
                        sent_at=now if status == NotificationStatus.SENT else None,
                    )
                )
    created = bulk_insert(Notification, rows)
    _deliver_after_commit(created)
    return created


class _SafeFormat(dict):
    def __missing__(self, key):
        return ""


def _ids(data: Mapping) -> dict:
    return {key: value for key, value in data.items() if key.endswith("_id")}


def _deliver_after_commit(notifications: Iterable[Notification]) -> None:
    pending = [str(n.pk) for n in notifications if n.status == NotificationStatus.PENDING]
    if not pending:
        return

    def queue():
        from ..tasks import deliver_notifications

        deliver_notifications.delay(pending)

    transaction.on_commit(queue, robust=True)


def notifications_deliver(
    *, notification_ids: Iterable, time_budget_seconds: float | None = SENDING_SECONDS
) -> int:
    """Send the pending email and SMS notifications among `notification_ids`; each is claimed
    (pending -> sending) before it goes and is `sent` once its channel took it, so a task
    delivered twice sends once, and none past the recipient's daily allowance (`_claim`). A
    failure that may pass (channels.is_temporary: the mail server down) puts the notification
    back to pending for `notifications_deliver_overdue` and leaves the rest of that channel's
    untried in this run; any other failure is for good (`failed`). One whose recipient left
    the organization since it was raised (removed, suspended, their account deactivated), or no
    longer holds a role its event notifies, is not sent: `failed` (`_no_longer_for`). Past
    `time_budget_seconds` no other is claimed (at least one is tried): the rest stay pending,
    for the next sweep. Returns how many were sent."""
    started = time.monotonic()
    sent, tried = 0, False
    unavailable: set[str] = set()  # channels that met a failure which may pass, in this run
    for notification in (
        Notification.objects.filter(
            pk__in=list(notification_ids), status=NotificationStatus.PENDING
        )
        .select_related("recipient")
        .annotate(
            recipient_role=Subquery(
                Membership.objects.filter(
                    tenant_id=OuterRef("tenant_id"),
                    user_id=OuterRef("recipient_id"),
                    status=MembershipStatus.ACTIVE,
                ).values("role")[:1]
            )
        )
        .order_by("created_at", "id")  # in the order they were raised
    ):
        refusal = _no_longer_for(notification)
        if refusal:
            _give_up(notification, refusal)
            continue
        if notification.channel in unavailable:
            continue
        if (
            tried
            and time_budget_seconds is not None
            and time.monotonic() - started > time_budget_seconds
        ):
            break
        tried = True
        claimed_at = _claim(notification)
        if claimed_at is None:
            continue
        try:
            channels.send(notification)
        except Exception as error:  # a channel's failure is recorded, never raised at a task
            temporary = channels.is_temporary(error)
            if temporary:
                unavailable.add(notification.channel)
            logger.warning(
                "notification %s not sent%s: %s",
                notification.pk,
                " yet" if temporary else "",
                type(error).__name__,
            )
            _record_failure(
                notification,
                claimed_at,
                NotificationStatus.PENDING if temporary else NotificationStatus.FAILED,
                f"{type(error).__name__}: {error}",
            )
            continue
        _record_sent(notification, claimed_at)
        sent += 1
    return sent


# Why a notification is not sent to a recipient who, since it was raised, left (removed,
# suspended, their account deactivated) or no longer holds a role its event notifies: what
# the organization tells its members, or its admins, is not theirs any more.
NO_LONGER_A_MEMBER = "The recipient is no longer an active member of the organization."
NO_LONGER_IN_ITS_ROLES = "The recipient no longer holds a role this event notifies."


def _no_longer_for(notification: Notification) -> str:
    """Why the notification must not go to its recipient now ("" when it may): read with the
    recipient's current role (`recipient_role`, None when not an active member). One a person
    sent needs a member; one an event raised, a member in one of the event's roles, unless the
    event names the recipient (`notify_user_field`, kept in the notification's metadata)."""
    if notification.recipient_role is None or not notification.recipient.is_active:
        return NO_LONGER_A_MEMBER
    entry = EVENT_TYPES.get(notification.event_type) if notification.event_type else None
    if entry is None or notification.recipient_role in entry.notify_roles:
        return ""
    named = entry.notify_user_field and str(
        notification.metadata.get(entry.notify_user_field, "")
    ) == str(notification.recipient_id)
    return "" if named else NO_LONGER_IN_ITS_ROLES


def _give_up(notification: Notification, reason: str) -> None:
    """pending -> failed, without sending: `reason` in `error`."""
    given_up = Notification.objects.filter(
        pk=notification.pk, status=NotificationStatus.PENDING
    ).update(status=NotificationStatus.FAILED, error=reason, updated_at=timezone.now())
    if given_up:
        logger.info("notification %s not sent: %s", notification.pk, reason)


def _record_sent(notification: Notification, claimed_at) -> None:
    """sending -> sent. Also from pending: a send that outlived its lease was put back to
    pending by the sweep (`_take_back_stalled`), and, since it did go, must not go again."""
    Notification.objects.filter(
        pk=notification.pk,
        status__in=(NotificationStatus.SENDING, NotificationStatus.PENDING),
    ).update(status=NotificationStatus.SENT, sent_at=claimed_at, updated_at=timezone.now())


def _record_failure(notification: Notification, claimed_at, status: str, reason: str) -> None:
    """The claimed notification back to `pending` (tried again later) or `failed`, the reason
    kept in `error`; the claim's sending time is cleared, so the daily allowance does not count
    it. Only under this claim: a send that outlived its lease does not undo the next one's."""
    Notification.objects.filter(
        pk=notification.pk, status=NotificationStatus.SENDING, sent_at=claimed_at
    ).update(status=status, sent_at=None, error=reason[:500], updated_at=timezone.now())


@dataclass(frozen=True)
class OverdueDelivery:
    sent: int
    expired: int


def notifications_deliver_overdue(
    *, limit: int = OVERDUE_BATCH, time_budget_seconds: float | None = SENDING_SECONDS
) -> OverdueDelivery:
    """Beat's sweep of email and SMS notifications still pending: one untouched for
    NOTIFICATIONS_RETRY_AFTER_SECONDS is sent now (its task's message was lost: a broker down
    at the commit, or restarted without its queue; or its channel's last failure may have
    passed), the oldest first, up to `limit` and `time_budget_seconds` a run; one pending for
    NOTIFICATIONS_DELIVERY_HOURS is given up, `failed`: a warning that late would mislead. One
    whose worker stopped while sending it is sent again (`_take_back_stalled`). The claim in
    `notifications_deliver` makes a sweep that meets the task's own delivery send once."""
    now = timezone.now()
    hours = settings.NOTIFICATIONS_DELIVERY_HOURS
    stalled = _take_back_stalled(now)
    pending = Notification.objects.filter(status=NotificationStatus.PENDING)
    expired = pending.filter(created_at__lte=now - timedelta(hours=hours)).update(
        status=NotificationStatus.FAILED,
        error=Left(Concat(Value(f"Not delivered within {hours} hours. "), "error"), 500),
        updated_at=now,
    )
    if expired:
        logger.warning("%s notifications not delivered within %s hours: failed", expired, hours)
    due = (
        stalled
        + list(
            pending.filter(
                updated_at__lte=now - timedelta(seconds=settings.NOTIFICATIONS_RETRY_AFTER_SECONDS)
            )
            .order_by("updated_at")
            .values_list("pk", flat=True)[:limit]
        )
    )[:limit]  # a stalled one past the batch waits NOTIFICATIONS_RETRY_AFTER_SECONDS, pending
    sent = (
        notifications_deliver(notification_ids=due, time_budget_seconds=time_budget_seconds)
        if due
        else 0
    )
    return OverdueDelivery(sent=sent, expired=expired)


def _take_back_stalled(now) -> list:
    """The notifications still `sending` NOTIFICATIONS_SENDING_LEASE_SECONDS after their claim,
    back to pending: their worker stopped between the claim and the channel's answer (killed,
    its machine gone), and nothing else would ever send them. Whether the channel took the
    message before the worker stopped cannot be known; sending it again is the choice a mail
    server makes too (at least once). Returns their ids, sent in this sweep."""
    lease = timedelta(seconds=settings.NOTIFICATIONS_SENDING_LEASE_SECONDS)
    stalled = Notification.objects.filter(
        status=NotificationStatus.SENDING, updated_at__lte=now - lease
    )
    ids = list(stalled.order_by("updated_at").values_list("pk", flat=True)[:OVERDUE_BATCH])
    if not ids:
        return []
    taken_back = stalled.filter(pk__in=ids).update(
        status=NotificationStatus.PENDING,
        sent_at=None,
        error="Its worker stopped while sending it; sent again.",
        updated_at=now,
    )
    logger.warning(
        "%s notifications still sending %s s after their claim (worker lost): sent again",
        taken_back,
        settings.NOTIFICATIONS_SENDING_LEASE_SECONDS,
    )
    return ids


def notifications_prune(*, older_than_days: int | None = None, batch_size: int = 1000) -> int:
    """Delete the notifications raised more than NOTIFICATIONS_RETENTION_DAYS ago (or
    `older_than_days`), in batches; returns how many went. One still to be sent (pending, or
    sending) is kept until it is sent or given up, whatever its age. Audited when any went.
    Safe to run twice at once (config.db.delete_in_batches)."""
    days = settings.NOTIFICATIONS_RETENTION_DAYS if older_than_days is None else older_than_days
    try:
        cutoff = timezone.now() - timedelta(days=days)
    except OverflowError:
        return 0  # a retention longer than the calendar: nothing is that old
    old = Notification.objects.filter(created_at__lt=cutoff).exclude(
        status__in=(NotificationStatus.PENDING, NotificationStatus.SENDING)
    )
    removed = delete_in_batches(old, batch_size=batch_size)
    if removed:
        with transaction.atomic():
            record(
                tenant=None,
                event_type="notifications.pruned",
                actor_label="notification retention",
                payload={"notifications": removed, "older_than_days": days},
            )
    return removed


@transaction.atomic
def _claim(notification: Notification):
    """pending -> sending, unless the organization already sent the recipient
    NOTIFICATIONS_PER_RECIPIENT_PER_DAY messages on this channel in the last 24 hours: then
    pending -> suppressed, the reason in `error`. Email and SMS leave from here alone, whether a
    person or an event raised them, so this bounds what an organization can send one member's
    address or phone number (a number its member typed in, which nobody confirmed). Counted
    under a lock on (organization, recipient, channel): parallel deliveries cannot pass it
    together. Returns the claim's time (its `sent_at`), or None when it is not to be sent."""
    advisory_xact_lock(
        f"notifications:{notification.tenant_id}:{notification.recipient_id}:{notification.channel}"
    )
    now = timezone.now()
    limit = settings.NOTIFICATIONS_PER_RECIPIENT_PER_DAY
    sent_today = Notification.objects.filter(
        tenant_id=notification.tenant_id,
        recipient_id=notification.recipient_id,
        channel=notification.channel,
        status__in=(NotificationStatus.SENT, NotificationStatus.SENDING),
        sent_at__gt=now - timedelta(days=1),
    ).count()
    pending = Notification.objects.filter(pk=notification.pk, status=NotificationStatus.PENDING)
    if sent_today >= limit:
        suppressed = pending.update(
            status=NotificationStatus.SUPPRESSED,
            error=f"The member was sent {sent_today} {notification.channel} messages by the "
            f"organization in the last 24 hours; at most {limit} a day.",
            updated_at=now,
        )
        if suppressed:
            logger.warning(
                "notification %s suppressed: %s %s messages to its recipient in 24 hours",
                notification.pk,
                sent_today,
                notification.channel,
            )
        return None
    claimed = pending.update(status=NotificationStatus.SENDING, sent_at=now, updated_at=now)
    return now if claimed else None


@transaction.atomic
def notification_mark_read(*, notification: Notification) -> Notification:
    """The reader's own bookkeeping: idempotent, not audited. A notification deleted since it
    was read from the database is not found (404), as for any other write on it."""
    rows = Notification.objects.filter(pk=notification.pk)
    if notification.is_read:
        if not rows.exists():
            raise deleted_meanwhile(Notification)
        return notification
    now = timezone.now()
    if not rows.update(is_read=True, read_at=now, updated_at=now):
        raise deleted_meanwhile(Notification)
    notification.is_read, notification.read_at = True, now
    return notification


@transaction.atomic
def notifications_mark_all_read(*, tenant: Tenant, user) -> int:
    """Mark the member's unread in-app notifications read (the inbox); returns how many."""
    now = timezone.now()
    return Notification.objects.filter(
        tenant=tenant, recipient=user, channel=Channel.IN_APP, is_read=False
    ).update(is_read=True, read_at=now, updated_at=now)


@transaction.atomic
def notification_preferences_update(
    *, tenant: Tenant, user, actor, data: Mapping
) -> NotificationPreference:
    """Set the member's channels, phone number and per-event-type opt-outs. A changed phone
    number is unconfirmed: no SMS goes to it until its member confirms it."""
    try:
        with transaction.atomic():
            preference, _ = NotificationPreference.objects.get_or_create(tenant=tenant, user=user)
    except IntegrityError:  # a concurrent first save won the race: update that row
        preference = NotificationPreference.objects.get(tenant=tenant, user=user)
    preference = locked_or_404(NotificationPreference.objects, pk=preference.pk)
    data = dict(data)
    if "disabled_event_types" in data:
        data["disabled_event_types"] = sorted(set(data["disabled_event_types"]))
    if data.get("phone_number", preference.phone_number) != preference.phone_number:
        # A new number is nobody's until its member confirms it (phone_confirmations).
        data["phone_confirmed_at"] = None
    changes = model_update(instance=preference, data=data)
    if changes:
        # Field names only: the phone number is personal data, and audit events are forever.
        record(
            tenant=tenant,
            event_type="notification.preferences_updated",
            actor=actor,
            payload={"user_id": str(user.pk), "changed": sorted(changes)},
        )
    return preference
