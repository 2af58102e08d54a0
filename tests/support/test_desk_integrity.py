"""The desk stays whole around the rest of the platform: an organization with tickets can be
deleted, a representative who left is given no ticket, a deleted representative's tickets go
back to the queue, a reopened ticket waits for a new satisfaction score, and odd filter or time
zone values are answered, never a 500."""

import pytest

from support.models import Budget, Refund, Ticket
from support.services import refund_approve, refund_create, ticket_create, ticket_update
from tenants.models import Tenant
from tenants.services.lifecycle import tenant_delete
from tenants.services.members import member_remove
from tests.conftest import assert_envelope
from tests.factories import UserFactory

from .factories import (
    BudgetFactory,
    CustomerProfileFactory,
    RefundFactory,
    RepresentativeFactory,
)

pytestmark = pytest.mark.django_db

TICKETS = "/api/v1/support/tickets/"


def test_an_organization_with_tickets_for_its_customers_can_be_deleted(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    ticket_create(tenant=owner.tenant, actor=owner.user, subject="SSO", customer=customer)

    tenant_delete(tenant=owner.tenant, actor=UserFactory(is_staff=True))

    assert not Tenant.objects.filter(pk=owner.tenant.pk).exists()
    assert not Ticket.objects.filter(customer=customer).exists()


def test_a_customer_with_tickets_is_still_not_deleted_alone(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    ticket_create(tenant=owner.tenant, actor=owner.user, subject="SSO", customer=customer)

    response = owner.client.delete(f"/api/v1/support/customer-profiles/{customer.pk}/")

    assert_envelope(response, 409, "CONFLICT")


def test_an_organization_with_budgets_and_refunds_can_be_deleted(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    budget = BudgetFactory(tenant=owner.tenant, currency="USD")
    refund = refund_create(
        tenant=owner.tenant,
        actor=owner.user,
        order_id="1",
        customer=customer,
        amount_cents=500,
        reason="OTHER",
    )
    refund_approve(refund=refund, actor=owner.user, actor_permissions={"billing.write"})

    tenant_delete(tenant=owner.tenant, actor=UserFactory(is_staff=True))

    assert not Refund.objects.filter(pk=refund.pk).exists()
    assert not Budget.objects.filter(pk=budget.pk).exists()


def test_a_customer_with_refunds_is_not_deleted_alone(owner):
    refund = RefundFactory(tenant=owner.tenant)

    response = owner.client.delete(f"/api/v1/support/customer-profiles/{refund.customer_id}/")

    assert assert_envelope(response, 409, "CONFLICT")["details"] == {"refunds": 1}
    assert Refund.objects.filter(pk=refund.pk).exists()


def test_a_deleted_ticket_leaves_its_refund_without_a_ticket(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    ticket = ticket_create(tenant=owner.tenant, actor=owner.user, subject="SSO", customer=customer)
    refund = RefundFactory(tenant=owner.tenant, customer=customer, ticket=ticket)

    response = owner.client.delete(f"{TICKETS}{ticket.pk}/")

    assert response.status_code == 204
    refund.refresh_from_db()
    assert refund.ticket_id is None


def test_a_representative_who_left_the_organization_is_given_no_ticket(owner):
    leaver = RepresentativeFactory(tenant=owner.tenant, status="ONLINE")
    member_remove(membership=leaver.user.memberships.get(tenant=owner.tenant), actor=owner.user)
    ticket = ticket_create(tenant=owner.tenant, actor=owner.user, subject="SSO")

    by_id = owner.client.post(
        f"{TICKETS}{ticket.pk}/assign/", {"representative": str(leaver.pk)}, format="json"
    )
    automatic = owner.client.post(
        f"{TICKETS}{ticket.pk}/assign/", {"representative": "auto"}, format="json"
    )

    assert "representative" in assert_envelope(by_id, 400)["details"]
    assert_envelope(automatic, 409, "CONFLICT")
    ticket.refresh_from_db()
    assert ticket.assignee_id is None


def test_a_deleted_representatives_tickets_go_back_to_the_queue(owner):
    representative = RepresentativeFactory(tenant=owner.tenant)
    ticket = ticket_create(
        tenant=owner.tenant, actor=owner.user, subject="SSO", assignee=representative.pk
    )

    response = owner.client.delete(f"/api/v1/support/representatives/{representative.pk}/")

    assert response.status_code == 204, response.content
    ticket.refresh_from_db()
    assert (ticket.assignee_id, ticket.assigned_at) == (None, None)


def test_a_reopened_ticket_waits_for_a_new_satisfaction_score(owner):
    ticket = ticket_create(tenant=owner.tenant, actor=owner.user, subject="SSO")
    ticket = ticket_update(ticket=ticket, actor=owner.user, status="RESOLVED")
    ticket = ticket_update(ticket=ticket, actor=owner.user, customer_satisfaction_score=2)

    reopened = ticket_update(ticket=ticket, actor=owner.user, status="OPEN")

    assert reopened.customer_satisfaction_score is None


@pytest.mark.parametrize("value", ["²", "¹²", "①", "TICKET-٣"])
def test_a_ticket_number_in_other_digits_finds_nothing(owner, value):
    ticket_create(tenant=owner.tenant, actor=owner.user, subject="SSO")

    response = owner.client.get(TICKETS, {"ticket_number": value})

    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


@pytest.mark.parametrize("zone", ["Europe", "Etc", "America"])
def test_a_time_zone_folder_is_not_a_time_zone(owner, zone):
    response = owner.client.post(
        "/api/v1/support/sla-policies/",
        {
            "name": "N",
            "priority": "NORMAL",
            "first_response_minutes": 60,
            "resolution_minutes": 120,
            "business_hours": {
                "weekdays": [0],
                "start": "09:00",
                "end": "17:00",
                "time_zone": zone,
            },
        },
        format="json",
    )

    assert "business_hours" in assert_envelope(response, 400)["details"]


def test_a_customer_document_sent_back_is_accepted(owner):
    customer = CustomerProfileFactory(tenant=owner.tenant)
    ticket_create(tenant=owner.tenant, actor=owner.user, subject="SSO", customer=customer)
    url = f"/api/v1/support/customer-profiles/{customer.pk}/"
    document = owner.client.get(url).json()
    assert len(document["open_tickets"]) == 1
    document["tier"] = "ENTERPRISE"

    response = owner.client.put(url, document, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["tier"] == "ENTERPRISE"
