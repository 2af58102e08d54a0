"""GET, PUT and PATCH organizations/current: the fields shown, replacing and merging settings, the
typed settings schema, limits above the plan tier, and what tenant_limits() makes of them."""

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from audit import tasks as audit_tasks
from audit.models import AuditEvent
from tenants.models import Membership, PlanTier, QuotaCounter, Role, Tenant, TenantStatus
from tenants.plans import MIB, plan_limits, tenant_limits
from tenants.services.quotas import quota_states
from tests.conftest import assert_envelope, race, token_for
from tests.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

ORG_URL = "/api/v1/organizations/current"
QUOTAS_URL = "/api/v1/organizations/quotas"

ORGANIZATION_FIELDS = {
    "id", "name", "slug", "description", "plan", "subscription_tier", "status", "settings",
    "branding", "created_at", "updated_at", "member_count", "document_count", "trial_ends_at",
    "api_quota_limit", "api_quota_used",
}  # fmt: skip
LIMIT_KEYS = (
    "maxDocuments",
    "maxUsers",
    "maxTokensPerMonth",
    "maxStorageMB",
    "maxApiCallsPerMonth",
)
# The free tier's ceiling of each limit setting, in the setting's unit.
FREE_CEILINGS = {
    "maxDocuments": 100,
    "maxUsers": 3,
    "maxTokensPerMonth": 50_000,
    "maxStorageMB": 1_000,
    "maxApiCallsPerMonth": 10_000,
}


def put(client, **data):
    return client.put(ORG_URL, data, format="json")


def patch(client, **data):
    return client.patch(ORG_URL, data, format="json")


def stored(caller) -> Tenant:
    return Tenant.objects.get(pk=caller.tenant.pk)


def updates(tenant):
    return AuditEvent.objects.filter(tenant=tenant, event_type="tenant.updated")


@pytest.fixture
def owner(make_caller):
    caller = make_caller(Role.OWNER)
    Tenant.objects.filter(pk=caller.tenant.pk).update(
        name="Acme", description="Anvils", plan=PlanTier.FREE
    )
    caller.tenant.refresh_from_db()
    return caller


@pytest.fixture
def staff(staff_client, owner):
    """A staff client acting in the owner's tenant (staff are not members)."""
    staff_client.credentials(
        HTTP_AUTHORIZATION=staff_client._credentials["HTTP_AUTHORIZATION"],
        HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk),
    )
    return staff_client


def set_settings(caller, settings: dict) -> None:
    Tenant.objects.filter(pk=caller.tenant.pk).update(settings=settings)


# GET ---------------------------------------------------------------------------------------------


def test_get_has_the_organization_fields_and_nothing_else(owner):
    body = owner.client.get(ORG_URL).json()

    assert set(body) == ORGANIZATION_FIELDS
    assert body["plan"] == body["subscription_tier"] == PlanTier.FREE
    assert set(body["branding"]) >= {"logo", "primaryColor", "secondaryColor"}


def test_get_reports_counts_and_the_api_quota_from_settings_and_counters(owner, make_caller):
    make_caller(Role.VIEWER, tenant=owner.tenant)
    set_settings(owner, {"maxApiCallsPerMonth": 500, "dataResidency": "eu"})
    QuotaCounter.objects.create(tenant=owner.tenant, resource="documents", used=12)
    QuotaCounter.objects.create(tenant=owner.tenant, resource="api_calls", used=40)

    body = owner.client.get(ORG_URL).json()

    assert body["settings"] == {"maxApiCallsPerMonth": 500, "dataResidency": "eu"}
    assert body["member_count"] == 2
    assert body["document_count"] == 12
    assert body["api_quota_limit"] == 500
    assert body["api_quota_used"] == 41  # this request is counted before it is served
    assert body["description"] == "Anvils"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.BILLING, Role.MEMBER])
def test_any_member_may_read_the_organization(make_caller, role):
    caller = make_caller(role)

    response = caller.client.get(ORG_URL)

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(caller.tenant.pk)


# PUT and PATCH -----------------------------------------------------------------------------------


def test_put_replaces_name_description_and_settings(owner):
    set_settings(owner, {"dataResidency": "eu", "maxUsers": 2})

    response = put(
        owner.client, name="Acme Two", description="New", settings={"hdsCompliant": True}
    )

    assert response.status_code == 200, response.content
    tenant = stored(owner)
    assert (tenant.name, tenant.description) == ("Acme Two", "New")
    assert tenant.settings == {"hdsCompliant": True}
    body = response.json()
    assert (body["name"], body["description"], body["settings"]) == (
        "Acme Two",
        "New",
        {"hdsCompliant": True},
    )


def test_put_without_settings_or_description_clears_them(owner):
    set_settings(owner, {"dataResidency": "eu"})

    response = put(owner.client, name="Acme")

    assert response.status_code == 200, response.content
    tenant = stored(owner)
    assert tenant.settings == {}
    assert tenant.description == ""
    assert updates(tenant).get().payload == {
        "changed": ["description", "settings"],
        "settings": {},
    }


def test_put_without_a_name_is_a_validation_error(owner):
    error = assert_envelope(put(owner.client, description="x"), 400, "VALIDATION_ERROR")

    assert "name" in error["details"]
    assert stored(owner).description == "Anvils"


def test_put_refuses_null_settings_values(owner):
    set_settings(owner, {"dataResidency": "eu"})

    error = assert_envelope(
        put(owner.client, name="Acme", settings={"dataResidency": None}), 400, "VALIDATION_ERROR"
    )

    assert "dataResidency" in error["details"]["settings"]
    assert stored(owner).settings == {"dataResidency": "eu"}


def test_patch_merges_settings_key_by_key_and_null_removes_a_key(owner):
    set_settings(owner, {"dataResidency": "eu", "maxUsers": 2, "hdsCompliant": False})

    response = patch(
        owner.client, settings={"dataResidency": None, "hdsCompliant": True, "maxDocuments": 10}
    )

    assert response.status_code == 200, response.content
    expected = {"maxUsers": 2, "hdsCompliant": True, "maxDocuments": 10}
    assert stored(owner).settings == expected == response.json()["settings"]


def test_patch_of_the_name_only_keeps_description_and_settings(owner):
    set_settings(owner, {"dataResidency": "eu"})

    response = patch(owner.client, name="Renamed")

    assert response.status_code == 200, response.content
    tenant = stored(owner)
    assert (tenant.name, tenant.description, tenant.settings) == (
        "Renamed",
        "Anvils",
        {"dataResidency": "eu"},
    )
    assert updates(tenant).get().payload == {"changed": ["name"]}


def test_removing_a_key_that_is_not_set_changes_nothing(owner):
    set_settings(owner, {"dataResidency": "eu"})

    response = patch(owner.client, settings={"maxUsers": None})

    assert response.status_code == 200, response.content
    assert stored(owner).settings == {"dataResidency": "eu"}
    assert not updates(owner.tenant).exists()


def test_plan_and_lifecycle_fields_in_the_body_are_refused_by_name(owner):
    response = put(
        owner.client,
        name="Acme",
        description="Anvils",
        plan=PlanTier.ENTERPRISE,
        subscription_tier=PlanTier.ENTERPRISE,
        status=TenantStatus.CANCELLED,
        slug="hijacked",
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {"plan", "subscription_tier", "status", "slug"}
    tenant = stored(owner)
    assert (tenant.plan, tenant.status, tenant.slug) == (
        PlanTier.FREE,
        owner.tenant.status,
        owner.tenant.slug,
    )
    assert not updates(tenant).exists()


def test_update_is_audited_with_the_changed_fields(owner):
    put(owner.client, name="Acme Two", description="Anvils", settings={"dataResidency": "us"})

    (event,) = updates(owner.tenant)
    assert event.actor_id == owner.user.pk
    assert event.payload == {"changed": ["name", "settings"], "settings": {"dataResidency": "us"}}


def test_an_unchanged_put_records_nothing(owner):
    set_settings(owner, {"dataResidency": "eu"})

    response = put(
        owner.client, name="Acme", description="Anvils", settings={"dataResidency": "eu"}
    )

    assert response.status_code == 200, response.content
    assert not updates(owner.tenant).exists()


# The settings schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("send", [put, patch])
def test_unknown_setting_is_refused_by_name(owner, send):
    error = assert_envelope(
        send(owner.client, name="Acme", settings={"maxUsers": 2, "max_users": 2, "theme": "x"}),
        400,
        "VALIDATION_ERROR",
    )

    assert set(error["details"]["settings"]) == {"max_users", "theme"}
    assert stored(owner).settings == {}


@pytest.mark.parametrize("value", ["5", 5.5, 5.0, True, False, 0, -1, 10**13, [5], {"n": 5}])
@pytest.mark.parametrize("key", [*LIMIT_KEYS, "rateLimitPerHour"])
def test_limit_settings_are_strict_positive_json_integers(owner, key, value):
    error = assert_envelope(patch(owner.client, settings={key: value}), 400, "VALIDATION_ERROR")

    assert key in error["details"]["settings"]
    assert stored(owner).settings == {}


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, "", [True]])
@pytest.mark.parametrize("key", ["hdsCompliant", "integration_enabled"])
def test_boolean_settings_are_strict_json_booleans(owner, key, value):
    error = assert_envelope(patch(owner.client, settings={key: value}), 400, "VALIDATION_ERROR")

    assert key in error["details"]["settings"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dataResidency", "mars"),
        ("dataResidency", "EU"),
        ("dataResidency", ""),
        ("default_ai_model", "gpt-5"),
        ("default_ai_model", "GPT-4"),
        ("default_ai_model", 4),
    ],
)
def test_choice_settings_refuse_unknown_values(owner, key, value):
    error = assert_envelope(patch(owner.client, settings={key: value}), 400, "VALIDATION_ERROR")

    assert key in error["details"]["settings"]


@pytest.mark.parametrize("settings", ["eu", ["dataResidency"], 5])
def test_settings_must_be_an_object(owner, settings):
    assert_envelope(put(owner.client, name="Acme", settings=settings), 400, "VALIDATION_ERROR")

    assert stored(owner).settings == {}


def test_every_documented_setting_is_accepted(owner):
    settings = {
        "dataResidency": "eu",
        "hdsCompliant": True,
        "maxDocuments": 100,
        "maxUsers": 3,
        "maxTokensPerMonth": 50_000,
        "maxStorageMB": 1_000,
        "maxApiCallsPerMonth": 10_000,
        "rateLimitPerHour": 10,
        "default_ai_model": "gpt-4-turbo",
        "integration_enabled": False,
    }

    response = put(owner.client, name="Acme", settings=settings)

    assert response.status_code == 200, response.content
    assert stored(owner).settings == settings


# Limits and the plan tier ------------------------------------------------------------------------


@pytest.mark.parametrize("key", LIMIT_KEYS)
def test_owner_cannot_raise_a_limit_above_the_plan(owner, key):
    error = assert_envelope(
        patch(owner.client, settings={key: FREE_CEILINGS[key] + 1}), 403, "INSUFFICIENT_PERMISSIONS"
    )

    assert set(error["details"]) == {key}
    assert str(FREE_CEILINGS[key]) in error["details"][key][0]
    assert stored(owner).settings == {}
    assert not updates(owner.tenant).exists()


def test_refusal_names_every_limit_above_the_plan(owner):
    error = assert_envelope(
        put(
            owner.client,
            name="Acme",
            settings={"maxUsers": 4, "maxDocuments": 101, "maxStorageMB": 5},
        ),
        403,
        "INSUFFICIENT_PERMISSIONS",
    )

    assert set(error["details"]) == {"maxUsers", "maxDocuments"}


@pytest.mark.parametrize("key", LIMIT_KEYS)
def test_owner_may_set_a_limit_up_to_the_plan_or_lower(owner, key):
    at_ceiling = patch(owner.client, settings={key: FREE_CEILINGS[key]})
    lowered = patch(owner.client, settings={key: 1})

    assert at_ceiling.status_code == lowered.status_code == 200, lowered.content
    assert stored(owner).settings == {key: 1}


def test_the_ceiling_follows_the_plan(owner):
    Tenant.objects.filter(pk=owner.tenant.pk).update(plan=PlanTier.PRO)

    allowed = patch(owner.client, settings={"maxUsers": 10})
    refused = patch(owner.client, settings={"maxUsers": 11})

    assert allowed.status_code == 200, allowed.content
    assert_envelope(refused, 403, "INSUFFICIENT_PERMISSIONS")
    assert stored(owner).settings == {"maxUsers": 10}


def test_staff_may_raise_limits_above_the_plan(staff, owner):
    response = put(staff, name="Acme", settings={"maxUsers": 500, "maxTokensPerMonth": 10**12})

    assert response.status_code == 200, response.content
    assert stored(owner).settings == {"maxUsers": 500, "maxTokensPerMonth": 10**12}
    assert updates(owner.tenant).get().actor_id == staff.user.pk


def test_owner_may_keep_a_limit_staff_raised_while_changing_other_settings(staff, owner):
    assert patch(staff, settings={"maxUsers": 50}).status_code == 200

    response = patch(owner.client, settings={"dataResidency": "uk"})

    assert response.status_code == 200, response.content
    assert stored(owner).settings == {"maxUsers": 50, "dataResidency": "uk"}


def test_owner_may_lower_a_limit_staff_raised_above_the_plan(staff, owner):
    """Lowering a limit never gains the tenant anything: it is the tenant's choice."""
    assert patch(staff, settings={"maxUsers": 50}).status_code == 200

    response = patch(owner.client, settings={"maxUsers": 40})

    assert response.status_code == 200, response.content
    assert stored(owner).settings == {"maxUsers": 40}


def test_owner_cannot_raise_a_staff_set_limit_further(staff, owner):
    assert patch(staff, settings={"maxUsers": 50}).status_code == 200

    assert_envelope(patch(owner.client, settings={"maxUsers": 51}), 403, "INSUFFICIENT_PERMISSIONS")

    assert stored(owner).settings == {"maxUsers": 50}


def test_rate_limit_per_hour_above_the_plan_rate_needs_staff(owner, staff, settings):
    settings.API_PLAN_RATES = {
        **settings.API_PLAN_RATES,
        "free": {"tenant": "100/hour"},
        "pro": {"tenant": "1000/hour"},
    }

    refused = patch(owner.client, settings={"rateLimitPerHour": 101})
    allowed = patch(owner.client, settings={"rateLimitPerHour": 100})
    lowered = patch(owner.client, settings={"rateLimitPerHour": 5})

    error = assert_envelope(refused, 403, "INSUFFICIENT_PERMISSIONS")
    assert set(error["details"]) == {"rateLimitPerHour"}
    assert allowed.status_code == lowered.status_code == 200
    assert stored(owner).settings == {"rateLimitPerHour": 5}
    assert patch(staff, settings={"rateLimitPerHour": 5_000}).status_code == 200
    assert stored(owner).settings == {"rateLimitPerHour": 5_000}


def test_rate_ceiling_is_read_from_the_tiers_rate_in_any_period(owner, settings):
    settings.API_PLAN_RATES = {**settings.API_PLAN_RATES, "free": {"tenant": "2/min"}}

    assert patch(owner.client, settings={"rateLimitPerHour": 120}).status_code == 200
    assert_envelope(
        patch(owner.client, settings={"rateLimitPerHour": 121}), 403, "INSUFFICIENT_PERMISSIONS"
    )


# Who may write -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "permissions"),
    [
        (Role.VIEWER, None),
        (Role.MEMBER, None),
        (Role.BILLING, None),
        (Role.DPO, None),
        (Role.OWNER, {"settings": {"write": False}}),
    ],
)
@pytest.mark.parametrize("send", [put, patch])
def test_caller_without_settings_write_cannot_update(make_caller, role, permissions, send):
    caller = make_caller(role, permissions=permissions)
    before = stored(caller)

    assert_envelope(
        send(caller.client, name="Mine", settings={"maxUsers": 1}), 403, "INSUFFICIENT_PERMISSIONS"
    )

    after = stored(caller)
    assert (after.name, after.settings) == (before.name, before.settings)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_owner_and_admin_may_update(make_caller, role):
    caller = make_caller(role)

    assert patch(caller.client, name="Theirs").status_code == 200
    assert stored(caller).name == "Theirs"


def test_member_granted_settings_write_may_update(make_caller):
    caller = make_caller(Role.MEMBER, permissions={"settings": {"write": True}})

    assert patch(caller.client, name="Granted").status_code == 200
    assert stored(caller).name == "Granted"


@pytest.mark.parametrize("status", [TenantStatus.SUSPENDED, TenantStatus.CANCELLED])
def test_blocked_tenant_may_read_but_not_update(owner, status):
    Tenant.objects.filter(pk=owner.tenant.pk).update(status=status)

    for send in (put, patch):
        assert_envelope(send(owner.client, name="Escaped"), 403, "TENANT_SUSPENDED")
    response = owner.client.get(ORG_URL)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == status
    assert response.json()["name"] == "Acme"
    assert not updates(owner.tenant).exists()


def test_non_member_naming_the_tenant_gets_404(owner, make_caller):
    outsider = make_caller()

    response = outsider.client_for(owner.tenant.pk).put(ORG_URL, {"name": "Mine"}, format="json")

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
    assert stored(owner).name == "Acme"


def test_member_who_left_cannot_update(owner):
    Membership.objects.filter(pk=owner.membership.pk).update(status="suspended")

    assert_envelope(patch(owner.client, name="Ghost"), 404, "RESOURCE_NOT_FOUND")
    assert stored(owner).name == "Acme"


# tenant_limits() ---------------------------------------------------------------------------------


def test_tenant_limits_follow_the_settings_in_counter_units():
    tenant = Tenant(
        plan=PlanTier.FREE,
        settings={"maxStorageMB": 10, "maxUsers": 2, "maxApiCallsPerMonth": 50_000},
    )

    limits = tenant_limits(tenant)

    assert limits == {
        **plan_limits(PlanTier.FREE),
        "storage": 10 * MIB,
        "users": 2,
        "api_calls": 50_000,
    }


@pytest.mark.parametrize("plan", list(PlanTier))
def test_tenant_limits_without_settings_are_the_tiers(plan):
    assert tenant_limits(Tenant(plan=plan, settings={})) == plan_limits(plan)


@pytest.mark.parametrize("junk", [True, 0, -5, "10", 2.5, None])
def test_tenant_limits_ignore_values_that_are_not_positive_integers(junk):
    tenant = Tenant(plan=PlanTier.PRO, settings={"maxUsers": junk, "maxStorageMB": junk})

    assert tenant_limits(tenant) == plan_limits(PlanTier.PRO)


def test_quotas_endpoint_shows_the_limits_set_in_settings(owner):
    patch(owner.client, settings={"maxStorageMB": 10, "maxDocuments": 7})

    body = owner.client.get(QUOTAS_URL).json()

    assert body["storage"]["limit"] == 10  # organizations/quotas shows storage in MB
    assert body["documents"]["limit"] == 7
    assert body["users"]["limit"] == 3


def test_settings_changes_apply_to_the_next_api_call_quota_check(owner):
    QuotaCounter.objects.create(tenant=owner.tenant, resource="api_calls", used=4)
    assert patch(owner.client, settings={"maxApiCallsPerMonth": 6}).status_code == 200  # 5th

    assert owner.client.get(ORG_URL).status_code == 200  # 6th
    error = assert_envelope(owner.client.get(ORG_URL), 429, "QUOTA_EXCEEDED")

    assert error["details"]["limit"] == 6
    assert quota_states(Tenant.objects.get(pk=owner.tenant.pk))["api_calls"].current == 6


@override_settings(QUOTA_WARNING_THRESHOLD=80.0)
def test_lowering_a_limit_is_effective_for_the_quota_objects(owner):
    QuotaCounter.objects.create(tenant=owner.tenant, resource="documents", used=8)

    patch(owner.client, settings={"maxDocuments": 10})
    documents = owner.client.get(QUOTAS_URL).json()["documents"]

    assert documents == {
        "resource": "documents",
        "current": 8,
        "limit": 10,
        "percentage": 80.0,
        "warning_threshold": 80.0,
        "exceeded": False,
    }


PARALLEL_CHANGES = [
    {"dataResidency": "eu"},
    {"hdsCompliant": True},
    {"default_ai_model": "gpt-4"},
    {"integration_enabled": True},
    {"support_auto_assign": True},
    {"support_apply_rules": False},
]


@pytest.mark.postgres
@pytest.mark.parametrize("route", ["organizations/current", "tenants/{slug}"])
def test_parallel_patches_of_different_settings_keep_every_key(
    route, transactional_db, monkeypatch
):
    """Six PATCHes at once, each setting one key: all six stay. Each PATCH's keys are merged
    into the settings as they are under the tenant's lock; merged into what the view had read,
    the last to commit would put back the keys the others changed."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    tenant = TenantFactory(settings={"maxUsers": 5})
    owner = MembershipFactory(tenant=tenant, user=UserFactory(), role=Role.OWNER).user
    token = token_for(owner)
    changes = iter(PARALLEL_CHANGES)
    url = "/api/v1/" + route.format(slug=tenant.slug)

    def patch():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}", HTTP_X_ORGANIZATION_ID=tenant.slug)
        return client.patch(url, {"settings": next(changes)}, format="json")

    statuses = [response.status_code for response in race(len(PARALLEL_CHANGES), patch)]

    assert statuses == [200] * len(PARALLEL_CHANGES)
    expected = {"maxUsers": 5}
    for change in PARALLEL_CHANGES:
        expected.update(change)
    assert Tenant.objects.get(pk=tenant.pk).settings == expected
