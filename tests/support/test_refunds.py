"""Refunds (/api/v1/refunds/): the generic battery; creation in the customer's currency, of the
organization's customers and tickets only, amounts and reasons checked, read-only keys
refused, the request audited and sent to billing and the admins; the moves (PENDING ->
APPROVED | REJECTED, APPROVED -> COMPLETED, anything else 409) by action and by PATCH, their
timestamps, the fields fixed once decided but the notes, the customer's lifetime refunds;
who may decide (billing.write, or a serving representative within their role's authority in
the organization's settings); the refund budget drawn on approval (what remains, the
customer's limit, the currency); Idempotency-Key on creation and approval; parallel approvals
never overdrawing the budget (PostgreSQL); the organization's refund rules; filters, search
and ordering; the admin's actions; who may read and write."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from config.exceptions import InsufficientPermissions
from notifications.models import Channel, Notification
from support.models import (
    Budget,
    BudgetUsageRecord,
    CustomerProfile,
    Refund,
    RefundStatus,
    RuleApplication,
    Ticket,
)
from support.services.refunds import refund_approve, refund_authority_cents
from tenants.models import Membership, MembershipStatus, Role, Tenant
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, TenantFactory, UserFactory, issue_api_key

from .factories import (
    BudgetFactory,
    CustomerProfileFactory,
    DecisionRuleFactory,
    RefundFactory,
    RepresentativeFactory,
    TicketFactory,
)

pytestmark = pytest.mark.django_db

REFUNDS = "/api/v1/refunds/"
ORGANIZATION = "/api/v1/organizations/current/"
CHANGELIST = "/admin/support/refund/"
AUTHORITY = "support_refund_authority_cents"


def detail(refund) -> str:
    return f"{REFUNDS}{getattr(refund, 'pk', refund)}/"


def approve_url(refund) -> str:
    return f"{detail(refund)}approve/"


def reject_url(refund) -> str:
    return f"{detail(refund)}reject/"


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def refund_body(customer, **overrides) -> dict:
    body = {
        "order_id": "48292",
        "customer_id": str(customer.pk),
        "amount_cents": 5_000,
        "reason": "AI_BUG",
        "notes": "The assistant double-charged the order.",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def create(caller, customer, headers=None, **overrides):
    return caller.client.post(
        REFUNDS, refund_body(customer, **overrides), format="json", **(headers or {})
    )


def approve(caller, refund, headers=None):
    return caller.client.post(approve_url(refund), {}, format="json", **(headers or {}))


def reject(caller, refund, reason="The order was already credited."):
    body = {} if reason is None else {"rejection_reason": reason}
    return caller.client.post(reject_url(refund), body, format="json")


def patch(caller, refund, **body):
    return caller.client.patch(detail(refund), body, format="json")


def refund_events(tenant, event_type=None):
    events = AuditEvent.objects.filter(tenant=tenant, event_type__startswith="refund.")
    if event_type is not None:
        events = events.filter(event_type=event_type)
    return events


def rule_events(tenant):
    return AuditEvent.objects.filter(tenant=tenant, event_type="decision_rule.applied")


def notified(tenant, event_type) -> set:
    return set(
        Notification.objects.filter(
            tenant=tenant, event_type=event_type, channel=Channel.IN_APP
        ).values_list("recipient_id", flat=True)
    )


def in_status(tenant, status, **fields) -> Refund:
    """A refund of `tenant` already in `status`, with the timestamps that status has."""
    now = timezone.now()
    if status != RefundStatus.PENDING:
        fields.setdefault("processed_at", now)
    if status == RefundStatus.REJECTED:
        fields.setdefault("rejection_reason", "Duplicate request.")
    if status == RefundStatus.COMPLETED:
        fields.setdefault("completed_at", now)
    return RefundFactory(tenant=tenant, status=status, **fields)


def usd_budget(tenant, limit_cents=100_000, **fields) -> Budget:
    """The REFUND budget a USD refund of `tenant` draws from."""
    return BudgetFactory(tenant=tenant, currency="USD", limit_cents=limit_cents, **fields)


def set_settings(caller, **settings):
    response = caller.client.patch(ORGANIZATION, {"settings": settings}, format="json")
    assert response.status_code == 200, response.content
    return response


def rules_on(tenant, value=True) -> None:
    tenant.settings = {**(tenant.settings or {}), "support_apply_rules": value}
    tenant.save()


def cond(field, operator, value) -> dict:
    return {"field": field, "operator": operator, "value": value}


def rule_of(tenant, priority, conditions=(), action="APPROVE_REFUND", params=None, **fields):
    """An enabled rule of `tenant` (made by the factory: no audit event)."""
    return DecisionRuleFactory(
        tenant=tenant,
        priority=priority,
        enabled=fields.pop("enabled", True),
        conditions=list(conditions),
        action=action,
        action_params=dict(params or {}),
        **fields,
    )


def representative_caller(make_caller, tenant, role="SENIOR_SUPPORT"):
    """A member (support.write, not billing.write) who is a representative of `role`."""
    caller = make_caller(Role.MEMBER, tenant=tenant)
    caller.representative = RepresentativeFactory(tenant=tenant, user=caller.user, role=role)
    return caller


def listed(caller, **params) -> list[str]:
    response = caller.client.get(REFUNDS, {**params, "page_size": 100})
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def ids(*objects) -> set[str]:
    return {str(obj.pk) for obj in objects}


@pytest.fixture
def billing(owner, make_caller):
    return make_caller(Role.BILLING, tenant=owner.tenant)


@pytest.fixture
def member(owner, make_caller):
    return make_caller(Role.MEMBER, tenant=owner.tenant)


@pytest.fixture
def customer(owner):
    return CustomerProfileFactory(tenant=owner.tenant)


# The battery ------------------------------------------------------------------------------------


class TestRefunds(ResourceBattery):
    url = REFUNDS
    update_data = {"notes": "Paid back by card.", "amount_cents": 3_000}
    audit_prefix = "refund"
    related_fields = {"customer_id": CustomerProfile, "ticket_id": Ticket}
    filter_examples = {
        "ticket": lambda refund: str(TicketFactory(tenant=refund.tenant).pk),
        "created_after": lambda refund: iso(refund.created_at - timedelta(minutes=1)),
        "created_before": lambda refund: iso(refund.created_at + timedelta(minutes=1)),
    }

    @pytest.fixture
    def caller(self, make_caller):
        # The bodies name a customer of the caller's organization; the refunds made in it are
        # that customer's, so a PUT of create_data keeps the (read-only) customer_id.
        caller = make_caller(Role.OWNER)
        self.customer = CustomerProfileFactory(tenant=caller.tenant)
        return caller

    @property
    def create_data(self):
        return refund_body(self.customer)

    def make(self, tenant, **fields):
        own = getattr(self, "customer", None)
        if own is not None and own.tenant_id == tenant.pk:
            fields.setdefault("customer", own)
        return RefundFactory(tenant=tenant, **fields)


def test_refunds_have_no_delete_and_the_battery_skips_it(owner):
    refund = RefundFactory(tenant=owner.tenant)

    response = owner.client.delete(detail(refund))

    assert_envelope(response, 405)
    assert TestRefunds.test_destroy_removes_the_object_and_records_its_event is None
    assert Refund.objects.filter(pk=refund.pk).exists()


# Creation ----------------------------------------------------------------------------------------


def test_a_creation_is_pending_in_the_customers_currency_and_audited(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant, currency="EUR")

    response = create(owner, customer, amount_cents=1_234, reason="BILLING_ERROR")

    assert response.status_code == 201, response.content
    shown = response.json()
    assert shown["status"] == "PENDING"
    assert shown["currency"] == "EUR"
    assert shown["amount_cents"] == 1_234
    assert shown["customer_id"] == str(customer.pk)
    assert shown["customer"]["email"] == customer.email
    assert shown["created_by"]["id"] == str(owner.user.pk)
    for key in ("processed_at", "completed_at", "approved_by", "decided_by_rule_id", "budget_id"):
        assert shown[key] is None, key
    assert shown["rejection_reason"] == ""
    assert shown["rule_applications"] == []
    assert owner.client.get(detail(shown["id"])).json() == shown
    refund = Refund.objects.get(pk=shown["id"])
    assert refund.tenant_id == owner.tenant.pk
    event = refund_events(owner.tenant).get()
    assert event.event_type == "refund.requested"
    assert event.actor_id == owner.user.pk
    assert event.payload["refund_id"] == shown["id"]
    assert event.payload["amount_cents"] == 1_234
    assert event.payload["currency"] == "EUR"
    assert event.payload["requested_by_id"] == str(owner.user.pk)


@pytest.mark.parametrize(("given", "stored"), [("gbp", "GBP"), ("Jpy", "JPY"), ("USD", "USD")])
def test_an_explicit_currency_is_normalised_to_its_iso_code(owner, customer, given, stored):
    response = create(owner, customer, currency=given)

    assert response.status_code == 201, response.content
    assert response.json()["currency"] == stored
    assert Refund.objects.get(pk=response.json()["id"]).currency == stored


@pytest.mark.parametrize("currency", ["XYZ", "US", "EURO", ""], ids=["unknown", "2", "4", "empty"])
def test_a_currency_that_is_not_iso_4217_is_refused(owner, customer, currency):
    error = assert_envelope(create(owner, customer, currency=currency), 400)

    assert "currency" in error["details"]
    assert not Refund.objects.exists()


def test_the_customer_is_required(owner, customer):
    body = refund_body(customer)
    del body["customer_id"]

    error = assert_envelope(owner.client.post(REFUNDS, body, format="json"), 400)

    assert "customer_id" in error["details"]
    assert not Refund.objects.exists()


@pytest.mark.parametrize("field", ["customer_id", "ticket_id"])
def test_another_organizations_customer_or_ticket_is_refused_naming_the_field(owner, field):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    foreign = TicketFactory(tenant=TenantFactory())
    value = foreign.customer_id if field == "customer_id" else foreign.pk

    error = assert_envelope(create(owner, customer, **{field: str(value)}), 400)

    assert list(error["details"]) == [field]
    assert not Refund.objects.exists()


def test_a_ticket_of_another_customer_is_refused(owner, customer):
    ticket = TicketFactory(tenant=owner.tenant)  # another customer's

    error = assert_envelope(create(owner, customer, ticket_id=str(ticket.pk)), 400)

    assert error["details"] == {"ticket_id": ["The ticket is another customer's."]}
    assert not Refund.objects.exists()


def test_a_ticket_of_the_customer_or_of_nobody_is_accepted(owner, customer):
    own = TicketFactory(tenant=owner.tenant, customer=customer)
    anonymous = TicketFactory(tenant=owner.tenant, customer=None)

    answers = [
        create(owner, customer, ticket_id=str(t.pk), order_id=t.subject) for t in (own, anonymous)
    ]

    for response, ticket in zip(answers, (own, anonymous), strict=True):
        assert response.status_code == 201, response.content
        assert response.json()["ticket_id"] == str(ticket.pk)
        assert response.json()["ticket_number"] == ticket.ticket_number


@pytest.mark.parametrize(
    "amount",
    [0, -1, 2**63, "lots", 12.5, None],
    ids=["zero", "negative", "above-bigint", "text", "fraction", "missing"],
)
def test_an_amount_outside_1_cent_to_bigint_is_refused(owner, customer, amount):
    body = refund_body(customer, amount_cents=amount)  # None: left out

    error = assert_envelope(owner.client.post(REFUNDS, body, format="json"), 400)

    assert "amount_cents" in error["details"]
    assert not Refund.objects.exists()


@pytest.mark.parametrize("amount", [1, 2**53 - 1], ids=["one-cent", "json-safe-max"])
def test_the_amount_bounds_are_accepted(owner, customer, amount):
    response = create(owner, customer, amount_cents=amount)

    assert response.status_code == 201, response.content
    assert Refund.objects.get(pk=response.json()["id"]).amount_cents == amount


@pytest.mark.parametrize("amount", [2**53, 2**63 - 1], ids=["2-pow-53", "bigint-max"])
def test_an_amount_beyond_the_json_safe_integers_is_400(owner, customer, amount):
    # Amounts travel in audit payloads and webhooks, whose canonical JSON stops at 2**53 - 1.
    error = assert_envelope(create(owner, customer, amount_cents=amount), 400)

    assert "amount_cents" in error["details"]
    assert not Refund.objects.exists()


@pytest.mark.parametrize(
    "reason", ["CHANGED_MIND", "ai_bug", ""], ids=["unknown", "lower", "empty"]
)
def test_the_reason_is_one_of_the_refund_reasons(owner, customer, reason):
    error = assert_envelope(create(owner, customer, reason=reason), 400)

    assert "reason" in error["details"]
    assert not Refund.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "APPROVED"),
        ("processed_at", "2026-03-02T09:00:00Z"),
        ("completed_at", "2026-03-02T09:00:00Z"),
        ("approved_by", None),
        ("rejection_reason", "No."),
        ("decided_by_rule_id", "00000000-0000-4000-8000-000000000000"),
        ("budget_id", "00000000-0000-4000-8000-000000000000"),
        ("created_by", None),
    ],
    ids=lambda value: str(value) if value is not None else "null",
)
def test_what_the_moves_set_is_not_writable_on_create(owner, customer, field, value):
    body = {**refund_body(customer), field: value}

    error = assert_envelope(owner.client.post(REFUNDS, body, format="json"), 400)

    assert field in error["details"]
    assert not Refund.objects.exists()


def test_a_request_notifies_billing_and_the_admins_not_a_plain_member(owner, customer):
    billing = MembershipFactory(tenant=owner.tenant, role=Role.BILLING)
    admin = MembershipFactory(tenant=owner.tenant, role=Role.ADMIN)
    MembershipFactory(tenant=owner.tenant, role=Role.MEMBER)
    MembershipFactory(tenant=owner.tenant, role=Role.VIEWER)
    MembershipFactory(tenant=TenantFactory(), role=Role.BILLING)

    response = create(owner, customer, order_id="A-77")

    assert response.status_code == 201, response.content
    assert notified(owner.tenant, "refund.requested") == {billing.user_id, admin.user_id}
    notice = Notification.objects.get(
        recipient=billing.user, event_type="refund.requested", channel=Channel.IN_APP
    )
    assert notice.title == "Refund requested: order A-77"


def test_a_decision_notifies_the_requester(owner, member, customer):
    approved = create(member, customer, order_id="A-1").json()
    rejected = create(member, customer, order_id="A-2").json()

    assert approve(owner, approved["id"]).status_code == 200
    assert reject(owner, rejected["id"], reason="Already credited.").status_code == 200

    assert notified(owner.tenant, "refund.approved") == {member.user.pk}
    assert notified(owner.tenant, "refund.rejected") == {member.user.pk}
    notice = Notification.objects.get(event_type="refund.rejected", channel=Channel.IN_APP)
    assert notice.message == "Already credited."


# Moves -------------------------------------------------------------------------------------------


def test_approving_sets_processed_at_and_the_approver(owner, customer):
    refund = RefundFactory(tenant=owner.tenant, customer=customer)
    before = timezone.now()

    response = approve(owner, refund)

    assert response.status_code == 200, response.content
    shown = response.json()
    assert shown["status"] == "APPROVED"
    assert shown["approved_by"]["id"] == str(owner.user.pk)
    assert shown["completed_at"] is None
    refund = fresh(refund)
    assert refund.processed_at >= before
    assert refund.approved_by_id == owner.user.pk
    assert refund.decided_by_rule_id is None
    event = refund_events(owner.tenant, "refund.approved").get()
    assert event.payload["refund_id"] == str(refund.pk)
    assert event.payload["decision_rule_id"] is None


def test_rejecting_sets_processed_at_and_the_reason(owner, customer):
    refund = RefundFactory(tenant=owner.tenant, customer=customer)

    response = reject(owner, refund, reason="  Already credited on invoice 12.  ")

    assert response.status_code == 200, response.content
    shown = response.json()
    assert shown["status"] == "REJECTED"
    assert shown["rejection_reason"] == "Already credited on invoice 12."
    assert shown["processed_at"] is not None
    assert shown["approved_by"] is None
    event = refund_events(owner.tenant, "refund.rejected").get()
    assert event.payload["rejection_reason"] == "Already credited on invoice 12."


@pytest.mark.parametrize("reason", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_a_rejection_needs_a_reason(owner, reason):
    refund = RefundFactory(tenant=owner.tenant)

    by_action = assert_envelope(reject(owner, refund, reason=reason), 400)
    body = (
        {"status": "REJECTED"}
        if reason is None
        else {"status": "REJECTED", "rejection_reason": reason}
    )
    by_patch = assert_envelope(owner.client.patch(detail(refund), body, format="json"), 400)

    assert "rejection_reason" in by_action["details"]
    assert "rejection_reason" in by_patch["details"]
    assert fresh(refund).status == "PENDING"
    assert fresh(refund).processed_at is None
    assert not refund_events(owner.tenant).exists()


def test_the_moves_by_patch_approve_then_complete(owner, customer):
    refund = RefundFactory(tenant=owner.tenant, customer=customer, amount_cents=4_200)

    approved = patch(owner, refund, status="APPROVED")
    completed = patch(owner, refund, status="COMPLETED")

    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "APPROVED"
    assert approved.json()["approved_by"]["id"] == str(owner.user.pk)
    assert completed.status_code == 200, completed.content
    assert completed.json()["status"] == "COMPLETED"
    refund = fresh(refund)
    assert refund.completed_at is not None
    assert refund.completed_at >= refund.processed_at
    assert fresh(customer).lifetime_refunds_cents == 4_200
    assert [e.event_type for e in refund_events(owner.tenant).order_by("created_at", "id")] == [
        "refund.approved",
        "refund.completed",
    ]


def test_the_move_by_patch_to_rejected_takes_the_reason(owner):
    refund = RefundFactory(tenant=owner.tenant)

    response = patch(owner, refund, status="REJECTED", rejection_reason="Fraud suspected.")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "REJECTED"
    assert fresh(refund).rejection_reason == "Fraud suspected."
    assert fresh(refund).processed_at is not None


def test_completing_adds_to_the_customers_lifetime_refunds_exactly_once(owner, customer):
    CustomerProfile.objects.filter(pk=customer.pk).update(lifetime_refunds_cents=1_000)
    first = in_status(owner.tenant, "APPROVED", customer=customer, amount_cents=700)
    second = in_status(owner.tenant, "APPROVED", customer=customer, amount_cents=300)

    answers = [
        patch(owner, first, status="COMPLETED"),
        patch(owner, first, status="COMPLETED"),  # already: no change, nothing added
        patch(owner, second, status="COMPLETED"),
    ]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert fresh(customer).lifetime_refunds_cents == 2_000
    assert refund_events(owner.tenant, "refund.completed").count() == 2


ILLEGAL_MOVES = [
    ("APPROVED", "approve"),
    ("REJECTED", "approve"),
    ("COMPLETED", "approve"),
    ("APPROVED", "reject"),
    ("REJECTED", "reject"),
    ("COMPLETED", "reject"),
    ("PENDING", "COMPLETED"),
    ("APPROVED", "PENDING"),
    ("REJECTED", "PENDING"),
    ("COMPLETED", "PENDING"),
    ("COMPLETED", "APPROVED"),
    ("REJECTED", "APPROVED"),
    ("REJECTED", "COMPLETED"),
    ("COMPLETED", "REJECTED"),
    ("APPROVED", "REJECTED"),
]


@pytest.mark.parametrize(
    ("status", "move"), ILLEGAL_MOVES, ids=[f"{s}-{m}" for s, m in ILLEGAL_MOVES]
)
def test_an_illegal_move_is_409_and_changes_nothing(owner, status, move):
    usd_budget(owner.tenant)
    refund = in_status(owner.tenant, status)
    customer = refund.customer
    if move == "approve":
        response = approve(owner, refund)
    elif move == "reject":
        response = reject(owner, refund)
    else:
        body = {"status": move}
        if move == "REJECTED":
            body["rejection_reason"] = "No."
        response = owner.client.patch(detail(refund), body, format="json")

    error = assert_envelope(response, 409, "CONFLICT")

    assert error["details"]["status"] == status
    after = fresh(refund)
    assert (after.status, after.processed_at, after.completed_at) == (
        refund.status,
        refund.processed_at,
        refund.completed_at,
    )
    assert fresh(customer).lifetime_refunds_cents == 0
    assert not BudgetUsageRecord.objects.exists()
    assert not refund_events(owner.tenant).exists()


def test_approving_twice_by_action_is_409_and_draws_once(owner, customer):
    budget = usd_budget(owner.tenant)
    refund = RefundFactory(tenant=owner.tenant, customer=customer, amount_cents=2_000)

    first = approve(owner, refund)
    second = approve(owner, refund)

    assert first.status_code == 200, first.content
    assert_envelope(second, 409, "CONFLICT")
    assert fresh(budget).spent_cents == 2_000
    assert BudgetUsageRecord.objects.count() == 1


FIXED_CHANGES = {
    "amount_cents": 9_999,
    "order_id": "OTHER-ORDER",
    "reason": "OTHER",
    "currency": "EUR",
    "ticket_id": "ticket",
}


# Every fixed field once decided (APPROVED), and the other decided statuses on two of them.
FIXED_CASES = [("APPROVED", field) for field in FIXED_CHANGES] + [
    (status, field)
    for status in ("REJECTED", "COMPLETED")
    for field in ("amount_cents", "ticket_id")
]


@pytest.mark.parametrize(
    ("status", "field"), FIXED_CASES, ids=[f"{status}-{field}" for status, field in FIXED_CASES]
)
def test_a_decided_refund_keeps_its_fields(owner, customer, status, field):
    refund = in_status(owner.tenant, status, customer=customer)
    value = FIXED_CHANGES[field]
    if value == "ticket":
        value = str(TicketFactory(tenant=owner.tenant, customer=customer).pk)

    error = assert_envelope(patch(owner, refund, **{field: value}), 409, "CONFLICT")

    named = "ticket" if field == "ticket_id" else field
    assert error["details"] == {"status": status, "fields": [named]}
    after = fresh(refund)
    for name in ("amount_cents", "order_id", "reason", "currency", "ticket_id", "status"):
        assert getattr(after, name) == getattr(refund, name), name
    assert not refund_events(owner.tenant).exists()


def test_a_rejected_refund_keeps_its_rejection_reason(owner):
    refund = in_status(owner.tenant, "REJECTED", rejection_reason="Duplicate request.")

    response = patch(owner, refund, rejection_reason="Changed my mind.")

    assert response.status_code in (200, 400, 409), response.content
    assert fresh(refund).rejection_reason == "Duplicate request."
    assert not refund_events(owner.tenant).exists()


@pytest.mark.parametrize("status", ["APPROVED", "REJECTED", "COMPLETED"])
def test_a_decided_refund_still_takes_notes_and_its_unchanged_values(owner, status):
    refund = in_status(owner.tenant, status)

    response = patch(
        owner,
        refund,
        notes="Customer called back.",
        amount_cents=refund.amount_cents,
        order_id=refund.order_id,
        reason=refund.reason,
    )

    assert response.status_code == 200, response.content
    assert response.json()["notes"] == "Customer called back."
    assert response.json()["status"] == status
    event = refund_events(owner.tenant, "refund.updated").get()
    assert event.payload["changed"] == ["notes"]


def test_a_pending_refund_changes_its_fields_audited(owner, customer):
    refund = RefundFactory(tenant=owner.tenant, customer=customer)
    ticket = TicketFactory(tenant=owner.tenant, customer=customer)

    response = patch(
        owner,
        refund,
        amount_cents=1_111,
        order_id="NEW-1",
        reason="UX_ISSUE",
        currency="cad",
        ticket_id=str(ticket.pk),
    )

    assert response.status_code == 200, response.content
    after = fresh(refund)
    assert (after.amount_cents, after.order_id, after.reason, after.currency) == (
        1_111,
        "NEW-1",
        "UX_ISSUE",
        "CAD",
    )
    assert after.ticket_id == ticket.pk
    event = refund_events(owner.tenant, "refund.updated").get()
    assert event.payload["changed"] == ["amount_cents", "currency", "order_id", "reason", "ticket"]


def test_a_pending_refund_refuses_a_ticket_of_another_customer(owner):
    refund = RefundFactory(tenant=owner.tenant)

    error = assert_envelope(
        patch(owner, refund, ticket_id=str(TicketFactory(tenant=owner.tenant).pk)), 400
    )

    assert "ticket_id" in error["details"]
    assert fresh(refund).ticket_id is None


def test_the_customer_of_a_refund_cannot_be_changed(owner):
    refund = RefundFactory(tenant=owner.tenant)
    other = CustomerProfileFactory(tenant=owner.tenant)

    error = assert_envelope(patch(owner, refund, customer_id=str(other.pk)), 400)

    assert "customer_id" in error["details"]
    assert fresh(refund).customer_id == refund.customer_id


@pytest.mark.parametrize("status", ["PENDING", "APPROVED", "REJECTED", "COMPLETED"])
def test_the_shown_document_can_be_put_back(owner, status):
    refund = in_status(owner.tenant, status)
    shown = owner.client.get(detail(refund)).json()

    response = owner.client.put(detail(refund), {**shown, "notes": "Checked."}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == status
    assert fresh(refund).notes == "Checked."


# Authority ---------------------------------------------------------------------------------------


def test_billing_approves_any_amount_within_the_budget(billing, customer):
    refund = RefundFactory(tenant=billing.tenant, customer=customer, amount_cents=10**12)

    response = approve(billing, refund)

    assert response.status_code == 200, response.content
    assert response.json()["approved_by"]["id"] == str(billing.user.pk)
    assert fresh(refund).status == "APPROVED"


def test_billing_is_still_bound_by_the_budget(billing, customer):
    usd_budget(billing.tenant, limit_cents=1_000)
    refund = RefundFactory(tenant=billing.tenant, customer=customer, amount_cents=1_001)

    assert_envelope(approve(billing, refund), 409, "CONFLICT")
    assert fresh(refund).status == "PENDING"


def test_a_member_who_is_not_a_representative_may_not_decide(member):
    refund = RefundFactory(tenant=member.tenant, amount_cents=1)

    answers = [
        approve(member, refund),
        reject(member, refund),
        patch(member, refund, status="APPROVED"),
        patch(member, refund, status="REJECTED", rejection_reason="No."),
    ]

    for response in answers:
        error = assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
        assert "not a representative" in error["message"]
        assert error["details"] == {"amount_cents": 1, "authority_cents": None}
    assert fresh(refund).status == "PENDING"
    assert not refund_events(member.tenant).exists()


def test_a_representative_decides_up_to_their_roles_authority_exactly(owner, make_caller):
    set_settings(owner, **{AUTHORITY: {"SENIOR_SUPPORT": 5_000, "TEAM_LEAD": 50_000}})
    senior = representative_caller(make_caller, owner.tenant, "SENIOR_SUPPORT")
    budget = usd_budget(owner.tenant)
    within = RefundFactory(tenant=owner.tenant, amount_cents=5_000)
    above = RefundFactory(tenant=owner.tenant, amount_cents=5_001)
    rejected = RefundFactory(tenant=owner.tenant, amount_cents=5_000)
    not_rejected = RefundFactory(tenant=owner.tenant, amount_cents=5_001)

    approved = approve(senior, within)
    refused = approve(senior, above)
    refused_patch = patch(senior, above, status="APPROVED")
    rejection = reject(senior, rejected)
    refused_rejection = reject(senior, not_rejected)

    assert approved.status_code == 200, approved.content
    assert approved.json()["approved_by"]["id"] == str(senior.user.pk)
    assert rejection.status_code == 200, rejection.content
    for response in (refused, refused_patch, refused_rejection):
        error = assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
        assert "5000 cents" in error["message"]
        assert error["details"] == {"amount_cents": 5_001, "authority_cents": 5_000}
    assert fresh(above).status == fresh(not_rejected).status == "PENDING"
    assert fresh(budget).spent_cents == 5_000


def test_a_role_the_setting_does_not_name_has_no_authority(owner, make_caller):
    set_settings(owner, **{AUTHORITY: {"TEAM_LEAD": 50_000}})
    junior = representative_caller(make_caller, owner.tenant, "JUNIOR_SUPPORT")
    refund = RefundFactory(tenant=owner.tenant, amount_cents=1)

    error = assert_envelope(approve(junior, refund), 403, "INSUFFICIENT_PERMISSIONS")

    assert "0 cents" in error["message"]
    assert error["details"] == {"amount_cents": 1, "authority_cents": 0}
    assert fresh(refund).status == "PENDING"


def test_without_the_setting_representatives_have_no_authority(owner, make_caller):
    lead = representative_caller(make_caller, owner.tenant, "TEAM_LEAD")
    refund = RefundFactory(tenant=owner.tenant, amount_cents=1)

    error = assert_envelope(approve(lead, refund), 403, "INSUFFICIENT_PERMISSIONS")

    assert error["details"]["authority_cents"] == 0


def test_a_representative_of_another_organization_has_no_authority_here(owner, make_caller):
    other = TenantFactory(settings={AUTHORITY: {"TEAM_LEAD": 50_000}})
    caller = make_caller(Role.MEMBER, tenant=owner.tenant)
    RepresentativeFactory(tenant=other, user=caller.user, role="TEAM_LEAD")
    MembershipFactory(tenant=other, user=caller.user, role=Role.MEMBER)
    set_settings(owner, **{AUTHORITY: {"TEAM_LEAD": 50_000}})
    refund = RefundFactory(tenant=owner.tenant, amount_cents=1)

    error = assert_envelope(approve(caller, refund), 403, "INSUFFICIENT_PERMISSIONS")

    assert error["details"]["authority_cents"] is None


@pytest.mark.parametrize("how", ["suspended", "deactivated"])
def test_a_representative_who_left_has_no_authority(owner, make_caller, how):
    set_settings(owner, **{AUTHORITY: {"SENIOR_SUPPORT": 5_000}})
    senior = representative_caller(make_caller, owner.tenant, "SENIOR_SUPPORT")
    refund = RefundFactory(tenant=owner.tenant, amount_cents=100)
    tenant = Tenant.objects.get(pk=owner.tenant.pk)
    assert refund_authority_cents(tenant=tenant, user=senior.user) == 5_000
    if how == "suspended":
        Membership.objects.filter(tenant=tenant, user=senior.user).update(
            status=MembershipStatus.SUSPENDED
        )
    else:
        type(senior.user).objects.filter(pk=senior.user.pk).update(is_active=False)
    user = type(senior.user).objects.get(pk=senior.user.pk)

    assert refund_authority_cents(tenant=tenant, user=user) is None
    with pytest.raises(InsufficientPermissions):
        refund_approve(refund=refund, actor=user, actor_permissions=frozenset({"support.write"}))
    # Nor can they reach the organization's endpoints any more.
    assert approve(senior, refund).status_code in (401, 403, 404)
    assert fresh(refund).status == "PENDING"


def test_the_authority_setting_is_stored_and_shown(owner):
    response = set_settings(owner, **{AUTHORITY: {"SENIOR_SUPPORT": 0, "ADMIN": 10**9}})

    assert response.json()["settings"][AUTHORITY] == {"SENIOR_SUPPORT": 0, "ADMIN": 10**9}
    assert Tenant.objects.get(pk=owner.tenant.pk).settings[AUTHORITY] == {
        "SENIOR_SUPPORT": 0,
        "ADMIN": 10**9,
    }


@pytest.mark.parametrize(
    "value",
    [
        {"INTERN": 100},
        {"senior_support": 100},
        {"SENIOR_SUPPORT": -1},
        {"SENIOR_SUPPORT": "5000"},
        {"SENIOR_SUPPORT": 50.5},
        {"SENIOR_SUPPORT": True},
        {"SENIOR_SUPPORT": None},
        [5000],
        5000,
    ],
    ids=[
        "unknown-role",
        "lowercase-role",
        "negative",
        "string",
        "fraction",
        "boolean",
        "null",
        "list",
        "number",
    ],
)
def test_the_authority_setting_refuses_unknown_roles_and_non_integer_amounts(owner, value):
    set_settings(owner, **{AUTHORITY: {"TEAM_LEAD": 100}})

    response = owner.client.patch(ORGANIZATION, {"settings": {AUTHORITY: value}}, format="json")

    error = assert_envelope(response, 400)
    assert "settings" in error["details"]
    assert Tenant.objects.get(pk=owner.tenant.pk).settings[AUTHORITY] == {"TEAM_LEAD": 100}


# The budget --------------------------------------------------------------------------------------


def test_an_approval_draws_from_the_usd_refund_budget(owner, customer):
    budget = usd_budget(owner.tenant, limit_cents=10_000)
    usd_budget_other_type = BudgetFactory(tenant=owner.tenant, type="COMPENSATION", currency="USD")
    refund = RefundFactory(tenant=owner.tenant, customer=customer, amount_cents=2_500)

    response = approve(owner, refund)

    assert response.status_code == 200, response.content
    assert response.json()["budget_id"] == str(budget.pk)
    assert fresh(budget).spent_cents == 2_500
    assert fresh(usd_budget_other_type).spent_cents == 0
    usage = BudgetUsageRecord.objects.get()
    assert usage.budget_id == budget.pk
    assert usage.refund_id == refund.pk
    assert usage.customer_id == customer.pk
    assert usage.amount_cents == 2_500
    assert usage.period_start == budget.period_start
    assert usage.created_by_id == owner.user.pk
    drawn = AuditEvent.objects.get(tenant=owner.tenant, event_type="budget.usage_recorded")
    assert drawn.payload["refund_id"] == str(refund.pk)
    approved = refund_events(owner.tenant, "refund.approved").get()
    assert approved.payload["budget_id"] == str(budget.pk)


@pytest.mark.parametrize(("amount", "fits"), [(1_000, True), (1_001, False)], ids=["exact", "over"])
def test_an_approval_beyond_what_remains_is_409_and_draws_nothing(owner, amount, fits):
    budget = usd_budget(owner.tenant, limit_cents=10_000, spent_cents=9_000)
    refund = RefundFactory(tenant=owner.tenant, amount_cents=amount)

    response = approve(owner, refund)

    if fits:
        assert response.status_code == 200, response.content
        assert fresh(budget).spent_cents == 10_000
        return
    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"]["remaining_cents"] == 1_000
    assert error["details"]["amount_cents"] == 1_001
    assert fresh(refund).status == "PENDING"
    assert fresh(refund).processed_at is None
    assert fresh(refund).budget_id is None
    assert fresh(budget).spent_cents == 9_000
    assert not BudgetUsageRecord.objects.exists()
    assert not refund_events(owner.tenant, "refund.approved").exists()


def test_the_customers_limit_per_period_is_409_naming_what_they_may_still_get(owner):
    budget = usd_budget(owner.tenant, refund_limit_per_customer_cents=3_000)
    customer = CustomerProfileFactory(tenant=owner.tenant)
    first = RefundFactory(tenant=owner.tenant, customer=customer, amount_cents=2_000)
    second = RefundFactory(tenant=owner.tenant, customer=customer, amount_cents=1_500)
    exact = RefundFactory(tenant=owner.tenant, customer=customer, amount_cents=1_000)
    another_customers = RefundFactory(tenant=owner.tenant, amount_cents=1_500)

    assert approve(owner, first).status_code == 200
    error = assert_envelope(approve(owner, second), 409, "CONFLICT")
    assert approve(owner, exact).status_code == 200
    assert approve(owner, another_customers).status_code == 200

    assert error["details"]["customer_remaining_cents"] == 1_000
    assert error["details"]["customer_id"] == str(customer.pk)
    assert fresh(second).status == "PENDING"
    assert fresh(budget).spent_cents == 4_500


def test_without_a_refund_budget_in_its_currency_an_approval_is_not_capped(owner):
    refund = RefundFactory(tenant=owner.tenant, amount_cents=10**11)

    response = approve(owner, refund)

    assert response.status_code == 200, response.content
    assert response.json()["budget_id"] is None
    assert not BudgetUsageRecord.objects.exists()


def test_a_eur_refund_does_not_draw_from_the_usd_budget(owner):
    budget = usd_budget(owner.tenant, limit_cents=1_000)
    refund = RefundFactory(tenant=owner.tenant, amount_cents=5_000, currency="EUR")

    response = approve(owner, refund)

    assert response.status_code == 200, response.content
    assert response.json()["budget_id"] is None
    assert fresh(budget).spent_cents == 0


def test_a_eur_refund_draws_from_the_eur_budget(owner):
    usd = usd_budget(owner.tenant)
    eur = BudgetFactory(tenant=owner.tenant, currency="EUR", limit_cents=1_000)
    refund = RefundFactory(tenant=owner.tenant, amount_cents=800, currency="EUR")

    response = approve(owner, refund)

    assert response.json()["budget_id"] == str(eur.pk)
    assert fresh(eur).spent_cents == 800
    assert fresh(usd).spent_cents == 0


def test_another_organizations_budget_is_never_drawn(owner):
    foreign = usd_budget(TenantFactory(), limit_cents=1_000)
    refund = RefundFactory(tenant=owner.tenant, amount_cents=5_000)

    response = approve(owner, refund)

    assert response.status_code == 200, response.content
    assert response.json()["budget_id"] is None
    assert fresh(foreign).spent_cents == 0


def test_a_rejection_draws_nothing(owner):
    budget = usd_budget(owner.tenant)
    refund = RefundFactory(tenant=owner.tenant)

    assert reject(owner, refund).status_code == 200
    assert fresh(budget).spent_cents == 0
    assert fresh(refund).budget_id is None


# Idempotency-Key ---------------------------------------------------------------------------------


def test_a_creation_with_a_key_is_made_once_and_replayed(owner, customer):
    headers = {"HTTP_IDEMPOTENCY_KEY": "refund-48292"}

    first = create(owner, customer, headers)
    again = create(owner, customer, headers)

    assert first.status_code == 201, first.content
    assert again.status_code == 201, again.content
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert first.headers.get("Idempotent-Replayed") is None
    assert Refund.objects.count() == 1
    assert refund_events(owner.tenant, "refund.requested").count() == 1


def test_a_key_reused_with_another_body_is_422(owner, customer):
    headers = {"HTTP_IDEMPOTENCY_KEY": "refund-48292"}

    first = create(owner, customer, headers)
    other = create(owner, customer, headers, amount_cents=6_000)

    assert first.status_code == 201, first.content
    assert_envelope(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert Refund.objects.count() == 1


def test_creations_without_a_key_are_each_made(owner, customer):
    assert create(owner, customer).status_code == 201
    assert create(owner, customer).status_code == 201
    assert Refund.objects.count() == 2


def test_an_approval_with_a_key_is_replayed_and_drawn_once(owner, customer):
    budget = usd_budget(owner.tenant)
    refund = RefundFactory(tenant=owner.tenant, customer=customer, amount_cents=2_000)
    headers = {"HTTP_IDEMPOTENCY_KEY": f"approve-{refund.pk}"}

    first = approve(owner, refund, headers)
    again = approve(owner, refund, headers)

    assert first.status_code == 200, first.content
    assert again.status_code == 200, again.content
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert fresh(budget).spent_cents == 2_000
    assert BudgetUsageRecord.objects.count() == 1
    assert refund_events(owner.tenant, "refund.approved").count() == 1
    # The same key on another refund is another request.
    other = RefundFactory(tenant=owner.tenant, customer=customer)
    assert_envelope(approve(owner, other, headers), 422, "IDEMPOTENCY_KEY_REUSED")


def test_a_refused_approval_with_a_key_is_replayed_as_refused(owner):
    budget = usd_budget(owner.tenant, limit_cents=1_000)
    refund = RefundFactory(tenant=owner.tenant, amount_cents=2_000)
    headers = {"HTTP_IDEMPOTENCY_KEY": "approve-too-much"}

    first = approve(owner, refund, headers)
    Budget.objects.filter(pk=budget.pk).update(limit_cents=10_000)
    again = approve(owner, refund, headers)

    assert_envelope(first, 409, "CONFLICT")
    assert_envelope(again, 409, "CONFLICT")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert fresh(refund).status == "PENDING"


# Races (PostgreSQL) ------------------------------------------------------------------------------


def _race(count, call) -> list:
    """`call(i)` in `count` threads released at once, each closing its database connection."""
    start = threading.Barrier(count)

    def run(i):
        try:
            start.wait(timeout=60)
            return call(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return [
            future.result(timeout=300) for future in [pool.submit(run, i) for i in range(count)]
        ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_approvals_draw_exactly_the_budget(make_caller):
    caller = make_caller(Role.BILLING)
    budget = usd_budget(caller.tenant, limit_cents=10_000)
    refunds = [
        RefundFactory(tenant=caller.tenant, amount_cents=1_000, currency="USD") for _ in range(50)
    ]

    statuses = _race(
        50, lambda i: caller.client_for(caller.tenant.pk).post(approve_url(refunds[i])).status_code
    )

    assert statuses.count(200) == 10, statuses
    assert statuses.count(409) == 40, statuses
    assert fresh(budget).spent_cents == 10_000
    assert Refund.objects.filter(status="APPROVED").count() == 10
    assert Refund.objects.filter(status="APPROVED", budget=budget).count() == 10
    assert Refund.objects.filter(status="PENDING", processed_at__isnull=True).count() == 40
    assert BudgetUsageRecord.objects.filter(budget=budget).count() == 10
    assert refund_events(caller.tenant, "refund.approved").count() == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_approvals_of_one_refund_approve_it_once_and_completions_count_once(
    make_caller,
):
    caller = make_caller(Role.BILLING)
    budget = usd_budget(caller.tenant, limit_cents=100_000)
    refund = RefundFactory(tenant=caller.tenant, amount_cents=1_000)

    def post_approve(_):
        return caller.client_for(caller.tenant.pk).post(approve_url(refund)).status_code

    def patch_completed(_):
        client = caller.client_for(caller.tenant.pk)
        return client.patch(detail(refund), {"status": "COMPLETED"}, format="json").status_code

    approvals = _race(10, post_approve)
    completions = _race(10, patch_completed)

    assert approvals.count(200) == 1, approvals
    assert approvals.count(409) == 9, approvals
    assert fresh(budget).spent_cents == 1_000
    assert BudgetUsageRecord.objects.count() == 1
    assert refund_events(caller.tenant, "refund.approved").count() == 1
    # Completed by the first; the others find it COMPLETED already (no move, nothing added).
    assert set(completions) == {200}, completions
    assert fresh(refund).status == "COMPLETED"
    assert fresh(refund.customer).lifetime_refunds_cents == 1_000
    assert refund_events(caller.tenant, "refund.completed").count() == 1


# Rules -------------------------------------------------------------------------------------------


def applications(refund_id) -> list[RuleApplication]:
    return list(RuleApplication.objects.filter(refund_id=refund_id).order_by("created_at", "id"))


def test_an_approve_refund_rule_approves_a_small_refund_at_creation(member, customer):
    rules_on(member.tenant)
    budget = usd_budget(member.tenant)
    rule = rule_of(member.tenant, 1, [cond("refund_amount_cents", "lte", 5_000)], name="Small")

    small = create(member, customer, amount_cents=5_000)
    large = create(member, customer, amount_cents=5_001)

    assert small.status_code == large.status_code == 201, (small.content, large.content)
    shown = small.json()
    assert shown["status"] == "APPROVED"
    assert shown["decided_by_rule_id"] == str(rule.pk)
    assert shown["approved_by"] is None
    assert shown["budget_id"] == str(budget.pk)
    assert [(a["rule_id"], a["outcome"], a["action"]) for a in shown["rule_applications"]] == [
        (str(rule.pk), "applied", "APPROVE_REFUND")
    ]
    assert fresh(budget).spent_cents == 5_000
    event = rule_events(member.tenant).get()
    assert event.payload["refund_id"] == shown["id"]
    assert event.payload["ticket_id"] is None
    assert event.payload["outcome"] == "applied"
    approved = refund_events(member.tenant, "refund.approved").get()
    assert approved.payload["decision_rule_id"] == str(rule.pk)
    assert large.json()["status"] == "PENDING"
    assert large.json()["rule_applications"] == []
    assert applications(large.json()["id"]) == []


def test_a_reject_refund_rule_rejects_with_its_reason_or_one_naming_it(owner, customer):
    rules_on(owner.tenant)
    rule_of(
        owner.tenant,
        1,
        [cond("refund_amount_cents", "gt", 100_000)],
        "REJECT_REFUND",
        {"reason": "Too large for self-service."},
    )
    rule_of(
        owner.tenant, 2, [cond("refund_amount_cents", "gt", 50_000)], "REJECT_REFUND", name="Big"
    )

    with_reason = create(owner, customer, amount_cents=100_001).json()
    default = create(owner, customer, amount_cents=50_001).json()

    assert with_reason["status"] == default["status"] == "REJECTED"
    assert with_reason["rejection_reason"] == "Too large for self-service."
    assert default["rejection_reason"] == "Rejected by the rule 'Big'."
    assert with_reason["processed_at"] is not None
    assert [a["outcome"] for a in default["rule_applications"]] == ["applied"]
    assert refund_events(owner.tenant, "refund.rejected").count() == 2


def test_a_rule_approval_the_budget_refuses_leaves_it_pending_recorded_once(owner, customer):
    rules_on(owner.tenant)
    budget = usd_budget(owner.tenant, limit_cents=1_000)
    rule = rule_of(owner.tenant, 1, [cond("refund_amount_cents", "lte", 5_000)])

    created = create(owner, customer, amount_cents=2_000).json()
    noted = patch(owner, created["id"], notes="The customer called again.")

    assert created["status"] == "PENDING"
    assert noted.status_code == 200, noted.content
    assert noted.json()["status"] == "PENDING"
    recorded = applications(created["id"])
    assert [(a.rule_id, a.outcome) for a in recorded] == [(rule.pk, "skipped")]
    assert recorded[0].detail.startswith("Not approved:")
    assert "1000" in recorded[0].detail
    assert rule_events(owner.tenant).count() == 1
    assert fresh(budget).spent_cents == 0
    assert not refund_events(owner.tenant, "refund.approved").exists()
    # A change that makes it fit: the rule approves it now.
    lowered = patch(owner, created["id"], amount_cents=900)
    assert lowered.json()["status"] == "APPROVED"
    assert [a.outcome for a in applications(created["id"])] == ["skipped", "applied"]
    assert fresh(budget).spent_cents == 900


@pytest.mark.parametrize("setting", [False, None], ids=["off", "absent"])
def test_without_the_setting_no_rule_applies_to_refunds(owner, customer, setting):
    if setting is not None:
        rules_on(owner.tenant, setting)
    rule_of(owner.tenant, 1, [], "APPROVE_REFUND")

    created = create(owner, customer).json()

    assert created["status"] == "PENDING"
    assert applications(created["id"]) == []
    assert not rule_events(owner.tenant).exists()


def test_a_disabled_refund_rule_does_not_apply(owner, customer):
    rules_on(owner.tenant)
    rule_of(owner.tenant, 1, [], "APPROVE_REFUND", enabled=False)

    assert create(owner, customer).json()["status"] == "PENDING"


def test_ticket_rules_are_not_given_refunds(owner, customer):
    rules_on(owner.tenant)
    rule_of(owner.tenant, 1, [], "NOTIFY", {"message": "Have a look."})
    refund_rule = rule_of(owner.tenant, 2, [], "APPROVE_REFUND")

    created = create(owner, customer, amount_cents=700).json()

    assert created["status"] == "APPROVED"
    assert created["decided_by_rule_id"] == str(refund_rule.pk)
    assert [a.rule_id for a in applications(created["id"])] == [refund_rule.pk]


def test_the_first_refund_rule_in_priority_order_decides(owner, customer):
    rules_on(owner.tenant)
    rejecting = rule_of(owner.tenant, 1, [], "REJECT_REFUND", {"reason": "Frozen."})
    rule_of(owner.tenant, 2, [], "APPROVE_REFUND")

    created = create(owner, customer).json()

    assert created["status"] == "REJECTED"
    assert created["decided_by_rule_id"] == str(rejecting.pk)
    assert len(applications(created["id"])) == 1


def test_the_customer_tier_condition_holds_on_refunds(owner):
    rules_on(owner.tenant)
    rule_of(owner.tenant, 1, [cond("customer_tier", "eq", "ENTERPRISE")], "APPROVE_REFUND")
    enterprise = CustomerProfileFactory(tenant=owner.tenant, tier="ENTERPRISE")
    pro = CustomerProfileFactory(tenant=owner.tenant, tier="PRO")

    assert create(owner, enterprise).json()["status"] == "APPROVED"
    assert create(owner, pro).json()["status"] == "PENDING"


def test_a_rule_approval_needs_no_authority_of_the_requester(make_caller):
    # A member who may not approve anything themselves: the rule is the organization's.
    member = make_caller(Role.MEMBER)
    rules_on(member.tenant)
    rule_of(member.tenant, 1, [], "APPROVE_REFUND")
    customer = CustomerProfileFactory(tenant=member.tenant)

    response = create(member, customer)

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "APPROVED"


def test_a_changed_pending_refund_is_given_to_the_rules_again(owner, customer):
    rules_on(owner.tenant)
    rule = rule_of(owner.tenant, 1, [cond("refund_amount_cents", "lte", 5_000)])
    created = create(owner, customer, amount_cents=9_000).json()

    lowered = patch(owner, created["id"], amount_cents=4_000)

    assert created["status"] == "PENDING"
    assert lowered.json()["status"] == "APPROVED"
    assert lowered.json()["decided_by_rule_id"] == str(rule.pk)


def test_a_rule_application_is_shown_on_the_refund(owner, customer):
    rules_on(owner.tenant)
    rule = rule_of(owner.tenant, 1, [], "APPROVE_REFUND", name="Everything")
    created = create(owner, customer).json()

    shown = owner.client.get(detail(created["id"])).json()

    (application,) = shown["rule_applications"]
    assert application["rule_id"] == str(rule.pk)
    assert application["rule_name"] == "Everything"
    assert application["detail"] == "Approved."


# Filters, search, ordering -----------------------------------------------------------------------


def test_status_filters_take_a_comma_list(owner):
    pending = in_status(owner.tenant, "PENDING")
    approved = in_status(owner.tenant, "APPROVED")
    rejected = in_status(owner.tenant, "REJECTED")
    in_status(TenantFactory(), "PENDING")

    assert set(listed(owner, status="PENDING")) == ids(pending)
    assert set(listed(owner, status="APPROVED,REJECTED")) == ids(approved, rejected)
    assert_envelope(owner.client.get(REFUNDS, {"status": "LOST"}), 400)


def test_the_reason_customer_ticket_order_and_currency_filters(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    ticket = TicketFactory(tenant=owner.tenant, customer=customer)
    target = RefundFactory(
        tenant=owner.tenant,
        customer=customer,
        ticket=ticket,
        reason="SERVICE_DOWNTIME",
        order_id="ORD-TARGET",
        currency="EUR",
    )
    other = RefundFactory(tenant=owner.tenant, reason="UX_ISSUE")

    assert set(listed(owner, reason="SERVICE_DOWNTIME")) == ids(target)
    assert set(listed(owner, reason="SERVICE_DOWNTIME,UX_ISSUE")) == ids(target, other)
    assert set(listed(owner, customer=str(customer.pk))) == ids(target)
    assert set(listed(owner, ticket=str(ticket.pk))) == ids(target)
    assert set(listed(owner, order_id="ORD-TARGET")) == ids(target)
    assert set(listed(owner, currency="eur")) == ids(target)
    assert set(listed(owner, currency="USD")) == ids(other)


def test_the_creation_range_filters(owner):
    refund = RefundFactory(tenant=owner.tenant)
    moment = refund.created_at

    assert set(listed(owner, created_after=iso(moment))) == ids(refund)
    assert listed(owner, created_after=iso(moment + timedelta(seconds=1))) == []
    assert set(listed(owner, created_before=iso(moment + timedelta(seconds=1)))) == ids(refund)
    assert listed(owner, created_before=iso(moment)) == []


def test_search_finds_the_order_and_the_customers_email(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant, email="jane.doe@example.org")
    by_customer = RefundFactory(tenant=owner.tenant, customer=customer)
    by_order = RefundFactory(tenant=owner.tenant, order_id="ZX-4711")
    RefundFactory(tenant=owner.tenant)
    RefundFactory(tenant=TenantFactory(), order_id="ZX-4711")

    assert set(listed(owner, search="jane.doe")) == ids(by_customer)
    assert set(listed(owner, search="zx-4711")) == ids(by_order)


def test_ordering_by_amount(owner):
    amounts = [300, 100, 200]
    made = {amount: RefundFactory(tenant=owner.tenant, amount_cents=amount) for amount in amounts}

    ascending = listed(owner, ordering="amount_cents")
    descending = listed(owner, ordering="-amount_cents")

    assert ascending == [str(made[a].pk) for a in sorted(amounts)]
    assert descending == [str(made[a].pk) for a in sorted(amounts, reverse=True)]


# Admin -------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client():
    client = Client()
    client.user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(client.user)
    return client


def admin_action(admin_client, action, refunds, **extra):
    body = {"action": action, "_selected_action": [str(r.pk) for r in refunds], **extra}
    return admin_client.post(CHANGELIST, body, follow=True)


def admin_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_staff_changelist_shows_the_refunds(admin_client):
    refund = RefundFactory(order_id="ADMIN-ORDER-1")

    response = admin_client.get(CHANGELIST)
    change = admin_client.get(f"{CHANGELIST}{refund.pk}/change/")

    assert response.status_code == 200
    assert "ADMIN-ORDER-1" in response.content.decode()
    assert change.status_code == 200


def test_the_admin_approve_action_approves_through_the_service(admin_client):
    pending = RefundFactory(order_id="P-1", amount_cents=900)
    budget = usd_budget(pending.tenant)
    approved = in_status(pending.tenant, "APPROVED", order_id="P-2")

    response = admin_action(admin_client, "approve", [pending, approved])

    assert fresh(pending).status == "APPROVED"
    assert fresh(pending).approved_by_id == admin_client.user.pk
    assert fresh(budget).spent_cents == 900
    event = refund_events(pending.tenant, "refund.approved").get()
    assert event.payload["refund_id"] == str(pending.pk)
    assert event.actor_id == admin_client.user.pk
    shown = admin_messages(response)
    assert "1 refund approved." in shown
    assert any(m.startswith(str(approved)) and "APPROVED" in m for m in shown)
    assert fresh(approved).processed_at == approved.processed_at


def test_the_admin_approve_action_respects_the_budget(admin_client):
    refund = RefundFactory(amount_cents=5_000)
    usd_budget(refund.tenant, limit_cents=1_000)

    response = admin_action(admin_client, "approve", [refund])

    assert fresh(refund).status == "PENDING"
    assert any("1000 cents left" in m for m in admin_messages(response))


def test_the_admin_reject_action_asks_for_the_reason_first(admin_client):
    refund = RefundFactory()

    form = admin_action(admin_client, "reject", [refund])
    done = admin_action(admin_client, "reject", [refund], apply="1", reason="Chargeback filed.")

    assert form.status_code == 200
    assert 'name="reason"' in form.content.decode()
    assert done.status_code == 200
    assert fresh(refund).status == "REJECTED"
    assert fresh(refund).rejection_reason == "Chargeback filed."
    assert refund_events(refund.tenant, "refund.rejected").count() == 1


def test_the_admin_reject_action_without_a_reason_shows_the_form_again(admin_client):
    refund = RefundFactory()

    response = admin_action(admin_client, "reject", [refund], apply="1", reason="")

    assert 'name="reason"' in response.content.decode()
    assert fresh(refund).status == "PENDING"


def test_the_admin_complete_action_completes_approved_refunds_only(admin_client):
    approved = in_status(TenantFactory(), "APPROVED", amount_cents=450)
    pending = RefundFactory(tenant=approved.tenant)

    response = admin_action(admin_client, "complete", [approved, pending])

    assert fresh(approved).status == "COMPLETED"
    assert fresh(approved).completed_at is not None
    assert fresh(approved.customer).lifetime_refunds_cents == 450
    assert fresh(pending).status == "PENDING"
    shown = admin_messages(response)
    assert "1 refund completed." in shown
    assert any(m.startswith(str(pending)) for m in shown)


def test_the_admin_cannot_add_change_or_delete_refunds(admin_client):
    refund = RefundFactory()

    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    assert admin_client.post(f"{CHANGELIST}{refund.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Refund.objects.filter(pk=refund.pk).exists()


# Who may do what ---------------------------------------------------------------------------------


def test_a_viewer_lists_and_reads_but_may_not_write(owner, make_caller):
    viewer = make_caller(Role.VIEWER, tenant=owner.tenant)
    refund = RefundFactory(tenant=owner.tenant)
    customer = CustomerProfileFactory(tenant=owner.tenant)

    assert listed(viewer) == [str(refund.pk)]
    assert viewer.client.get(detail(refund)).status_code == 200
    for response in (
        create(viewer, customer),
        patch(viewer, refund, notes="x"),
        approve(viewer, refund),
        reject(viewer, refund),
    ):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert Refund.objects.count() == 1
    assert fresh(refund).status == "PENDING"


def test_billing_reads_and_decides_but_does_not_request(billing, customer):
    refund = RefundFactory(tenant=billing.tenant, customer=customer)
    other = RefundFactory(tenant=billing.tenant, customer=customer)

    assert set(listed(billing)) == ids(refund, other)
    assert billing.client.get(detail(refund)).status_code == 200
    assert approve(billing, refund).status_code == 200
    assert reject(billing, other).status_code == 200
    assert patch(billing, refund, notes="Paid.").status_code == 200
    # Requesting is the support team's (support.write).
    assert_envelope(create(billing, customer), 403, "INSUFFICIENT_PERMISSIONS")


def test_a_member_requests_and_edits_but_does_not_decide(member, customer):
    created = create(member, customer)

    assert created.status_code == 201, created.content
    assert patch(member, created.json()["id"], amount_cents=10).status_code == 200
    assert_envelope(approve(member, created.json()["id"]), 403, "INSUFFICIENT_PERMISSIONS")


def test_overriding_the_support_permission_away_from_a_member(owner, make_caller):
    caller = make_caller(Role.MEMBER, tenant=owner.tenant, permissions={"support": {"read": False}})

    assert_envelope(caller.client.get(REFUNDS), 403, "INSUFFICIENT_PERMISSIONS")


def test_an_api_key_with_the_read_scope_lists_but_may_not_write(owner, customer):
    refund = RefundFactory(tenant=owner.tenant, customer=customer)
    _, raw = issue_api_key(owner.membership, scopes=("read",))
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)

    listing = client.get(REFUNDS)
    refused = client.post(REFUNDS, refund_body(customer), format="json")
    refused_approval = client.post(approve_url(refund), {}, format="json")

    assert listing.status_code == 200, listing.content
    assert [row["id"] for row in listing.json()["results"]] == [str(refund.pk)]
    assert_envelope(refused, 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(refused_approval, 403, "INSUFFICIENT_PERMISSIONS")


def test_another_organizations_refund_is_404_for_every_action(owner):
    foreign = RefundFactory(tenant=TenantFactory())

    for response in (
        owner.client.get(detail(foreign)),
        patch(owner, foreign, notes="x"),
        approve(owner, foreign),
        reject(owner, foreign),
        owner.client.post(approve_url(uuid.uuid4()), {}, format="json"),
    ):
        assert_envelope(response, 404)
    assert fresh(foreign).status == "PENDING"
