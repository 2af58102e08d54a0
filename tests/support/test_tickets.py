"""Tickets: the generic battery, gapless per-organization numbering (also under a race), the
legal status moves and their audit events, the satisfaction score and sentiment ranges, the
customer link, filters, search and ordering, deletion giving the assignee's slot back, who may
do what, and the public event of a creation."""

import itertools
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from audit.models import AuditEvent
from config.exceptions import Conflict
from notifications.models import WebhookDelivery
from support import selectors
from support.models import (
    OPEN_TICKET_STATUSES,
    TICKET_TRANSITIONS,
    CustomerProfile,
    Representative,
    Ticket,
    TicketSequence,
    TicketStatus,
)
from support.services import ticket_create
from tenants.models import Role
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import TenantFactory
from tests.notifications.factories import WebhookEndpointFactory

from .factories import CustomerProfileFactory, RepresentativeFactory, TicketFactory

pytestmark = pytest.mark.django_db

TICKETS = "/api/v1/support/tickets/"
CUSTOMERS = "/api/v1/support/customer-profiles/"
REPRESENTATIVES = "/api/v1/support/representatives/"
STATUSES = [choice.value for choice in TicketStatus]


def detail(obj) -> str:
    return f"{TICKETS}{obj.pk}/"


def assign_url(obj) -> str:
    return f"{TICKETS}{obj.pk}/assign/"


def ticket_events(tenant, event_type=None):
    events = AuditEvent.objects.filter(tenant=tenant, event_type__startswith="support.ticket.")
    if event_type is not None:
        events = events.filter(event_type=event_type)
    return events


def create(caller, **body):
    body.setdefault("subject", "SSO integration failure")
    return caller.client.post(TICKETS, body, format="json")


def numbers(tenant) -> list[int]:
    return sorted(Ticket.objects.filter(tenant=tenant).values_list("number", flat=True))


def assigned(caller, representative, **fields) -> Ticket:
    """A ticket opened by the service (numbered) and assigned to `representative`."""
    fields.setdefault("subject", "Assigned")
    return ticket_create(
        tenant=caller.tenant, actor=caller.user, assignee=representative.pk, **fields
    )


def at_capacity(tenant) -> Representative:
    representative = RepresentativeFactory(tenant=tenant, max_chats=1)
    Representative.objects.filter(pk=representative.pk).update(active_chats=1)
    return representative


def in_status(tenant, status, **fields) -> Ticket:
    """A ticket of `tenant` already in `status`, with the timestamps that status has."""
    now = datetime.now(UTC)
    if status in (TicketStatus.RESOLVED, TicketStatus.CLOSED):
        fields.setdefault("resolved_at", now)
    if status == TicketStatus.CLOSED:
        fields.setdefault("closed_at", now)
    return TicketFactory(tenant=tenant, status=status, **fields)


# The battery ------------------------------------------------------------------------------------


class TestTickets(ResourceBattery):
    url = TICKETS
    create_data = {
        "subject": "SSO integration failure",
        "description": "The SSO login loops back to the sign-in page.",
        "priority": "HIGH",
        "category": "TECHNICAL_ISSUE",
    }
    update_data = {"priority": "URGENT", "status": "IN_PROGRESS"}
    audit_prefix = "support.ticket"
    related_fields = {"customer_id": CustomerProfile}
    filter_examples = {
        "assignee": lambda ticket: str(RepresentativeFactory(tenant=ticket.tenant).pk),
        "customer": lambda ticket: str(ticket.customer_id),
        "unassigned": lambda ticket: "true",
        "created_after": lambda ticket: (ticket.created_at - timedelta(minutes=1)).isoformat(),
        "created_before": lambda ticket: (ticket.created_at + timedelta(minutes=1)).isoformat(),
        "ticket_number": lambda ticket: ticket.ticket_number,
        "sla_status": lambda ticket: "ok,met,paused,at_risk,breached",
        "sla_breached": lambda ticket: "false",
    }


# Numbering ---------------------------------------------------------------------------------------


def test_an_organizations_tickets_are_numbered_from_ticket_1001(owner):
    answers = [create(owner, subject=f"Ticket {n}") for n in range(3)]

    assert [a.status_code for a in answers] == [201, 201, 201]
    assert [a.json()["ticket_number"] for a in answers] == [
        "TICKET-1001",
        "TICKET-1002",
        "TICKET-1003",
    ]
    assert numbers(owner.tenant) == [1001, 1002, 1003]
    assert TicketSequence.objects.get(tenant=owner.tenant).last_number == 1003


def test_each_organization_has_its_own_numbers(make_caller):
    first, second = make_caller(Role.OWNER), make_caller(Role.OWNER)

    a1 = create(first).json()["ticket_number"]
    b1 = create(second).json()["ticket_number"]
    a2 = create(first).json()["ticket_number"]

    assert (a1, b1, a2) == ("TICKET-1001", "TICKET-1001", "TICKET-1002")


def test_a_creation_refused_for_capacity_takes_no_number(owner):
    full = at_capacity(owner.tenant)
    created = create(owner)

    with pytest.raises(Conflict):
        ticket_create(tenant=owner.tenant, actor=owner.user, subject="S", assignee=full.pk)
    after = create(owner)

    assert created.json()["ticket_number"] == "TICKET-1001"
    assert after.json()["ticket_number"] == "TICKET-1002"
    assert numbers(owner.tenant) == [1001, 1002]
    assert ticket_events(owner.tenant).count() == 2
    assert Representative.objects.get(pk=full.pk).active_chats == 1


def test_a_creation_refused_for_capacity_through_the_api_is_409_and_takes_no_number(owner):
    full = at_capacity(owner.tenant)
    create(owner)

    refused = create(owner, assignee=str(full.pk))
    after = create(owner)

    error = assert_envelope(refused, 409, "CONFLICT")
    assert error["details"] == {"representative": str(full.pk), "max_chats": 1}
    assert after.json()["ticket_number"] == "TICKET-1002"
    assert numbers(owner.tenant) == [1001, 1002]


def test_a_creation_refused_for_a_bad_customer_takes_no_number(owner):
    create(owner)

    refused = create(owner, customer_id=str(uuid.uuid4()))
    after = create(owner)

    assert "customer_id" in assert_envelope(refused, 400)["details"]
    assert after.json()["ticket_number"] == "TICKET-1002"
    assert numbers(owner.tenant) == [1001, 1002]


def test_the_very_first_creation_refused_takes_no_number(owner):
    refused = create(owner, customer_id=str(uuid.uuid4()))
    first = create(owner)

    assert_envelope(refused, 400)
    assert first.json()["ticket_number"] == "TICKET-1001"


@pytest.mark.parametrize("value", ["TICKET-1002", "1002", "ticket-1002", " TICKET-1002 "])
def test_a_ticket_is_found_by_its_number(owner, value):
    for _ in range(3):
        create(owner)
    wanted = Ticket.objects.get(tenant=owner.tenant, number=1002)

    response = owner.client.get(TICKETS, {"ticket_number": value})

    assert [row["id"] for row in response.json()["results"]] == [str(wanted.pk)]


@pytest.mark.parametrize(
    "value", ["TICKET-", "TICKET-abc", "ABC-1002", "-1002", "1002.0", "9" * 19, "TICKET-9999"]
)
def test_a_garbage_ticket_number_finds_nothing(owner, value):
    for _ in range(2):
        create(owner)

    response = owner.client.get(TICKETS, {"ticket_number": value})

    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


def test_another_organizations_ticket_number_finds_nothing(make_caller):
    mine, theirs = make_caller(Role.OWNER), make_caller(Role.OWNER)
    create(theirs)

    response = mine.client.get(TICKETS, {"ticket_number": "TICKET-1001"})

    assert response.json()["results"] == []


def _create_in_thread(tenant, n: int, start: threading.Event):
    try:
        start.wait(timeout=30)
        return ticket_create(tenant=tenant, actor=None, subject=f"Race {n}").number
    finally:
        connection.close()


def _race(tenant, calls: int, workers: int = 25) -> list[int]:
    start = threading.Event()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_create_in_thread, tenant, n, start) for n in range(calls)]
        start.set()
        return [future.result(timeout=300) for future in futures]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_tickets_created_at_once_are_numbered_without_gaps_or_duplicates():
    tenant = TenantFactory()
    ticket_create(tenant=tenant, actor=None, subject="First")  # the sequence row exists

    allocated = _race(tenant, 50)

    assert sorted(allocated) == list(range(1002, 1052))
    assert numbers(tenant) == list(range(1001, 1052))
    assert TicketSequence.objects.get(tenant=tenant).last_number == 1051
    assert ticket_events(tenant, "support.ticket.created").count() == 51


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_organizations_very_first_tickets_created_at_once_start_at_1001():
    tenant = TenantFactory()
    other = TenantFactory()
    ticket_create(tenant=other, actor=None, subject="Elsewhere")
    assert not TicketSequence.objects.filter(tenant=tenant).exists()

    allocated = _race(tenant, 50)

    assert sorted(allocated) == list(range(1001, 1051))
    assert numbers(tenant) == list(range(1001, 1051))
    assert TicketSequence.objects.filter(tenant=tenant).count() == 1
    assert TicketSequence.objects.get(tenant=tenant).last_number == 1050
    assert numbers(other) == [1001]


# Lifecycle ---------------------------------------------------------------------------------------

LEGAL = sorted(
    (source, target) for source, targets in TICKET_TRANSITIONS.items() for target in targets
)
ILLEGAL = sorted(
    (source, target)
    for source, target in itertools.product(STATUSES, STATUSES)
    if source != target and target not in TICKET_TRANSITIONS[source]
)


def expected_event(source: str, target: str) -> str:
    if target == TicketStatus.RESOLVED:
        return "support.ticket.resolved"
    if target == TicketStatus.CLOSED:
        return "support.ticket.closed"
    if source == TicketStatus.RESOLVED:
        return "support.ticket.reopened"
    return "support.ticket.updated"


def test_the_transition_table_is_as_documented():
    assert TICKET_TRANSITIONS[TicketStatus.CLOSED] == frozenset()
    assert len(LEGAL) == 12
    assert len(ILLEGAL) == 8
    for status in OPEN_TICKET_STATUSES:
        assert TicketStatus.RESOLVED in TICKET_TRANSITIONS[status]
        assert TicketStatus.CLOSED not in TICKET_TRANSITIONS[status]


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{s}->{t}" for s, t in LEGAL])
def test_every_legal_move_works_and_records_one_event(owner, source, target):
    ticket = in_status(owner.tenant, source)

    response = owner.client.patch(detail(ticket), {"status": target}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == target
    assert Ticket.objects.get(pk=ticket.pk).status == target
    events = list(ticket_events(owner.tenant))
    assert len(events) == 1
    assert events[0].event_type == expected_event(source, target)
    assert events[0].payload["previous_status"] == source
    assert events[0].payload["status"] == target
    assert events[0].payload["ticket_number"] == ticket.ticket_number


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{s}->{t}" for s, t in ILLEGAL])
def test_every_illegal_move_is_409_naming_the_allowed_moves(owner, source, target):
    ticket = in_status(owner.tenant, source)
    before = Ticket.objects.filter(pk=ticket.pk).values().get()

    response = owner.client.patch(
        detail(ticket), {"status": target, "subject": "Changed"}, format="json"
    )

    error = assert_envelope(response, 409, "CONFLICT")
    allowed = sorted(TICKET_TRANSITIONS[source])
    assert error["details"] == {"status": source, "allowed": allowed}
    for move in allowed:
        assert move in error["message"]
    assert Ticket.objects.filter(pk=ticket.pk).values().get() == before
    assert not ticket_events(owner.tenant).exists()


def test_closed_is_final(owner):
    ticket = in_status(owner.tenant, TicketStatus.CLOSED)

    for target in STATUSES:
        if target == TicketStatus.CLOSED:
            continue
        response = owner.client.patch(detail(ticket), {"status": target}, format="json")
        error = assert_envelope(response, 409, "CONFLICT")
        assert error["details"]["allowed"] == []
        assert "final" in error["message"]
    assert Ticket.objects.get(pk=ticket.pk).status == TicketStatus.CLOSED


def test_moving_to_the_same_status_is_no_change(owner):
    ticket = in_status(owner.tenant, TicketStatus.WAITING)

    response = owner.client.patch(detail(ticket), {"status": "WAITING"}, format="json")

    assert response.status_code == 200, response.content
    assert not ticket_events(owner.tenant).exists()


def test_resolving_reopening_and_closing_stamp_their_times(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    url = detail(ticket)
    first = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    with time_machine.travel(first, tick=False):
        resolved = owner.client.patch(url, {"status": "RESOLVED"}, format="json").json()
    assert resolved["resolved_at"] == "2026-03-02T09:00:00Z"
    assert resolved["closed_at"] is None
    assert resolved["reopened_count"] == 0

    with time_machine.travel(first + timedelta(hours=1), tick=False):
        reopened = owner.client.patch(url, {"status": "IN_PROGRESS"}, format="json").json()
    assert reopened["resolved_at"] is None
    assert reopened["reopened_count"] == 1

    with time_machine.travel(first + timedelta(hours=2), tick=False):
        owner.client.patch(url, {"status": "RESOLVED"}, format="json")
    with time_machine.travel(first + timedelta(hours=3), tick=False):
        closed = owner.client.patch(url, {"status": "CLOSED"}, format="json").json()
    assert closed["resolved_at"] == "2026-03-02T11:00:00Z"
    assert closed["closed_at"] == "2026-03-02T12:00:00Z"
    assert closed["reopened_count"] == 1

    types = list(
        ticket_events(owner.tenant)
        .order_by("created_at", "id")
        .values_list("event_type", flat=True)
    )
    assert types == [
        "support.ticket.resolved",
        "support.ticket.reopened",
        "support.ticket.resolved",
        "support.ticket.closed",
    ]


def test_a_resolved_event_carries_its_resolution_time(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    owner.client.patch(detail(ticket), {"status": "RESOLVED"}, format="json")

    event = ticket_events(owner.tenant, "support.ticket.resolved").get()
    assert event.payload["resolved_at"] is not None
    assert event.payload["previous_status"] == "OPEN"


# Satisfaction score, sentiment, customer --------------------------------------------------------


@pytest.mark.parametrize("status", [s.value for s in OPEN_TICKET_STATUSES])
def test_a_satisfaction_score_is_refused_on_an_open_ticket(owner, status):
    ticket = in_status(owner.tenant, status)

    response = owner.client.patch(detail(ticket), {"customer_satisfaction_score": 4}, format="json")

    assert "customer_satisfaction_score" in assert_envelope(response, 400)["details"]
    assert Ticket.objects.get(pk=ticket.pk).customer_satisfaction_score is None


@pytest.mark.parametrize("status", ["RESOLVED", "CLOSED"])
@pytest.mark.parametrize("score", [1, 5])
def test_a_satisfaction_score_is_given_once_resolved(owner, status, score):
    ticket = in_status(owner.tenant, status)

    response = owner.client.patch(
        detail(ticket), {"customer_satisfaction_score": score}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["customer_satisfaction_score"] == score
    assert ticket_events(owner.tenant, "support.ticket.updated").count() == 1


def test_a_satisfaction_score_may_come_in_the_patch_that_resolves(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    response = owner.client.patch(
        detail(ticket), {"status": "RESOLVED", "customer_satisfaction_score": 5}, format="json"
    )

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["customer_satisfaction_score"]) == (
        "RESOLVED",
        5,
    )
    assert ticket_events(owner.tenant, "support.ticket.resolved").count() == 1


def test_a_score_in_a_patch_that_reopens_is_refused(owner):
    ticket = in_status(owner.tenant, TicketStatus.RESOLVED)

    response = owner.client.patch(
        detail(ticket), {"status": "OPEN", "customer_satisfaction_score": 3}, format="json"
    )

    assert_envelope(response, 400)
    assert Ticket.objects.get(pk=ticket.pk).status == TicketStatus.RESOLVED


def test_a_score_may_be_cleared_on_an_open_ticket(owner):
    ticket = in_status(owner.tenant, TicketStatus.OPEN)

    response = owner.client.patch(
        detail(ticket), {"customer_satisfaction_score": None}, format="json"
    )

    assert response.status_code == 200, response.content


@pytest.mark.parametrize("score", [0, 6, -1, "five", 4.5])
def test_a_satisfaction_score_outside_1_to_5_is_400(owner, score):
    ticket = in_status(owner.tenant, TicketStatus.RESOLVED)

    response = owner.client.patch(
        detail(ticket), {"customer_satisfaction_score": score}, format="json"
    )

    assert "customer_satisfaction_score" in assert_envelope(response, 400)["details"]
    assert Ticket.objects.get(pk=ticket.pk).customer_satisfaction_score is None


@pytest.mark.parametrize("sentiment", [-1, 0, 0.25, 1])
def test_a_sentiment_from_minus_1_to_1_is_accepted(owner, sentiment):
    created = create(owner, sentiment=sentiment)
    ticket = TicketFactory(tenant=owner.tenant)
    patched = owner.client.patch(detail(ticket), {"sentiment": sentiment}, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["sentiment"] == sentiment
    assert patched.json()["sentiment"] == sentiment


@pytest.mark.parametrize("sentiment", [1.5, -1.01, 2, 0.123, "happy"])
def test_a_sentiment_outside_the_range_is_400(owner, sentiment):
    ticket = TicketFactory(tenant=owner.tenant)

    created = create(owner, sentiment=sentiment)
    patched = owner.client.patch(detail(ticket), {"sentiment": sentiment}, format="json")

    assert "sentiment" in assert_envelope(created, 400)["details"]
    assert "sentiment" in assert_envelope(patched, 400)["details"]
    assert not Ticket.objects.filter(tenant=owner.tenant).exclude(pk=ticket.pk).exists()
    assert Ticket.objects.get(pk=ticket.pk).sentiment is None


def test_a_ticket_is_created_for_a_customer_of_the_organization(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant, name="Ada")

    response = create(owner, customer_id=str(customer.pk))

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["customer_id"] == str(customer.pk)
    assert body["customer"]["name"] == "Ada"
    assert body["created_by"]["id"] == str(owner.user.pk)
    assert body["status"] == "OPEN"
    assert body["assignee"] is None


def test_another_organizations_customer_is_refused_like_a_random_one(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    foreign = CustomerProfileFactory(tenant=TenantFactory())
    answers = []
    for value in (str(foreign.pk), str(uuid.uuid4())):
        created = assert_envelope(create(owner, customer_id=value), 400)
        patched = assert_envelope(
            owner.client.patch(detail(ticket), {"customer_id": value}, format="json"), 400
        )
        answers.append((created["message"], created["details"], patched["details"]))

    assert answers[0] == answers[1]
    assert Ticket.objects.get(pk=ticket.pk).customer_id == ticket.customer_id
    assert not Ticket.objects.filter(customer=foreign).exists()


def test_a_ticket_may_lose_its_customer(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    response = owner.client.patch(detail(ticket), {"customer_id": None}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["customer"] is None


def test_a_customer_with_tickets_is_not_deleted(owner):
    ticket = TicketFactory(tenant=owner.tenant, status=TicketStatus.CLOSED)

    response = owner.client.delete(f"{CUSTOMERS}{ticket.customer_id}/")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {"tickets": 1}
    assert CustomerProfile.objects.filter(pk=ticket.customer_id).exists()


def test_a_customer_shows_only_their_open_tickets(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    open_ones = {
        str(in_status(owner.tenant, status, customer=customer).pk)
        for status in OPEN_TICKET_STATUSES
    }
    in_status(owner.tenant, TicketStatus.RESOLVED, customer=customer)
    in_status(owner.tenant, TicketStatus.CLOSED, customer=customer)
    TicketFactory(tenant=owner.tenant)  # another customer's

    response = owner.client.get(f"{CUSTOMERS}{customer.pk}/")

    assert response.status_code == 200, response.content
    shown = response.json()["open_tickets"]
    assert {row["id"] for row in shown} == open_ones
    assert all(row["customer_id"] == str(customer.pk) for row in shown)
    assert response.json()["open_tickets_count"] == len(open_ones)


def test_a_customer_shows_the_newest_of_many_open_tickets_and_how_many(owner, monkeypatch):
    """A customer with thousands of tickets open made an answer of thousands of tickets."""
    monkeypatch.setattr(selectors, "OPEN_TICKETS_SHOWN", 3)
    customer = CustomerProfileFactory(tenant=owner.tenant)
    start = datetime.now(UTC) - timedelta(hours=1)
    newest_first = []
    for minutes in range(5):
        ticket = in_status(owner.tenant, TicketStatus.OPEN, customer=customer)
        Ticket.objects.filter(pk=ticket.pk).update(created_at=start + timedelta(minutes=minutes))
        newest_first.insert(0, str(ticket.pk))
    in_status(owner.tenant, TicketStatus.CLOSED, customer=customer)

    response = owner.client.get(f"{CUSTOMERS}{customer.pk}/")

    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["open_tickets"]] == newest_first[:3]
    assert response.json()["open_tickets_count"] == 5


# Filters, search, ordering ----------------------------------------------------------------------


def listed(caller, **params) -> set[str]:
    response = caller.client.get(TICKETS, {**params, "page_size": 100})
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def ids(*tickets) -> set[str]:
    return {str(ticket.pk) for ticket in tickets}


def test_status_priority_and_category_take_comma_lists(owner):
    t = owner.tenant
    open_low = in_status(t, "OPEN", priority="LOW", category="ACCOUNT")
    waiting_high = in_status(t, "WAITING", priority="HIGH", category="BILLING_PAYMENT")
    closed_urgent = in_status(t, "CLOSED", priority="URGENT", category="OTHER")

    assert listed(owner, status="OPEN") == ids(open_low)
    assert listed(owner, status="OPEN,WAITING") == ids(open_low, waiting_high)
    assert listed(owner, priority="HIGH,URGENT") == ids(waiting_high, closed_urgent)
    assert listed(owner, category="ACCOUNT,OTHER") == ids(open_low, closed_urgent)
    assert listed(owner, status="OPEN,CLOSED", priority="URGENT") == ids(closed_urgent)


@pytest.mark.parametrize(
    "params", [{"status": "DONE"}, {"priority": "low"}, {"category": "TECHNICAL_ISSUE,NOPE"}]
)
def test_an_unknown_choice_in_a_filter_is_400(owner, params):
    assert_envelope(owner.client.get(TICKETS, params), 400)


def test_assignee_customer_and_unassigned_filters(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    customer = CustomerProfileFactory(tenant=owner.tenant)
    assigned = TicketFactory(tenant=owner.tenant, assignee=representative)
    of_customer = TicketFactory(tenant=owner.tenant, customer=customer)
    other = TicketFactory(tenant=owner.tenant)

    assert listed(owner, assignee=str(representative.pk)) == ids(assigned)
    assert listed(owner, customer=str(customer.pk)) == ids(of_customer)
    assert listed(owner, unassigned="true") == ids(of_customer, other)
    assert listed(owner, unassigned="false") == ids(assigned)
    assert listed(owner, assignee=str(uuid.uuid4())) == set()


def test_the_creation_range_filters(owner):
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    made = []
    for day in range(3):
        with time_machine.travel(base + timedelta(days=day), tick=False):
            made.append(TicketFactory(tenant=owner.tenant))

    assert listed(owner, created_after="2026-03-02T12:00:00Z") == ids(made[1], made[2])
    assert listed(owner, created_before="2026-03-02T12:00:00Z") == ids(made[0])
    assert listed(
        owner, created_after="2026-03-02T00:00:00Z", created_before="2026-03-03T00:00:00Z"
    ) == ids(made[1])


def test_search_finds_subjects_and_customer_names(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant, name="Grace Hopper")
    by_subject = TicketFactory(tenant=owner.tenant, subject="Invoice PDF is blank")
    by_customer = TicketFactory(tenant=owner.tenant, customer=customer, subject="Hello")
    TicketFactory(tenant=owner.tenant, subject="Unrelated")
    TicketFactory(tenant=TenantFactory(), subject="Invoice PDF is blank too")

    assert listed(owner, search="invoice pdf") == ids(by_subject)
    assert listed(owner, search="hopper") == ids(by_customer)


def test_ordering_by_priority_is_by_rank(owner):
    by_priority = {
        priority: TicketFactory(tenant=owner.tenant, priority=priority)
        for priority in ("HIGH", "LOW", "URGENT", "NORMAL")
    }

    ascending = owner.client.get(TICKETS, {"ordering": "priority"}).json()["results"]
    descending = owner.client.get(TICKETS, {"ordering": "-priority"}).json()["results"]

    assert [row["priority"] for row in ascending] == ["LOW", "NORMAL", "HIGH", "URGENT"]
    assert [row["priority"] for row in descending] == ["URGENT", "HIGH", "NORMAL", "LOW"]
    assert ascending[0]["id"] == str(by_priority["LOW"].pk)


def test_ordering_by_number(owner):
    for _ in range(3):
        create(owner)

    ascending = owner.client.get(TICKETS, {"ordering": "number"}).json()["results"]
    default = owner.client.get(TICKETS).json()["results"]

    assert [row["ticket_number"] for row in ascending] == [
        "TICKET-1001",
        "TICKET-1002",
        "TICKET-1003",
    ]
    assert default[0]["ticket_number"] == "TICKET-1003"


# PUT with the shown document ---------------------------------------------------------------------


def test_put_accepts_the_document_a_get_showed(owner):
    ticket = assigned(
        owner,
        RepresentativeFactory(tenant=owner.tenant),
        customer=CustomerProfileFactory(tenant=owner.tenant).pk,
        sentiment="-0.25",
        conversation_id=uuid.uuid4(),
        ai_handled=True,
    )
    url = detail(ticket)
    document = owner.client.get(url).json()

    response = owner.client.put(url, {**document, "subject": "Renamed"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["subject"] == "Renamed"
    for key in ("ticket_number", "customer_id", "assignee_id", "sentiment", "conversation_id"):
        assert body[key] == document[key], key
    assert body["sentiment"] == -0.25
    assert ticket_events(owner.tenant, "support.ticket.updated").get().payload["changed"] == [
        "subject"
    ]


def test_put_with_a_changed_read_only_key_is_refused(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    document = owner.client.get(detail(ticket)).json()

    response = owner.client.put(
        detail(ticket), {**document, "ticket_number": "TICKET-1"}, format="json"
    )

    assert "ticket_number" in assert_envelope(response, 400)["details"]


# Deletion ----------------------------------------------------------------------------------------


def test_deleting_an_open_assigned_ticket_gives_the_slot_back(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=2)
    ticket = assigned(owner, representative)
    assert Representative.objects.get(pk=representative.pk).active_chats == 1

    response = owner.client.delete(detail(ticket))

    assert response.status_code == 204, response.content
    assert Representative.objects.get(pk=representative.pk).active_chats == 0
    event = ticket_events(owner.tenant, "support.ticket.deleted").get()
    assert event.payload["ticket_number"] == "TICKET-1001"
    assert event.payload["assignee_id"] == str(representative.pk)
    assert not Ticket.objects.filter(pk=ticket.pk).exists()


def test_deleting_a_resolved_assigned_ticket_leaves_the_count_alone(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=3)
    first = assigned(owner, representative)
    assigned(owner, representative)
    owner.client.patch(detail(first), {"status": "RESOLVED"}, format="json")
    assert Representative.objects.get(pk=representative.pk).active_chats == 1

    response = owner.client.delete(detail(first))

    assert response.status_code == 204, response.content
    assert Representative.objects.get(pk=representative.pk).active_chats == 1


def test_resolving_and_reopening_moves_the_assignees_slot(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=1)
    url = detail(assigned(owner, representative))

    owner.client.patch(url, {"status": "RESOLVED"}, format="json")
    resolved_load = Representative.objects.get(pk=representative.pk).active_chats
    reopened = owner.client.patch(url, {"status": "OPEN"}, format="json").json()

    assert resolved_load == 0
    assert Representative.objects.get(pk=representative.pk).active_chats == 1
    assert reopened["assignee_id"] == str(representative.pk)


def test_the_numbers_of_deleted_tickets_are_not_reused(owner):
    first = create(owner).json()
    owner.client.delete(f"{TICKETS}{first['id']}/")

    assert create(owner).json()["ticket_number"] == "TICKET-1002"


# Assign basics -----------------------------------------------------------------------------------


def test_assign_and_unassign(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant)

    assigned = owner.client.post(
        assign_url(ticket), {"representative": str(representative.pk)}, format="json"
    )
    unassigned = owner.client.post(assign_url(ticket), {"representative": None}, format="json")

    assert assigned.status_code == 200, assigned.content
    assert assigned.json()["assignee_id"] == str(representative.pk)
    assert unassigned.json()["assignee_id"] is None
    assert Representative.objects.get(pk=representative.pk).active_chats == 0
    assert list(
        ticket_events(owner.tenant)
        .order_by("created_at", "id")
        .values_list("event_type", flat=True)
    ) == ["support.ticket.assigned", "support.ticket.unassigned"]


def test_a_closed_ticket_is_not_assigned(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = in_status(owner.tenant, TicketStatus.CLOSED)

    response = owner.client.post(assign_url(ticket), {"representative": "auto"}, format="json")

    assert_envelope(response, 409, "CONFLICT")
    assert Representative.objects.get(pk=representative.pk).active_chats == 0


# Who may do what ---------------------------------------------------------------------------------


def test_a_viewer_reads_tickets_but_changes_nothing(make_caller):
    viewer = make_caller(Role.VIEWER)
    ticket = TicketFactory(tenant=viewer.tenant)
    representative = RepresentativeFactory(tenant=viewer.tenant)

    listed_ = viewer.client.get(TICKETS)
    shown = viewer.client.get(detail(ticket))
    created = viewer.client.post(TICKETS, {"subject": "S"}, format="json")
    patched = viewer.client.patch(detail(ticket), {"subject": "S"}, format="json")
    deleted = viewer.client.delete(detail(ticket))
    assigned = viewer.client.post(
        assign_url(ticket), {"representative": str(representative.pk)}, format="json"
    )

    assert listed_.status_code == 200, listed_.content
    assert shown.status_code == 200, shown.content
    for response in (created, patched, deleted, assigned):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert Ticket.objects.get(pk=ticket.pk).subject == ticket.subject
    assert Ticket.objects.get(pk=ticket.pk).assignee_id is None
    assert not ticket_events(viewer.tenant).exists()


def test_a_billing_member_sees_no_tickets(make_caller):
    billing = make_caller(Role.BILLING)
    ticket = TicketFactory(tenant=billing.tenant)

    assert_envelope(billing.client.get(TICKETS), 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(billing.client.get(detail(ticket)), 403, "INSUFFICIENT_PERMISSIONS")


def test_a_member_works_tickets(make_caller):
    member = make_caller(Role.MEMBER)

    response = create(member)

    assert response.status_code == 201, response.content


def test_another_organizations_ticket_is_404_for_every_action(owner):
    foreign = TicketFactory(tenant=TenantFactory())
    representative = RepresentativeFactory(tenant=owner.tenant)
    random = str(uuid.uuid4())

    answers = [
        owner.client.get(detail(foreign)),
        owner.client.patch(detail(foreign), {"subject": "Mine"}, format="json"),
        owner.client.put(detail(foreign), {"subject": "Mine"}, format="json"),
        owner.client.delete(detail(foreign)),
        owner.client.post(assign_url(foreign), {"representative": "auto"}, format="json"),
    ]

    for response in answers:
        assert_envelope(response, 404)
    assert_envelope(owner.client.get(f"{TICKETS}{random}/"), 404)
    foreign.refresh_from_db()
    assert foreign.subject != "Mine"
    assert foreign.assignee_id is None
    assert Representative.objects.get(pk=representative.pk).active_chats == 0


def test_a_ticket_is_created_assigned_through_the_api(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)

    response = create(owner, assignee=str(representative.pk))

    assert response.status_code == 201, response.content
    assert response.json()["assignee_id"] == str(representative.pk)
    assert Representative.objects.get(pk=representative.pk).active_chats == 1


def test_another_organizations_representative_is_refused_on_assign_like_a_random_one(owner):
    ticket = TicketFactory(tenant=owner.tenant)
    foreign = RepresentativeFactory(tenant=TenantFactory())
    answers = []
    for value in (str(foreign.pk), str(uuid.uuid4())):
        error = assert_envelope(
            owner.client.post(assign_url(ticket), {"representative": value}, format="json"), 400
        )
        answers.append((error["message"], error["details"]))

    assert answers[0] == answers[1]
    assert "representative" in answers[0][1]
    assert Representative.objects.get(pk=foreign.pk).active_chats == 0


def test_another_organizations_representative_is_refused_on_create_like_a_random_one(owner):
    foreign = RepresentativeFactory(tenant=TenantFactory())
    answers = []
    for value in (str(foreign.pk), str(uuid.uuid4())):
        error = assert_envelope(create(owner, assignee=value), 400)
        answers.append((error["message"], error["details"]))

    assert answers[0] == answers[1]
    assert list(answers[0][1]) == ["assignee"]
    assert not Ticket.objects.filter(tenant=owner.tenant).exists()
    assert Representative.objects.get(pk=foreign.pk).active_chats == 0


def test_a_malformed_representative_is_400(owner):
    ticket = TicketFactory(tenant=owner.tenant)

    created = create(owner, assignee="nobody")
    assigned_ = owner.client.post(assign_url(ticket), {"representative": "x" * 65}, format="json")

    assert "assignee" in assert_envelope(created, 400)["details"]
    assert "representative" in assert_envelope(assigned_, 400)["details"]
    assert not Ticket.objects.filter(tenant=owner.tenant).exclude(pk=ticket.pk).exists()


# The public event --------------------------------------------------------------------------------


def test_a_creation_is_delivered_to_the_subscribed_endpoints_without_the_customers_email(owner):
    subscribed = WebhookEndpointFactory(tenant=owner.tenant, events=["support.ticket.created"])
    other = WebhookEndpointFactory(tenant=owner.tenant, events=["support.ticket.resolved"])
    customer = CustomerProfileFactory(tenant=owner.tenant, email="secret.person@example.org")

    response = create(owner, customer_id=str(customer.pk), priority="HIGH")

    assert response.status_code == 201, response.content
    assert ticket_events(owner.tenant, "support.ticket.created").count() == 1
    delivery = WebhookDelivery.objects.select_related("event").get(endpoint=subscribed)
    assert delivery.event_type == "support.ticket.created"
    assert not WebhookDelivery.objects.filter(endpoint=other).exists()
    body = json.loads(delivery.event.body)
    assert body["type"] == "support.ticket.created"
    data = body["data"]
    assert data["ticket_id"] == response.json()["id"]
    assert data["ticket_number"] == "TICKET-1001"
    assert data["customer_id"] == str(customer.pk)
    assert data["priority"] == "HIGH"
    assert "secret.person" not in delivery.event.body
    assert "email" not in json.dumps(data)


def test_a_resolution_is_delivered_with_its_time(owner):
    endpoint = WebhookEndpointFactory(tenant=owner.tenant, events=["support.ticket.resolved"])
    ticket = TicketFactory(tenant=owner.tenant)

    owner.client.patch(detail(ticket), {"status": "RESOLVED"}, format="json")

    delivery = WebhookDelivery.objects.select_related("event").get(endpoint=endpoint)
    data = json.loads(delivery.event.body)["data"]
    assert data["status"] == "RESOLVED"
    assert data["resolved_at"]
    assert "secret" not in json.dumps(data)
