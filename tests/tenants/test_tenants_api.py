"""The tenant directory (POST and GET /api/v1/tenants/) and GET /api/v1/organizations/current."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.models import AuditEvent
from tenants.models import (
    Membership,
    MembershipStatus,
    PlanTier,
    Role,
    Tenant,
    TenantStatus,
    Theme,
)
from tests.conftest import assert_envelope
from tests.factories import MembershipFactory, TenantFactory

pytestmark = pytest.mark.django_db

TENANTS_URL = "/api/v1/tenants/"
ORG_URL = "/api/v1/organizations/current"


@pytest.fixture
def user_client(make_caller):
    """An authenticated user with no membership yet (the client's `.user`)."""
    caller = make_caller()
    caller.membership.delete()
    client = caller.client_for(None)
    client.user = caller.user
    return client


def create(client, **data):
    return client.post(TENANTS_URL, data, format="json")


def listed_slugs(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [tenant["slug"] for tenant in response.json()["results"]]


def add_members(tenant, *, active: int = 0, suspended: int = 0, invited: int = 0) -> None:
    for status, count in (
        (MembershipStatus.ACTIVE, active),
        (MembershipStatus.SUSPENDED, suspended),
        (MembershipStatus.INVITED, invited),
    ):
        MembershipFactory.create_batch(count, tenant=tenant, status=status)


# POST /api/v1/tenants/ ---------------------------------------------------------------------


def test_create_requires_authentication(api_client):
    assert_envelope(create(api_client, name="Nobody Co"), 401, "AUTHENTICATION_REQUIRED")
    assert not Tenant.objects.filter(name="Nobody Co").exists()


def test_creator_becomes_the_active_owner(user_client):
    response = create(user_client, name="Acme Co")

    assert response.status_code == 201, response.content
    tenant = Tenant.objects.get(pk=response.json()["id"])
    membership = Membership.objects.get(tenant=tenant)
    assert membership.user == user_client.user
    assert membership.role == Role.OWNER
    assert membership.status == MembershipStatus.ACTIVE
    assert membership.joined_at is not None
    assert response.json()["user_count"] == 1


def test_creator_can_use_the_new_tenant_at_once(user_client):
    tenant_id = create(user_client, name="Acme Co").json()["id"]

    response = user_client.get(ORG_URL)

    assert response.status_code == 200, response.content
    assert response.json()["id"] == tenant_id


def test_new_tenant_starts_a_trial_of_the_configured_length(user_client, settings):
    settings.TENANT_TRIAL_DAYS = 30
    before = timezone.now()

    response = create(user_client, name="Acme Co")

    after = timezone.now()
    assert response.status_code == 201, response.content
    body = response.json()
    tenant = Tenant.objects.get(pk=body["id"])
    assert tenant.status == TenantStatus.TRIAL == body["status"]
    window = timedelta(days=30)
    assert before + window <= tenant.trial_ends_at <= after + window
    assert parse_datetime(body["trial_ends_at"]) == tenant.trial_ends_at


@pytest.mark.parametrize("tier", list(PlanTier))
def test_staff_create_a_tenant_on_any_tier(staff_client, tier):
    response = create(staff_client, name="Tiered", subscription_tier=tier)

    assert response.status_code == 201, response.content
    assert Tenant.objects.get(pk=response.json()["id"]).plan == tier
    assert response.json()["subscription_tier"] == tier


@pytest.mark.parametrize("tier", [PlanTier.PRO, PlanTier.ENTERPRISE, PlanTier.CUSTOM])
def test_an_ordinary_user_cannot_grant_themselves_a_plan(user_client, tier):
    error = assert_envelope(
        create(user_client, name="Ent Co", subscription_tier=tier), 403, "INSUFFICIENT_PERMISSIONS"
    )

    assert "subscription_tier" in error["details"]
    assert not Tenant.objects.filter(name="Ent Co").exists()
    assert not AuditEvent.objects.filter(event_type="tenant.created").exists()


def test_an_ordinary_user_may_name_the_free_tier(user_client):
    response = create(user_client, name="Freely", subscription_tier=PlanTier.FREE)

    assert response.status_code == 201, response.content
    assert Tenant.objects.get(name="Freely").plan == PlanTier.FREE


def test_plan_defaults_to_free(user_client):
    response = create(user_client, name="Freebie")

    assert Tenant.objects.get(pk=response.json()["id"]).plan == PlanTier.FREE


@pytest.mark.parametrize("tier", ["platinum", "", "PRO", 3])
def test_invalid_subscription_tier_is_a_validation_error(user_client, tier):
    error = assert_envelope(
        create(user_client, name="Tiered", subscription_tier=tier), 400, "VALIDATION_ERROR"
    )

    assert "subscription_tier" in error["details"]
    assert not Tenant.objects.filter(name="Tiered").exists()


def test_missing_name_is_a_validation_error(user_client):
    error = assert_envelope(create(user_client, slug="nameless"), 400, "VALIDATION_ERROR")

    assert "name" in error["details"]


def test_slug_is_generated_from_the_name(user_client):
    first = create(user_client, name="Acme Co")
    second = create(user_client, name="Acme Co")
    third = create(user_client, name="ACME co!")

    assert [r.json()["slug"] for r in (first, second, third)] == [
        "acme-co",
        "acme-co-2",
        "acme-co-3",
    ]


def test_given_slug_is_kept(user_client):
    response = create(user_client, name="Acme Co", slug="acme")

    assert response.status_code == 201, response.content
    assert Tenant.objects.get(pk=response.json()["id"]).slug == "acme"


def test_taken_slug_is_a_validation_error(user_client):
    TenantFactory(slug="acme")

    error = assert_envelope(create(user_client, name="Acme", slug="acme"), 400, "VALIDATION_ERROR")

    assert "slug" in error["details"]
    assert Tenant.objects.filter(slug="acme").count() == 1
    assert not Membership.objects.filter(user=user_client.user).exists()


def test_slug_is_stored_lowercase_and_taken_case_insensitively(user_client):
    created = create(user_client, name="Acme", slug="ACME")
    assert created.status_code == 201, created.content
    assert created.json()["slug"] == "acme"

    error = assert_envelope(create(user_client, name="Acme", slug="Acme"), 400, "VALIDATION_ERROR")
    assert "slug" in error["details"]


@pytest.mark.parametrize("slug", ["not a slug", "../etc", "a/b", "acme!", "a" * 64, ""])
def test_invalid_slug_is_a_validation_error(user_client, slug):
    error = assert_envelope(create(user_client, name="Acme", slug=slug), 400, "VALIDATION_ERROR")

    assert "slug" in error["details"]
    assert not Tenant.objects.filter(name="Acme").exists()


def test_creation_is_audited_in_the_new_tenant(user_client):
    response = create(user_client, name="Acme Co")

    tenant = Tenant.objects.get(pk=response.json()["id"])
    events = {event.event_type: event for event in AuditEvent.objects.filter(tenant=tenant)}
    assert set(events) == {"tenant.created", "member.added"}
    assert all(event.actor_id == user_client.user.pk for event in events.values())
    assert events["tenant.created"].payload["slug"] == tenant.slug
    membership = Membership.objects.get(tenant=tenant)
    assert events["member.added"].payload == {
        "membership_id": str(membership.pk),
        "user_id": str(user_client.user.pk),
        "email": user_client.user.email,
        "role": Role.OWNER,
    }


def test_read_only_fields_in_the_body_are_refused_by_name(user_client):
    response = create(
        user_client,
        name="Sneaky",
        id=str(uuid.uuid4()),
        status=TenantStatus.ACTIVE,
        settings={"max_users": 10_000},
        trial_ends_at="2099-01-01T00:00:00Z",
        user_count=99,
        colour="blue",
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    details = error["details"]
    assert set(details) == {"id", "status", "settings", "trial_ends_at", "user_count", "colour"}
    assert details["status"] == ["This field is read-only."]
    assert details["colour"][0].startswith("Unknown field.")
    assert not Tenant.objects.filter(name="Sneaky").exists()


# GET /api/v1/tenants/ ----------------------------------------------------------------------


def test_list_requires_authentication(api_client):
    TenantFactory()

    assert_envelope(api_client.get(TENANTS_URL), 401, "AUTHENTICATION_REQUIRED")


def test_member_sees_only_tenants_with_an_active_membership(owner):
    for status in (MembershipStatus.SUSPENDED, MembershipStatus.INVITED):
        MembershipFactory(user=owner.user, status=status)
    TenantFactory()

    response = owner.client.get(TENANTS_URL)

    assert listed_slugs(response) == [owner.tenant.slug]
    assert response.json()["count"] == 1


def test_user_without_memberships_sees_no_tenants(user_client):
    TenantFactory.create_batch(2)

    assert listed_slugs(user_client.get(TENANTS_URL)) == []


def test_staff_see_every_tenant(staff_client):
    tenants = TenantFactory.create_batch(3)
    MembershipFactory(tenant=tenants[0])

    response = staff_client.get(TENANTS_URL)

    assert set(listed_slugs(response)) == set(Tenant.objects.values_list("slug", flat=True))
    assert response.json()["count"] == Tenant.objects.count() == 3


def test_user_count_counts_active_members_only(owner):
    add_members(owner.tenant, active=2, suspended=1, invited=1)

    (listed,) = owner.client.get(TENANTS_URL).json()["results"]

    assert listed["user_count"] == 3


def test_user_count_for_staff_counts_active_members_only(staff_client):
    busy, empty = TenantFactory(slug="busy"), TenantFactory(slug="empty")
    add_members(busy, active=2, suspended=2)
    add_members(empty, invited=1)

    counts = {t["slug"]: t["user_count"] for t in staff_client.get(TENANTS_URL).json()["results"]}

    assert counts == {"busy": 2, "empty": 0}


def test_status_filter_keeps_only_that_status(staff_client):
    suspended = TenantFactory(status=TenantStatus.SUSPENDED)
    TenantFactory(status=TenantStatus.ACTIVE)
    TenantFactory(status=TenantStatus.TRIAL)

    response = staff_client.get(TENANTS_URL, {"status": TenantStatus.SUSPENDED})

    assert listed_slugs(response) == [suspended.slug]


def test_search_matches_name_slug_and_domain(staff_client):
    by_name = TenantFactory(name="Globex Inc.", slug="g1")
    by_slug = TenantFactory(name="Other", slug="globex-eu")
    by_domain = TenantFactory(name="Third", slug="t3", domain="globex.example.com")
    TenantFactory(name="Initech", slug="initech")

    response = staff_client.get(TENANTS_URL, {"search": "globex"})

    assert set(listed_slugs(response)) == {by_name.slug, by_slug.slug, by_domain.slug}


def test_search_never_reaches_beyond_the_callers_tenants(owner):
    TenantFactory(name="Globex Inc.")

    response = owner.client.get(TENANTS_URL, {"search": "globex"})

    assert listed_slugs(response) == []


def test_page_size_is_capped_at_one_hundred(staff_client):
    TenantFactory.create_batch(105)

    response = staff_client.get(TENANTS_URL, {"page_size": 500})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 105
    assert len(body["results"]) == 100
    assert body["next"] is not None


def test_default_page_size_is_twenty(staff_client):
    TenantFactory.create_batch(25)

    body = staff_client.get(TENANTS_URL).json()

    assert set(body) == {"count", "next", "previous", "results"}
    assert len(body["results"]) == 20


# GET /api/v1/organizations/current ---------------------------------------------------------


def test_current_organization_has_its_fields(owner):
    tenant = owner.tenant
    tenant.description = "Rockets and anvils"
    tenant.plan = PlanTier.PRO
    tenant.settings = {"dataResidency": "eu", "maxDocuments": 50}
    tenant.save()
    Theme.objects.create(
        tenant=tenant, primary_color="#ff0000", logo_url="https://cdn.example/l.png"
    )

    body = owner.client.get(ORG_URL).json()

    assert set(body) == {
        "id", "name", "slug", "description", "plan", "subscription_tier", "status", "settings",
        "branding", "created_at", "updated_at", "member_count", "document_count",
        "api_quota_limit", "api_quota_used", "trial_ends_at",
    }  # fmt: skip
    assert body["id"] == str(tenant.pk)
    assert body["name"] == tenant.name
    assert body["slug"] == tenant.slug
    assert body["description"] == "Rockets and anvils"
    assert body["plan"] == PlanTier.PRO
    assert body["status"] == TenantStatus.ACTIVE
    assert body["settings"] == {"dataResidency": "eu", "maxDocuments": 50}
    assert body["subscription_tier"] == PlanTier.PRO
    assert body["document_count"] == 0
    assert body["api_quota_limit"] == 100_000
    # This request is counted before it is served.
    assert body["api_quota_used"] == 1
    assert body["branding"] == {
        "logo": "https://cdn.example/l.png",
        "primaryColor": "#ff0000",
        "secondaryColor": "#64748b",
        "accentColor": "#f59e0b",
    }
    assert parse_datetime(body["created_at"]) == tenant.created_at
    assert parse_datetime(body["updated_at"]) == tenant.updated_at
    assert body["trial_ends_at"] is None


def test_current_organization_member_count_counts_active_members_only(owner):
    add_members(owner.tenant, active=2, suspended=1, invited=3)

    assert owner.client.get(ORG_URL).json()["member_count"] == 3


def test_current_organization_shows_the_trial_end(user_client):
    tenant = Tenant.objects.get(pk=create(user_client, name="Trial Co").json()["id"])

    body = user_client.get(ORG_URL).json()

    assert body["status"] == TenantStatus.TRIAL
    assert parse_datetime(body["trial_ends_at"]) == tenant.trial_ends_at
