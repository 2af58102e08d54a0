"""Escalations and the desk's people: the generic battery for escalations; creating one (PENDING,
or ASSIGNED with an active representative), its wait time on a frozen clock, references of the
organization only; forward-only moves (RESOLVED final, ASSIGNED needs an assignee), the
timestamps they stamp, PUT with the shown document; filters, ordering by rank, search; who may
do what; the public event, its notifications and webhook deliveries; the ticket assignment
notice; the representatives' rating and performance report; auto-assignment on ticket
creation from the organization setting."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from notifications.models import Channel, Notification, WebhookDelivery
from support.models import (
    ESCALATION_TRANSITIONS,
    CustomerProfile,
    Escalation,
    EscalationStatus,
    Representative,
    Ticket,
)
from support.services import escalation_create
from tenants.models import Membership, MembershipStatus, Role, Tenant
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, TenantFactory
from tests.notifications.factories import WebhookEndpointFactory

from .factories import (
    CustomerProfileFactory,
    EscalationFactory,
    RepresentativeFactory,
    TicketFactory,
)

pytestmark = pytest.mark.django_db

ESCALATIONS = "/api/v1/support/escalations/"
TICKETS = "/api/v1/support/tickets/"
REPRESENTATIVES = "/api/v1/support/representatives/"
ORGANIZATION = "/api/v1/organizations/current/"
STATUSES = [choice.value for choice in EscalationStatus]
# A frozen instant the clock-dependent tests start from (in the past: tokens stay valid).
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SLA_TERMS = {"first_response_minutes": 60, "resolution_minutes": 480, "business_hours": None}


def detail(obj) -> str:
    return f"{ESCALATIONS}{obj.pk}/"


def escalation_events(tenant, event_type=None):
    events = AuditEvent.objects.filter(tenant=tenant, event_type__startswith="support.escalation.")
    if event_type is not None:
        events = events.filter(event_type=event_type)
    return events


def create(caller, **body):
    body.setdefault("reason", "CUSTOMER_REQUEST")
    body.setdefault("issue_description", "The customer asked for a person.")
    return caller.client.post(ESCALATIONS, body, format="json")


def in_status(tenant, status, **fields) -> Escalation:
    """An escalation of `tenant` already in `status`, with what that status has."""
    now = datetime.now(UTC)
    if status != EscalationStatus.PENDING:
        fields.setdefault("assigned_at", now)
    if status in (EscalationStatus.ASSIGNED, EscalationStatus.IN_PROGRESS):
        fields.setdefault("assignee", RepresentativeFactory(tenant=tenant))
    if status == EscalationStatus.RESOLVED:
        fields.setdefault("resolved_at", now)
    return EscalationFactory(tenant=tenant, status=status, **fields)


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def membership_of(representative) -> Membership:
    return Membership.objects.get(tenant=representative.tenant, user=representative.user)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# The battery ------------------------------------------------------------------------------------


class TestEscalations(ResourceBattery):
    url = ESCALATIONS
    create_data = {
        "reason": "AI_UNABLE_TO_RESOLVE",
        "issue_description": "The assistant could not reset the SSO configuration.",
        "priority": "URGENT",
        "ai_summary": "SSO loop; the customer tried twice.",
    }
    update_data = {"priority": "CRITICAL", "status": "IN_PROGRESS"}
    audit_prefix = "support.escalation"
    related_fields = {
        "customer_id": CustomerProfile,
        "ticket_id": Ticket,
        "assignee_id": Representative,
    }
    filter_examples = {
        "assignee": lambda escalation: str(RepresentativeFactory(tenant=escalation.tenant).pk),
        "ticket": lambda escalation: str(TicketFactory(tenant=escalation.tenant).pk),
        "created_after": lambda escalation: iso(escalation.created_at - timedelta(minutes=1)),
        "created_before": lambda escalation: iso(escalation.created_at + timedelta(minutes=1)),
    }


# Creation ----------------------------------------------------------------------------------------


def test_a_minimal_creation_is_pending_and_audited(owner):
    response = create(owner)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "PENDING"
    assert body["priority"] == "NORMAL"
    assert body["assignee_id"] is None
    assert body["assigned_at"] is None
    assert body["resolved_at"] is None
    assert body["ticket_id"] is None
    assert body["ticket_number"] is None
    assert body["customer_id"] is None
    assert body["ai_summary"] == ""
    assert body["created_by"]["id"] == str(owner.user.pk)
    escalation = Escalation.objects.get(pk=body["id"])
    assert escalation.tenant_id == owner.tenant.pk
    event = escalation_events(owner.tenant).get()
    assert event.event_type == "support.escalation.created"
    assert event.actor_id == owner.user.pk
    assert event.payload["escalation_id"] == body["id"]
    assert event.payload["status"] == "PENDING"
    assert event.payload["assignee_user_id"] is None


@pytest.mark.parametrize("missing", ["reason", "issue_description"])
def test_reason_and_description_are_required(owner, missing):
    body = {"reason": "OTHER", "issue_description": "Needs a human."}
    del body[missing]

    error = assert_envelope(owner.client.post(ESCALATIONS, body, format="json"), 400)

    assert missing in error["details"]
    assert not Escalation.objects.filter(tenant=owner.tenant).exists()


def test_the_wait_time_grows_on_a_frozen_clock_while_nobody_took_it(owner):
    with time_machine.travel(START, tick=False):
        created = create(owner)
    url = f"{ESCALATIONS}{created.json()['id']}/"
    with time_machine.travel(START + timedelta(minutes=5), tick=False):
        after_five = owner.client.get(url).json()
    with time_machine.travel(START + timedelta(minutes=12), tick=False):
        listed = owner.client.get(ESCALATIONS).json()["results"]

    assert created.json()["wait_time"] == 0
    assert created.json()["created_at"] == "2026-03-02T09:00:00Z"
    assert after_five["wait_time"] == 300
    assert [row["wait_time"] for row in listed] == [720]


def test_a_customer_and_ticket_of_the_organization_are_linked(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant, customer=customer)
    conversation = str(uuid.uuid4())

    response = create(
        owner,
        customer_id=str(customer.pk),
        ticket_id=str(ticket.pk),
        conversation_id=conversation,
        reason="NEGATIVE_SENTIMENT",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["customer_id"] == str(customer.pk)
    assert body["customer"]["name"] == customer.name
    assert body["ticket_id"] == str(ticket.pk)
    assert body["ticket_number"] == ticket.ticket_number
    assert body["conversation_id"] == conversation
    escalation = Escalation.objects.get(pk=body["id"])
    assert (escalation.customer_id, escalation.ticket_id) == (customer.pk, ticket.pk)


@pytest.mark.parametrize(
    ("field", "make_foreign"),
    [
        ("customer_id", lambda: CustomerProfileFactory(tenant=TenantFactory())),
        ("ticket_id", lambda: TicketFactory(tenant=TenantFactory())),
        ("assignee_id", lambda: RepresentativeFactory(tenant=TenantFactory())),
    ],
)
def test_another_organizations_reference_is_refused_like_a_random_id(owner, field, make_foreign):
    foreign = make_foreign()
    answers = []
    for value in (str(foreign.pk), str(uuid.uuid4())):
        error = assert_envelope(create(owner, **{field: value}), 400)
        answers.append((error["code"], error["message"], error["details"]))

    assert answers[0] == answers[1]
    assert list(answers[0][2]) == [field]
    assert not Escalation.objects.filter(tenant=owner.tenant).exists()
    assert not escalation_events(owner.tenant).exists()


def test_an_assignee_makes_it_assigned_at_creation(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)

    with time_machine.travel(START, tick=False):
        response = create(owner, assignee_id=str(representative.pk), priority="CRITICAL")
    with time_machine.travel(START + timedelta(hours=1), tick=False):
        later = owner.client.get(f"{ESCALATIONS}{response.json()['id']}/").json()

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "ASSIGNED"
    assert body["priority"] == "CRITICAL"
    assert body["assignee_id"] == str(representative.pk)
    assert body["assignee"]["user"]["id"] == str(representative.user_id)
    assert body["assigned_at"] == "2026-03-02T09:00:00Z"
    assert body["wait_time"] == 0
    assert later["wait_time"] == 0
    event = escalation_events(owner.tenant, "support.escalation.created").get()
    assert event.payload["status"] == "ASSIGNED"
    assert event.payload["assignee_id"] == str(representative.pk)
    assert event.payload["assignee_user_id"] == str(representative.user_id)
    # An escalation is a queue of its own: it takes none of the representative's tickets.
    assert fresh(representative).active_chats == 0


@pytest.mark.parametrize("departure", ["removed", "suspended", "deactivated"])
def test_a_representative_who_left_is_refused_as_assignee(owner, departure):
    representative = RepresentativeFactory(tenant=owner.tenant)
    membership = membership_of(representative)
    if departure == "removed":
        membership.delete()
    elif departure == "suspended":
        Membership.objects.filter(pk=membership.pk).update(status=MembershipStatus.SUSPENDED)
    else:
        type(representative.user).objects.filter(pk=representative.user_id).update(is_active=False)
    assert Representative.objects.filter(pk=representative.pk).exists()

    error = assert_envelope(create(owner, assignee_id=str(representative.pk)), 400)

    assert "assignee_id" in error["details"]
    assert not Escalation.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize("priority", ["LOW", "NORMAL", "HIGH", "URGENT", "CRITICAL"])
def test_every_priority_is_accepted(owner, priority):
    response = create(owner, priority=priority)

    assert response.status_code == 201, response.content
    assert response.json()["priority"] == priority


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "BORED"},
        {"reason": "customer_request"},
        {"priority": "BLOCKER"},
        {"priority": "critical"},
        {"priority": None},
        {"status": "RESOLVED"},
        {"assignee_id": "somebody"},
        {"ticket_id": "TICKET-1001"},
    ],
)
def test_unknown_choices_and_unwritable_fields_are_400(owner, body):
    error = assert_envelope(create(owner, **body), 400)

    assert set(body) <= set(error["details"])
    assert not Escalation.objects.filter(tenant=owner.tenant).exists()


def test_the_service_creates_one_for_the_system_without_an_actor():
    tenant = TenantFactory()

    escalation = escalation_create(
        tenant=tenant, actor=None, reason="SLA_BREACH", issue_description="Breached."
    )

    assert escalation.created_by is None
    assert escalation.status == EscalationStatus.PENDING
    assert escalation_events(tenant, "support.escalation.created").get().actor_id is None


# Moves ------------------------------------------------------------------------------------------

LEGAL = sorted(
    (source, target) for source, targets in ESCALATION_TRANSITIONS.items() for target in targets
)
ILLEGAL = sorted(
    (source, target)
    for source in STATUSES
    for target in STATUSES
    if source != target and target not in ESCALATION_TRANSITIONS[source]
)


def test_the_transition_table_is_forward_only():
    order = {status: index for index, status in enumerate(STATUSES)}
    assert ESCALATION_TRANSITIONS[EscalationStatus.RESOLVED] == frozenset()
    assert all(order[target] > order[source] for source, target in LEGAL)
    assert len(LEGAL) == 6
    assert len(ILLEGAL) == 6


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{s}->{t}" for s, t in LEGAL])
def test_every_forward_move_works_and_records_one_event(owner, source, target):
    escalation = in_status(owner.tenant, source)
    body = {"status": target}
    if target == EscalationStatus.ASSIGNED:
        body["assignee_id"] = str(RepresentativeFactory(tenant=owner.tenant).pk)

    response = owner.client.patch(detail(escalation), body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == target
    assert fresh(escalation).status == target
    event = escalation_events(owner.tenant).get()
    expected = (
        "support.escalation.resolved"
        if target == EscalationStatus.RESOLVED
        else "support.escalation.updated"
    )
    assert event.event_type == expected
    assert event.payload["previous_status"] == source
    assert event.payload["status"] == target


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{s}->{t}" for s, t in ILLEGAL])
def test_every_backward_move_is_409_and_changes_nothing(owner, source, target):
    escalation = in_status(owner.tenant, source)
    before = Escalation.objects.filter(pk=escalation.pk).values().get()

    response = owner.client.patch(
        detail(escalation), {"status": target, "ai_summary": "Changed"}, format="json"
    )

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"]["status"] == source
    assert Escalation.objects.filter(pk=escalation.pk).values().get() == before
    assert not escalation_events(owner.tenant).exists()


def test_in_progress_back_to_pending_is_409_naming_the_allowed_moves(owner):
    escalation = in_status(owner.tenant, EscalationStatus.IN_PROGRESS)
    before = Escalation.objects.filter(pk=escalation.pk).values().get()

    response = owner.client.patch(
        detail(escalation), {"status": "PENDING", "priority": "LOW"}, format="json"
    )

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {"status": "IN_PROGRESS", "allowed": ["RESOLVED"]}
    assert "IN_PROGRESS" in error["message"]
    assert "RESOLVED" in error["message"]
    assert Escalation.objects.filter(pk=escalation.pk).values().get() == before


@pytest.mark.parametrize(
    "body",
    [
        {"status": "PENDING"},
        {"status": "IN_PROGRESS"},
        {"status": "RESOLVED"},
        {"ai_summary": "One more thought."},
        {"priority": "LOW"},
        {"assignee_id": None},
    ],
)
def test_a_resolved_escalation_changes_no_more(owner, body):
    escalation = in_status(owner.tenant, EscalationStatus.RESOLVED)
    before = Escalation.objects.filter(pk=escalation.pk).values().get()

    response = owner.client.patch(detail(escalation), body, format="json")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {"status": "RESOLVED"}
    assert Escalation.objects.filter(pk=escalation.pk).values().get() == before
    assert not escalation_events(owner.tenant).exists()


def test_assigned_needs_an_assignee(owner):
    pending = in_status(owner.tenant, EscalationStatus.PENDING)
    assigned = in_status(owner.tenant, EscalationStatus.ASSIGNED)

    moved = owner.client.patch(detail(pending), {"status": "ASSIGNED"}, format="json")
    unassigned = owner.client.patch(detail(assigned), {"assignee_id": None}, format="json")

    assert "assignee_id" in assert_envelope(moved, 400)["details"]
    assert "assignee_id" in assert_envelope(unassigned, 400)["details"]
    assert fresh(pending).status == EscalationStatus.PENDING
    assert fresh(assigned).assignee_id == assigned.assignee_id
    assert not escalation_events(owner.tenant).exists()


def test_an_in_progress_escalation_may_lose_its_assignee(owner):
    escalation = in_status(owner.tenant, EscalationStatus.IN_PROGRESS)

    response = owner.client.patch(detail(escalation), {"assignee_id": None}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["assignee_id"] is None
    assert response.json()["status"] == "IN_PROGRESS"


def test_giving_a_pending_escalation_an_assignee_makes_it_assigned(owner):
    escalation = in_status(owner.tenant, EscalationStatus.PENDING)
    representative = RepresentativeFactory(tenant=owner.tenant)

    with time_machine.travel(START, tick=False):
        response = owner.client.patch(
            detail(escalation), {"assignee_id": str(representative.pk)}, format="json"
        )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ASSIGNED"
    assert body["assignee_id"] == str(representative.pk)
    assert body["assigned_at"] == "2026-03-02T09:00:00Z"
    event = escalation_events(owner.tenant, "support.escalation.updated").get()
    assert event.payload["previous_status"] == "PENDING"
    assert event.payload["changed"] == ["assigned_at", "assignee", "status"]


def test_a_representative_who_left_is_refused_on_update(owner):
    escalation = in_status(owner.tenant, EscalationStatus.PENDING)
    representative = RepresentativeFactory(tenant=owner.tenant)
    Membership.objects.filter(pk=membership_of(representative).pk).update(
        status=MembershipStatus.SUSPENDED
    )

    response = owner.client.patch(
        detail(escalation), {"assignee_id": str(representative.pk)}, format="json"
    )

    assert "assignee_id" in assert_envelope(response, 400)["details"]
    assert fresh(escalation).assignee_id is None


def test_working_it_stamps_assigned_at_and_resolving_stamps_resolved_at(owner):
    with time_machine.travel(START, tick=False):
        url = f"{ESCALATIONS}{create(owner).json()['id']}/"
    with time_machine.travel(START + timedelta(minutes=10), tick=False):
        working = owner.client.patch(url, {"status": "IN_PROGRESS"}, format="json").json()
    with time_machine.travel(START + timedelta(hours=1), tick=False):
        while_working = owner.client.get(url).json()
    with time_machine.travel(START + timedelta(hours=2), tick=False):
        resolved = owner.client.patch(url, {"status": "RESOLVED"}, format="json").json()
    with time_machine.travel(START + timedelta(days=3), tick=False):
        much_later = owner.client.get(url).json()

    assert working["status"] == "IN_PROGRESS"
    assert working["assigned_at"] == "2026-03-02T09:10:00Z"
    assert working["resolved_at"] is None
    assert working["wait_time"] == 600
    assert while_working["wait_time"] == 600
    assert resolved["status"] == "RESOLVED"
    assert resolved["assigned_at"] == "2026-03-02T09:10:00Z"
    assert resolved["resolved_at"] == "2026-03-02T11:00:00Z"
    assert resolved["wait_time"] == 600
    assert much_later["wait_time"] == 600
    types = list(
        escalation_events(owner.tenant)
        .order_by("created_at", "id")
        .values_list("event_type", flat=True)
    )
    assert types == [
        "support.escalation.created",
        "support.escalation.updated",
        "support.escalation.resolved",
    ]


def test_resolving_a_pending_escalation_stops_its_wait_time(owner):
    with time_machine.travel(START, tick=False):
        url = f"{ESCALATIONS}{create(owner).json()['id']}/"
    with time_machine.travel(START + timedelta(minutes=15), tick=False):
        resolved = owner.client.patch(url, {"status": "RESOLVED"}, format="json").json()
    with time_machine.travel(START + timedelta(hours=5), tick=False):
        later = owner.client.get(url).json()

    assert resolved["assigned_at"] == "2026-03-02T09:15:00Z"
    assert resolved["resolved_at"] == "2026-03-02T09:15:00Z"
    assert resolved["wait_time"] == 900
    assert later["wait_time"] == 900


def test_a_patch_that_changes_nothing_records_nothing(owner):
    escalation = in_status(owner.tenant, EscalationStatus.ASSIGNED)

    response = owner.client.patch(
        detail(escalation),
        {"status": "ASSIGNED", "assignee_id": str(escalation.assignee_id)},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert not escalation_events(owner.tenant).exists()


@pytest.mark.parametrize("body", [{"status": "DONE"}, {"priority": "MEDIUM"}, {"reason": "X"}])
def test_an_unknown_choice_in_an_update_is_400(owner, body):
    escalation = in_status(owner.tenant, EscalationStatus.PENDING)

    error = assert_envelope(owner.client.patch(detail(escalation), body, format="json"), 400)

    assert set(body) <= set(error["details"])


# PUT with the shown document ---------------------------------------------------------------------


def test_put_accepts_the_document_a_get_showed(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant, customer=customer)
    representative = RepresentativeFactory(tenant=owner.tenant)
    with time_machine.travel(START, tick=False):
        created = create(
            owner,
            customer_id=str(customer.pk),
            ticket_id=str(ticket.pk),
            assignee_id=str(representative.pk),
            conversation_id=str(uuid.uuid4()),
            ai_summary="First summary.",
        ).json()
    url = f"{ESCALATIONS}{created['id']}/"
    document = owner.client.get(url).json()
    # Live fields sent back stale (or made up) are ignored.
    stale = {
        **document,
        "ai_summary": "Second summary.",
        "wait_time": 123_456,
        "assigned_at": "2020-01-01T00:00:00Z",
        "updated_at": "2020-01-01T00:00:00Z",
        "ticket_number": "TICKET-1",
    }

    response = owner.client.put(url, stale, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ai_summary"] == "Second summary."
    for key in (
        "status",
        "assignee_id",
        "customer_id",
        "ticket_id",
        "ticket_number",
        "conversation_id",
        "assigned_at",
        "wait_time",
    ):
        assert body[key] == document[key], key
    assert fresh(Escalation(pk=created["id"])).assigned_at == START
    event = escalation_events(owner.tenant, "support.escalation.updated").get()
    assert event.payload["changed"] == ["ai_summary"]


@pytest.mark.parametrize("method", ["put", "patch"])
def test_an_assignee_sent_with_the_unchanged_pending_status_makes_it_assigned(owner, method):
    escalation = in_status(owner.tenant, EscalationStatus.PENDING)
    representative = RepresentativeFactory(tenant=owner.tenant)
    body = {"status": "PENDING", "assignee_id": str(representative.pk)}
    if method == "put":
        body = {**owner.client.get(detail(escalation)).json(), **body}

    response = getattr(owner.client, method)(detail(escalation), body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["assignee_id"] == str(representative.pk)
    assert response.json()["status"] == "ASSIGNED"
    assert fresh(escalation).status == EscalationStatus.ASSIGNED


def test_put_of_the_shown_document_is_accepted_after_the_assignee_left(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    escalation = in_status(owner.tenant, EscalationStatus.IN_PROGRESS, assignee=representative)
    membership_of(representative).delete()
    document = owner.client.get(detail(escalation)).json()

    response = owner.client.put(
        detail(escalation), {**document, "ai_summary": "Handed over."}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["ai_summary"] == "Handed over."
    assert fresh(escalation).assignee_id == representative.pk


def test_a_patch_not_naming_the_departed_assignee_still_works(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    escalation = in_status(owner.tenant, EscalationStatus.IN_PROGRESS, assignee=representative)
    membership_of(representative).delete()

    response = owner.client.patch(detail(escalation), {"status": "RESOLVED"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "RESOLVED"
    assert response.json()["assignee_id"] == str(representative.pk)


def test_put_with_a_changed_read_only_key_is_refused(owner):
    escalation = in_status(owner.tenant, EscalationStatus.PENDING)
    document = owner.client.get(detail(escalation)).json()

    response = owner.client.put(
        detail(escalation), {**document, "created_at": "2020-01-01T00:00:00Z"}, format="json"
    )

    assert "created_at" in assert_envelope(response, 400)["details"]
    assert not escalation_events(owner.tenant).exists()


# Filters, ordering, search -----------------------------------------------------------------------


def listed(caller, **params) -> set[str]:
    response = caller.client.get(ESCALATIONS, {**params, "page_size": 100})
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def ids(*objects) -> set[str]:
    return {str(obj.pk) for obj in objects}


def test_status_priority_and_reason_take_comma_lists(owner):
    t = owner.tenant
    pending_low = in_status(t, "PENDING", priority="LOW", reason="SLA_BREACH")
    assigned_high = in_status(t, "ASSIGNED", priority="HIGH", reason="CUSTOMER_REQUEST")
    working_critical = in_status(t, "IN_PROGRESS", priority="CRITICAL", reason="OTHER")
    resolved_normal = in_status(t, "RESOLVED", priority="NORMAL", reason="NEGATIVE_SENTIMENT")
    in_status(TenantFactory(), "PENDING", priority="LOW", reason="SLA_BREACH")

    assert listed(owner, status="PENDING") == ids(pending_low)
    assert listed(owner, status="PENDING,ASSIGNED") == ids(pending_low, assigned_high)
    assert listed(owner, status="RESOLVED") == ids(resolved_normal)
    assert listed(owner, priority="HIGH,CRITICAL") == ids(assigned_high, working_critical)
    assert listed(owner, reason="SLA_BREACH,OTHER") == ids(pending_low, working_critical)
    assert listed(owner, status="PENDING,IN_PROGRESS", priority="CRITICAL") == ids(working_critical)


@pytest.mark.parametrize(
    "params",
    [{"status": "DONE"}, {"priority": "critical"}, {"reason": "OTHER,NOPE"}, {"ticket": "x"}],
)
def test_an_unknown_value_in_a_filter_is_400(owner, params):
    assert_envelope(owner.client.get(ESCALATIONS, params), 400)


def test_assignee_ticket_and_customer_filters(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant)
    customer = CustomerProfileFactory(tenant=owner.tenant)
    taken = in_status(owner.tenant, "ASSIGNED", assignee=representative)
    of_ticket = in_status(owner.tenant, "PENDING", ticket=ticket)
    of_customer = in_status(owner.tenant, "PENDING", customer=customer)
    in_status(owner.tenant, "IN_PROGRESS")

    assert listed(owner, assignee=str(representative.pk)) == ids(taken)
    assert listed(owner, ticket=str(ticket.pk)) == ids(of_ticket)
    assert listed(owner, customer=str(customer.pk)) == ids(of_customer)
    assert listed(owner, assignee=str(uuid.uuid4())) == set()


def test_another_organizations_ticket_filters_to_nothing(owner):
    other = TenantFactory()
    foreign = EscalationFactory(tenant=other, ticket=TicketFactory(tenant=other))
    in_status(owner.tenant, "PENDING")

    assert listed(owner, ticket=str(foreign.ticket_id)) == set()


def test_ordering_by_priority_is_by_rank(owner):
    made = {
        priority: in_status(owner.tenant, "PENDING", priority=priority)
        for priority in ("HIGH", "CRITICAL", "LOW", "URGENT", "NORMAL")
    }

    ascending = owner.client.get(ESCALATIONS, {"ordering": "priority"}).json()["results"]
    descending = owner.client.get(ESCALATIONS, {"ordering": "-priority"}).json()["results"]

    ranked = ["LOW", "NORMAL", "HIGH", "URGENT", "CRITICAL"]
    assert [row["priority"] for row in ascending] == ranked
    assert [row["priority"] for row in descending] == ranked[::-1]
    assert [row["id"] for row in ascending] == [str(made[p].pk) for p in ranked]


def test_search_finds_descriptions_and_ai_summaries(owner):
    by_description = in_status(
        owner.tenant, "PENDING", issue_description="Invoice PDF renders blank"
    )
    by_summary = in_status(
        owner.tenant, "PENDING", ai_summary="Customer is angry about the invoice total."
    )
    in_status(owner.tenant, "PENDING", issue_description="Unrelated", ai_summary="Nothing")
    in_status(TenantFactory(), "PENDING", issue_description="Invoice PDF renders blank too")

    assert listed(owner, search="invoice pdf") == ids(by_description)
    assert listed(owner, search="invoice") == ids(by_description, by_summary)
    assert listed(owner, search="angry") == ids(by_summary)


# Who may do what ---------------------------------------------------------------------------------


def test_a_viewer_reads_escalations_but_changes_nothing(make_caller):
    viewer = make_caller(Role.VIEWER)
    escalation = in_status(viewer.tenant, "PENDING")

    listed_ = viewer.client.get(ESCALATIONS)
    shown = viewer.client.get(detail(escalation))
    created = create(viewer)
    patched = viewer.client.patch(detail(escalation), {"priority": "LOW"}, format="json")
    deleted = viewer.client.delete(detail(escalation))

    assert listed_.status_code == 200, listed_.content
    assert [row["id"] for row in listed_.json()["results"]] == [str(escalation.pk)]
    assert shown.status_code == 200, shown.content
    for response in (created, patched, deleted):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert Escalation.objects.filter(tenant=viewer.tenant).count() == 1
    assert fresh(escalation).priority == escalation.priority
    assert not escalation_events(viewer.tenant).exists()


def test_a_member_opens_and_works_escalations(make_caller):
    member = make_caller(Role.MEMBER)

    created = create(member)
    moved = member.client.patch(
        f"{ESCALATIONS}{created.json()['id']}/", {"status": "IN_PROGRESS"}, format="json"
    )

    assert created.status_code == 201, created.content
    assert moved.status_code == 200, moved.content


def test_a_billing_member_sees_no_escalations(make_caller):
    billing = make_caller(Role.BILLING)
    escalation = in_status(billing.tenant, "PENDING")

    assert_envelope(billing.client.get(ESCALATIONS), 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(billing.client.get(detail(escalation)), 403, "INSUFFICIENT_PERMISSIONS")


def test_deleting_is_audited_with_what_was_deleted(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant)
    escalation = in_status(
        owner.tenant, "ASSIGNED", assignee=representative, ticket=ticket, priority="URGENT"
    )

    response = owner.client.delete(detail(escalation))

    assert response.status_code == 204, response.content
    assert not Escalation.objects.filter(pk=escalation.pk).exists()
    event = escalation_events(owner.tenant, "support.escalation.deleted").get()
    assert event.actor_id == owner.user.pk
    assert event.payload["escalation_id"] == str(escalation.pk)
    assert event.payload["ticket_id"] == str(ticket.pk)
    assert event.payload["assignee_id"] == str(representative.pk)
    assert event.payload["priority"] == "URGENT"
    assert event.payload["status"] == "ASSIGNED"
    # The ticket and the representative stay.
    assert Ticket.objects.filter(pk=ticket.pk).exists()
    assert Representative.objects.filter(pk=representative.pk).exists()


def test_another_organizations_escalation_is_404_for_every_action(owner):
    foreign = in_status(TenantFactory(), "PENDING")

    answers = [
        owner.client.get(detail(foreign)),
        owner.client.patch(detail(foreign), {"priority": "LOW"}, format="json"),
        owner.client.put(detail(foreign), {"priority": "LOW"}, format="json"),
        owner.client.delete(detail(foreign)),
    ]

    for response in answers:
        assert_envelope(response, 404)
    assert fresh(foreign).priority == foreign.priority


# The public event: notifications and webhooks ---------------------------------------------------


def notified(tenant, event_type) -> set:
    return set(
        Notification.objects.filter(
            tenant=tenant, event_type=event_type, channel=Channel.IN_APP
        ).values_list("recipient_id", flat=True)
    )


def test_a_creation_notifies_the_admins_and_the_assignee(owner):
    admin = MembershipFactory(tenant=owner.tenant, role=Role.ADMIN)
    MembershipFactory(tenant=owner.tenant, role=Role.MEMBER)
    MembershipFactory(tenant=owner.tenant, role=Role.VIEWER)
    MembershipFactory(tenant=TenantFactory(), role=Role.ADMIN)
    representative = RepresentativeFactory(tenant=owner.tenant)
    RepresentativeFactory(tenant=owner.tenant)  # not the assignee

    response = create(
        owner, assignee_id=str(representative.pk), priority="CRITICAL", reason="SLA_BREACH"
    )

    assert response.status_code == 201, response.content
    assert notified(owner.tenant, "support.escalation.created") == {
        admin.user_id,
        representative.user_id,
    }
    notice = Notification.objects.get(
        recipient=representative.user,
        event_type="support.escalation.created",
        channel=Channel.IN_APP,
    )
    assert notice.title == "Escalation: SLA_BREACH (CRITICAL)"
    assert notice.type == "warning"
    assert notice.metadata["escalation_id"] == response.json()["id"]
    assert notice.metadata["assignee_id"] == str(representative.pk)


def test_an_unassigned_creation_notifies_the_admins_only(owner):
    admin = MembershipFactory(tenant=owner.tenant, role=Role.ADMIN)
    RepresentativeFactory(tenant=owner.tenant)

    response = create(owner)

    assert response.status_code == 201, response.content
    assert notified(owner.tenant, "support.escalation.created") == {admin.user_id}


def test_an_update_notifies_nobody(owner):
    MembershipFactory(tenant=owner.tenant, role=Role.ADMIN)
    escalation = in_status(owner.tenant, "PENDING")

    owner.client.patch(
        detail(escalation),
        {"assignee_id": str(RepresentativeFactory(tenant=owner.tenant).pk)},
        format="json",
    )

    assert not Notification.objects.filter(tenant=owner.tenant).exists()


def test_a_creation_is_delivered_to_the_subscribed_endpoints(owner):
    subscribed = WebhookEndpointFactory(tenant=owner.tenant, events=["support.escalation.created"])
    everything = WebhookEndpointFactory(tenant=owner.tenant, events=["*"])
    other = WebhookEndpointFactory(tenant=owner.tenant, events=["support.ticket.created"])
    foreign = WebhookEndpointFactory(tenant=TenantFactory(), events=["*"])
    customer = CustomerProfileFactory(tenant=owner.tenant, email="secret.person@example.org")
    ticket = TicketFactory(tenant=owner.tenant, customer=customer)
    representative = RepresentativeFactory(tenant=owner.tenant)

    response = create(
        owner,
        customer_id=str(customer.pk),
        ticket_id=str(ticket.pk),
        assignee_id=str(representative.pk),
        priority="CRITICAL",
    )

    assert response.status_code == 201, response.content
    delivery = WebhookDelivery.objects.select_related("event").get(endpoint=subscribed)
    assert delivery.event_type == "support.escalation.created"
    assert WebhookDelivery.objects.filter(endpoint=everything).count() == 1
    assert not WebhookDelivery.objects.filter(endpoint__in=[other, foreign]).exists()
    body = json.loads(delivery.event.body)
    assert body["type"] == "support.escalation.created"
    assert body["organization_id"] == str(owner.tenant.pk)
    data = body["data"]
    assert data["escalation_id"] == response.json()["id"]
    assert data["priority"] == "CRITICAL"
    assert data["status"] == "ASSIGNED"
    assert data["ticket_id"] == str(ticket.pk)
    assert data["customer_id"] == str(customer.pk)
    assert data["assignee_id"] == str(representative.pk)
    assert data["assignee_user_id"] == str(representative.user_id)
    assert data["created_at"]
    assert "secret.person" not in delivery.event.body


# The ticket assignment notice --------------------------------------------------------------------


def test_a_ticket_assignment_notifies_the_assignees_user_only(owner):
    admin = MembershipFactory(tenant=owner.tenant, role=Role.ADMIN)
    member = MembershipFactory(tenant=owner.tenant, role=Role.MEMBER)
    first = RepresentativeFactory(tenant=owner.tenant)
    second = RepresentativeFactory(tenant=owner.tenant)

    created = owner.client.post(
        TICKETS, {"subject": "SSO loop", "assignee": str(first.pk)}, format="json"
    )
    assert created.status_code == 201, created.content
    after_create = notified(owner.tenant, "support.ticket.assigned")
    reassigned = owner.client.post(
        f"{TICKETS}{created.json()['id']}/assign/",
        {"representative": str(second.pk)},
        format="json",
    )

    assert reassigned.status_code == 200, reassigned.content
    assert after_create == {first.user_id}
    assert notified(owner.tenant, "support.ticket.assigned") == {first.user_id, second.user_id}
    for bystander in (owner.user.pk, admin.user_id, member.user_id):
        assert not Notification.objects.filter(recipient_id=bystander).exists()
    notice = Notification.objects.get(
        recipient=second.user, event_type="support.ticket.assigned", channel=Channel.IN_APP
    )
    assert notice.title == "Ticket assigned: TICKET-1001"
    assert notice.metadata["ticket_id"] == created.json()["id"]


def test_an_unassigned_ticket_notifies_nobody(owner):
    MembershipFactory(tenant=owner.tenant, role=Role.ADMIN)
    RepresentativeFactory(tenant=owner.tenant)

    response = owner.client.post(TICKETS, {"subject": "Queued"}, format="json")

    assert response.status_code == 201, response.content
    assert not Notification.objects.filter(tenant=owner.tenant).exists()


# Representatives: rating -------------------------------------------------------------------------


def rep_url(representative) -> str:
    return f"{REPRESENTATIVES}{representative.pk}/"


def test_the_rating_is_the_average_satisfaction_of_their_tickets(owner):
    rated = RepresentativeFactory(tenant=owner.tenant)
    unrated = RepresentativeFactory(tenant=owner.tenant)
    for score in (5, 4, 4, None):
        TicketFactory(
            tenant=owner.tenant,
            assignee=rated,
            status="RESOLVED",
            customer_satisfaction_score=score,
        )
    TicketFactory(tenant=owner.tenant, assignee=unrated)  # no score yet
    TicketFactory(tenant=owner.tenant, customer_satisfaction_score=1, status="RESOLVED")

    rows = {
        row["id"]: row["rating"]
        for row in owner.client.get(REPRESENTATIVES, {"page_size": 100}).json()["results"]
    }
    shown = owner.client.get(rep_url(rated)).json()
    unrated_shown = owner.client.get(rep_url(unrated)).json()

    assert rows[str(rated.pk)] == pytest.approx(13 / 3)
    assert rows[str(unrated.pk)] is None
    assert shown["rating"] == pytest.approx(13 / 3)
    assert unrated_shown["rating"] is None


def test_ordering_representatives_by_rating(owner):
    good = RepresentativeFactory(tenant=owner.tenant)
    poor = RepresentativeFactory(tenant=owner.tenant)
    TicketFactory(tenant=owner.tenant, assignee=good, customer_satisfaction_score=5)
    TicketFactory(tenant=owner.tenant, assignee=poor, customer_satisfaction_score=2)

    ordered = owner.client.get(REPRESENTATIVES, {"ordering": "-rating"}).json()["results"]
    rated = [row["id"] for row in ordered if row["rating"] is not None]

    assert rated == [str(good.pk), str(poor.pk)]


# Representatives: performance -------------------------------------------------------------------

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def performance_url(representative) -> str:
    return f"{REPRESENTATIVES}{representative.pk}/performance/"


def handled_ticket(representative, assigned_at, *, response_seconds=None, **fields) -> Ticket:
    """A ticket of the representative assigned at `assigned_at`, created an hour before, first
    answered `response_seconds` after its creation."""
    ticket = TicketFactory(
        tenant=representative.tenant, assignee=representative, assigned_at=assigned_at, **fields
    )
    created_at = assigned_at - timedelta(hours=1)
    first_responded_at = (
        created_at + timedelta(seconds=response_seconds) if response_seconds is not None else None
    )
    Ticket.objects.filter(pk=ticket.pk).update(
        created_at=created_at, first_responded_at=first_responded_at
    )
    return ticket


def test_performance_over_the_last_seven_days(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    handled_ticket(
        representative,
        NOW - timedelta(days=6),
        status="RESOLVED",
        customer_satisfaction_score=5,
        response_seconds=600,
        sla_terms=SLA_TERMS,
    )
    handled_ticket(
        representative,
        NOW - timedelta(days=1),
        status="RESOLVED",
        customer_satisfaction_score=3,
        response_seconds=1200,
        sla_terms=SLA_TERMS,
        sla_breached_at=NOW - timedelta(days=1),
        sla_breach="resolution",
    )
    handled_ticket(representative, NOW - timedelta(days=1), status="CLOSED")
    handled_ticket(representative, NOW - timedelta(hours=2), sla_terms=SLA_TERMS)
    # Assigned before the window: left out (though it counts in the rating).
    handled_ticket(
        representative,
        NOW - timedelta(days=8),
        status="RESOLVED",
        customer_satisfaction_score=1,
        response_seconds=60,
        sla_terms=SLA_TERMS,
        sla_breached_at=NOW - timedelta(days=8),
    )
    # Someone else's, and an unassigned one.
    handled_ticket(RepresentativeFactory(tenant=owner.tenant), NOW - timedelta(days=1))
    TicketFactory(tenant=owner.tenant)

    with time_machine.travel(NOW, tick=False):
        response = owner.client.get(performance_url(representative), {"days": 7})

    assert response.status_code == 200, response.content
    report = response.json()
    assert report["representative_id"] == str(representative.pk)
    assert report["period_days"] == 7
    assert report["period_start"] == "2026-03-13T12:00:00Z"
    assert report["period_end"] == "2026-03-20T12:00:00Z"
    assert report["tickets_handled"] == 4
    assert report["tickets_resolved"] == 3
    assert report["tickets_open"] == 1
    assert report["resolution_rate"] == 75.0
    assert report["avg_first_response_seconds"] == 900
    assert report["customer_satisfaction"] == 4.0
    assert report["ratings"] == 2
    assert report["sla_met_rate"] == pytest.approx(66.67)
    # One resolved in the first half (Mar 13-16), two in the second (Mar 17-20).
    assert report["trend"] == "UP"
    daily = report["daily"]
    assert len(daily) == 8
    assert [point["date"] for point in daily] == [f"2026-03-{day}" for day in range(13, 21)]
    by_date = {point["date"]: point for point in daily}
    assert by_date["2026-03-14"] == {
        "date": "2026-03-14",
        "handled": 1,
        "resolved": 1,
        "customer_satisfaction": 5.0,
    }
    assert by_date["2026-03-19"] == {
        "date": "2026-03-19",
        "handled": 2,
        "resolved": 2,
        "customer_satisfaction": 3.0,
    }
    assert by_date["2026-03-20"]["handled"] == 1
    assert by_date["2026-03-20"]["resolved"] == 0
    assert by_date["2026-03-20"]["customer_satisfaction"] is None
    assert sum(point["handled"] for point in daily) == 4
    assert by_date["2026-03-13"]["handled"] == 0


def test_performance_without_tickets_is_empty_not_an_error(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)

    with time_machine.travel(NOW, tick=False):
        response = owner.client.get(performance_url(representative))

    assert response.status_code == 200, response.content
    report = response.json()
    assert report["period_days"] == 30
    assert len(report["daily"]) == 31
    assert report["tickets_handled"] == 0
    assert report["resolution_rate"] is None
    assert report["avg_first_response_seconds"] is None
    assert report["customer_satisfaction"] is None
    assert report["sla_met_rate"] is None
    assert report["ratings"] == 0
    assert report["trend"] == "STABLE"


@pytest.mark.parametrize(
    ("first_half", "second_half", "trend"),
    [
        (1, 3, "UP"),
        (3, 1, "DOWN"),
        (2, 2, "STABLE"),
        (0, 0, "STABLE"),
        (0, 1, "UP"),
        (1, 0, "DOWN"),
    ],
)
def test_the_trend_compares_the_halves_of_the_period(owner, first_half, second_half, trend):
    representative = RepresentativeFactory(tenant=owner.tenant)
    for _ in range(first_half):
        handled_ticket(representative, NOW - timedelta(days=6), status="RESOLVED")
    for _ in range(second_half):
        handled_ticket(representative, NOW - timedelta(days=1), status="RESOLVED")

    with time_machine.travel(NOW, tick=False):
        report = owner.client.get(performance_url(representative), {"days": 7}).json()

    assert report["tickets_resolved"] == first_half + second_half
    assert report["trend"] == trend


def test_a_ten_percent_change_is_stable(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    for _ in range(10):
        handled_ticket(representative, NOW - timedelta(days=6), status="RESOLVED")
    for _ in range(11):
        handled_ticket(representative, NOW - timedelta(days=1), status="RESOLVED")

    with time_machine.travel(NOW, tick=False):
        report = owner.client.get(performance_url(representative), {"days": 7}).json()

    assert report["trend"] == "STABLE"


@pytest.mark.parametrize("days", ["0", "366", "abc", "-1", "7.5", "1e3"])
def test_a_bad_period_is_400(owner, days):
    representative = RepresentativeFactory(tenant=owner.tenant)

    error = assert_envelope(owner.client.get(performance_url(representative), {"days": days}), 400)

    assert "days" in error["details"]


@pytest.mark.parametrize("days", [1, 365])
def test_the_period_bounds_are_accepted(owner, days):
    representative = RepresentativeFactory(tenant=owner.tenant)

    report = owner.client.get(performance_url(representative), {"days": days}).json()

    assert report["period_days"] == days
    assert len(report["daily"]) == days + 1


def test_another_organizations_representative_has_no_performance(owner):
    foreign = RepresentativeFactory(tenant=TenantFactory())
    handled_ticket(foreign, NOW - timedelta(days=1), status="RESOLVED")

    foreign_error = assert_envelope(owner.client.get(performance_url(foreign)), 404)
    random_error = assert_envelope(
        owner.client.get(f"{REPRESENTATIVES}{uuid.uuid4()}/performance/"), 404
    )

    assert foreign_error["message"] == random_error["message"]


def test_a_viewer_reads_performance_and_billing_does_not(make_caller):
    viewer = make_caller(Role.VIEWER)
    billing = make_caller(Role.BILLING, tenant=viewer.tenant)
    representative = RepresentativeFactory(tenant=viewer.tenant)

    assert viewer.client.get(performance_url(representative)).status_code == 200
    assert_envelope(
        billing.client.get(performance_url(representative)), 403, "INSUFFICIENT_PERMISSIONS"
    )


def test_the_performance_query_count_does_not_grow_with_the_tickets(owner):
    few = RepresentativeFactory(tenant=owner.tenant)
    many = RepresentativeFactory(tenant=owner.tenant)
    for representative, count in ((few, 2), (many, 20)):
        for n in range(count):
            handled_ticket(
                representative,
                NOW - timedelta(days=n % 7, hours=1),
                status="RESOLVED" if n % 2 else "OPEN",
                customer_satisfaction_score=(n % 5) + 1 if n % 2 else None,
                response_seconds=60 * (n + 1),
                sla_terms=SLA_TERMS,
            )

    def queries(representative) -> int:
        with (
            time_machine.travel(NOW, tick=False),
            CaptureQueriesContext(connection) as captured,
        ):
            response = owner.client.get(performance_url(representative), {"days": 7})
        assert response.status_code == 200, response.content
        return len(captured)

    queries(few)  # warm whatever a first request caches
    assert queries(few) == queries(many)
    with time_machine.travel(NOW, tick=False):
        report = owner.client.get(performance_url(many), {"days": 7}).json()
    assert report["tickets_handled"] == 20


# Auto-assignment on ticket creation ---------------------------------------------------------------


def set_auto_assign(caller, value):
    return caller.client.patch(
        ORGANIZATION, {"settings": {"support_auto_assign": value}}, format="json"
    )


def test_the_auto_assign_setting_is_a_strict_boolean(owner):
    enabled = set_auto_assign(owner, True)
    refused = set_auto_assign(owner, "yes")
    refused_number = set_auto_assign(owner, 1)
    shown = owner.client.get(ORGANIZATION).json()

    assert enabled.status_code == 200, enabled.content
    assert enabled.json()["settings"]["support_auto_assign"] is True
    assert "settings" in assert_envelope(refused, 400)["details"]
    assert "settings" in assert_envelope(refused_number, 400)["details"]
    assert shown["settings"]["support_auto_assign"] is True
    assert Tenant.objects.get(pk=owner.tenant.pk).settings["support_auto_assign"] is True

    disabled = set_auto_assign(owner, False)
    assert disabled.status_code == 200, disabled.content
    assert Tenant.objects.get(pk=owner.tenant.pk).settings["support_auto_assign"] is False


def test_only_who_may_change_settings_turns_it_on(make_caller):
    member = make_caller(Role.MEMBER)

    assert_envelope(set_auto_assign(member, True), 403, "INSUFFICIENT_PERMISSIONS")
    assert "support_auto_assign" not in (Tenant.objects.get(pk=member.tenant.pk).settings or {})


def test_with_auto_assign_a_new_ticket_goes_to_the_most_free_online_representative(owner):
    assert set_auto_assign(owner, True).status_code == 200
    busy = RepresentativeFactory(tenant=owner.tenant, max_chats=5)
    Representative.objects.filter(pk=busy.pk).update(active_chats=3)  # 2 free
    roomy = RepresentativeFactory(tenant=owner.tenant, max_chats=8)  # 8 free
    RepresentativeFactory(tenant=owner.tenant, status="AWAY", max_chats=50)
    RepresentativeFactory(tenant=owner.tenant, status="OFFLINE", max_chats=60)
    departed = RepresentativeFactory(tenant=owner.tenant, max_chats=70)
    membership_of(departed).delete()

    response = owner.client.post(TICKETS, {"subject": "SSO loop"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["assignee_id"] == str(roomy.pk)
    assert body["assigned_at"] is not None
    assert fresh(roomy).active_chats == 1
    assert fresh(busy).active_chats == 3
    assert fresh(departed).active_chats == 0
    assert AuditEvent.objects.get(
        tenant=owner.tenant, event_type="support.ticket.assigned"
    ).payload["assignee_id"] == str(roomy.pk)
    assert notified(owner.tenant, "support.ticket.assigned") == {roomy.user_id}


def test_with_auto_assign_an_explicit_assignee_wins(owner):
    assert set_auto_assign(owner, True).status_code == 200
    RepresentativeFactory(tenant=owner.tenant, max_chats=50)
    chosen = RepresentativeFactory(tenant=owner.tenant, max_chats=2)

    response = owner.client.post(
        TICKETS, {"subject": "SSO loop", "assignee": str(chosen.pk)}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["assignee_id"] == str(chosen.pk)


@pytest.mark.parametrize("nobody", ["no representatives", "nobody online", "everyone full"])
def test_with_auto_assign_and_nobody_free_the_ticket_stays_queued(owner, nobody):
    assert set_auto_assign(owner, True).status_code == 200
    if nobody == "nobody online":
        RepresentativeFactory(tenant=owner.tenant, status="AWAY")
        RepresentativeFactory(tenant=owner.tenant, status="OFFLINE")
    elif nobody == "everyone full":
        full = RepresentativeFactory(tenant=owner.tenant, max_chats=1)
        Representative.objects.filter(pk=full.pk).update(active_chats=1)

    response = owner.client.post(TICKETS, {"subject": "Queued"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["assignee_id"] is None
    assert response.json()["assigned_at"] is None
    assert response.json()["ticket_number"] == "TICKET-1001"
    assert not AuditEvent.objects.filter(
        tenant=owner.tenant, event_type="support.ticket.assigned"
    ).exists()


@pytest.mark.parametrize("setting", ["never set", "turned off"])
def test_without_auto_assign_a_new_ticket_is_unassigned(owner, setting):
    if setting == "turned off":
        assert set_auto_assign(owner, False).status_code == 200
    online = RepresentativeFactory(tenant=owner.tenant)

    response = owner.client.post(TICKETS, {"subject": "Queued"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["assignee_id"] is None
    assert fresh(online).active_chats == 0
