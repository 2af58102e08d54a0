"""TenantAdmin, the back-office: usage columns, inlines, lifecycle and quota actions, saving and
deleting through the services (same rules and audit events as the API)."""

import json
from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib.messages import constants as message_levels
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import APIKey, User
from audit.models import AuditEvent
from tenants.models import Membership, PlanTier, QuotaCounter, Role, Tenant, TenantStatus
from tenants.plans import MIB, first_of_next_month
from tenants.services import lifecycle
from tests.factories import MembershipFactory, TenantFactory, UserFactory, issue_api_key
from tests.project import admin_form_data

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tenants_tenant_changelist")
ADD = reverse("admin:tenants_tenant_add")
NOW = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


def change_url(tenant) -> str:
    return reverse("admin:tenants_tenant_change", args=[tenant.pk])


def delete_url(tenant) -> str:
    return reverse("admin:tenants_tenant_delete", args=[tenant.pk])


@pytest.fixture
def staff_user():
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def made_by_service(name="Acme", slug="acme", *, plan=PlanTier.FREE, members=0) -> Tenant:
    """A tenant created like the API does (counters, audit events), with `members` members."""
    with transaction.atomic():
        tenant = lifecycle.tenant_create(actor=None, name=name, slug=slug, plan=plan)
    for _ in range(members):
        MembershipFactory(tenant=tenant, role=Role.MEMBER)
    return tenant


def set_usage(tenant, **used) -> None:
    for resource, value in used.items():
        QuotaCounter.objects.update_or_create(
            tenant=tenant, resource=resource, defaults={"used": value}
        )


def run_action(client, action: str, tenants, **extra):
    data = {"action": action, "_selected_action": [str(t.pk) for t in tenants], **extra}
    return client.post(CHANGELIST, data, follow=True)


def messages_of(response) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


def events(tenant, event_type=None):
    queryset = AuditEvent.objects.filter(tenant=tenant)
    return queryset.filter(event_type=event_type) if event_type else queryset


def row(tenant) -> dict:
    return Tenant.objects.filter(pk=tenant.pk).values().get()


# Changelist ---------------------------------------------------------------------------------------


def test_changelist_shows_status_plan_and_usage_percentages(admin_client):
    tenant = made_by_service(members=2)
    set_usage(tenant, api_calls=5_000, tokens=50_000, storage=250 * MIB)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    (result,) = response.context["cl"].result_list
    admin = response.context["cl"].model_admin
    assert result.status == TenantStatus.TRIAL
    assert admin.member_count(result) == 2
    assert admin.api_calls_usage(result) == "50%"
    assert admin.tokens_usage(result) == "100% (exceeded)"
    assert admin.storage_usage(result) == "25%"
    html = response.content.decode()
    for text in ("Trial", "Free", "50%", "100% (exceeded)", "25%"):
        assert f">{text}<" in html, text


def test_changelist_query_count_does_not_grow_with_rows(admin_client):
    def add(count):
        for _ in range(count):
            tenant = made_by_service(name="T", slug=None, members=1)
            set_usage(tenant, api_calls=10, tokens=10, storage=MIB)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(captured)

    add(2)
    few = queries()
    add(12)

    assert queries() == few
    assert Tenant.objects.count() == 14


def test_changelist_filters_by_status(admin_client):
    active = TenantFactory(status=TenantStatus.ACTIVE)
    TenantFactory(status=TenantStatus.SUSPENDED)

    response = admin_client.get(CHANGELIST, {"status__exact": "active"})

    assert list(response.context["cl"].result_list) == [active]


# Change page --------------------------------------------------------------------------------------


def test_change_page_renders_members_and_quota_counters(admin_client):
    tenant = made_by_service(members=2)
    set_usage(tenant, api_calls=1234)

    response = admin_client.get(change_url(tenant))

    assert response.status_code == 200
    inlines = {
        inline.formset.model: inline.formset for inline in response.context["inline_admin_formsets"]
    }
    assert {form.instance.user for form in inlines[Membership].forms} == {
        m.user for m in Membership.objects.filter(tenant=tenant)
    }
    counters = {form.instance.resource: form.instance.used for form in inlines[QuotaCounter].forms}
    assert counters == {"documents": 0, "tokens": 0, "storage": 0, "api_calls": 1234}
    html = response.content.decode()
    assert "API calls" in html and "1234" in html
    for membership in Membership.objects.filter(tenant=tenant):
        assert membership.user.email in html


def test_saving_the_change_form_updates_through_the_service(admin_client, staff_user):
    tenant = made_by_service(members=1)
    data = admin_form_data(admin_client.get(change_url(tenant)))
    data |= {
        "contact_name": "Wile E.",
        "plan": PlanTier.PRO,
        "settings": json.dumps({"maxUsers": 500, "dataResidency": "eu"}),
    }

    response = admin_client.post(change_url(tenant), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.contact_name == "Wile E."
    assert stored.plan == PlanTier.PRO
    assert stored.settings == {"maxUsers": 500, "dataResidency": "eu"}
    (event,) = events(tenant, "tenant.updated")
    assert event.actor_id == staff_user.pk
    assert event.payload["changed"] == ["contact_name", "plan", "settings"]
    assert event.payload["plan"] == {"old": PlanTier.FREE, "new": PlanTier.PRO}
    assert Membership.objects.filter(tenant=tenant).count() == 1


def test_saving_an_unchanged_form_records_nothing(admin_client):
    tenant = made_by_service(members=1)
    data = admin_form_data(admin_client.get(change_url(tenant)))

    response = admin_client.post(change_url(tenant), data)

    assert response.status_code == 302
    assert not events(tenant, "tenant.updated").exists()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"maxUsers": 5, "colour": "red"}, "colour"),
        ({"maxUsers": "5"}, "maxUsers"),
        ({"hdsCompliant": "yes"}, "hdsCompliant"),
        ({"dataResidency": "mars"}, "dataResidency"),
    ],
)
def test_invalid_settings_are_a_form_error(admin_client, settings, named):
    tenant = made_by_service()
    before = row(tenant)
    data = admin_form_data(admin_client.get(change_url(tenant))) | {
        "contact_name": "Changed",
        "settings": json.dumps(settings),
    }

    response = admin_client.post(change_url(tenant), data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["settings"]
    assert named in errors["settings"][0]
    assert row(tenant) == before
    assert not events(tenant, "tenant.updated").exists()


def test_settings_that_are_not_json_are_a_form_error(admin_client):
    tenant = made_by_service()
    data = admin_form_data(admin_client.get(change_url(tenant))) | {"settings": "{maxUsers: 5"}

    response = admin_client.post(change_url(tenant), data)

    assert response.status_code == 200
    assert "settings" in response.context["adminform"].form.errors
    assert Tenant.objects.get(pk=tenant.pk).settings == {}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[" * 100_000 + "]" * 100_000, "levels deep"),  # past the interpreter's recursion
        ('{"a": ' * 40 + "1" + "}" * 40, "levels deep"),  # past the API's depth
        ('{"a": "\\ud800"}', "surrogates"),
    ],
    ids=["recursion", "depth", "surrogate"],
)
def test_settings_past_the_apis_json_limits_are_a_form_error(admin_client, text, named):
    tenant = made_by_service()
    data = admin_form_data(admin_client.get(change_url(tenant))) | {"settings": text}

    response = admin_client.post(change_url(tenant), data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert named in errors["settings"][0]
    assert Tenant.objects.get(pk=tenant.pk).settings == {}


def test_lifecycle_fields_are_read_only_on_the_change_form(admin_client):
    tenant = made_by_service()
    data = admin_form_data(admin_client.get(change_url(tenant))) | {
        "status": TenantStatus.ACTIVE,
        "suspension_reason": "forged",
    }

    assert admin_client.post(change_url(tenant), data).status_code == 302

    stored = Tenant.objects.get(pk=tenant.pk)
    assert (stored.status, stored.suspension_reason) == (TenantStatus.TRIAL, "")


# Add ----------------------------------------------------------------------------------------------


def test_adding_a_tenant_creates_it_through_the_service_without_an_owner(admin_client, staff_user):
    data = admin_form_data(admin_client.get(ADD)) | {
        "name": "Globex",
        "slug": "globex",
        "plan": PlanTier.ENTERPRISE,
        "contact_email": "ops@globex.example.com",
        "settings": json.dumps({"maxUsers": 1000}),
    }

    with time_machine.travel(NOW, tick=False):
        response = admin_client.post(ADD, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    tenant = Tenant.objects.get(slug="globex")
    assert tenant.status == TenantStatus.TRIAL
    assert tenant.plan == PlanTier.ENTERPRISE
    assert tenant.contact_email == "ops@globex.example.com"
    assert tenant.settings == {"maxUsers": 1000}
    assert tenant.quota_reset_at == first_of_next_month(NOW)
    assert not Membership.objects.filter(tenant=tenant).exists()
    assert not Membership.objects.filter(user=staff_user).exists()
    assert set(QuotaCounter.objects.filter(tenant=tenant).values_list("resource", flat=True)) == {
        "documents",
        "tokens",
        "storage",
        "api_calls",
    }
    (created,) = events(tenant)
    assert created.event_type == "tenant.created"
    assert created.actor_id == staff_user.pk
    assert created.payload == {"slug": "globex", "name": "Globex", "plan": PlanTier.ENTERPRISE}


def test_adding_a_tenant_with_a_taken_slug_is_a_form_error(admin_client):
    made_by_service(slug="globex")
    data = admin_form_data(admin_client.get(ADD)) | {"name": "Globex 2", "slug": "globex"}

    response = admin_client.post(ADD, data)

    assert response.status_code == 200
    assert "slug" in response.context["adminform"].form.errors
    assert Tenant.objects.filter(slug="globex").count() == 1


# Lifecycle and quota actions ----------------------------------------------------------------------


def test_activate_action_activates_trial_tenants(admin_client, staff_user):
    tenants = [made_by_service(slug=f"t{i}") for i in range(2)]

    response = run_action(admin_client, "activate_tenants", tenants)

    assert (message_levels.SUCCESS, "2 organization(s) activated.") in messages_of(response)
    for tenant in tenants:
        stored = Tenant.objects.get(pk=tenant.pk)
        assert stored.status == TenantStatus.ACTIVE
        assert stored.activated_at is not None
        (event,) = events(tenant, "tenant.activated")
        assert event.actor_id == staff_user.pk
        assert event.payload == {"from": "trial", "to": "active"}


def test_suspend_action_first_asks_for_a_reason(admin_client):
    tenant = made_by_service()

    response = admin_client.post(
        CHANGELIST, {"action": "suspend_tenants", "_selected_action": [str(tenant.pk)]}
    )

    assert response.status_code == 200
    assert "admin/tenants/tenant/suspend.html" in [t.name for t in response.templates]
    html = response.content.decode()
    assert "Suspend 1 organization" in html
    assert 'name="reason"' in html
    assert 'name="apply"' in html
    assert not response.context["form"].is_bound
    assert Tenant.objects.get(pk=tenant.pk).status == TenantStatus.TRIAL
    assert not events(tenant, "tenant.suspended").exists()


def test_suspend_action_with_a_reason_suspends(admin_client, staff_user):
    tenants = [made_by_service(slug="a"), made_by_service(slug="b")]
    lifecycle_activate(tenants[1])

    response = run_action(
        admin_client, "suspend_tenants", tenants, apply="1", reason="Chargeback under review"
    )

    assert (message_levels.SUCCESS, "2 organization(s) suspended.") in messages_of(response)
    for tenant, start in zip(tenants, ["trial", "active"], strict=True):
        stored = Tenant.objects.get(pk=tenant.pk)
        assert stored.status == TenantStatus.SUSPENDED
        assert stored.suspension_reason == "Chargeback under review"
        assert stored.suspended_at is not None
        (event,) = events(tenant, "tenant.suspended")
        assert event.actor_id == staff_user.pk
        assert event.payload == {
            "from": start,
            "to": "suspended",
            "reason": "Chargeback under review",
        }


def test_suspend_action_without_a_reason_shows_the_form_again(admin_client):
    tenant = made_by_service()

    response = run_action(admin_client, "suspend_tenants", [tenant], apply="1", reason="")

    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert Tenant.objects.get(pk=tenant.pk).status == TenantStatus.TRIAL
    assert not events(tenant, "tenant.suspended").exists()


def lifecycle_activate(tenant):
    with transaction.atomic():
        lifecycle.tenant_activate(tenant=tenant, actor=None)


def lifecycle_suspend(tenant):
    with transaction.atomic():
        lifecycle.tenant_suspend(tenant=tenant, actor=None, reason="Overdue")


@pytest.mark.parametrize(("activated", "expected"), [(True, "active"), (False, "trial")])
def test_restore_action_lifts_a_suspension(admin_client, staff_user, activated, expected):
    tenant = made_by_service()
    if activated:
        lifecycle_activate(tenant)
    lifecycle_suspend(tenant)

    response = run_action(admin_client, "restore_tenants", [tenant])

    assert (message_levels.SUCCESS, "1 organization(s) restored.") in messages_of(response)
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.status == expected
    assert (stored.suspended_at, stored.suspension_reason) == (None, "")
    event = events(tenant, "tenant.restored").get()
    assert event.actor_id == staff_user.pk
    assert event.payload == {"from": "suspended", "to": expected}


def test_cancel_action_cancels(admin_client, staff_user):
    tenant = made_by_service()

    response = run_action(admin_client, "cancel_tenants", [tenant])

    assert (message_levels.SUCCESS, "1 organization(s) cancelled.") in messages_of(response)
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.status == TenantStatus.CANCELLED
    assert stored.cancelled_at is not None
    assert events(tenant, "tenant.cancelled").get().actor_id == staff_user.pk


def test_reset_quotas_action_restarts_the_periodic_counters(admin_client, staff_user):
    tenant = made_by_service()
    set_usage(tenant, api_calls=900, tokens=4_000, documents=12, storage=5 * MIB)

    with time_machine.travel(NOW, tick=False):
        response = run_action(admin_client, "reset_quotas", [tenant])

    assert (message_levels.SUCCESS, "1 organization(s) reset.") in messages_of(response)
    used = dict(QuotaCounter.objects.filter(tenant=tenant).values_list("resource", "used"))
    assert used == {"api_calls": 0, "tokens": 0, "documents": 12, "storage": 5 * MIB}
    stored = Tenant.objects.get(pk=tenant.pk)
    assert stored.last_reset_at == NOW
    assert stored.quota_reset_at == first_of_next_month(NOW)
    event = events(tenant, "quota.reset").get()
    assert event.actor_id == staff_user.pk
    assert event.payload["trigger"] == "manual"
    assert event.payload["previous_usage"] == {"api_calls": 900, "tokens": 4_000}


@pytest.mark.parametrize(
    ("action", "status", "message"),
    [
        ("activate_tenants", "active", "An organization that is active cannot be activated."),
        ("activate_tenants", "suspended", "An organization that is suspended cannot be activated."),
        ("restore_tenants", "active", "An organization that is active cannot be restored."),
        ("restore_tenants", "trial", "An organization that is trial cannot be restored."),
        ("cancel_tenants", "cancelled", "An organization that is cancelled cannot be cancelled."),
    ],
)
def test_illegal_transition_is_an_error_message_and_changes_nothing(
    admin_client, action, status, message
):
    tenant = TenantFactory(slug="acme", status=status)
    before = row(tenant)

    response = run_action(admin_client, action, [tenant])

    assert messages_of(response) == [(message_levels.ERROR, f"acme: {message}")]
    assert row(tenant) == before
    assert not events(tenant).exists()


def test_suspending_an_already_suspended_tenant_is_an_error_message(admin_client):
    tenant = TenantFactory(slug="acme", status=TenantStatus.SUSPENDED, suspension_reason="First")
    before = row(tenant)

    response = run_action(admin_client, "suspend_tenants", [tenant], apply="1", reason="Second")

    assert messages_of(response) == [
        (message_levels.ERROR, "acme: An organization that is suspended cannot be suspended.")
    ]
    assert row(tenant) == before


def test_action_on_a_mixed_selection_applies_where_legal(admin_client):
    trial = TenantFactory(slug="in-trial", status=TenantStatus.TRIAL)
    active = TenantFactory(slug="already", status=TenantStatus.ACTIVE)
    before = row(active)

    response = run_action(admin_client, "activate_tenants", [trial, active])

    assert sorted(messages_of(response)) == sorted(
        [
            (message_levels.SUCCESS, "1 organization(s) activated."),
            (message_levels.ERROR, "already: An organization that is active cannot be activated."),
        ]
    )
    assert Tenant.objects.get(pk=trial.pk).status == TenantStatus.ACTIVE
    assert row(active) == before
    assert not events(active).exists()


# Delete -------------------------------------------------------------------------------------------


def doomed(slug: str) -> Tenant:
    """A tenant with audit events (which a plain cascade may not delete), a member and a key."""
    tenant = made_by_service(name=slug.title(), slug=slug)
    membership = MembershipFactory(tenant=tenant, role=Role.OWNER)
    issue_api_key(membership)
    assert events(tenant).exists()
    return tenant


def assert_deleted_through_the_service(tenant, staff_user, users):
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert not AuditEvent.objects.filter(tenant_id=tenant.pk).exists()
    assert not APIKey.objects.filter(tenant_id=tenant.pk).exists()
    assert not QuotaCounter.objects.filter(tenant_id=tenant.pk).exists()
    deleted = AuditEvent.objects.get(event_type="tenant.deleted", payload__tenant_id=str(tenant.pk))
    assert deleted.tenant_id is None
    assert deleted.actor_id == staff_user.pk
    assert deleted.payload["slug"] == tenant.slug
    assert AuditEvent.objects.filter(
        event_type="audit.chain.purged", payload__tenant_id=str(tenant.pk)
    ).exists()
    assert User.objects.filter(pk__in=[u.pk for u in users]).count() == len(users)


def test_delete_confirmation_page_offers_the_deletion(admin_client):
    tenant = doomed("acme")

    response = admin_client.get(delete_url(tenant))

    assert response.status_code == 200
    assert not response.context["perms_lacking"]
    assert response.context["deleted_objects"]
    assert 'name="post"' in response.content.decode()


def test_deleting_a_tenant_in_the_admin_goes_through_tenant_delete(admin_client, staff_user):
    tenant = doomed("acme")
    users = [m.user for m in Membership.objects.filter(tenant=tenant)]

    response = admin_client.post(delete_url(tenant), {"post": "yes"})

    assert response.status_code == 302
    assert_deleted_through_the_service(tenant, staff_user, users)


def test_bulk_deleting_tenants_in_the_admin_goes_through_tenant_delete(admin_client, staff_user):
    tenants = [doomed("acme"), doomed("globex")]
    kept = made_by_service(name="Kept", slug="kept")
    users = [m.user for m in Membership.objects.filter(tenant__in=tenants)]

    confirm = run_action(admin_client, "delete_selected", tenants)
    response = admin_client.post(
        CHANGELIST,
        {
            "action": "delete_selected",
            "_selected_action": [str(t.pk) for t in tenants],
            "post": "yes",
        },
    )

    assert confirm.status_code == 200
    assert not confirm.context["perms_lacking"]
    assert response.status_code == 302
    for tenant in tenants:
        assert_deleted_through_the_service(tenant, staff_user, users)
    assert Tenant.objects.filter(pk=kept.pk).exists()
    assert events(kept).exists()


# Slugs -------------------------------------------------------------------------------------------


def test_slug_entered_in_the_admin_is_stored_lowercase_and_reachable_by_the_api(
    admin_client, staff_user
):
    tenant = made_by_service(slug="acme")
    data = admin_form_data(admin_client.get(change_url(tenant))) | {"slug": "Acme-EU"}

    response = admin_client.post(change_url(tenant), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Tenant.objects.get(pk=tenant.pk).slug == "acme-eu"
    api = APIClient()
    api.force_authenticate(staff_user)
    assert api.get("/api/v1/tenants/acme-eu/").json()["id"] == str(tenant.pk)


@pytest.mark.parametrize("url", [lambda tenant: ADD, change_url], ids=["add", "change"])
def test_admin_slug_differing_only_in_case_from_another_is_a_form_error(admin_client, url):
    made_by_service(name="Globex", slug="globex")
    tenant = made_by_service(name="Acme", slug="acme")
    target = url(tenant)
    data = admin_form_data(admin_client.get(target)) | {"name": "Other", "slug": "GLOBEX"}

    response = admin_client.post(target, data)

    assert response.status_code == 200
    assert "slug" in response.context["adminform"].form.errors
    assert Tenant.objects.filter(slug__iexact="globex").count() == 1
    assert Tenant.objects.get(pk=tenant.pk).slug == "acme"
