"""Ticket assignment within the representatives' capacity: one slot per open ticket
(`active_chats` never above `max_chats`), moved on reassignment, given back on unassignment,
resolution, closing and deletion, taken again on reopening; "auto" picking the ONLINE
representative with the most free capacity (ties to the longest idle); only open tickets
assigned; invalid input refused; races never over-assigning; the admin action; who may do it."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from config.exceptions import ApplicationError, Conflict
from support.models import Representative, Ticket, TicketSequence
from support.services import tickets as ticket_services
from tenants.models import Role
from tests.conftest import assert_envelope
from tests.factories import TenantFactory, UserFactory

from .factories import RepresentativeFactory, TicketFactory

pytestmark = pytest.mark.django_db

TICKETS = "/api/v1/support/tickets/"
REPRESENTATIVES = "/api/v1/support/representatives/"
ADMIN_TICKETS = reverse("admin:support_ticket_changelist")


def assign_url(ticket) -> str:
    return f"{TICKETS}{ticket.pk}/assign/"


def ticket_url(ticket) -> str:
    return f"{TICKETS}{ticket.pk}/"


def load(representative) -> int:
    return Representative.objects.get(pk=representative.pk).active_chats


def events(tenant, event_type):
    return list(
        AuditEvent.objects.filter(tenant=tenant, event_type=event_type).order_by("created_at")
    )


def assigned(ticket, representative, actor=None):
    """The ticket given to `representative` through the service (the slot taken)."""
    return ticket_services.ticket_assign(ticket=ticket, actor=actor, representative=representative)


def fresh(ticket) -> Ticket:
    return Ticket.objects.get(pk=ticket.pk)


# Assigning, reassigning, unassigning -------------------------------------------------------------


def test_assigning_takes_one_slot_and_is_audited(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=3)
    ticket = TicketFactory(tenant=owner.tenant)

    returned = assigned(ticket, representative.pk, actor=owner.user)

    assert returned.assignee_id == representative.pk
    ticket = fresh(ticket)
    assert ticket.assignee_id == representative.pk
    assert ticket.assigned_at is not None
    assert load(representative) == 1
    [event] = events(owner.tenant, "support.ticket.assigned")
    assert event.actor_id == owner.user.pk
    assert event.payload["ticket_id"] == str(ticket.pk)
    assert event.payload["assignee_id"] == str(representative.pk)
    assert event.payload["assignee_user_id"] == str(representative.user_id)
    assert event.payload["previous_assignee_id"] is None


def test_reassigning_moves_the_slot(owner):
    first = RepresentativeFactory(tenant=owner.tenant)
    second = RepresentativeFactory(tenant=owner.tenant)
    ticket = assigned(TicketFactory(tenant=owner.tenant), first)
    assert (load(first), load(second)) == (1, 0)

    assigned(ticket, str(second.pk), actor=owner.user)

    assert fresh(ticket).assignee_id == second.pk
    assert (load(first), load(second)) == (0, 1)
    last = events(owner.tenant, "support.ticket.assigned")[-1]
    assert last.payload["assignee_id"] == str(second.pk)
    assert last.payload["previous_assignee_id"] == str(first.pk)


def test_assigning_to_the_current_assignee_changes_nothing(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=1)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)
    before = fresh(ticket)
    assigned_events = len(events(owner.tenant, "support.ticket.assigned"))

    # Even at max_chats: it is already theirs, nothing more is taken (by id, str or instance).
    for value in (representative.pk, str(representative.pk), representative):
        assigned(ticket, value, actor=owner.user)

    after = fresh(ticket)
    assert after.assignee_id == representative.pk
    assert after.assigned_at == before.assigned_at
    assert after.updated_at == before.updated_at
    assert load(representative) == 1
    assert len(events(owner.tenant, "support.ticket.assigned")) == assigned_events


def test_null_unassigns_and_gives_the_slot_back(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)

    response = owner.client.post(assign_url(ticket), {"representative": None}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["assignee_id"] is None
    ticket = fresh(ticket)
    assert (ticket.assignee_id, ticket.assigned_at) == (None, None)
    assert load(representative) == 0
    [event] = events(owner.tenant, "support.ticket.unassigned")
    assert event.payload["previous_assignee_id"] == str(representative.pk)
    assert event.payload["assignee_id"] is None


def test_unassigning_an_unassigned_ticket_changes_nothing(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, active_chats=2)
    ticket = TicketFactory(tenant=owner.tenant)
    before = fresh(ticket)

    response = owner.client.post(assign_url(ticket), {"representative": None}, format="json")

    assert response.status_code == 200, response.content
    after = fresh(ticket)
    assert after.assignee_id is None
    assert after.updated_at == before.updated_at
    assert load(representative) == 2
    assert events(owner.tenant, "support.ticket.unassigned") == []


# Capacity ----------------------------------------------------------------------------------------


def test_a_representative_at_max_chats_is_never_given_another(owner):
    full = RepresentativeFactory(tenant=owner.tenant, max_chats=2)
    for _ in range(2):
        assigned(TicketFactory(tenant=owner.tenant), full)
    ticket = TicketFactory(tenant=owner.tenant)

    with pytest.raises(Conflict) as refused:
        assigned(ticket, full.pk)

    assert "max_chats" in refused.value.message
    assert refused.value.details == {"representative": str(full.pk), "max_chats": 2}
    ticket = fresh(ticket)
    assert (ticket.assignee_id, ticket.assigned_at) == (None, None)
    assert load(full) == 2
    assert Ticket.objects.filter(assignee=full).count() == 2


def test_a_refused_reassignment_leaves_the_ticket_with_its_assignee(owner):
    current = RepresentativeFactory(tenant=owner.tenant)
    full = RepresentativeFactory(tenant=owner.tenant, max_chats=1)
    assigned(TicketFactory(tenant=owner.tenant), full)
    ticket = assigned(TicketFactory(tenant=owner.tenant), current)
    before = fresh(ticket)

    with pytest.raises(Conflict):
        assigned(ticket, full.pk)

    after = fresh(ticket)
    assert (after.assignee_id, after.assigned_at) == (current.pk, before.assigned_at)
    assert (load(current), load(full)) == (1, 1)


def test_lowering_max_chats_below_the_load_blocks_assignments_until_it_drops(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=5)
    held = [assigned(TicketFactory(tenant=owner.tenant), representative) for _ in range(3)]
    ticket = TicketFactory(tenant=owner.tenant)

    lowered = owner.client.patch(
        f"{REPRESENTATIVES}{representative.pk}/", {"max_chats": 2}, format="json"
    )

    assert lowered.status_code == 200, lowered.content
    assert lowered.json()["max_chats"] == 2
    assert lowered.json()["active_chats"] == 3
    assert lowered.json()["free_capacity"] == 0
    with pytest.raises(Conflict):
        assigned(ticket, representative.pk)
    # Down to 2 of 2: still no room.
    assigned(held[0], None)
    assert load(representative) == 2
    with pytest.raises(Conflict):
        assigned(ticket, representative.pk)
    # Down to 1 of 2: room again.
    assigned(held[1], None)
    assigned(ticket, representative.pk)
    assert load(representative) == 2
    assert fresh(ticket).assignee_id == representative.pk


# "auto" ------------------------------------------------------------------------------------------


def auto(client, ticket):
    return client.post(assign_url(ticket), {"representative": "auto"}, format="json")


def test_auto_picks_the_online_representative_with_the_most_free_capacity(owner):
    RepresentativeFactory(tenant=owner.tenant, max_chats=5, active_chats=4)  # 1 free
    roomiest = RepresentativeFactory(tenant=owner.tenant, max_chats=10, active_chats=5)  # 5 free
    RepresentativeFactory(tenant=owner.tenant, max_chats=3, active_chats=0)  # 3 free
    ticket = TicketFactory(tenant=owner.tenant)

    response = auto(owner.client, ticket)

    assert response.status_code == 200, response.content
    assert response.json()["assignee_id"] == str(roomiest.pk)
    assert load(roomiest) == 6
    [event] = events(owner.tenant, "support.ticket.assigned")
    assert event.payload["assignee_id"] == str(roomiest.pk)


def test_auto_ties_go_to_the_longest_idle_never_active_first(owner):
    now = timezone.now()
    RepresentativeFactory(tenant=owner.tenant, max_chats=4, last_active_at=now)
    oldest = RepresentativeFactory(
        tenant=owner.tenant, max_chats=4, last_active_at=now - timedelta(hours=3)
    )
    RepresentativeFactory(tenant=owner.tenant, max_chats=4, last_active_at=now - timedelta(hours=1))
    first, second = TicketFactory(tenant=owner.tenant), TicketFactory(tenant=owner.tenant)

    assert auto(owner.client, first).json()["assignee_id"] == str(oldest.pk)

    never = RepresentativeFactory(tenant=owner.tenant, max_chats=4, last_active_at=None)
    # The oldest has 3 free now, the others 4: among those, one never active comes first.
    assert auto(owner.client, second).json()["assignee_id"] == str(never.pk)


def test_auto_ties_on_free_capacity_not_on_max_chats(owner):
    now = timezone.now()
    # 2 free each, however big their capacity: the longest idle wins.
    RepresentativeFactory(tenant=owner.tenant, max_chats=10, active_chats=8, last_active_at=now)
    idle = RepresentativeFactory(
        tenant=owner.tenant, max_chats=2, active_chats=0, last_active_at=now - timedelta(days=1)
    )
    ticket = TicketFactory(tenant=owner.tenant)

    assert auto(owner.client, ticket).json()["assignee_id"] == str(idle.pk)


@pytest.mark.parametrize("status", ["AWAY", "OFFLINE"])
def test_auto_never_picks_an_away_or_offline_representative(owner, status):
    RepresentativeFactory(tenant=owner.tenant, status=status, max_chats=50)
    online = RepresentativeFactory(tenant=owner.tenant, status="ONLINE", max_chats=1)
    first, second = TicketFactory(tenant=owner.tenant), TicketFactory(tenant=owner.tenant)

    assert auto(owner.client, first).json()["assignee_id"] == str(online.pk)
    # The online one is full now: the other is still not picked.
    assert_envelope(auto(owner.client, second), 409, "CONFLICT")
    assert fresh(second).assignee_id is None
    assert Representative.objects.get(status=status, tenant=owner.tenant).active_chats == 0


def test_auto_skips_full_representatives(owner):
    RepresentativeFactory(
        tenant=owner.tenant,
        max_chats=20,
        active_chats=20,
        last_active_at=timezone.now() - timedelta(days=30),
    )
    # Lowered below their load: no room, not negative room either.
    RepresentativeFactory(tenant=owner.tenant, max_chats=2, active_chats=5)
    roomy = RepresentativeFactory(tenant=owner.tenant, max_chats=3, active_chats=2)
    ticket = TicketFactory(tenant=owner.tenant)

    assert auto(owner.client, ticket).json()["assignee_id"] == str(roomy.pk)
    assert load(roomy) == 3


def test_auto_is_refused_when_nobody_has_room(owner):
    RepresentativeFactory(tenant=owner.tenant, max_chats=1, active_chats=1)
    RepresentativeFactory(tenant=owner.tenant, status="AWAY", max_chats=5)
    ticket = TicketFactory(tenant=owner.tenant)

    error = assert_envelope(auto(owner.client, ticket), 409, "CONFLICT")

    assert error["details"] == {"representative": "auto"}
    assert fresh(ticket).assignee_id is None
    assert events(owner.tenant, "support.ticket.assigned") == []


def test_auto_never_picks_another_organizations_representative(owner):
    foreign = RepresentativeFactory(tenant=TenantFactory(), max_chats=50)
    ticket = TicketFactory(tenant=owner.tenant)

    assert_envelope(auto(owner.client, ticket), 409, "CONFLICT")
    mine = RepresentativeFactory(tenant=owner.tenant, max_chats=1)
    response = auto(owner.client, ticket)

    assert response.json()["assignee_id"] == str(mine.pk)
    assert load(foreign) == 0


def test_auto_on_an_assigned_ticket_moves_it_to_someone_else(owner):
    current = RepresentativeFactory(tenant=owner.tenant, max_chats=10)
    other = RepresentativeFactory(tenant=owner.tenant, max_chats=2)
    ticket = assigned(TicketFactory(tenant=owner.tenant), current)

    response = auto(owner.client, ticket)

    assert response.status_code == 200, response.content
    assert response.json()["assignee_id"] == str(other.pk)
    assert (load(current), load(other)) == (0, 1)


# Assigning at creation ---------------------------------------------------------------------------


def test_creating_with_auto_assigns_at_creation(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=2)

    response = owner.client.post(
        TICKETS, {"subject": "Cannot log in", "assignee": "auto"}, format="json"
    )

    assert response.status_code == 201, response.content
    ticket = Ticket.objects.get(pk=response.json()["id"])
    assert ticket.assignee_id == representative.pk
    assert ticket.assigned_at is not None
    assert load(representative) == 1
    assert len(events(owner.tenant, "support.ticket.created")) == 1
    [event] = events(owner.tenant, "support.ticket.assigned")
    assert event.payload["ticket_id"] == str(ticket.pk)


def test_creating_with_a_representatives_id_assigns_them(owner):
    RepresentativeFactory(tenant=owner.tenant, max_chats=50)
    chosen = RepresentativeFactory(tenant=owner.tenant, max_chats=1)

    ticket = ticket_services.ticket_create(
        tenant=owner.tenant, actor=owner.user, subject="Billing", assignee=chosen.pk
    )

    assert fresh(ticket).assignee_id == chosen.pk
    assert fresh(ticket).assigned_at is not None
    assert load(chosen) == 1
    [event] = events(owner.tenant, "support.ticket.assigned")
    assert event.payload["assignee_id"] == str(chosen.pk)


@pytest.mark.parametrize("assignee", ["auto", "full"])
def test_a_refused_assignment_at_creation_creates_nothing_and_takes_no_number(owner, assignee):
    full = RepresentativeFactory(tenant=owner.tenant, max_chats=1, active_chats=1)

    if assignee == "auto":
        refused = owner.client.post(TICKETS, {"subject": "Nope", "assignee": "auto"}, format="json")
        assert_envelope(refused, 409, "CONFLICT")
    else:
        with pytest.raises(Conflict):
            ticket_services.ticket_create(
                tenant=owner.tenant, actor=owner.user, subject="Nope", assignee=full.pk
            )
    assert not Ticket.objects.filter(tenant=owner.tenant).exists()
    assert events(owner.tenant, "support.ticket.created") == []
    assert load(full) == 1
    # The next ticket is still the organization's first.
    created = owner.client.post(TICKETS, {"subject": "Yes"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["ticket_number"] == "TICKET-1001"
    assert TicketSequence.objects.get(tenant=owner.tenant).last_number == 1001


def test_an_unassigned_creation_takes_no_slot(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)

    response = owner.client.post(TICKETS, {"subject": "Hello"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["assignee_id"] is None
    assert load(representative) == 0
    assert events(owner.tenant, "support.ticket.assigned") == []


# Only open tickets -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["RESOLVED", "CLOSED"])
@pytest.mark.parametrize("target", ["id", "auto"])
def test_only_open_tickets_are_assigned(owner, status, target):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant, status=status)

    if target == "auto":
        response = owner.client.post(assign_url(ticket), {"representative": "auto"}, format="json")
        assert assert_envelope(response, 409, "CONFLICT")["details"] == {"status": status}
    else:
        with pytest.raises(Conflict) as refused:
            assigned(ticket, representative.pk)
        assert refused.value.details == {"status": status}
    assert fresh(ticket).assignee_id is None
    assert load(representative) == 0


@pytest.mark.parametrize("status", ["OPEN", "IN_PROGRESS", "WAITING"])
def test_every_open_status_is_assigned(owner, status):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant, status=status)

    assigned(ticket, representative.pk)

    assert fresh(ticket).assignee_id == representative.pk
    assert load(representative) == 1


# Capacity follows the status -------------------------------------------------------------------


def patch_status(client, ticket, status):
    response = client.patch(ticket_url(ticket), {"status": status}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize("path", [["RESOLVED"], ["RESOLVED", "CLOSED"]])
def test_resolving_or_closing_gives_the_slot_back_once(owner, path):
    representative = RepresentativeFactory(tenant=owner.tenant)
    kept = assigned(TicketFactory(tenant=owner.tenant), representative)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)
    assert load(representative) == 2

    for status in path:
        patch_status(owner.client, ticket, status)

    # The other ticket still holds its slot: closing a resolved one releases nothing more.
    assert load(representative) == 1
    assert fresh(ticket).assignee_id == representative.pk
    assert fresh(kept).assignee_id == representative.pk


@pytest.mark.parametrize("reopened_to", ["OPEN", "IN_PROGRESS"])
def test_reopening_takes_the_slot_again(owner, reopened_to):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=2)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)
    patch_status(owner.client, ticket, "RESOLVED")
    assert load(representative) == 0

    body = patch_status(owner.client, ticket, reopened_to)

    assert body["assignee_id"] == str(representative.pk)
    assert load(representative) == 1
    ticket = fresh(ticket)
    assert (ticket.status, ticket.reopened_count) == (reopened_to, 1)
    assert ticket.assignee_id == representative.pk


def test_reopening_for_a_full_assignee_reopens_the_ticket_unassigned(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=1)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)
    patch_status(owner.client, ticket, "RESOLVED")
    assigned(TicketFactory(tenant=owner.tenant), representative)  # the freed slot, taken
    assert load(representative) == 1

    body = patch_status(owner.client, ticket, "OPEN")

    assert body["status"] == "OPEN"
    assert body["assignee_id"] is None
    ticket = fresh(ticket)
    assert (ticket.assignee_id, ticket.assigned_at) == (None, None)
    assert load(representative) == 1
    [event] = events(owner.tenant, "support.ticket.reopened")
    assert event.payload["assignee_id"] is None


def test_moving_among_open_statuses_changes_no_capacity(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=1)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)

    for status in ["IN_PROGRESS", "WAITING", "OPEN", "WAITING", "IN_PROGRESS"]:
        body = patch_status(owner.client, ticket, status)
        assert body["assignee_id"] == str(representative.pk)
        assert load(representative) == 1


def test_moving_an_unassigned_ticket_through_statuses_touches_no_one(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, active_chats=1)
    ticket = TicketFactory(tenant=owner.tenant)

    for status in ["RESOLVED", "OPEN", "RESOLVED", "CLOSED"]:
        patch_status(owner.client, ticket, status)

    assert load(representative) == 1
    assert fresh(ticket).assignee_id is None


def test_deleting_an_open_assigned_ticket_gives_the_slot_back(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    assigned(TicketFactory(tenant=owner.tenant), representative)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)

    response = owner.client.delete(ticket_url(ticket))

    assert response.status_code == 204, response.content
    assert not Ticket.objects.filter(pk=ticket.pk).exists()
    assert load(representative) == 1


@pytest.mark.parametrize("path", [["RESOLVED"], ["RESOLVED", "CLOSED"]])
def test_deleting_a_settled_ticket_does_not_release_twice(owner, path):
    representative = RepresentativeFactory(tenant=owner.tenant)
    assigned(TicketFactory(tenant=owner.tenant), representative)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)
    for status in path:
        patch_status(owner.client, ticket, status)
    assert load(representative) == 1

    response = owner.client.delete(ticket_url(ticket))

    assert response.status_code == 204, response.content
    assert load(representative) == 1


def test_the_load_always_matches_the_open_tickets_held(owner):
    """A mixed sequence of moves: active_chats is the count of open tickets assigned."""
    first = RepresentativeFactory(tenant=owner.tenant, max_chats=3)
    second = RepresentativeFactory(tenant=owner.tenant, max_chats=3)
    tickets = [TicketFactory(tenant=owner.tenant) for _ in range(5)]

    def check():
        for representative in (first, second):
            held = Ticket.objects.filter(
                assignee=representative, status__in=["OPEN", "IN_PROGRESS", "WAITING"]
            ).count()
            assert load(representative) == held

    assigned(tickets[0], first)
    assigned(tickets[1], first)
    assigned(tickets[2], "auto")  # second: 3 free against 1
    check()
    assigned(tickets[0], second)
    check()
    patch_status(owner.client, tickets[1], "WAITING")
    patch_status(owner.client, tickets[1], "RESOLVED")
    check()
    assigned(tickets[3], "auto")
    assigned(tickets[4], first)
    check()
    patch_status(owner.client, tickets[1], "IN_PROGRESS")
    check()
    assigned(tickets[2], None)
    owner.client.delete(ticket_url(tickets[3]))
    check()


# Invalid input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["bob", "", "AUTO", "x" * 100, 42, ["auto"], {"id": "auto"}])
def test_a_representative_that_is_neither_an_id_nor_auto_is_refused(owner, value):
    ticket = TicketFactory(tenant=owner.tenant)

    response = owner.client.post(assign_url(ticket), {"representative": value}, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "representative" in error["details"]
    assert fresh(ticket).assignee_id is None


def test_another_organizations_representative_is_refused_like_an_unknown_id(owner):
    foreign = RepresentativeFactory(tenant=TenantFactory())
    ticket = TicketFactory(tenant=owner.tenant)

    with pytest.raises(ApplicationError) as foreign_error:
        assigned(ticket, foreign.pk)
    with pytest.raises(ApplicationError) as unknown_error:
        assigned(ticket, uuid.uuid4())

    for error in (foreign_error.value, unknown_error.value):
        assert type(error) is ApplicationError  # a 400, not a 409
    assert foreign_error.value.message == unknown_error.value.message
    assert foreign_error.value.details == unknown_error.value.details
    assert "representative" in foreign_error.value.details
    assert fresh(ticket).assignee_id is None
    assert load(foreign) == 0


def test_an_id_given_to_the_api_of_another_organization_is_the_same_400_as_an_unknown_one(
    owner,
):
    foreign = RepresentativeFactory(tenant=TenantFactory())
    ticket = TicketFactory(tenant=owner.tenant)

    foreign_error = assert_envelope(
        owner.client.post(assign_url(ticket), {"representative": str(foreign.pk)}, format="json"),
        400,
        "VALIDATION_ERROR",
    )
    unknown_error = assert_envelope(
        owner.client.post(assign_url(ticket), {"representative": str(uuid.uuid4())}, format="json"),
        400,
        "VALIDATION_ERROR",
    )

    assert foreign_error["message"] == unknown_error["message"]
    assert foreign_error["details"] == unknown_error["details"]
    assert "representative" in foreign_error["details"]
    assert fresh(ticket).assignee_id is None
    assert load(foreign) == 0


def test_creating_with_another_organizations_representative_is_refused(owner):
    foreign = RepresentativeFactory(tenant=TenantFactory())

    with pytest.raises(ApplicationError) as refused:
        ticket_services.ticket_create(
            tenant=owner.tenant, actor=owner.user, subject="Hi", assignee=foreign.pk
        )

    assert type(refused.value) is ApplicationError
    # Named as the creation's field.
    assert set(refused.value.details) == {"assignee"}
    assert not Ticket.objects.filter(tenant=owner.tenant).exists()
    assert load(foreign) == 0


def test_an_id_given_to_the_api_at_creation_of_another_organization_is_a_400(owner):
    foreign = RepresentativeFactory(tenant=TenantFactory())

    foreign_error = assert_envelope(
        owner.client.post(TICKETS, {"subject": "Hi", "assignee": str(foreign.pk)}, format="json"),
        400,
        "VALIDATION_ERROR",
    )
    unknown_error = assert_envelope(
        owner.client.post(TICKETS, {"subject": "Hi", "assignee": str(uuid.uuid4())}, format="json"),
        400,
        "VALIDATION_ERROR",
    )

    assert set(foreign_error["details"]) == {"assignee"}
    assert (foreign_error["message"], foreign_error["details"]) == (
        unknown_error["message"],
        unknown_error["details"],
    )
    assert not Ticket.objects.filter(tenant=owner.tenant).exists()
    assert load(foreign) == 0


def test_creating_with_a_malformed_assignee_is_refused(owner):
    response = owner.client.post(TICKETS, {"subject": "Hi", "assignee": "bob"}, format="json")

    assert "assignee" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    assert not Ticket.objects.filter(tenant=owner.tenant).exists()


def test_the_representative_key_is_required(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = assigned(TicketFactory(tenant=owner.tenant), representative)

    response = owner.client.post(assign_url(ticket), {}, format="json")

    assert "representative" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]
    # Not read as null: the ticket keeps its assignee.
    assert fresh(ticket).assignee_id == representative.pk
    assert load(representative) == 1


# Who may assign ----------------------------------------------------------------------------------


def test_a_viewer_may_not_assign(make_caller):
    viewer = make_caller(Role.VIEWER)
    representative = RepresentativeFactory(tenant=viewer.tenant)
    ticket = TicketFactory(tenant=viewer.tenant)

    response = viewer.client.post(
        assign_url(ticket), {"representative": str(representative.pk)}, format="json"
    )

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert fresh(ticket).assignee_id is None
    assert load(representative) == 0


def test_another_organizations_ticket_is_not_found(owner):
    other_tenant = TenantFactory()
    representative = RepresentativeFactory(tenant=other_tenant)
    ticket = TicketFactory(tenant=other_tenant)

    for value in [str(representative.pk), str(uuid.uuid4()), "auto", None, "bob"]:
        response = owner.client.post(assign_url(ticket), {"representative": value}, format="json")
        assert_envelope(response, 404)

    assert fresh(ticket).assignee_id is None
    assert load(representative) == 0


# A representative's id through the API ------------------------------------------------------------


def test_an_id_given_to_the_api_assigns_the_ticket(owner):
    representative = RepresentativeFactory(tenant=owner.tenant, max_chats=3)
    ticket = TicketFactory(tenant=owner.tenant)

    response = owner.client.post(
        assign_url(ticket), {"representative": str(representative.pk)}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["assignee_id"] == str(representative.pk)
    assert body["assigned_at"] is not None
    assert load(representative) == 1
    assert len(events(owner.tenant, "support.ticket.assigned")) == 1


def test_an_id_given_to_the_api_of_a_full_representative_is_a_409_naming_max_chats(owner):
    full = RepresentativeFactory(tenant=owner.tenant, max_chats=1, active_chats=1)
    ticket = TicketFactory(tenant=owner.tenant)

    response = owner.client.post(
        assign_url(ticket), {"representative": str(full.pk)}, format="json"
    )

    error = assert_envelope(response, 409, "CONFLICT")
    assert "max_chats" in error["message"]
    assert error["details"] == {"representative": str(full.pk), "max_chats": 1}
    assert fresh(ticket).assignee_id is None


def test_an_id_given_to_the_api_at_creation_assigns_the_new_ticket(owner):
    chosen = RepresentativeFactory(tenant=owner.tenant, max_chats=1)

    response = owner.client.post(
        TICKETS, {"subject": "Billing", "assignee": str(chosen.pk)}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["assignee_id"] == str(chosen.pk)
    assert load(chosen) == 1


# The admin action --------------------------------------------------------------------------------


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def run_assign_automatically(client, tickets):
    return client.post(
        ADMIN_TICKETS,
        {
            "action": "assign_automatically",
            "_selected_action": [str(ticket.pk) for ticket in tickets],
        },
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_admin_action_assigns_through_the_service_and_reports_refusals(admin_client):
    tenant = TenantFactory()
    small = RepresentativeFactory(tenant=tenant, max_chats=1)
    big = RepresentativeFactory(tenant=tenant, max_chats=1)
    RepresentativeFactory(tenant=tenant, status="OFFLINE", max_chats=20)
    RepresentativeFactory(tenant=TenantFactory(), max_chats=20)  # another organization's
    tickets = [TicketFactory(tenant=tenant) for _ in range(3)]
    resolved = TicketFactory(tenant=tenant, status="RESOLVED")

    response = run_assign_automatically(admin_client, [*tickets, resolved])

    assert response.status_code == 200
    shown = messages_of(response)
    assert "2 tickets assigned." in shown
    refusals = [message for message in shown if message != "2 tickets assigned."]
    assert len(refusals) == 2, shown
    assert any("No online representative has free capacity." in m for m in refusals), shown
    assert any(m.startswith(f"{resolved.ticket_number}:") and "RESOLVED" in m for m in refusals), (
        shown
    )
    assert (load(small), load(big)) == (1, 1)
    assignees = {fresh(ticket).assignee_id for ticket in tickets}
    assert assignees == {small.pk, big.pk, None}
    assert fresh(resolved).assignee_id is None
    assigned_events = events(tenant, "support.ticket.assigned")
    assert len(assigned_events) == 2
    assert {event.actor_type for event in assigned_events} == {"user"}


# Races (PostgreSQL) ------------------------------------------------------------------------------


def _race(count, call):
    """`call(i)` in `count` threads released at once; each result is "ok" or "conflict"."""
    start = threading.Barrier(count)

    def run(i):
        try:
            start.wait(timeout=60)
            call(i)
            return "ok"
        except Conflict:
            return "conflict"
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(run, i) for i in range(count)]
        return [future.result(timeout=300) for future in futures]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_assignments_to_one_representative_never_exceed_max_chats():
    tenant = TenantFactory()
    representative = RepresentativeFactory(tenant=tenant, max_chats=5)
    tickets = [TicketFactory(tenant=tenant) for _ in range(50)]

    outcomes = _race(
        50,
        lambda i: ticket_services.ticket_assign(
            ticket=tickets[i], actor=None, representative=representative.pk
        ),
    )

    assert outcomes.count("ok") == 5
    assert outcomes.count("conflict") == 45
    assert load(representative) == 5
    assert Ticket.objects.filter(assignee=representative).count() == 5
    assert Ticket.objects.filter(assignee__isnull=True, assigned_at__isnull=True).count() == 45
    assert len(events(tenant, "support.ticket.assigned")) == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_auto_assignments_fill_everyone_exactly_to_capacity():
    tenant = TenantFactory()
    representatives = [RepresentativeFactory(tenant=tenant, max_chats=m) for m in (2, 3, 4)]
    RepresentativeFactory(tenant=tenant, status="AWAY", max_chats=50)
    tickets = [TicketFactory(tenant=tenant) for _ in range(50)]

    outcomes = _race(
        50,
        lambda i: ticket_services.ticket_assign(
            ticket=tickets[i], actor=None, representative="auto"
        ),
    )

    assert outcomes.count("ok") == 9
    assert outcomes.count("conflict") == 41
    for representative in representatives:
        assert load(representative) == representative.max_chats
        assert Ticket.objects.filter(assignee=representative).count() == representative.max_chats
    assert Ticket.objects.filter(assignee__isnull=False).count() == 9


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_creations_with_auto_create_only_what_fits():
    tenant = TenantFactory()
    representatives = [RepresentativeFactory(tenant=tenant, max_chats=m) for m in (1, 2, 3)]

    outcomes = _race(
        20,
        lambda i: ticket_services.ticket_create(
            tenant=tenant, actor=None, subject=f"Race {i}", assignee="auto"
        ),
    )

    assert outcomes.count("ok") == 6
    assert outcomes.count("conflict") == 14
    created = Ticket.objects.filter(tenant=tenant)
    assert created.count() == 6
    assert not created.filter(assignee__isnull=True).exists()
    for representative in representatives:
        assert load(representative) == representative.max_chats
        assert created.filter(assignee=representative).count() == representative.max_chats
    # The refused creations took no number: 1001 to 1006, gapless.
    assert sorted(created.values_list("number", flat=True)) == list(range(1001, 1007))
    assert TicketSequence.objects.get(tenant=tenant).last_number == 1006
    assert len(events(tenant, "support.ticket.created")) == 6
