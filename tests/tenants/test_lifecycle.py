"""The tenant directory by slug (GET, PATCH, DELETE), the lifecycle actions (activate, suspend,
restore, cancel), what a suspension does to the very next request, and creation's quota rows."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils.dateparse import parse_datetime

from accounts.models import APIKey, User
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import chain_verify, chains_seal_all, checkpoints_issue_all
from config.exceptions import Conflict
from tenants.models import (
    Membership,
    PlanTier,
    QuotaCounter,
    Role,
    Tenant,
    TenantStatus,
)
from tenants.plans import first_of_next_month
from tenants.services import lifecycle
from tests.conftest import assert_envelope
from tests.factories import (
    MembershipFactory,
    TenantFactory,
    UserFactory,
    issue_api_key,
)

pytestmark = pytest.mark.django_db

TENANTS_URL = "/api/v1/tenants/"
ORG_URL = "/api/v1/organizations/current"
QUOTAS_URL = "/api/v1/organizations/quotas"
API_KEYS_URL = "/api/v1/api-keys/"
FROZEN = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)

TRIAL, ACTIVE = TenantStatus.TRIAL, TenantStatus.ACTIVE
SUSPENDED, CANCELLED = TenantStatus.SUSPENDED, TenantStatus.CANCELLED
LIFECYCLE_ACTIONS = ("activate", "suspend", "restore", "cancel")

# The tenant's flat quota object: API calls, AI tokens, storage (GB), users, the quota period
# and documents.
QUOTA_KEYS = {
    "api_calls_limit", "api_calls_used", "api_calls_percentage",
    "ai_tokens_limit", "ai_tokens_used", "ai_tokens_percentage",
    "storage_limit_gb", "storage_used_gb", "storage_percentage",
    "documents_limit", "documents_used", "documents_percentage",
    "max_users", "current_users", "quota_reset_at", "last_reset_at",
}  # fmt: skip


def url(slug: str, action: str | None = None) -> str:
    return f"{TENANTS_URL}{slug}/" + (f"{action}/" if action else "")


def snapshot(tenant: Tenant) -> dict:
    """Every stored column of the tenant, for "nothing changed" checks."""
    return Tenant.objects.filter(pk=tenant.pk).values().get()


def events(tenant, event_type: str | None = None):
    queryset = AuditEvent.objects.filter(tenant=tenant)
    if event_type:
        queryset = queryset.filter(event_type=event_type)
    return queryset


def key_client(api_client, raw_key: str):
    api_client.credentials(HTTP_X_API_KEY=raw_key)
    return api_client


@pytest.fixture
def tenant():
    return TenantFactory(slug="acme", name="Acme", status=ACTIVE, plan=PlanTier.FREE)


@pytest.fixture
def owner_of(make_caller):
    def make(tenant, role=Role.OWNER, **kwargs):
        return make_caller(role, tenant=tenant, **kwargs)

    return make


# GET /tenants/{slug}/ ---------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["acme", "ACME", "AcMe"])
def test_member_retrieves_their_tenant_by_slug_in_any_case(tenant, owner_of, spelling):
    viewer = owner_of(tenant, Role.VIEWER)

    response = viewer.client.get(url(spelling))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == str(tenant.pk)
    assert body["slug"] == "acme"
    assert body["user_count"] == 1
    assert set(body["quota"]) == QUOTA_KEYS


def test_staff_retrieve_any_tenant_by_slug_in_any_case(staff_client, tenant):
    response = staff_client.get(url("Acme"))

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(tenant.pk)
    assert response.json()["user_count"] == 0


def test_non_member_gets_the_same_404_as_for_an_unknown_slug(tenant, make_caller):
    outsider = make_caller()

    hidden = assert_envelope(outsider.client.get(url("acme")), 404, "RESOURCE_NOT_FOUND")
    unknown = assert_envelope(outsider.client.get(url("no-such-tenant")), 404, "RESOURCE_NOT_FOUND")

    assert hidden["message"] == unknown["message"]
    assert hidden["details"] == unknown["details"]


@pytest.mark.parametrize("status", ["suspended", "invited"])
def test_member_without_an_active_membership_gets_404(tenant, owner_of, status):
    caller = owner_of(tenant)
    Membership.objects.filter(pk=caller.membership.pk).update(status=status)

    assert_envelope(caller.client.get(url("acme")), 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", TENANTS_URL), ("get", url("acme")), ("get", url("acme", "quota"))],
)
def test_api_key_is_refused_on_the_directory(api_client, tenant, owner_of, method, path):
    _, raw = issue_api_key(owner_of(tenant).membership, scopes=("read", "write"))

    response = getattr(key_client(api_client, raw), method)(path)

    error = assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert "API key" in error["message"]


def test_api_key_cannot_patch_its_tenant_through_the_directory(api_client, tenant, owner_of):
    _, raw = issue_api_key(owner_of(tenant).membership, scopes=("read", "write"))

    response = key_client(api_client, raw).patch(url("acme"), {"name": "Hijack"}, format="json")

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert Tenant.objects.get(pk=tenant.pk).name == "Acme"


# PATCH /tenants/{slug}/ -------------------------------------------------------------------------


def test_staff_patch_every_field_including_the_tier(staff_client, tenant):
    data = {
        "name": "Acme Global",
        "slug": "acme-global",
        "description": "Rockets",
        "domain": "acme.example.com",
        "subscription_tier": PlanTier.ENTERPRISE,
        "contact_email": "ceo@acme.example.com",
        "contact_name": "Wile E.",
        "contact_phone": "+61400000000",
        "billing_email": "billing@acme.example.com",
        "settings": {"maxUsers": 500, "dataResidency": "eu"},
    }

    response = staff_client.patch(url("acme"), data, format="json")

    assert response.status_code == 200, response.content
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.plan == PlanTier.ENTERPRISE
    assert stored.settings == {"maxUsers": 500, "dataResidency": "eu"}
    for field in ("name", "slug", "description", "domain", "contact_email", "contact_name",
                  "contact_phone", "billing_email"):  # fmt: skip
        assert getattr(stored, field) == data[field], field
    body = response.json()
    assert body["subscription_tier"] == PlanTier.ENTERPRISE
    assert body["slug"] == "acme-global"
    assert body["quota"]["max_users"] == 500
    (event,) = events(tenant, "tenant.updated")
    assert event.actor_id == staff_client.user.pk
    assert event.payload["changed"] == sorted(
        ["name", "slug", "description", "domain", "plan", "contact_email", "contact_name",
         "contact_phone", "billing_email", "settings"]
    )  # fmt: skip
    assert event.payload["plan"] == {"old": PlanTier.FREE, "new": PlanTier.ENTERPRISE}
    assert event.payload["settings"] == {"maxUsers": 500, "dataResidency": "eu"}


def test_renamed_slug_answers_and_the_old_one_is_gone(staff_client, tenant):
    response = staff_client.patch(url("acme"), {"slug": "Road-Runner"}, format="json")

    assert response.status_code == 200, response.content

    assert Tenant.objects.get(pk=tenant.pk).slug == "road-runner"
    assert staff_client.get(url("road-runner")).status_code == 200
    assert_envelope(staff_client.get(url("acme")), 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("taken", ["globex", "GLOBEX"])
def test_patching_to_a_taken_slug_is_a_validation_error(staff_client, tenant, taken):
    TenantFactory(slug="globex")

    error = assert_envelope(
        staff_client.patch(url("acme"), {"slug": taken}, format="json"), 400, "VALIDATION_ERROR"
    )

    assert "slug" in error["details"]
    assert Tenant.objects.get(pk=tenant.pk).slug == "acme"
    assert not events(tenant, "tenant.updated").exists()


def test_slug_taken_between_validation_and_update_is_a_conflict(tenant):
    """The service re-checks under the row lock: a race the serializer cannot see is a 409."""
    TenantFactory(slug="globex")
    staff = UserFactory(is_staff=True)

    with pytest.raises(Conflict), transaction.atomic():
        lifecycle.tenant_update(tenant=tenant, actor=staff, data={"slug": "globex"})

    assert Tenant.objects.get(pk=tenant.pk).slug == "acme"
    assert not events(tenant, "tenant.updated").exists()


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owner_or_admin_patches_contact_fields(tenant, owner_of, role):
    caller = owner_of(tenant, role)

    response = caller.client.patch(
        url("acme"),
        {"contact_name": "Road Runner", "contact_email": "rr@acme.example.com"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["contact_name"] == "Road Runner"
    stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.contact_name, stored.contact_email) == ("Road Runner", "rr@acme.example.com")
    (event,) = events(tenant, "tenant.updated")
    assert event.actor_id == caller.user.pk
    assert event.payload == {"changed": ["contact_email", "contact_name"]}


def test_member_granted_settings_write_may_patch(tenant, owner_of):
    caller = owner_of(tenant, Role.MEMBER, permissions={"settings": {"write": True}})

    response = caller.client.patch(url("acme"), {"contact_name": "Granted"}, format="json")

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=tenant.pk).contact_name == "Granted"


@pytest.mark.parametrize(
    ("role", "permissions"),
    [
        (Role.VIEWER, None),
        (Role.MEMBER, None),
        (Role.BILLING, None),
        (Role.ADMIN, {"settings": {"write": False}}),
    ],
)
def test_caller_without_settings_write_cannot_patch(tenant, owner_of, role, permissions):
    caller = owner_of(tenant, role, permissions=permissions)
    before = snapshot(tenant)

    response = caller.client.patch(url("acme"), {"contact_name": "Nope"}, format="json")

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert snapshot(tenant) == before
    assert not events(tenant, "tenant.updated").exists()


def test_owner_cannot_change_the_tier(tenant, owner_of):
    caller = owner_of(tenant)

    response = caller.client.patch(
        url("acme"), {"subscription_tier": PlanTier.ENTERPRISE, "contact_name": "X"}, format="json"
    )

    error = assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert "subscription_tier" in error["details"]
    stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.plan, stored.contact_name) == (PlanTier.FREE, "")
    assert not events(tenant, "tenant.updated").exists()


def test_owner_sending_the_current_tier_is_not_a_plan_change(tenant, owner_of):
    caller = owner_of(tenant)

    body = {"subscription_tier": PlanTier.FREE, "contact_name": "Same tier"}

    response = caller.client.patch(url("acme"), body, format="json")

    assert response.status_code == 200, response.content
    assert events(tenant, "tenant.updated").get().payload == {"changed": ["contact_name"]}


def test_owner_patch_merges_settings_key_by_key_and_null_removes(tenant, owner_of):
    tenant.settings = {"dataResidency": "eu", "maxDocuments": 50, "hdsCompliant": False}
    tenant.save()
    caller = owner_of(tenant)

    response = caller.client.patch(
        url("acme"),
        {"settings": {"hdsCompliant": True, "dataResidency": None, "maxUsers": 2}},
        format="json",
    )

    assert response.status_code == 200, response.content
    expected = {"maxDocuments": 50, "hdsCompliant": True, "maxUsers": 2}
    assert Tenant.objects.get(pk=tenant.pk).settings == expected
    assert response.json()["settings"] == expected
    assert response.json()["quota"]["max_users"] == 2
    assert events(tenant, "tenant.updated").get().payload == {
        "changed": ["settings"],
        "settings": expected,
    }


def test_owner_patch_with_a_limit_above_the_plan_is_refused(tenant, owner_of):
    caller = owner_of(tenant)

    response = caller.client.patch(url("acme"), {"settings": {"maxUsers": 4}}, format="json")

    error = assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert set(error["details"]) == {"maxUsers"}
    assert Tenant.objects.get(pk=tenant.pk).settings == {}


def test_patch_with_an_unknown_setting_names_it(tenant, owner_of):
    caller = owner_of(tenant)

    response = caller.client.patch(
        url("acme"), {"settings": {"maxUsers": 2, "colour": "red"}}, format="json"
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "colour" in error["details"]["settings"]
    assert Tenant.objects.get(pk=tenant.pk).settings == {}


def test_lifecycle_fields_in_a_patch_body_are_refused_by_name(tenant, owner_of):
    tenant.status = TRIAL
    tenant.save()
    caller = owner_of(tenant)

    response = caller.client.patch(
        url("acme"),
        {"status": ACTIVE, "activated_at": "2020-01-01T00:00:00Z", "contact_name": "Sneaky"},
        format="json",
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert set(error["details"]) == {"status", "activated_at"}
    stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.status, stored.activated_at, stored.contact_name) == (TRIAL, None, "")


@pytest.mark.parametrize("status", [SUSPENDED, CANCELLED])
def test_owner_of_a_blocked_tenant_cannot_patch_it_through_the_directory(tenant, owner_of, status):
    """The directory must not be a way around 403 TENANT_SUSPENDED on organizations/current."""
    caller = owner_of(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(status=status)

    response = caller.client.patch(url("acme"), {"settings": {"maxUsers": 1}}, format="json")

    assert_envelope(response, 403, "TENANT_SUSPENDED")
    assert Tenant.objects.get(pk=tenant.pk).settings == {}


def test_staff_may_patch_a_suspended_tenant(staff_client, tenant):
    Tenant.objects.filter(pk=tenant.pk).update(status=SUSPENDED)

    response = staff_client.patch(url("acme"), {"contact_name": "Collections"}, format="json")

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=tenant.pk).contact_name == "Collections"


def test_non_member_patch_is_404(tenant, make_caller):
    outsider = make_caller()

    response = outsider.client.patch(url("acme"), {"name": "Mine"}, format="json")

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
    assert Tenant.objects.get(pk=tenant.pk).name == "Acme"


# Lifecycle transitions ----------------------------------------------------------------------------

# (action, from status) -> resulting status; every pair not listed is illegal (409).
LEGAL = {
    ("activate", TRIAL): ACTIVE,
    ("suspend", TRIAL): SUSPENDED,
    ("suspend", ACTIVE): SUSPENDED,
    ("restore", SUSPENDED): None,  # active if ever activated, else trial
    ("restore", CANCELLED): None,
    ("cancel", TRIAL): CANCELLED,
    ("cancel", ACTIVE): CANCELLED,
    ("cancel", SUSPENDED): CANCELLED,
}
ILLEGAL = [
    (action, status)
    for action in LIFECYCLE_ACTIONS
    for status in TenantStatus.values
    if (action, status) not in LEGAL
]
EVENT_TYPES = {
    "activate": "tenant.activated",
    "suspend": "tenant.suspended",
    "restore": "tenant.restored",
    "cancel": "tenant.cancelled",
}


def tenant_in(status: str, *, activated: bool = True) -> Tenant:
    """A tenant in `status` with the timestamps a tenant in that status would have."""
    earlier = FROZEN - timedelta(days=3)
    fields = {"status": status, "activated_at": earlier if activated else None}
    if status in (SUSPENDED, CANCELLED):
        fields |= {"suspended_at": earlier, "suspension_reason": "Payment overdue"}
    if status == CANCELLED:
        fields["cancelled_at"] = earlier
    if status == TRIAL:
        fields |= {"activated_at": None}
    return TenantFactory(slug="acme", **fields)


def act(client, action: str, body: dict | None = None):
    if action == "suspend" and body is None:
        body = {"reason": "Payment overdue"}
    return client.post(url("acme", action), body or {}, format="json")


def test_activate_moves_a_trial_to_active_and_stamps_activated_at(staff_client):
    tenant = tenant_in(TRIAL)

    with time_machine.travel(FROZEN, tick=False):
        response = act(staff_client, "activate")

    assert response.status_code == 200, response.content
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.status == ACTIVE
    assert stored.activated_at == FROZEN
    assert response.json()["status"] == ACTIVE
    assert parse_datetime(response.json()["activated_at"]) == FROZEN


@pytest.mark.parametrize("start", [TRIAL, ACTIVE])
def test_suspend_stamps_the_time_and_keeps_the_reason(staff_client, start):
    tenant = tenant_in(start, activated=start == ACTIVE)

    with time_machine.travel(FROZEN, tick=False):
        response = act(staff_client, "suspend", {"reason": "Chargeback under review"})

    assert response.status_code == 200, response.content
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.status == SUSPENDED
    assert stored.suspended_at == FROZEN
    assert stored.suspension_reason == "Chargeback under review"
    body = response.json()
    assert body["status"] == SUSPENDED
    assert parse_datetime(body["suspended_at"]) == FROZEN
    assert body["suspension_reason"] == "Chargeback under review"


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}])
def test_suspend_without_a_usable_reason_is_a_validation_error(staff_client, body):
    tenant = tenant_in(ACTIVE)
    before = snapshot(tenant)

    error = assert_envelope(
        staff_client.post(url("acme", "suspend"), body, format="json"), 400, "VALIDATION_ERROR"
    )

    assert "reason" in error["details"]
    assert snapshot(tenant) == before
    assert not events(tenant).exists()


@pytest.mark.parametrize("start", [SUSPENDED, CANCELLED])
@pytest.mark.parametrize(("activated", "expected"), [(True, ACTIVE), (False, TRIAL)])
def test_restore_returns_to_active_if_ever_activated_else_trial(
    staff_client, start, activated, expected
):
    tenant = tenant_in(start, activated=activated)
    activated_at = tenant.activated_at

    response = act(staff_client, "restore")

    assert response.status_code == 200, response.content
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.status == expected == response.json()["status"]
    assert stored.activated_at == activated_at
    assert (stored.suspended_at, stored.suspension_reason, stored.cancelled_at) == (None, "", None)
    assert response.json()["suspended_at"] is None
    assert response.json()["suspension_reason"] == ""


@pytest.mark.parametrize("start", [TRIAL, ACTIVE, SUSPENDED])
def test_cancel_stamps_cancelled_at(staff_client, start):
    tenant = tenant_in(start, activated=start != TRIAL)

    with time_machine.travel(FROZEN, tick=False):
        response = act(staff_client, "cancel")

    assert response.status_code == 200, response.content
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.status == CANCELLED == response.json()["status"]
    assert stored.cancelled_at == FROZEN


@pytest.mark.parametrize(("action", "start"), list(LEGAL), ids=map("-from-".join, LEGAL))
def test_every_legal_transition_is_audited_with_from_and_to(staff_client, action, start):
    tenant = tenant_in(start)

    response = act(staff_client, action)

    assert response.status_code == 200, response.content
    stored = Tenant.objects.get(pk=tenant.pk)
    expected = LEGAL[(action, start)] or ACTIVE
    assert stored.status == expected
    (event,) = events(tenant, EVENT_TYPES[action])
    assert event.actor_id == staff_client.user.pk
    assert event.payload["from"] == start
    assert event.payload["to"] == expected
    assert events(tenant).count() == 1


def test_suspension_event_carries_the_reason(staff_client):
    tenant = tenant_in(ACTIVE)

    act(staff_client, "suspend", {"reason": "Abuse report #42"})

    assert events(tenant, "tenant.suspended").get().payload == {
        "from": ACTIVE,
        "to": SUSPENDED,
        "reason": "Abuse report #42",
    }


def test_restore_event_has_no_stale_reason(staff_client):
    tenant = tenant_in(SUSPENDED)

    act(staff_client, "restore")

    assert events(tenant, "tenant.restored").get().payload == {"from": SUSPENDED, "to": ACTIVE}


@pytest.mark.parametrize(("action", "start"), ILLEGAL, ids=map("-from-".join, ILLEGAL))
def test_every_illegal_transition_is_a_conflict_that_changes_nothing(staff_client, action, start):
    tenant = tenant_in(start)
    before = snapshot(tenant)

    error = assert_envelope(act(staff_client, action), 409, "CONFLICT")

    assert error["details"]["status"] == start
    assert start not in error["details"]["allowed_from"]
    assert start in error["message"]
    assert snapshot(tenant) == before
    assert not events(tenant).exists()


def test_the_illegal_transition_table_is_complete():
    """Each action is legal from some statuses and illegal from the rest: 16 pairs in all."""
    assert len(LEGAL) + len(ILLEGAL) == len(LIFECYCLE_ACTIONS) * len(TenantStatus.values)
    assert len(ILLEGAL) == 8


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
@pytest.mark.parametrize("action", [*LIFECYCLE_ACTIONS, "reset_quota"])
def test_non_staff_are_refused_every_lifecycle_action(owner_of, role, action):
    tenant = tenant_in(SUSPENDED if action == "restore" else TRIAL)
    caller = owner_of(tenant, role)
    before = snapshot(tenant)

    assert_envelope(act(caller.client, action), 403, "INSUFFICIENT_PERMISSIONS")

    assert snapshot(tenant) == before
    assert not events(tenant).exists()


@pytest.mark.parametrize("action", LIFECYCLE_ACTIONS)
def test_lifecycle_action_on_an_unknown_slug_is_404(staff_client, action):
    assert_envelope(
        staff_client.post(url("no-such", action), {"reason": "x"}, format="json"),
        404,
        "RESOURCE_NOT_FOUND",
    )


def test_lifecycle_actions_accept_the_slug_in_any_case(staff_client):
    tenant = tenant_in(TRIAL)

    response = staff_client.post(url("ACME", "activate"))

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=tenant.pk).status == ACTIVE


# A blocked tenant on the very next request ------------------------------------------------------


@pytest.mark.parametrize("block", ["suspend", "cancel"])
def test_blocked_tenant_refuses_its_members_next_request_until_restored(
    staff_client, owner_of, block
):
    tenant = tenant_in(ACTIVE)
    caller = owner_of(tenant)
    assert caller.client.get(API_KEYS_URL).status_code == 200
    assert caller.client.get(QUOTAS_URL).status_code == 200

    assert act(staff_client, block).status_code == 200

    for path in (API_KEYS_URL, QUOTAS_URL):
        error = assert_envelope(caller.client.get(path), 403, "TENANT_SUSPENDED")
        assert error["details"] == {}
    current = caller.client.get(ORG_URL)
    assert current.status_code == 200, current.content
    assert current.json()["status"] == Tenant.objects.get(pk=tenant.pk).status

    assert act(staff_client, "restore").status_code == 200

    assert caller.client.get(API_KEYS_URL).status_code == 200
    assert caller.client.get(QUOTAS_URL).status_code == 200
    assert caller.client.get(ORG_URL).json()["status"] == ACTIVE


@pytest.mark.parametrize("block", ["suspend", "cancel"])
def test_blocked_tenant_refuses_its_api_keys_next_request_until_restored(
    staff_client, owner_of, api_client, block
):
    tenant = tenant_in(ACTIVE)
    _, raw = issue_api_key(owner_of(tenant).membership, scopes=("read",))
    client = key_client(api_client, raw)
    assert client.get(QUOTAS_URL).status_code == 200

    assert act(staff_client, block).status_code == 200

    assert_envelope(client.get(QUOTAS_URL), 403, "TENANT_SUSPENDED")
    assert_envelope(client.get(API_KEYS_URL), 403, "TENANT_SUSPENDED")
    current = client.get(ORG_URL)
    assert current.status_code == 200, current.content
    assert current.json()["id"] == str(tenant.pk)

    assert act(staff_client, "restore").status_code == 200

    quotas = client.get(QUOTAS_URL)
    assert quotas.status_code == 200, quotas.content
    assert quotas.json()["organization_id"] == str(tenant.pk)


def test_blocked_requests_do_not_count_api_calls(staff_client, owner_of):
    tenant = tenant_in(ACTIVE)
    caller = owner_of(tenant)
    act(staff_client, "suspend")

    for _ in range(3):
        assert_envelope(caller.client.get(QUOTAS_URL), 403, "TENANT_SUSPENDED")

    assert not QuotaCounter.objects.filter(tenant=tenant, resource="api_calls", used__gt=0).exists()


# DELETE /tenants/{slug}/ ------------------------------------------------------------------------


@pytest.fixture
def populated(staff_client, make_caller):
    """A tenant created through the API, with a second member, an API key, quota usage and a
    sealed, checkpointed audit chain; plus a bystander tenant that must not be touched."""
    creator = make_caller()
    creator.membership.delete()
    client = creator.client_for(None)
    created = client.post(TENANTS_URL, {"name": "Doomed", "slug": "doomed"}, format="json")
    assert created.status_code == 201, created.content
    tenant = Tenant.objects.get(slug="doomed")
    creator_membership = Membership.objects.get(tenant=tenant)
    member = MembershipFactory(tenant=tenant, role=Role.MEMBER)
    issue_api_key(creator_membership)
    QuotaCounter.objects.filter(tenant=tenant, resource="api_calls").update(used=7)
    assert staff_client.post(url("doomed", "activate")).status_code == 200
    bystander = TenantFactory(slug="bystander")
    MembershipFactory(tenant=bystander, user=creator.user)
    with transaction.atomic():
        lifecycle.tenant_update(tenant=bystander, actor=None, data={"contact_name": "Kept"})
    chains_seal_all()
    checkpoints_issue_all()
    assert AuditCheckpoint.objects.filter(tenant=tenant).exists()
    return {
        "tenant": tenant,
        "users": [creator.user, member.user],
        "bystander": bystander,
        "events": events(tenant).count(),
    }


def test_staff_delete_removes_the_tenant_and_all_its_data(staff_client, populated):
    tenant, bystander = populated["tenant"], populated["bystander"]
    bystander_events = events(bystander).count()

    response = staff_client.delete(url("Doomed"))

    assert response.status_code == 204, response.content
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert not Membership.objects.filter(tenant_id=tenant.pk).exists()
    assert not APIKey.objects.filter(tenant_id=tenant.pk).exists()
    assert not QuotaCounter.objects.filter(tenant_id=tenant.pk).exists()
    assert not AuditEvent.objects.filter(tenant_id=tenant.pk).exists()
    assert not AuditCheckpoint.objects.filter(tenant_id=tenant.pk).exists()
    for user in populated["users"]:
        assert User.objects.filter(pk=user.pk).exists()
    assert Tenant.objects.filter(pk=bystander.pk).exists()
    assert events(bystander).count() == bystander_events
    assert Membership.objects.filter(tenant=bystander).count() == 1


def test_delete_leaves_tenant_deleted_and_chain_purged_on_the_platform_chain(
    staff_client, populated
):
    tenant = populated["tenant"]

    staff_client.delete(url("doomed"))

    deleted = AuditEvent.objects.get(event_type="tenant.deleted")
    assert deleted.tenant_id is None
    assert deleted.actor_id == staff_client.user.pk
    assert deleted.payload["tenant_id"] == str(tenant.pk)
    assert deleted.payload["slug"] == "doomed"
    assert deleted.payload["name"] == "Doomed"
    assert deleted.payload["members"] == 2
    purged = AuditEvent.objects.get(event_type="audit.chain.purged")
    assert purged.tenant_id is None
    assert purged.payload["tenant_id"] == str(tenant.pk)
    assert purged.payload["events_deleted"] == populated["events"]
    assert purged.payload["last_seq"] == populated["events"]


def test_platform_chain_still_verifies_after_a_tenant_deletion(staff_client, populated):
    staff_client.delete(url("doomed"))

    chains_seal_all()
    checkpoints_issue_all()
    result = chain_verify(tenant_id=None)
    bystander = chain_verify(tenant_id=populated["bystander"].pk)

    platform_events = AuditEvent.objects.filter(tenant__isnull=True)
    assert platform_events.filter(event_type="tenant.deleted").exists()
    assert result.chain_valid, result
    assert result.verified_count == platform_events.count()
    assert bystander.chain_valid, bystander


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_only_staff_may_delete_a_tenant(owner_of, role):
    tenant = tenant_in(ACTIVE)
    caller = owner_of(tenant, role)

    assert_envelope(caller.client.delete(url("acme")), 403, "INSUFFICIENT_PERMISSIONS")

    assert Tenant.objects.filter(pk=tenant.pk).exists()
    assert Membership.objects.filter(tenant=tenant).count() == 1
    assert not AuditEvent.objects.filter(event_type="tenant.deleted").exists()


def test_non_staff_delete_is_refused_alike_for_a_foreign_and_an_unknown_slug(make_caller, tenant):
    outsider = make_caller()

    foreign = assert_envelope(outsider.client.delete(url("acme")), 403, "INSUFFICIENT_PERMISSIONS")
    unknown = assert_envelope(outsider.client.delete(url("nope")), 403, "INSUFFICIENT_PERMISSIONS")

    assert foreign["message"] == unknown["message"]
    assert Tenant.objects.filter(pk=tenant.pk).exists()


# POST /tenants/ and the quota object ------------------------------------------------------------


@pytest.fixture
def new_user_client(make_caller):
    caller = make_caller()
    caller.membership.delete()
    client = caller.client_for(None)
    client.user = caller.user
    return client


def test_created_tenant_has_its_owner_counters_and_quota_period(new_user_client):
    now = datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC)

    with time_machine.travel(now, tick=False):
        response = new_user_client.post(TENANTS_URL, {"name": "Fresh"}, format="json")

    assert response.status_code == 201, response.content
    tenant = Tenant.objects.get(pk=response.json()["id"])
    membership = Membership.objects.get(tenant=tenant)
    assert (membership.user, membership.role) == (new_user_client.user, Role.OWNER)
    counters = dict(QuotaCounter.objects.filter(tenant=tenant).values_list("resource", "used"))
    assert counters == {"documents": 0, "tokens": 0, "storage": 0, "api_calls": 0}
    assert tenant.quota_reset_at == first_of_next_month(now) == datetime(2026, 2, 1, tzinfo=UTC)
    quota = response.json()["quota"]
    assert parse_datetime(quota["quota_reset_at"]) == tenant.quota_reset_at
    assert parse_datetime(quota["last_reset_at"]) == now


def test_quota_object_is_the_flat_quota_in_list_and_retrieve(new_user_client):
    created = new_user_client.post(TENANTS_URL, {"name": "Fresh", "slug": "fresh"}, format="json")
    tenant = Tenant.objects.get(pk=created.json()["id"])
    Tenant.objects.filter(pk=tenant.pk).update(plan="pro")  # as staff would
    QuotaCounter.objects.filter(tenant=tenant, resource="api_calls").update(used=25_000)
    QuotaCounter.objects.filter(tenant=tenant, resource="storage").update(used=512 * 1024 * 1024)

    (listed,) = new_user_client.get(TENANTS_URL).json()["results"]
    retrieved = new_user_client.get(url("fresh")).json()

    assert listed["quota"] == retrieved["quota"]
    quota = retrieved["quota"]
    assert set(quota) == QUOTA_KEYS
    assert quota["api_calls_limit"] == 100_000
    assert quota["api_calls_used"] == 25_000
    assert quota["api_calls_percentage"] == 25.0
    assert quota["ai_tokens_limit"] == 200_000
    assert quota["ai_tokens_used"] == 0
    assert quota["storage_limit_gb"] == round(5_000 / 1024, 2)
    assert quota["storage_used_gb"] == 0.5
    assert quota["storage_percentage"] == round(512 * 100 / 5_000, 2)
    assert quota["max_users"] == 10
    assert quota["current_users"] == 1 == retrieved["user_count"]


def test_tenant_quota_endpoint_matches_the_embedded_quota(new_user_client):
    new_user_client.post(TENANTS_URL, {"name": "Fresh", "slug": "fresh"}, format="json")

    quota = new_user_client.get(url("fresh", "quota"))

    assert quota.status_code == 200, quota.content
    assert quota.json() == new_user_client.get(url("fresh")).json()["quota"]


def list_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(TENANTS_URL)
    assert response.status_code == 200, response.content
    return len(queries)


def populate(count: int) -> None:
    for _ in range(count):
        membership = MembershipFactory()
        QuotaCounter.objects.create(tenant=membership.tenant, resource="api_calls", used=3)


def test_list_query_count_does_not_grow_with_the_number_of_tenants(staff_client):
    populate(2)
    few = list_queries(staff_client)
    populate(8)

    many = list_queries(staff_client)

    assert staff_client.get(TENANTS_URL).json()["count"] == 10
    assert many == few


def test_member_list_query_count_does_not_grow_with_their_tenants(make_caller):
    caller = make_caller()
    few = list_queries(caller.client)
    for _ in range(6):
        MembershipFactory(user=caller.user)

    many = list_queries(caller.client)

    assert caller.client.get(TENANTS_URL).json()["count"] == 7
    assert many == few
