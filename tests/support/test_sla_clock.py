"""SLA clocks: the working-time arithmetic (around the clock, business hours, daylight-saving
changes), the due times a ticket is given on creation, pauses (WAITING, resolved then reopened),
the at-risk threshold and the `sla_status` filter against the field, the breach sweep (marked
once, escalated by priority, the assignee notified; also under a race), the breaches marked at
once by a late reply or resolution, re-targeting on a priority change, and the beat entry."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from audit.models import AuditEvent
from notifications.models import Notification
from support.clock import add_working_time, working_seconds
from support.models import (
    Escalation,
    SlaPauseReason,
    SlaStatus,
    Ticket,
    TicketSlaPause,
    TicketStatus,
)
from support.services import sla_breaches_mark, ticket_comment_add, ticket_create, ticket_update
from support.tasks import mark_sla_breaches
from tenants.models import Role
from tests.factories import TenantFactory

from .factories import RepresentativeFactory, SlaPolicyFactory

pytestmark = pytest.mark.django_db

TICKETS = "/api/v1/support/tickets/"
PARIS = ZoneInfo("Europe/Paris")
BUSINESS_HOURS = {
    "weekdays": [0, 1, 2, 3, 4],
    "start": "09:00",
    "end": "17:00",
    "time_zone": "Europe/Paris",
}
EVERY_DAY = {**BUSINESS_HOURS, "weekdays": [0, 1, 2, 3, 4, 5, 6]}
# A Monday, 09:00 UTC (10:00 in Paris).
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def paris(*args) -> datetime:
    return datetime(*args, tzinfo=PARIS)


def at(moment: datetime):
    return time_machine.travel(moment, tick=False)


def parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def detail(ticket_id) -> str:
    return f"{TICKETS}{ticket_id}/"


def policy(tenant, priority="NORMAL", first=60, resolution=480, hours=None):
    return SlaPolicyFactory(
        tenant=tenant,
        priority=priority,
        first_response_minutes=first,
        resolution_minutes=resolution,
        business_hours=hours,
    )


def api_create(caller, moment: datetime, **body) -> dict:
    body.setdefault("subject", "SSO integration failure")
    with at(moment):
        response = caller.client.post(TICKETS, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def api_patch(caller, ticket_id, moment: datetime, **body) -> dict:
    with at(moment):
        response = caller.client.patch(detail(ticket_id), body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def api_get(caller, ticket_id, moment: datetime) -> dict:
    with at(moment):
        response = caller.client.get(detail(ticket_id))
    assert response.status_code == 200, response.content
    return response.json()


def api_comment(caller, ticket_id, moment: datetime, *, internal=False) -> dict:
    with at(moment):
        response = caller.client.post(
            f"{TICKETS}{ticket_id}/comments/",
            {"comment": "Looking into it.", "is_internal": internal},
            format="json",
        )
    assert response.status_code == 201, response.content
    return response.json()


def opened(tenant, moment: datetime, actor=None, **fields) -> Ticket:
    """A ticket opened by the service at `moment`."""
    fields.setdefault("subject", "Opened")
    with at(moment):
        return ticket_create(tenant=tenant, actor=actor, **fields)


def moved(ticket: Ticket, moment: datetime, **fields) -> Ticket:
    with at(moment):
        return ticket_update(ticket=ticket, actor=None, **fields)


def replied(ticket: Ticket, representative_user, moment: datetime, *, internal=False):
    with at(moment):
        return ticket_comment_add(
            ticket=ticket, actor=representative_user, comment="On it.", is_internal=internal
        )


def breach_events(tenant):
    return AuditEvent.objects.filter(tenant=tenant, event_type="support.sla.breached")


def escalation_events(tenant):
    return AuditEvent.objects.filter(tenant=tenant, event_type="support.escalation.created")


@pytest.fixture
def representative(owner):
    """A representative of the owner's organization (an active member) with a client."""
    return _representative(owner.tenant)


def _representative(tenant):
    from tests.conftest import Caller
    from tests.factories import MembershipFactory

    membership = MembershipFactory(tenant=tenant, role=Role.MEMBER)
    caller = Caller(membership)
    caller.representative = RepresentativeFactory(tenant=tenant, user=membership.user)
    return caller


# Working time: around the clock ---------------------------------------------------------------


def test_around_the_clock_working_time_is_wall_clock_time():
    start = datetime(2026, 3, 7, 23, 30, tzinfo=UTC)  # a Saturday night

    assert add_working_time(start, 3600, None) == start + HOUR
    assert add_working_time(start, 90.5, None) == start + timedelta(seconds=90.5)
    assert working_seconds(start, start + timedelta(days=2), None) == 2 * 86400
    assert working_seconds(start, start, None) == 0
    assert working_seconds(start + HOUR, start, None) == 0


# Working time: business hours -----------------------------------------------------------------


def test_friday_1630_with_an_hour_is_due_monday_0930_local():
    due = add_working_time(paris(2026, 3, 6, 16, 30), 3600, BUSINESS_HOURS)

    assert due == paris(2026, 3, 9, 9, 30)
    assert due.astimezone(PARIS).strftime("%A %H:%M") == "Monday 09:30"
    assert due.tzinfo is not None


@pytest.mark.parametrize(
    "start",
    [
        paris(2026, 3, 7, 0, 0),  # Saturday midnight
        paris(2026, 3, 7, 11, 0),  # Saturday
        paris(2026, 3, 8, 23, 59),  # Sunday night
        paris(2026, 3, 6, 17, 0),  # Friday at closing time
        paris(2026, 3, 9, 6, 0),  # Monday before opening
    ],
)
def test_time_outside_business_hours_counts_from_the_next_opening(start):
    assert add_working_time(start, 3600, BUSINESS_HOURS) == paris(2026, 3, 9, 10, 0)
    assert add_working_time(start, 8 * 3600, BUSINESS_HOURS) == paris(2026, 3, 9, 17, 0)
    assert add_working_time(start, 8 * 3600 + 60, BUSINESS_HOURS) == paris(2026, 3, 10, 9, 1)


def test_a_working_day_within_business_hours():
    start = paris(2026, 3, 4, 12, 0)  # Wednesday noon

    assert add_working_time(start, 2 * 3600, BUSINESS_HOURS) == paris(2026, 3, 4, 14, 0)
    # 5 hours on Wednesday, 8 on Thursday, 2 on Friday.
    assert add_working_time(start, 15 * 3600, BUSINESS_HOURS) == paris(2026, 3, 6, 11, 0)
    # A full week of working time (40 hours) lands at the same time next week.
    assert add_working_time(start, 40 * 3600, BUSINESS_HOURS) == paris(2026, 3, 11, 12, 0)
    assert add_working_time(start, 0, BUSINESS_HOURS) == start


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (paris(2026, 3, 6, 17, 0), paris(2026, 3, 9, 9, 0)),  # Friday close to Monday open
        (paris(2026, 3, 7, 0, 0), paris(2026, 3, 8, 23, 59, 59)),  # Saturday and Sunday
        (paris(2026, 3, 6, 18, 0), paris(2026, 3, 9, 8, 59)),
        (paris(2026, 3, 28, 10, 0), paris(2026, 3, 29, 16, 0)),  # the spring DST weekend
        (paris(2026, 10, 24, 10, 0), paris(2026, 10, 25, 16, 0)),  # the autumn DST weekend
    ],
)
def test_working_seconds_over_a_weekend_are_zero(start, end):
    assert working_seconds(start, end, BUSINESS_HOURS) == 0


def test_working_seconds_count_only_the_windows():
    # Friday 16:00 -> Monday 10:00: one hour on Friday, one on Monday.
    assert working_seconds(paris(2026, 3, 6, 16), paris(2026, 3, 9, 10), BUSINESS_HOURS) == 7200
    # Monday 00:00 -> Saturday 00:00: five full days.
    assert working_seconds(paris(2026, 3, 9), paris(2026, 3, 14), BUSINESS_HOURS) == 5 * 8 * 3600


def test_across_the_spring_dst_change_the_window_stays_0900_to_1700_local():
    # Friday 27 March 2026 is CET (UTC+1); Monday 30 March is CEST (UTC+2).
    friday = paris(2026, 3, 27, 16, 0)
    assert friday.utcoffset() == HOUR

    due = add_working_time(friday, 2 * 3600, BUSINESS_HOURS)

    assert due == paris(2026, 3, 30, 10, 0)
    assert due.astimezone(UTC) == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    assert due.astimezone(PARIS).utcoffset() == 2 * HOUR
    # The DST Sunday itself (every day open): 09:00-17:00 CEST is 07:00-15:00 UTC.
    saturday_close = paris(2026, 3, 28, 16, 59)
    assert add_working_time(saturday_close, 120, EVERY_DAY) == datetime(
        2026, 3, 29, 7, 1, tzinfo=UTC
    )
    sunday = (datetime(2026, 3, 29, 0, 0, tzinfo=UTC), datetime(2026, 3, 30, 0, 0, tzinfo=UTC))
    assert working_seconds(*sunday, EVERY_DAY) == 8 * 3600
    assert (
        working_seconds(
            datetime(2026, 3, 29, 6, 59, tzinfo=UTC),
            datetime(2026, 3, 29, 7, 1, tzinfo=UTC),
            EVERY_DAY,
        )
        == 60
    )


def test_across_the_autumn_dst_change_the_window_stays_0900_to_1700_local():
    # Friday 23 October 2026 is CEST (UTC+2); Monday 26 October is CET (UTC+1).
    friday = paris(2026, 10, 23, 16, 0)
    assert friday.utcoffset() == 2 * HOUR

    due = add_working_time(friday, 2 * 3600, BUSINESS_HOURS)

    assert due == paris(2026, 10, 26, 10, 0)
    assert due.astimezone(UTC) == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)
    # The DST Sunday itself (every day open): 09:00-17:00 CET is 08:00-16:00 UTC, 8 hours.
    assert add_working_time(paris(2026, 10, 24, 16, 59), 120, EVERY_DAY) == datetime(
        2026, 10, 25, 8, 1, tzinfo=UTC
    )
    sunday = (datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 26, 0, 0, tzinfo=UTC))
    assert working_seconds(*sunday, EVERY_DAY) == 8 * 3600


@pytest.mark.parametrize(
    "start",
    [
        paris(2026, 3, 6, 16, 30),  # Friday afternoon
        paris(2026, 3, 7, 11, 0),  # Saturday
        paris(2026, 3, 4, 8, 0),  # Wednesday before opening
        paris(2026, 3, 4, 12, 17, 23),  # Wednesday, odd seconds
        paris(2026, 3, 26, 15, 0),  # before the spring DST change
        paris(2026, 10, 22, 15, 0),  # before the autumn DST change
    ],
)
@pytest.mark.parametrize("seconds", [1, 60, 1800, 3600, 8 * 3600, 25 * 3600 + 17, 50 * 3600])
@pytest.mark.parametrize("hours", [BUSINESS_HOURS, EVERY_DAY, None])
def test_round_trip_add_then_working_seconds_gives_the_input(start, seconds, hours):
    due = add_working_time(start, seconds, hours)

    assert due > start
    assert working_seconds(start, due, hours) == seconds


# Due times on creation --------------------------------------------------------------------------


def test_a_ticket_with_a_policy_gets_its_due_times(owner):
    normal = policy(owner.tenant, "NORMAL", first=60, resolution=480)

    body = api_create(owner, T0, priority="NORMAL")

    assert parse(body["first_response_due_at"]) == T0 + 60 * MINUTE
    assert parse(body["resolution_due_at"]) == T0 + 480 * MINUTE
    assert body["sla_policy_id"] == str(normal.pk)
    assert body["sla_status"] == "ok"
    assert body["sla_breached_at"] is None
    assert body["sla_breach"] is None
    assert body["sla_paused_at"] is None
    assert body["first_responded_at"] is None
    ticket = Ticket.objects.get(pk=body["id"])
    assert ticket.created_at == T0
    # At risk from a quarter of each target before it is due.
    assert ticket.first_response_risk_at == T0 + 45 * MINUTE
    assert ticket.resolution_risk_at == T0 + 360 * MINUTE
    assert ticket.sla_terms == {
        "policy_name": normal.name,
        "first_response_minutes": 60,
        "resolution_minutes": 480,
        "business_hours": None,
    }


def test_a_ticket_without_a_policy_for_its_priority_has_no_sla(owner):
    policy(owner.tenant, "URGENT", first=15, resolution=120)

    body = api_create(owner, T0, priority="LOW")

    assert body["first_response_due_at"] is None
    assert body["resolution_due_at"] is None
    assert body["sla_policy_id"] is None
    assert body["sla_status"] is None
    ticket = Ticket.objects.get(pk=body["id"])
    assert ticket.sla_terms is None
    assert ticket.first_response_risk_at is None
    assert ticket.resolution_risk_at is None


def test_a_ticket_opened_friday_1630_in_business_hours_is_due_monday(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480, hours=BUSINESS_HOURS)

    body = api_create(owner, paris(2026, 3, 6, 16, 30), priority="NORMAL")

    assert parse(body["first_response_due_at"]) == paris(2026, 3, 9, 9, 30)
    # 30 minutes on Friday, 7.5 hours on Monday.
    assert parse(body["resolution_due_at"]) == paris(2026, 3, 9, 16, 30)
    assert body["sla_status"] == "ok"


def test_a_ticket_opened_on_saturday_is_counted_from_monday_0900(owner):
    policy(owner.tenant, "HIGH", first=30, resolution=600, hours=BUSINESS_HOURS)

    body = api_create(owner, paris(2026, 3, 7, 11, 0), priority="HIGH")

    assert parse(body["first_response_due_at"]) == paris(2026, 3, 9, 9, 30)
    assert parse(body["resolution_due_at"]) == paris(2026, 3, 10, 11, 0)


def test_a_later_policy_change_does_not_move_an_existing_tickets_due_times(owner):
    normal = policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    normal.first_response_minutes = 5
    normal.save()

    again = api_get(owner, body["id"], T0 + 10 * MINUTE)

    assert parse(again["first_response_due_at"]) == T0 + HOUR
    assert again["sla_status"] == "ok"


def test_due_times_are_counted_from_the_stored_creation_time_on_a_running_clock(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)

    ticket = ticket_create(tenant=owner.tenant, actor=owner.user, subject="Real clock")
    ticket.refresh_from_db()

    assert ticket.first_response_due_at == ticket.created_at + HOUR
    assert ticket.resolution_due_at == ticket.created_at + 8 * HOUR


# Pauses ------------------------------------------------------------------------------------------


def test_waiting_pauses_the_clocks_and_the_due_times_move_by_the_paused_time(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    ticket_id = body["id"]

    waiting = api_patch(owner, ticket_id, T0 + 10 * MINUTE, status="WAITING")

    assert waiting["sla_status"] == "paused"
    assert parse(waiting["sla_paused_at"]) == T0 + 10 * MINUTE
    pause = TicketSlaPause.objects.get(ticket_id=ticket_id)
    assert pause.reason == SlaPauseReason.WAITING
    assert pause.started_at == T0 + 10 * MINUTE
    assert pause.ended_at is None
    assert pause.tenant_id == owner.tenant.pk
    # Still paused long after the first response was due (no time runs while waiting).
    assert api_get(owner, ticket_id, T0 + 5 * HOUR)["sla_status"] == "paused"
    with at(T0 + 5 * HOUR):
        assert sla_breaches_mark(now=T0 + 5 * HOUR) == 0

    back = api_patch(owner, ticket_id, T0 + 40 * MINUTE, status="IN_PROGRESS")

    assert back["sla_status"] == "ok"
    assert back["sla_paused_at"] is None
    assert parse(back["first_response_due_at"]) == T0 + 90 * MINUTE
    assert parse(back["resolution_due_at"]) == T0 + 510 * MINUTE
    pause.refresh_from_db()
    assert pause.ended_at == T0 + 40 * MINUTE
    ticket = Ticket.objects.get(pk=ticket_id)
    assert ticket.first_response_risk_at == T0 + 75 * MINUTE
    assert ticket.resolution_risk_at == T0 + 390 * MINUTE

    # A second pause of 20 minutes adds to the first.
    api_patch(owner, ticket_id, T0 + 60 * MINUTE, status="WAITING")
    again = api_patch(owner, ticket_id, T0 + 80 * MINUTE, status="OPEN")

    assert parse(again["first_response_due_at"]) == T0 + 110 * MINUTE
    assert parse(again["resolution_due_at"]) == T0 + 530 * MINUTE
    shown = api_get(owner, ticket_id, T0 + 81 * MINUTE)
    assert shown["sla_pauses"] == [
        {
            "reason": "waiting",
            "started_at": "2026-03-02T09:10:00Z",
            "ended_at": "2026-03-02T09:40:00Z",
        },
        {
            "reason": "waiting",
            "started_at": "2026-03-02T10:00:00Z",
            "ended_at": "2026-03-02T10:20:00Z",
        },
    ]
    assert shown["sla_status"] == "ok"
    assert TicketSlaPause.objects.filter(ticket_id=ticket_id, ended_at__isnull=True).count() == 0


def test_a_pause_over_a_weekend_moves_nothing_in_business_hours(owner):
    policy(owner.tenant, "NORMAL", first=240, resolution=480, hours=BUSINESS_HOURS)
    body = api_create(owner, paris(2026, 3, 6, 14, 0))  # Friday 14:00
    # 3 hours on Friday, then 1 (5) on Monday.
    assert parse(body["first_response_due_at"]) == paris(2026, 3, 9, 10, 0)
    assert parse(body["resolution_due_at"]) == paris(2026, 3, 9, 14, 0)

    api_patch(owner, body["id"], paris(2026, 3, 6, 17, 0), status="WAITING")
    back = api_patch(owner, body["id"], paris(2026, 3, 9, 8, 30), status="IN_PROGRESS")

    assert parse(back["first_response_due_at"]) == paris(2026, 3, 9, 10, 0)
    assert parse(back["resolution_due_at"]) == paris(2026, 3, 9, 14, 0)
    assert back["sla_status"] == "ok"
    assert TicketSlaPause.objects.get(ticket_id=body["id"]).ended_at == paris(2026, 3, 9, 8, 30)


def test_a_pause_moves_the_due_times_by_its_working_time_only(owner):
    policy(owner.tenant, "NORMAL", first=240, resolution=480, hours=BUSINESS_HOURS)
    body = api_create(owner, paris(2026, 3, 6, 14, 0))

    # Friday 16:00 -> Monday 10:00: one working hour each side of the weekend.
    api_patch(owner, body["id"], paris(2026, 3, 6, 16, 0), status="WAITING")
    back = api_patch(owner, body["id"], paris(2026, 3, 9, 10, 0), status="OPEN")

    assert parse(back["first_response_due_at"]) == paris(2026, 3, 9, 12, 0)
    assert parse(back["resolution_due_at"]) == paris(2026, 3, 9, 16, 0)
    assert back["sla_status"] == "ok"


def test_reopening_a_resolved_ticket_pauses_the_clocks_for_the_resolved_stretch(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    resolved = api_patch(owner, body["id"], T0 + 30 * MINUTE, status="RESOLVED")
    assert resolved["sla_status"] == "met"
    assert not TicketSlaPause.objects.filter(ticket_id=body["id"]).exists()

    reopened = api_patch(owner, body["id"], T0 + 210 * MINUTE, status="IN_PROGRESS")

    pause = TicketSlaPause.objects.get(ticket_id=body["id"])
    assert pause.reason == SlaPauseReason.RESOLVED
    assert pause.started_at == T0 + 30 * MINUTE
    assert pause.ended_at == T0 + 210 * MINUTE
    # Three hours resolved: both running targets move three hours later.
    assert parse(reopened["resolution_due_at"]) == T0 + 660 * MINUTE
    assert parse(reopened["first_response_due_at"]) == T0 + 240 * MINUTE
    assert reopened["sla_status"] == "ok"
    assert reopened["sla_paused_at"] is None
    shown = api_get(owner, body["id"], T0 + 211 * MINUTE)
    assert shown["sla_pauses"] == [
        {
            "reason": "resolved",
            "started_at": "2026-03-02T09:30:00Z",
            "ended_at": "2026-03-02T12:30:00Z",
        }
    ]


def test_reopening_after_a_first_response_moves_only_the_resolution(owner, representative):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    api_comment(representative, body["id"], T0 + 20 * MINUTE)
    api_patch(owner, body["id"], T0 + 2 * HOUR, status="RESOLVED")

    reopened = api_patch(owner, body["id"], T0 + 3 * HOUR, status="OPEN")

    assert parse(reopened["resolution_due_at"]) == T0 + 9 * HOUR
    assert parse(reopened["first_response_due_at"]) == T0 + HOUR
    assert parse(reopened["first_responded_at"]) == T0 + 20 * MINUTE
    assert reopened["sla_status"] == "ok"


def test_closing_a_resolved_ticket_records_no_pause(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    api_patch(owner, body["id"], T0 + 30 * MINUTE, status="RESOLVED")

    closed = api_patch(owner, body["id"], T0 + 5 * HOUR, status="CLOSED")

    assert closed["sla_status"] == "met"
    assert not TicketSlaPause.objects.filter(ticket_id=body["id"]).exists()


# At risk and the sla_status filter --------------------------------------------------------------


def test_under_a_quarter_of_a_running_target_left_is_at_risk(owner, representative):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)

    assert api_get(owner, body["id"], T0 + 44 * MINUTE)["sla_status"] == "ok"
    assert api_get(owner, body["id"], T0 + 46 * MINUTE)["sla_status"] == "at_risk"
    assert api_get(owner, body["id"], T0 + 59 * MINUTE)["sla_status"] == "at_risk"
    assert api_get(owner, body["id"], T0 + 60 * MINUTE)["sla_status"] == "breached"

    # Replied in time: only the resolution runs, at risk for its last 2 hours.
    api_comment(representative, body["id"], T0 + 50 * MINUTE)
    assert api_get(owner, body["id"], T0 + 61 * MINUTE)["sla_status"] == "ok"
    assert api_get(owner, body["id"], T0 + 5 * HOUR + 59 * MINUTE)["sla_status"] == "ok"
    assert api_get(owner, body["id"], T0 + 6 * HOUR + MINUTE)["sla_status"] == "at_risk"
    assert api_get(owner, body["id"], T0 + 8 * HOUR)["sla_status"] == "breached"


def _mix(owner, representative, now: datetime) -> dict[str, str | None]:
    """Tickets in every SLA state at `now`: {ticket id: the sla_status expected}."""
    tenant, rep = owner.tenant, representative.user
    policy(tenant, "NORMAL", first=60, resolution=480)
    expected: dict[str, str | None] = {}

    def add(state, ticket):
        expected[str(ticket.pk)] = state
        return ticket

    add("ok", opened(tenant, now - 10 * MINUTE))
    replied(add("ok", opened(tenant, now - 2 * HOUR)), rep, now - 115 * MINUTE)
    add("at_risk", opened(tenant, now - 50 * MINUTE))
    replied(add("at_risk", opened(tenant, now - 7 * HOUR)), rep, now - 400 * MINUTE)
    # Overdue, not marked yet.
    add("breached", opened(tenant, now - 2 * HOUR))
    # Marked by a late reply, then resolved: breached, never met.
    late = add("breached", opened(tenant, now - 4 * HOUR))
    replied(late, rep, now - 150 * MINUTE)  # 90 minutes after its creation
    moved(late, now - 2 * HOUR, status=TicketStatus.RESOLVED)
    # Marked when it was set WAITING late: breached, not paused.
    moved(add("breached", opened(tenant, now - 3 * HOUR)), now - HOUR, status="WAITING")
    moved(add("paused", opened(tenant, now - 30 * MINUTE)), now - 20 * MINUTE, status="WAITING")
    # Waiting since before its due times passed: the clocks stopped, still paused.
    moved(
        add("paused", opened(tenant, now - 10 * HOUR)),
        now - 9 * HOUR - 50 * MINUTE,
        status="WAITING",
    )
    met = add("met", opened(tenant, now - 3 * HOUR))
    replied(met, rep, now - 170 * MINUTE)
    moved(met, now - 2 * HOUR, status=TicketStatus.RESOLVED)
    closed = add("met", opened(tenant, now - 12 * HOUR))
    moved(closed, now - 11 * HOUR - 50 * MINUTE, status=TicketStatus.RESOLVED)
    moved(closed, now - 11 * HOUR, status=TicketStatus.CLOSED)
    add(None, opened(tenant, now - 20 * HOUR, priority="LOW"))
    # The marked ones really are marked (not merely overdue).
    marked = Ticket.objects.filter(tenant=tenant, sla_breached_at__isnull=False)
    assert marked.count() == 2
    assert Ticket.objects.filter(tenant=tenant, first_responded_at__isnull=False).count() == 4
    return expected


def test_the_sla_status_filter_returns_exactly_the_tickets_whose_field_says_so(
    owner, representative
):
    now = T0 + 24 * HOUR
    expected = _mix(owner, representative, now)

    with at(now):
        everything = owner.client.get(TICKETS, {"page_size": 100}).json()
    shown = {row["id"]: row["sla_status"] for row in everything["results"]}
    assert everything["count"] == len(expected)
    assert shown == expected

    for value in SlaStatus.values:
        with at(now):
            response = owner.client.get(TICKETS, {"sla_status": value, "page_size": 100})
        assert response.status_code == 200, response.content
        found = {row["id"] for row in response.json()["results"]}
        assert {row["sla_status"] for row in response.json()["results"]} <= {value}
        wanted = {ticket_id for ticket_id, state in shown.items() if state == value}
        assert wanted, value
        assert found == wanted, value

    with at(now):
        listed = owner.client.get(TICKETS, {"sla_status": "at_risk,paused", "page_size": 100})
        every = owner.client.get(TICKETS, {"sla_status": ",".join(SlaStatus.values)})
    assert {row["id"] for row in listed.json()["results"]} == {
        ticket_id for ticket_id, state in shown.items() if state in ("at_risk", "paused")
    }
    # Every ticket with an SLA is in exactly one state; the one without in none.
    assert every.json()["count"] == sum(state is not None for state in shown.values())


def test_the_sql_twin_agrees_with_the_model_at_every_moment(owner, representative):
    """sla_status_q and Ticket.sla_status_at agree at the edges of every threshold."""
    from support.selectors import sla_status_q

    now = T0 + 24 * HOUR
    _mix(owner, representative, now)
    tickets = list(Ticket.objects.filter(tenant=owner.tenant))
    moments = sorted(
        {
            moment + delta
            for ticket in tickets
            for moment in (
                ticket.first_response_due_at,
                ticket.first_response_risk_at,
                ticket.resolution_due_at,
                ticket.resolution_risk_at,
            )
            if moment is not None
            for delta in (-timedelta(microseconds=1), timedelta(0))
        }
    )
    assert len(moments) > 10
    for moment in moments:
        for value in SlaStatus.values:
            in_sql = set(
                Ticket.objects.filter(sla_status_q(value, moment), tenant=owner.tenant).values_list(
                    "pk", flat=True
                )
            )
            in_python = {ticket.pk for ticket in tickets if ticket.sla_status_at(moment) == value}
            assert in_sql == in_python, (moment, value)


def test_an_unknown_sla_status_is_400(owner):
    from tests.conftest import assert_envelope

    response = owner.client.get(TICKETS, {"sla_status": "late"})

    assert "sla_status" in assert_envelope(response, 400)["details"]


# The breach sweep -------------------------------------------------------------------------------


def test_the_sweep_marks_an_overdue_ticket_once(owner, representative):
    policy(owner.tenant, "URGENT", first=15, resolution=120)
    ticket = opened(
        owner.tenant, T0, owner.user, priority="URGENT", assignee=representative.representative.pk
    )

    with at(T0 + 14 * MINUTE):
        assert sla_breaches_mark(now=T0 + 14 * MINUTE) == 0
    with at(T0 + 20 * MINUTE):
        assert sla_breaches_mark(now=T0 + 20 * MINUTE) == 1
    with at(T0 + 21 * MINUTE):
        assert sla_breaches_mark(now=T0 + 21 * MINUTE) == 0
    with at(T0 + 5 * HOUR):
        assert sla_breaches_mark(now=T0 + 5 * HOUR) == 0

    ticket.refresh_from_db()
    assert ticket.sla_breached_at == T0 + 15 * MINUTE
    assert ticket.sla_breach == "first_response"
    assert ticket.sla_status_at(T0 + 5 * HOUR) == SlaStatus.BREACHED
    event = breach_events(owner.tenant).get()
    assert event.actor_id is None
    assert event.payload["ticket_id"] == str(ticket.pk)
    assert event.payload["ticket_number"] == ticket.ticket_number
    assert event.payload["target"] == "first_response"
    assert parse(event.payload["due_at"]) == T0 + 15 * MINUTE
    assert event.payload["priority"] == "URGENT"
    assert event.payload["assignee_id"] == str(representative.representative.pk)
    assert event.payload["assignee_user_id"] == str(representative.user.pk)
    # One escalation, critical, for the ticket.
    escalation = Escalation.objects.get(tenant=owner.tenant)
    assert escalation.reason == "SLA_BREACH"
    assert escalation.priority == "CRITICAL"
    assert escalation.ticket_id == ticket.pk
    assert escalation.status == "PENDING"
    assert escalation.customer_id == ticket.customer_id
    assert ticket.ticket_number in escalation.issue_description
    created = escalation_events(owner.tenant).get()
    assert created.payload["escalation_id"] == str(escalation.pk)
    assert created.payload["ticket_id"] == str(ticket.pk)
    assert created.payload["reason"] == "SLA_BREACH"
    # Still breached after the sweep, also through the API.
    assert api_get(owner, ticket.pk, T0 + 5 * HOUR)["sla_status"] == "breached"
    shown = api_get(owner, ticket.pk, T0 + 5 * HOUR)
    assert parse(shown["sla_breached_at"]) == T0 + 15 * MINUTE
    assert shown["sla_breach"] == "first_response"


def test_the_sweep_marks_the_missed_resolution_after_an_in_time_reply(owner, representative):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    ticket = opened(owner.tenant, T0)
    replied(ticket, representative.user, T0 + 30 * MINUTE)

    with at(T0 + 9 * HOUR):
        assert sla_breaches_mark(now=T0 + 9 * HOUR) == 1

    ticket.refresh_from_db()
    assert ticket.sla_breach == "resolution"
    assert ticket.sla_breached_at == T0 + 8 * HOUR
    assert breach_events(owner.tenant).get().payload["target"] == "resolution"


def test_the_sweep_leaves_waiting_resolved_and_policyless_tickets_alone(owner):
    policy(owner.tenant, "URGENT", first=15, resolution=120)
    waiting = opened(owner.tenant, T0, priority="URGENT")
    moved(waiting, T0 + 5 * MINUTE, status="WAITING")
    resolved = opened(owner.tenant, T0, priority="URGENT")
    moved(resolved, T0 + 5 * MINUTE, status="RESOLVED")
    closed = opened(owner.tenant, T0, priority="URGENT")
    moved(closed, T0 + 5 * MINUTE, status="RESOLVED")
    moved(closed, T0 + 6 * MINUTE, status="CLOSED")
    policyless = opened(owner.tenant, T0, priority="LOW")
    overdue = opened(owner.tenant, T0, priority="URGENT")

    with at(T0 + 10 * HOUR):
        assert sla_breaches_mark(now=T0 + 10 * HOUR) == 1

    marked = set(Ticket.objects.filter(sla_breached_at__isnull=False).values_list("pk", flat=True))
    assert marked == {overdue.pk}
    for ticket in (waiting, resolved, closed, policyless):
        ticket.refresh_from_db()
        assert ticket.sla_breached_at is None
        assert ticket.sla_breach == ""
    assert waiting.sla_status_at(T0 + 10 * HOUR) == SlaStatus.PAUSED
    assert resolved.sla_status_at(T0 + 10 * HOUR) == SlaStatus.MET
    assert policyless.sla_status_at(T0 + 10 * HOUR) is None
    assert breach_events(owner.tenant).count() == 1
    assert Escalation.objects.filter(tenant=owner.tenant).count() == 1


@pytest.mark.parametrize(
    ("priority", "escalated_at"),
    [("URGENT", "CRITICAL"), ("HIGH", "URGENT"), ("NORMAL", None), ("LOW", None)],
)
def test_a_breach_is_escalated_by_priority(owner, priority, escalated_at):
    policy(owner.tenant, priority, first=30, resolution=240)
    ticket = opened(owner.tenant, T0, priority=priority)

    with at(T0 + HOUR):
        assert sla_breaches_mark(now=T0 + HOUR) == 1

    assert breach_events(owner.tenant).count() == 1
    escalations = list(Escalation.objects.filter(tenant=owner.tenant))
    if escalated_at is None:
        assert escalations == []
        assert not escalation_events(owner.tenant).exists()
    else:
        assert [(e.reason, e.priority, e.ticket_id, e.status) for e in escalations] == [
            ("SLA_BREACH", escalated_at, ticket.pk, "PENDING")
        ]
        assert escalation_events(owner.tenant).count() == 1


def test_the_sweep_works_through_every_batch(owner, monkeypatch):
    from support.services import sla_clock

    monkeypatch.setattr(sla_clock, "SWEEP_BATCH", 2)
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    tickets = [opened(owner.tenant, T0 + n * MINUTE) for n in range(5)]
    in_time = opened(owner.tenant, T0 + 2 * HOUR)

    with at(T0 + 2 * HOUR + MINUTE):
        assert sla_breaches_mark(now=T0 + 2 * HOUR + MINUTE) == 5
        assert sla_breaches_mark(now=T0 + 2 * HOUR + MINUTE) == 0

    for n, ticket in enumerate(tickets):
        ticket.refresh_from_db()
        assert ticket.sla_breached_at == T0 + n * MINUTE + HOUR
    in_time.refresh_from_db()
    assert in_time.sla_breached_at is None
    assert breach_events(owner.tenant).count() == 5


def test_the_assignee_is_notified_of_a_breach(owner, representative):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    ticket = opened(owner.tenant, T0, assignee=representative.representative.pk)
    unassigned = opened(owner.tenant, T0)

    with at(T0 + 2 * HOUR):
        assert sla_breaches_mark(now=T0 + 2 * HOUR) == 2

    notices = Notification.objects.filter(event_type="support.sla.breached")
    in_app = notices.get(channel="in_app")
    assert in_app.recipient_id == representative.user.pk
    assert in_app.tenant_id == owner.tenant.pk
    assert ticket.ticket_number in in_app.title
    assert in_app.type == "warning"
    assert in_app.metadata["ticket_id"] == str(ticket.pk)
    # Nobody else (the owner is not notified; the unassigned ticket notifies no one).
    assert set(notices.values_list("recipient_id", flat=True)) == {representative.user.pk}
    assert not notices.filter(metadata__ticket_id=str(unassigned.pk)).exists()


def test_an_assignee_who_is_no_longer_an_active_member_is_not_notified(owner, representative):
    from tenants.models import Membership, MembershipStatus

    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    opened(owner.tenant, T0, assignee=representative.representative.pk)
    Membership.objects.filter(tenant=owner.tenant, user=representative.user).update(
        status=MembershipStatus.SUSPENDED
    )

    with at(T0 + 2 * HOUR):
        assert sla_breaches_mark(now=T0 + 2 * HOUR) == 1

    assert breach_events(owner.tenant).count() == 1
    assert not Notification.objects.filter(event_type="support.sla.breached").exists()


def test_the_management_command_marks_breaches(owner):
    policy(owner.tenant, "HIGH", first=30, resolution=240)
    ticket = opened(owner.tenant, T0, priority="HIGH")

    first, second = StringIO(), StringIO()
    with at(T0 + HOUR):
        call_command("mark_sla_breaches", stdout=first)
        call_command("mark_sla_breaches", stdout=second)

    assert first.getvalue().strip() == "1 ticket(s) marked breached."
    assert second.getvalue().strip() == "0 ticket(s) marked breached."
    ticket.refresh_from_db()
    assert ticket.sla_breached_at == T0 + 30 * MINUTE
    assert ticket.sla_breach == "first_response"
    assert breach_events(owner.tenant).count() == 1
    assert Escalation.objects.get(tenant=owner.tenant).priority == "URGENT"


def test_the_beat_task_marks_breaches_at_the_current_time(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    ticket = opened(owner.tenant, T0)

    with at(T0 + 59 * MINUTE):
        assert mark_sla_breaches() == 0
    with at(T0 + 61 * MINUTE):
        assert mark_sla_breaches() == 1

    ticket.refresh_from_db()
    assert ticket.sla_breached_at == T0 + HOUR


def test_the_beat_schedule_runs_the_sweep():
    entry = settings.CELERY_BEAT_SCHEDULE["support.mark-sla-breaches"]

    assert entry["task"] == "support.tasks.mark_sla_breaches"
    assert mark_sla_breaches.name == "support.tasks.mark_sla_breaches"


# Breaches marked at once --------------------------------------------------------------------------


def test_resolving_late_marks_the_resolution_breach_in_the_same_request(owner, representative):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    api_comment(representative, body["id"], T0 + 10 * MINUTE)

    resolved = api_patch(owner, body["id"], T0 + 9 * HOUR, status="RESOLVED")

    assert resolved["sla_breach"] == "resolution"
    assert parse(resolved["sla_breached_at"]) == T0 + 8 * HOUR
    assert resolved["sla_status"] == "breached"
    event = breach_events(owner.tenant).get()
    assert event.payload["target"] == "resolution"
    assert event.payload["ticket_id"] == body["id"]
    with at(T0 + 10 * HOUR):
        assert sla_breaches_mark(now=T0 + 10 * HOUR) == 0
    assert breach_events(owner.tenant).count() == 1


def test_a_late_first_reply_marks_the_first_response_breach(owner, representative):
    policy(owner.tenant, "URGENT", first=15, resolution=120)
    body = api_create(owner, T0, priority="URGENT")

    comment = api_comment(representative, body["id"], T0 + 40 * MINUTE)

    assert comment["representative_id"] == str(representative.representative.pk)
    shown = api_get(owner, body["id"], T0 + 41 * MINUTE)
    assert parse(shown["first_responded_at"]) == T0 + 40 * MINUTE
    assert shown["sla_breach"] == "first_response"
    assert parse(shown["sla_breached_at"]) == T0 + 15 * MINUTE
    assert shown["sla_status"] == "breached"
    assert breach_events(owner.tenant).count() == 1
    assert Escalation.objects.get(tenant=owner.tenant, reason="SLA_BREACH").priority == "CRITICAL"


def test_an_internal_note_or_a_non_representatives_comment_is_no_first_response(
    owner, representative
):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)

    api_comment(representative, body["id"], T0 + 5 * MINUTE, internal=True)
    api_comment(owner, body["id"], T0 + 10 * MINUTE)  # the owner is no representative
    shown = api_get(owner, body["id"], T0 + 11 * MINUTE)

    assert shown["first_responded_at"] is None
    assert parse(shown["first_response_due_at"]) == T0 + HOUR
    assert [c["representative_id"] for c in shown["comments"]] == [
        str(representative.representative.pk),
        None,
    ]

    api_comment(representative, body["id"], T0 + 20 * MINUTE)
    api_comment(representative, body["id"], T0 + 30 * MINUTE)  # a second reply changes nothing

    assert parse(api_get(owner, body["id"], T0 + 31 * MINUTE)["first_responded_at"]) == (
        T0 + 20 * MINUTE
    )
    assert not breach_events(owner.tenant).exists()


def test_an_in_time_reply_and_resolution_meet_the_sla(owner, representative):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    api_comment(representative, body["id"], T0 + 30 * MINUTE)

    resolved = api_patch(owner, body["id"], T0 + 7 * HOUR, status="RESOLVED")

    assert resolved["sla_status"] == "met"
    assert resolved["sla_breached_at"] is None
    assert resolved["sla_breach"] is None
    # Met for good: the sweep long after leaves it alone.
    with at(T0 + 48 * HOUR):
        assert sla_breaches_mark(now=T0 + 48 * HOUR) == 0
    assert api_get(owner, body["id"], T0 + 48 * HOUR)["sla_status"] == "met"
    assert not breach_events(owner.tenant).exists()


def test_a_move_to_waiting_after_a_due_time_marks_the_breach_first(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)

    waiting = api_patch(owner, body["id"], T0 + 2 * HOUR, status="WAITING")

    assert waiting["sla_breach"] == "first_response"
    assert parse(waiting["sla_breached_at"]) == T0 + HOUR
    assert waiting["sla_status"] == "breached"
    assert breach_events(owner.tenant).count() == 1


# Re-targeting on a priority change ---------------------------------------------------------------


def test_a_priority_change_retargets_from_the_creation_time(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    urgent = policy(owner.tenant, "URGENT", first=15, resolution=120)
    body = api_create(owner, T0)

    changed = api_patch(owner, body["id"], T0 + 5 * MINUTE, priority="URGENT")

    assert changed["sla_policy_id"] == str(urgent.pk)
    assert parse(changed["first_response_due_at"]) == T0 + 15 * MINUTE
    assert parse(changed["resolution_due_at"]) == T0 + 120 * MINUTE
    assert changed["sla_status"] == "ok"
    ticket = Ticket.objects.get(pk=body["id"])
    assert ticket.sla_terms["first_response_minutes"] == 15
    assert ticket.first_response_risk_at == T0 + 15 * MINUTE - timedelta(minutes=3.75)
    assert ticket.resolution_risk_at == T0 + 90 * MINUTE
    # Now at risk sooner.
    assert api_get(owner, body["id"], T0 + 12 * MINUTE)["sla_status"] == "at_risk"


def test_a_priority_change_counts_the_pauses_already_taken(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    policy(owner.tenant, "HIGH", first=30, resolution=240)
    body = api_create(owner, T0)
    api_patch(owner, body["id"], T0 + 10 * MINUTE, status="WAITING")
    api_patch(owner, body["id"], T0 + 25 * MINUTE, status="OPEN")

    changed = api_patch(owner, body["id"], T0 + 26 * MINUTE, priority="HIGH")

    assert parse(changed["first_response_due_at"]) == T0 + 45 * MINUTE
    assert parse(changed["resolution_due_at"]) == T0 + 255 * MINUTE


def test_a_priority_without_a_policy_clears_the_sla(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)

    changed = api_patch(owner, body["id"], T0 + 5 * MINUTE, priority="LOW")

    assert changed["sla_status"] is None
    assert changed["sla_policy_id"] is None
    assert changed["first_response_due_at"] is None
    assert changed["resolution_due_at"] is None
    ticket = Ticket.objects.get(pk=body["id"])
    assert ticket.sla_terms is None
    assert ticket.first_response_risk_at is None
    assert ticket.resolution_risk_at is None
    with at(T0 + 48 * HOUR):
        assert sla_breaches_mark(now=T0 + 48 * HOUR) == 0
    with at(T0 + 48 * HOUR):
        found = owner.client.get(TICKETS, {"sla_status": ",".join(SlaStatus.values)}).json()
    assert found["count"] == 0


def test_clearing_the_sla_while_waiting_leaves_no_pause_running(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    api_patch(owner, body["id"], T0 + 10 * MINUTE, status="WAITING")
    api_patch(owner, body["id"], T0 + 20 * MINUTE, priority="LOW")

    reopened = api_patch(owner, body["id"], T0 + 30 * MINUTE, status="OPEN")

    assert reopened["status"] == "OPEN"
    assert reopened["sla_paused_at"] is None
    assert not TicketSlaPause.objects.filter(ticket_id=body["id"], ended_at__isnull=True).exists()


def test_a_pause_left_open_by_clearing_the_sla_is_not_counted_twice(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    body = api_create(owner, T0)
    api_patch(owner, body["id"], T0 + 10 * MINUTE, status="WAITING")
    api_patch(owner, body["id"], T0 + 20 * MINUTE, priority="LOW")
    api_patch(owner, body["id"], T0 + 30 * MINUTE, status="OPEN")
    api_patch(owner, body["id"], T0 + 40 * MINUTE, priority="NORMAL")
    api_patch(owner, body["id"], T0 + 50 * MINUTE, status="WAITING")

    back = api_patch(owner, body["id"], T0 + 60 * MINUTE, status="OPEN")

    # At most 20 minutes (10 -> 30) and 10 minutes (50 -> 60) were spent waiting.
    assert parse(back["first_response_due_at"]) <= T0 + 90 * MINUTE
    assert parse(back["resolution_due_at"]) <= T0 + 510 * MINUTE


def test_a_priority_change_of_a_resolved_ticket_holds_its_reopening_to_the_new_policy(owner):
    policy(owner.tenant, "NORMAL", first=60, resolution=480)
    urgent = policy(owner.tenant, "URGENT", first=15, resolution=120)
    body = api_create(owner, T0)
    api_patch(owner, body["id"], T0 + 10 * MINUTE, status="RESOLVED")

    changed = api_patch(owner, body["id"], T0 + 20 * MINUTE, priority="URGENT")
    reopened = api_patch(owner, body["id"], T0 + 30 * MINUTE, status="OPEN")

    # Settled, it stays met; reopened, it runs on the urgent terms, the resolved stretch
    # (20 minutes) not counted.
    assert changed["priority"] == "URGENT"
    assert changed["sla_policy_id"] == str(urgent.pk)
    assert changed["sla_status"] == "met"
    assert reopened["sla_policy_id"] == str(urgent.pk)
    assert parse(reopened["resolution_due_at"]) == T0 + 2 * HOUR + 20 * MINUTE


# A race -----------------------------------------------------------------------------------------


def _sweep_in_thread(now: datetime, start: threading.Barrier) -> int:
    try:
        start.wait(timeout=30)
        return sla_breaches_mark(now=now)
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_mark_a_ticket_once():
    tenant = TenantFactory()
    SlaPolicyFactory(
        tenant=tenant, priority="URGENT", first_response_minutes=15, resolution_minutes=120
    )
    ticket = ticket_create(tenant=tenant, actor=None, subject="Raced", priority="URGENT")
    later = ticket.created_at + 3 * HOUR

    for _ in range(3):
        Ticket.objects.filter(pk=ticket.pk).update(sla_breached_at=None, sla_breach="")
        start = threading.Barrier(2)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(_sweep_in_thread, later, start) for _ in range(2)]
            counts = sorted(future.result(timeout=60) for future in futures)
        assert counts == [0, 1]

    ticket.refresh_from_db()
    assert ticket.sla_breach == "first_response"
    assert ticket.sla_breached_at == ticket.first_response_due_at
    # Three rounds, one breach (and one escalation) each: never two for one marking.
    assert breach_events(tenant).count() == 3
    assert Escalation.objects.filter(tenant=tenant, ticket=ticket).count() == 3
