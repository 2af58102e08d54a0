"""The demo data's content: what the quick start shows, loaded once for this module.

The demo is loaded inside a transaction opened for the module and rolled back after it; every
test runs in a savepoint of it (pytest-django's per-test transaction nests), so each sees the
freshly loaded demo and leaves it as it found it. Loading takes seconds, so this replaced one
load per test. (test_demo_data.py checks the command itself, on an empty database.)
"""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from tenants.management.commands.load_demo_data import DEMO_PASSWORD
from tenants.models import Membership, MembershipStatus, Role, Tenant
from tests.conftest import assert_envelope

pytestmark = pytest.mark.django_db

DEMO_SLUGS = ("acme", "globex")
DEMO_ROLES = {Role.OWNER, Role.ADMIN, Role.VIEWER, Role.DPO}


def load(**options) -> str:
    out = StringIO()
    call_command("load_demo_data", stdout=out, **options)
    return out.getvalue()


def row_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count() for model in (User, Tenant, Membership, AuditEvent)
    }


@pytest.fixture(scope="module")
def demo_data(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), transaction.atomic():
        load(force=True)
        yield
        transaction.set_rollback(True)


def test_loading_twice_changes_nothing_the_second_time(demo_data):
    first = row_counts()

    load(force=True)

    assert row_counts() == first
    assert first["Tenant"] == 2
    assert first["Membership"] == 8


def test_staff_superuser_exists(demo_data):
    admin = User.objects.get(email="admin@example.com")

    assert admin.is_staff
    assert admin.is_superuser
    assert admin.check_password(DEMO_PASSWORD)
    assert not admin.memberships.exists()


@pytest.mark.parametrize("slug", DEMO_SLUGS)
def test_each_demo_tenant_has_an_owner_admin_viewer_and_dpo(demo_data, slug):
    tenant = Tenant.objects.get(slug=slug)
    memberships = {
        m.user.email: m.role for m in tenant.memberships.filter(status=MembershipStatus.ACTIVE)
    }

    assert memberships == {f"{role}@{slug}.example.com": role for role in DEMO_ROLES}


def test_demo_plans_differ_per_tenant(demo_data):
    plans = dict(Tenant.objects.filter(slug__in=DEMO_SLUGS).values_list("slug", "plan"))

    assert plans == {"acme": "pro", "globex": "enterprise"}


@pytest.mark.parametrize("email", ["viewer@globex.example.com", "admin@example.com"])
def test_demo_password_obtains_a_token(demo_data, api_client, email):
    response = api_client.post(
        "/api/v1/auth/token/", {"username": email, "password": DEMO_PASSWORD}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["token"]


def test_demo_user_token_reads_its_organization(demo_data, api_client):
    token = api_client.post(
        "/api/v1/auth/token/",
        {"username": "owner@acme.example.com", "password": DEMO_PASSWORD},
        format="json",
    ).json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    body = api_client.get("/api/v1/organizations/current").json()

    assert body["slug"] == "acme"
    assert body["member_count"] == 4


def test_wrong_password_is_refused_for_demo_users(demo_data, api_client):
    response = api_client.post(
        "/api/v1/auth/token/",
        {"username": "owner@acme.example.com", "password": "not-the-demo-password"},
        format="json",
    )

    assert_envelope(response, 400, "VALIDATION_ERROR")


def test_acme_has_webhooks_with_delivery_history_and_notifications(demo_data):
    from notifications.models import DeliveryStatus, Notification, WebhookDelivery, WebhookEndpoint

    acme = Tenant.objects.get(slug="acme")
    endpoints = {e.name: e for e in WebhookEndpoint.objects.filter(tenant=acme)}

    assert set(endpoints) == {"Local receiver", "Audit sink", "Legacy bridge"}
    assert not endpoints["Legacy bridge"].is_active
    local = WebhookDelivery.objects.filter(endpoint=endpoints["Local receiver"])
    assert local.count() == 3  # two keys created, one revoked
    assert set(local.values_list("status", flat=True)) == {DeliveryStatus.SUCCEEDED}
    sink = WebhookDelivery.objects.filter(endpoint=endpoints["Audit sink"])
    assert sink.filter(status=DeliveryStatus.RETRYING).count() == sink.count() >= 3
    owner = User.objects.get(email="owner@acme.example.com")
    assert Notification.objects.filter(
        recipient=owner, event_type="organization.quota.warning", channel="in_app"
    ).exists()
    assert Notification.objects.filter(tenant=acme, title="Welcome to Acme").exists()


def test_acme_and_globex_have_a_billing_history_worth_looking_at(demo_data):
    from billing.models import CreditNote, Invoice, Subscription

    acme = Tenant.objects.get(slug="acme")
    subscription = Subscription.objects.get(tenant=acme)
    assert subscription.plan.code == "team"
    invoices = Invoice.objects.filter(tenant=acme)
    assert invoices.filter(reason="period", status="paid").count() == 3
    upgrade = invoices.get(reason="plan_change")
    # Collected from the card acme subscribed with.
    assert upgrade.status == "paid"
    # The credit note's 25.00 is taken off the upgrade's invoice.
    assert upgrade.credit_applied_cents == 2_500
    assert CreditNote.objects.filter(tenant=acme).count() == 1
    assert acme.usage_records.count() == 3
    globex = Tenant.objects.get(slug="globex")
    assert Invoice.objects.filter(tenant=globex, status="overdue").count() == 1
    assert globex.status == "active"


def test_acme_has_projects_and_orchestration_templates(demo_data):
    from playground.models import OrchestrationTemplate, Project

    acme = Tenant.objects.get(slug="acme")
    assert Project.objects.filter(tenant=acme).count() == 4
    assert set(Project.objects.filter(tenant=acme).values_list("status", flat=True)) == {
        "active",
        "completed",
        "archived",
    }
    assert OrchestrationTemplate.objects.filter(tenant=acme, is_public=True).count() == 1
    assert OrchestrationTemplate.objects.filter(tenant=acme, is_public=False).count() == 1


def test_acme_has_security_records_and_a_dashboard_worth_looking_at(demo_data):
    from rest_framework.test import APIClient

    from security.models import ComplianceAudit, Incident, ProcessingActivity
    from tests.conftest import token_for

    acme = Tenant.objects.get(slug="acme")
    incidents = Incident.objects.filter(tenant=acme)
    assert set(incidents.values_list("status", flat=True)) == {
        "open",
        "investigating",
        "resolved",
        "closed",
    }
    due_soon = incidents.get(personal_data_breach=True, authority_notified_at__isnull=True)
    assert due_soon.breach_due_soon_sent_at is not None
    assert set(ComplianceAudit.objects.filter(tenant=acme).values_list("status", flat=True)) == {
        "completed",
        "in_progress",
        "planned",
    }
    assert ProcessingActivity.objects.filter(tenant=acme, status="approved").count() == 3
    client = APIClient()
    dpo = User.objects.get(email="dpo@acme.example.com")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(dpo)}")
    dashboard = client.get("/api/v1/security/reports/security-dashboard").json()
    assert dashboard["security_posture"]["risk_level"] == "high"
    assert dashboard["security_posture"]["compliance_score"] == 85.0
    rules = {row["rule"] for row in dashboard["recommendations"]}
    assert {"breach_notification_due_soon", "missing_dpias", "open_findings"} <= rules
    stats = client.get("/api/v1/security/incidents/stats").json()
    assert stats["summary"]["total_incidents"] == incidents.count()
    assert stats["summary"]["avg_resolution_hours"] == 18.0


def test_acme_has_a_support_desk_set_up(demo_data):
    from support.models import CustomerProfile, Representative, SlaPolicy

    acme = Tenant.objects.get(slug="acme")
    customers = CustomerProfile.objects.filter(tenant=acme)
    assert customers.count() == 5
    assert set(customers.values_list("standing", flat=True)) == {"GOOD", "WARNING", "SUSPENDED"}
    representatives = Representative.objects.filter(tenant=acme)
    assert set(representatives.values_list("status", flat=True)) == {"ONLINE", "AWAY", "OFFLINE"}
    assert representatives.get(status="ONLINE").last_active_at is not None
    assert sorted(SlaPolicy.objects.filter(tenant=acme).values_list("priority", flat=True)) == [
        "HIGH",
        "LOW",
        "NORMAL",
        "URGENT",
    ]
    from support.models import Ticket

    tickets = Ticket.objects.filter(tenant=acme)
    assert set(tickets.values_list("status", flat=True)) == {
        "OPEN",
        "IN_PROGRESS",
        "WAITING",
        "RESOLVED",
        "CLOSED",
    }
    assert sorted(tickets.values_list("number", flat=True)) == list(range(1001, 1008))
    online = representatives.get(status="ONLINE")
    assert (
        online.active_chats
        == tickets.filter(assignee=online, status__in=["OPEN", "IN_PROGRESS", "WAITING"]).count()
    )
    # Every SLA state worth a look: running, paused, met, and one breached and escalated.
    from django.utils import timezone

    from support.models import Escalation

    now = timezone.now()
    states = {ticket.sla_status_at(now) for ticket in tickets}
    assert {"paused", "met", "breached"} <= states
    breached = tickets.get(sla_breached_at__isnull=False)
    assert breached.priority == "URGENT" and breached.sla_breach == "first_response"
    assert Escalation.objects.filter(
        tenant=acme, ticket=breached, reason="SLA_BREACH", priority="CRITICAL"
    ).exists()
    assert Escalation.objects.filter(tenant=acme, reason="AI_UNABLE_TO_RESOLVE").exists()
    assert tickets.filter(first_responded_at__isnull=False).exists()
    assert tickets.filter(comments__is_internal=True).exists()
    assert tickets.filter(attachments__isnull=False).exists()
    from support.models import AiAgent, DecisionRule

    agents = AiAgent.objects.filter(tenant=acme)
    assert agents.count() == 2 and all(agent.accuracy is not None for agent in agents)
    rules = DecisionRule.objects.filter(tenant=acme)
    assert rules.filter(enabled=True).count() == 3 and rules.filter(enabled=False).count() == 2
    assert rules.filter(action="APPROVE_REFUND", enabled=True).exists()
    # Money: every refund status, a refund budget past an alert, authority per role.
    from support.models import Budget, Refund

    refunds = Refund.objects.filter(tenant=acme)
    assert set(refunds.values_list("status", flat=True)) == {
        "PENDING",
        "APPROVED",
        "REJECTED",
        "COMPLETED",
    }
    refund_budget = Budget.objects.get(tenant=acme, type="REFUND", currency="USD")
    assert refund_budget.spent_cents == sum(
        refunds.filter(status__in=["APPROVED", "COMPLETED"]).values_list("amount_cents", flat=True)
    )
    assert refund_budget.alerted_percentages == [50]
    assert Budget.objects.filter(tenant=acme).count() == 3
    assert acme.settings["support_refund_authority_cents"]["TEAM_LEAD"] > 0
    completed = refunds.get(status="COMPLETED")
    assert completed.customer.lifetime_refunds_cents == completed.amount_cents


def test_every_demo_tenant_has_analytics_worth_looking_at(demo_data):
    from analytics import selectors
    from analytics.models import QueryEvent, RequestFact, Rollup
    from playground.models import GatewayCall

    for tenant in Tenant.objects.filter(slug__in=["acme", "globex"]):
        assert QueryEvent.objects.filter(tenant=tenant).count() == 700
        assert QueryEvent.objects.filter(tenant=tenant, success=False).exists()
        assert RequestFact.objects.filter(tenant=tenant).exists()
        streams = set(Rollup.objects.filter(tenant=tenant).values_list("stream", flat=True))
        assert {"queries", "requests"} <= streams
        # The gateway's calls, recorded over two weeks, are all in its metrics' daily series.
        calls = GatewayCall.objects.filter(tenant=tenant)
        series = selectors.gateway_metrics(tenant, days=15)["daily_series"]
        assert sum(day["calls"] for day in series) == calls.count()
    acme_calls = GatewayCall.objects.filter(tenant__slug="acme")
    assert acme_calls.filter(created_at__lt=timezone.now() - timedelta(days=7)).exists()


def _screens() -> list[str]:
    """Every API route a GET reads without naming one object: the lists, reports and
    settings a client of the quick start opens first."""
    from tests.api.endpoints import ENDPOINTS

    return sorted({e.url() for e in ENDPOINTS if e.method == "get" and not e.is_detail})


def _object_screens(client) -> list[str]:
    """Every API route a GET reads naming one object, for the first object its list shows."""
    from tests.api.endpoints import ENDPOINTS

    paths = set()
    for endpoint in ENDPOINTS:
        if endpoint.method != "get" or len(endpoint.lookups) != 1:
            continue
        listing = client.get(endpoint.list_url)
        results = listing.json().get("results") if listing.status_code == 200 else None
        key = "slug" if endpoint.lookups == ["slug"] else "id"
        if results and isinstance(results[0], dict) and results[0].get(key):
            paths.add(endpoint.url(str(results[0][key])))
    return sorted(paths)


# On SQLite too (the quick start's database): a report that works on PostgreSQL only would
# otherwise be found by the first person to open it.
@pytest.mark.smoke
@pytest.mark.parametrize(
    "email, organization",
    [("owner@acme.example.com", "acme"), ("dpo@globex.example.com", "globex"),
     ("admin@example.com", None)],
)  # fmt: skip
def test_every_screen_answers_on_the_demo_data(demo_data, api_client, email, organization):
    token = api_client.post(
        "/api/v1/auth/token/", {"username": email, "password": DEMO_PASSWORD}, format="json"
    ).json()["token"]
    headers = {"HTTP_X_ORGANIZATION_ID": organization} if organization else {}
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}", **headers)

    answers = {path: api_client.get(path).status_code for path in _screens()}
    answers |= {path: api_client.get(path).status_code for path in _object_screens(api_client)}

    assert not {path: status for path, status in answers.items() if status >= 500}
    if organization:
        read = {path for path, status in answers.items() if status == 200}
        assert {
            "/api/v1/organizations/current/",
            "/api/v1/analytics/dashboard/",
            "/api/v1/analytics/usage/",
        } <= read, answers
