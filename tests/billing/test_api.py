"""The billing API: the plan catalogue, the organization's subscription with its plan changes,
cancellation and resumption, and its invoices (the generic battery plus their own rules)."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Invoice, InvoiceStatus, Plan, Subscription
from tenants.models import Role, Tenant, TenantStatus
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope
from tests.factories import TenantFactory, issue_api_key

from .factories import InvoiceFactory, InvoiceLineFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

JAN_12 = datetime(2026, 1, 12, 10, 30, tzinfo=UTC)
SUBSCRIPTION = "/api/v1/billing/subscription"
PLANS = "/api/v1/billing/plans"
INVOICES = "/api/v1/billing/invoices/"


def on_plan(tenant, code: str) -> Subscription:
    plan = Plan.objects.get(code=code)
    Tenant.objects.filter(pk=tenant.pk).update(plan=plan.tier, plan_features=plan.features)
    return SubscriptionFactory(tenant=tenant, plan=plan)


class TestInvoices(ResourceBattery):
    url = INVOICES
    filter_examples = {
        "issued_after": lambda invoice: invoice.issued_at.isoformat(),
        "issued_before": lambda invoice: "2030-01-01T00:00:00Z",
    }

    def make(self, tenant, **fields):
        invoice = super().make(tenant, **fields)
        InvoiceLineFactory(invoice=invoice)
        return invoice


# Plans ------------------------------------------------------------------------------------------


def test_plans_are_listed_to_any_signed_in_caller_cheapest_first(make_caller):
    caller = make_caller(Role.VIEWER)
    Plan.objects.filter(code="enterprise").update(active=False)
    response = caller.client_for(None).get(PLANS)
    assert response.status_code == 200
    codes = [plan["code"] for plan in response.json()["results"]]
    assert codes[:4] == ["free", "starter", "team", "business"]
    assert "enterprise" not in codes
    team = next(plan for plan in response.json()["results"] if plan["code"] == "team")
    assert team["price_cents"] == 14_900
    assert team["billing_interval"] == "monthly"
    assert team["features"]["maxTokensPerMonth"] == 200_000
    assert APIClient().get(PLANS).status_code == 401


# The subscription -------------------------------------------------------------------------------


@time_machine.travel(JAN_12, tick=False)
def test_the_subscription_of_a_new_organization_is_free_and_active(owner):
    response = owner.client.get(SUBSCRIPTION)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["organization_id"] == str(owner.tenant.pk)
    assert body["plan"]["code"] == "free"
    assert body["status"] == "active"
    assert body["current_period_start"] == "2026-01-01T00:00:00Z"
    assert body["current_period_end"] == "2026-02-01T00:00:00Z"
    assert body["next_invoice_date"] == "2026-02-01T00:00:00Z"
    assert body["pending_plan"] is None
    # With and without the trailing slash.
    assert owner.client.get(SUBSCRIPTION + "/").json()["id"] == body["id"]


@time_machine.travel(JAN_12, tick=False)
def test_the_preview_answers_the_exact_change_and_changes_nothing(owner):
    on_plan(owner.tenant, "team")
    response = owner.client.post(
        f"{SUBSCRIPTION}/change-plan/preview", {"new_plan_id": "business"}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["change"] == "upgrade" and body["applies_now"] is True
    assert body["proration_amount_cents"] == 15_776
    assert (body["remaining_seconds"], body["period_seconds"]) == (1_690_200, 2_678_400)
    assert body["old_plan"]["code"] == "team" and body["new_plan"]["code"] == "business"
    assert Subscription.objects.get(tenant=owner.tenant).plan.code == "team"
    assert not Invoice.objects.filter(tenant=owner.tenant).exists()


@time_machine.travel(JAN_12, tick=False)
def test_change_plan_answers_the_old_and_new_plan_and_the_proration(owner):
    on_plan(owner.tenant, "team")
    business = Plan.objects.get(code="business")
    response = owner.client.post(
        f"{SUBSCRIPTION}/change-plan", {"new_plan_id": str(business.pk)}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    assert body["message"] == "Subscription plan changed successfully"
    data = body["data"]
    assert (data["old_plan"], data["new_plan"]) == ("Team", "Business")
    assert data["proration_amount_cents"] == 15_776
    assert data["invoice"]["invoice_number"] == "INV-2026-0001"
    assert data["subscription"]["plan"]["code"] == "business"
    invoice = owner.client.get(f"{INVOICES}{data['invoice']['id']}").json()
    assert invoice["amount_cents"] == 15_776
    assert invoice["line_items"][0]["type"] == "proration"
    assert invoice["pdf_url"].endswith(f"/api/v1/billing/invoices/{data['invoice']['id']}/pdf")


@time_machine.travel(JAN_12, tick=False)
def test_a_downgrade_answers_when_it_applies(owner):
    on_plan(owner.tenant, "business")
    response = owner.client.post(f"{SUBSCRIPTION}/change-plan", {"plan": "team"}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["applies_now"] is False
    assert data["effective_at"] == "2026-02-01T00:00:00Z"
    assert data["invoice"] is None
    assert data["subscription"]["pending_plan"]["code"] == "team"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "VALIDATION_ERROR"),
        ({"new_plan_id": "nope"}, 404, "RESOURCE_NOT_FOUND"),
        ({"new_plan_id": "team", "plan": "business"}, 400, "VALIDATION_ERROR"),
        ({"new_plan_id": 42}, 400, "VALIDATION_ERROR"),
        ({"new_plan_id": "free"}, 409, "CONFLICT"),
    ],
)
def test_bad_plan_changes_are_refused_in_the_envelope_and_change_nothing(owner, body, status, code):
    response = owner.client.post(f"{SUBSCRIPTION}/change-plan", body, format="json")
    assert_envelope(response, status, code)
    assert not Subscription.objects.filter(tenant=owner.tenant).exclude(plan__code="free").exists()
    assert not Invoice.objects.filter(tenant=owner.tenant).exists()


def test_cancel_and_resume(owner):
    on_plan(owner.tenant, "team")
    response = owner.client.post(f"{SUBSCRIPTION}/cancel", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["cancel_at_period_end"] is True
    assert response.json()["next_invoice_date"] is None
    assert_envelope(
        owner.client.post(f"{SUBSCRIPTION}/cancel", {"immediately": True}, format="json"),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    response = owner.client.post(f"{SUBSCRIPTION}/resume")
    assert response.status_code == 200
    assert response.json()["cancel_at_period_end"] is False
    assert_envelope(owner.client.post(f"{SUBSCRIPTION}/resume"), 409, "CONFLICT")


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER, Role.DPO])
def test_roles_without_billing_see_no_subscription(make_caller, role):
    caller = make_caller(role)
    assert_envelope(caller.client.get(SUBSCRIPTION), 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(
        caller.client.post(f"{SUBSCRIPTION}/change-plan", {"plan": "team"}, format="json"),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )


def test_the_billing_role_manages_the_subscription(make_caller):
    caller = make_caller(Role.BILLING)
    subscription = on_plan(caller.tenant, "starter")
    Subscription.objects.filter(pk=subscription.pk).update(
        default_payment_method="pm_card_visa",
        current_period_start=timezone.now() - timedelta(days=1),
        current_period_end=timezone.now() + timedelta(days=29),
    )
    response = caller.client.post(f"{SUBSCRIPTION}/change-plan", {"plan": "team"}, format="json")
    assert response.status_code == 200, response.content
    # The upgrade's invoice is collected from the card kept at checkout.
    assert response.json()["data"]["invoice"] is not None
    assert Invoice.objects.get(tenant=caller.tenant).status == "paid"


def test_a_free_organization_subscribes_through_checkout_not_change_plan(owner):
    response = owner.client.post(f"{SUBSCRIPTION}/change-plan", {"plan": "team"}, format="json")
    assert_envelope(response, 409, "CONFLICT")
    assert "checkout" in response.json()["error"]["message"]
    assert not Subscription.objects.filter(tenant=owner.tenant, plan__code="team").exists()


def test_an_api_key_with_billing_scopes_reads_the_subscription(owner):
    _, key = issue_api_key(owner.membership, scopes=["billing.read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get(SUBSCRIPTION).json()["plan"]["code"] == "free"
    assert_envelope(
        client.post(f"{SUBSCRIPTION}/change-plan", {"plan": "team"}, format="json"),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )


def test_a_suspended_organization_still_reads_its_subscription_and_invoices(owner):
    on_plan(owner.tenant, "team")
    invoice = InvoiceFactory(tenant=owner.tenant)
    Tenant.objects.filter(pk=owner.tenant.pk).update(status=TenantStatus.SUSPENDED)
    assert owner.client.get(SUBSCRIPTION).status_code == 200
    assert owner.client.get(INVOICES).json()["count"] == 1
    assert owner.client.get(f"{INVOICES}{invoice.pk}").status_code == 200
    assert owner.client.get(f"{INVOICES}{invoice.pk}/pdf").status_code == 200
    assert_envelope(
        owner.client.post(f"{SUBSCRIPTION}/change-plan", {"plan": "business"}, format="json"),
        403,
        "TENANT_SUSPENDED",
    )


# Invoices ---------------------------------------------------------------------------------------


def test_drafts_are_never_shown_and_status_filters(owner):
    pending = InvoiceFactory(tenant=owner.tenant)
    InvoiceFactory(tenant=owner.tenant, status=InvoiceStatus.PAID)
    draft = InvoiceFactory(tenant=owner.tenant, status=InvoiceStatus.DRAFT, number="")
    listed = owner.client.get(INVOICES).json()
    assert listed["count"] == 2
    assert str(draft.pk) not in {row["id"] for row in listed["results"]}
    assert_envelope(owner.client.get(f"{INVOICES}{draft.pk}"), 404, "RESOURCE_NOT_FOUND")
    pending_only = owner.client.get(INVOICES, {"status": "pending"}).json()["results"]
    assert [row["id"] for row in pending_only] == [str(pending.pk)]
    assert_envelope(owner.client.get(INVOICES, {"status": "draft"}), 400, "VALIDATION_ERROR")


def test_the_pdf_is_a_pdf_of_the_invoice(owner):
    invoice = InvoiceFactory(tenant=owner.tenant, number="INV-2026-0042")
    InvoiceLineFactory(invoice=invoice)
    response = owner.client.get(f"{INVOICES}{invoice.pk}/pdf")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert 'filename="INV-2026-0042.pdf"' in response["Content-Disposition"]
    other = InvoiceFactory(tenant=TenantFactory())
    assert_envelope(owner.client.get(f"{INVOICES}{other.pk}/pdf"), 404, "RESOURCE_NOT_FOUND")


def test_billing_answers_ten_requests_a_minute_per_organization_on_the_free_tier(owner, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "billing": "10/min",
        },
    }
    statuses = [owner.client.get(SUBSCRIPTION).status_code for _ in range(10)]
    assert statuses == [200] * 10
    refused = owner.client.get(INVOICES)
    assert_envelope(refused, 429, "RATE_LIMIT_EXCEEDED")
    assert int(refused["Retry-After"]) > 0
