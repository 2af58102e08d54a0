"""The Django admin keeps the service rules: every delete, bulk delete and change of a model that
services change goes through those services (last-owner rule, row locks, audit events), or is
not offered at all.

`admin_problems` walks every registered ModelAdmin of this project's models, and their inlines;
the behaviour tests below go through the real admin views as a logged-in superuser.
"""

import importlib
import inspect

import pytest
from django import forms
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.messages import constants as message_levels
from django.db import models
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import APIKey, AuthToken, User, hash_secret
from audit.models import AuditEvent
from billing.models import Plan
from playground.models import LanguageModel, Provider
from tenants.models import Invitation, InvitationStatus, Membership, MembershipStatus, Role
from tests.billing.factories import PlanFactory
from tests.conftest import token_for
from tests.factories import (
    TEST_PASSWORD,
    InvitationFactory,
    MembershipFactory,
    UserFactory,
    issue_api_key,
)
from tests.playground.factories import LanguageModelFactory, ProviderFactory
from tests.project import PROJECT_APPS, admin_form_data, is_project_code

# Every model the admin shows (registered, or in an inline) -> the service module(s) that change
# it. An empty tuple would say that no service changes the model, so Django's default delete and
# save are fine for it. A model shown in the admin but missing here fails the walk.
SERVICE_MODULES = {
    "analytics.RollupState": ("analytics.services",),
    "analytics.Rollup": ("analytics.services",),
    "analytics.QueryEvent": ("analytics.services",),
    "accounts.User": ("accounts.services",),
    "accounts.AuthToken": ("accounts.services",),
    "accounts.APIKey": ("accounts.services",),
    "tenants.Tenant": ("tenants.services.lifecycle",),
    "tenants.Membership": ("tenants.services.members",),
    "tenants.Invitation": ("tenants.services.members",),
    "tenants.Theme": ("tenants.services.themes",),
    "tenants.QuotaCounter": ("tenants.services.quotas",),
    # Written by requests carrying the key (the decorator), deleted by pruning.
    "tenants.IdempotencyKey": ("tenants.idempotency", "tenants.services.idempotency"),
    "audit.AuditEvent": ("audit.services",),
    "audit.AuditCheckpoint": ("audit.services",),
    "audit.TenantAuditChain": ("audit.services", "tenants.services.lifecycle"),
    "notifications.WebhookEndpoint": ("notifications.services.endpoints",),
    "notifications.WebhookDelivery": (
        "notifications.services.endpoints",
        "notifications.services.relay",
    ),
    "notifications.WebhookEvent": ("notifications.services.events",),
    "notifications.WebhookAttempt": ("notifications.services.relay",),
    "notifications.Notification": ("notifications.services.user_notifications",),
    "notifications.NotificationPreference": ("notifications.services.user_notifications",),
    "notifications.PhoneConfirmation": ("notifications.services.phone_confirmations",),
    "playground.Provider": ("playground.services.catalogue",),
    "playground.LanguageModel": ("playground.services.catalogue",),
    "playground.GatewayCall": ("playground.services.gateway", "playground.services.ledger"),
    "playground.GatewayReservation": ("playground.services.ledger",),
    "playground.PromptTemplate": ("playground.services.templates",),
    "playground.PromptTemplateVersion": ("playground.services.templates",),
    "playground.PromptExecution": ("playground.services.templates",),
    "playground.Project": ("playground.services.projects",),
    "security.Incident": ("security.services.incidents",),
    "support.CustomerProfile": ("support.services.customers",),
    "support.Representative": ("support.services.representatives",),
    "support.SlaPolicy": ("support.services.sla",),
    "support.Ticket": ("support.services.tickets",),
    "support.TicketComment": ("support.services.conversation",),
    "support.TicketAttachment": ("support.services.conversation",),
    "support.TicketSlaPause": ("support.services.sla_clock",),
    "support.Escalation": ("support.services.escalations",),
    "support.AiAgent": ("support.services.agents",),
    "support.DecisionRule": ("support.services.decision_rules",),
    "support.RuleApplication": ("support.services.decision_rules",),
    "support.Budget": ("support.services.budgets",),
    "support.BudgetUsageRecord": ("support.services.budgets",),
    "support.Refund": ("support.services.refunds",),
    "security.IncidentTimelineEntry": ("security.services.incidents",),
    "security.ComplianceAudit": ("security.services.audits",),
    "security.ProcessingActivity": ("security.services.processing",),
    "playground.OrchestrationTemplate": ("playground.services.projects",),
    "playground.OrchestrationRun": ("playground.services.runs",),
    "playground.OrchestrationPhase": ("playground.services.runs",),
    "playground.IntegrationOperation": ("playground.services.runs",),
    "playground.WorkflowJob": ("playground.services.workflows",),
    "playground.Artifact": ("playground.services.artifacts",),
    "billing.Plan": ("billing.services.plans",),
    "billing.Subscription": ("billing.services.subscriptions",),
    "billing.Invoice": (
        "billing.services.invoices",
        "billing.services.payments",
        "billing.services.credit_notes",
    ),
    "billing.InvoiceLine": ("billing.services.invoices",),
    "billing.Payment": ("billing.services.payments",),
    "billing.CreditNote": ("billing.services.credit_notes",),
    "billing.CheckoutSession": ("billing.services.checkout",),
    "billing.ProviderEvent": ("billing.services.provider_events",),
    # simplejwt's refresh-token records, shown by accounts/admin.py.
    "token_blacklist.OutstandingToken": ("accounts.services",),
    # django-celery-beat's pages, replaced by fixed subclasses (config/package_admins.py): the
    # schedule is the package's own data, which no service of the project changes.
    "django_celery_beat.PeriodicTask": (),
    "django_celery_beat.CrontabSchedule": (),
    # django-axes' login attempts (its page replaced likewise): written by axes at each failed
    # login, read by accounts.lockout; no service of the project changes them.
    "axes.AccessAttempt": (),
}


def _superuser_request():
    request = RequestFactory().get("/admin/")
    request.user = User(email="walker@example.com", is_staff=True, is_superuser=True)
    return request


def _overrides(model_admin, method: str) -> bool:
    """The ModelAdmin's class (or a project base class) defines `method`: not Django's."""
    return is_project_code(getattr(type(model_admin), method))


def _ours(model, model_admin) -> bool:
    return model._meta.app_label in PROJECT_APPS or is_project_code(type(model_admin))


def _editable_fields(model_admin, request, obj) -> set[str]:
    fields = set(flatten_fieldsets(model_admin.get_fieldsets(request, obj)))
    fields |= set(getattr(model_admin, "list_editable", ()) if obj is not None else ())
    return fields - set(model_admin.get_readonly_fields(request, obj))


def _services_of(model, where: str, problems: list[str]) -> tuple[str, ...] | None:
    label = model._meta.label
    if label not in SERVICE_MODULES:
        problems.append(f"{where}: {label} is not in SERVICE_MODULES (name its services)")
        return None
    return SERVICE_MODULES[label]


def _inline_problems(model_admin, request, obj) -> list[str]:
    problems = []
    saves_through_services = _overrides(model_admin, "save_formset")
    for inline in model_admin.get_inline_instances(request, obj):
        where = f"{type(model_admin).__name__}.{type(inline).__name__}"
        if not _services_of(inline.model, where, problems) or saves_through_services:
            continue
        if inline.has_add_permission(request, obj):
            problems.append(f"{where}: adds rows inline, bypassing the services")
        if inline.can_delete and inline.has_delete_permission(request, obj):
            problems.append(f"{where}: deletes rows inline, bypassing the services")
        if inline.has_change_permission(request, obj):
            editable = _editable_fields(inline, request, obj)
            if editable:
                problems.append(f"{where}: edits {sorted(editable)} inline, bypassing the services")
    return problems


def admin_problems(site) -> list[str]:
    """Each delete or change path of `site` that a superuser could take around the services."""
    request = _superuser_request()
    problems = []
    for model, model_admin in site._registry.items():
        if not _ours(model, model_admin):
            continue
        where = type(model_admin).__name__
        if not _services_of(model, where, problems):
            continue
        obj = model()
        if model_admin.has_delete_permission(request):
            for method in ("delete_model", "delete_queryset"):
                if not _overrides(model_admin, method):
                    problems.append(f"{where}: {method} is Django's default (a plain delete)")
        action = model_admin.get_actions(request).get("delete_selected")
        if action is not None and not is_project_code(action[0]):
            problems.append(f"{where}: the delete_selected action is Django's default")
        editable = set()
        if model_admin.has_change_permission(request):
            editable |= _editable_fields(model_admin, request, obj)
        if model_admin.has_add_permission(request):
            editable |= _editable_fields(model_admin, request, None)
        if editable and not _overrides(model_admin, "save_model"):
            problems.append(f"{where}: saves {sorted(editable)} with Django's default save_model")
        problems += _inline_problems(model_admin, request, obj)
    return problems


# The walk --------------------------------------------------------------------------------------


def test_every_admin_path_goes_through_the_services_or_is_not_offered():
    assert admin_problems(admin.site) == []


def test_the_walk_covers_the_project_admins():
    walked = {model._meta.label for model, ma in admin.site._registry.items() if _ours(model, ma)}

    assert {
        "accounts.User",
        "accounts.AuthToken",
        "accounts.APIKey",
        "tenants.Tenant",
        "tenants.Membership",
        "tenants.Invitation",
        "tenants.Theme",
        "audit.AuditEvent",
    } <= walked


def test_the_map_names_real_models_and_service_modules():
    for label, modules in SERVICE_MODULES.items():
        apps.get_model(label)
        for name in modules:
            module = importlib.import_module(name)
            services = [
                function
                for _, function in inspect.getmembers(module, inspect.isfunction)
                if function.__module__ == name
            ]
            assert services, f"{name} defines no service for {label}"


def test_a_model_admin_left_with_djangos_defaults_fails_the_walk():
    site = admin.AdminSite(name="probe")

    class EditableMembershipInline(admin.TabularInline):
        model = Membership
        fk_name = "user"
        fields = ("tenant", "role", "status")

    class ForgetfulUserAdmin(admin.ModelAdmin):
        fields = ("email", "name", "is_active")
        inlines = (EditableMembershipInline,)

    site.register(Membership)
    site.register(User, ForgetfulUserAdmin)

    problems = "\n".join(admin_problems(site))

    for expected in (
        "ModelAdmin: delete_model is Django's default",
        "ModelAdmin: delete_queryset is Django's default",
        "ModelAdmin: the delete_selected action is Django's default",
        "ForgetfulUserAdmin: delete_model is Django's default",
        "ForgetfulUserAdmin: saves ['email', 'is_active', 'name'] with Django's default save_model",
        "ForgetfulUserAdmin.EditableMembershipInline: adds rows inline",
        "ForgetfulUserAdmin.EditableMembershipInline: deletes rows inline",
        "ForgetfulUserAdmin.EditableMembershipInline: edits ['role', 'status', 'tenant'] inline",
    ):
        assert expected in problems, problems


def test_a_model_missing_from_the_map_fails_the_walk(monkeypatch):
    monkeypatch.delitem(SERVICE_MODULES, "tenants.Theme")

    assert admin_problems(admin.site) == [
        "ThemeAdmin: tenants.Theme is not in SERVICE_MODULES (name its services)"
    ]


def test_the_delete_selected_action_of_service_admins_is_not_djangos():
    request = _superuser_request()
    for model in (User, AuthToken, Membership):
        action = admin.site._registry[model].get_actions(request)["delete_selected"]
        assert action[0] is not django_delete_selected


# Behaviour through the admin views -------------------------------------------------------------


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def bulk_delete(client, model, objects, *, confirm=True):
    data = {"action": "delete_selected", "_selected_action": [str(obj.pk) for obj in objects]}
    if confirm:
        data["post"] = "yes"
    return client.post(admin_url(model, "changelist"), data, follow=confirm)


def messages_of(response) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


def errors_of(response) -> list[str]:
    return [text for level, text in messages_of(response) if level == message_levels.ERROR]


def deletions_logged(model) -> int:
    return LogEntry.objects.filter(
        action_flag=DELETION, content_type__model=model._meta.model_name
    ).count()


def tenant_with_owner_and_member():
    owner = MembershipFactory(role=Role.OWNER)
    member = MembershipFactory(tenant=owner.tenant, role=Role.MEMBER)
    return owner, member


# Memberships -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bulk_deleting_the_only_owner_is_refused_and_changes_nothing(admin_client):
    owner, member = tenant_with_owner_and_member()

    response = bulk_delete(admin_client, Membership, [owner])

    assert response.status_code == 200
    assert Membership.objects.filter(pk=owner.pk, status=MembershipStatus.ACTIVE).exists()
    assert Membership.objects.filter(pk=member.pk).exists()
    (error,) = errors_of(response)
    assert owner.user.email in error and "last active owner" in error
    assert not AuditEvent.objects.filter(event_type="member.removed").exists()
    assert deletions_logged(Membership) == 0
    assert not any("Deleted" in text for _, text in messages_of(response))


@pytest.mark.django_db
def test_bulk_deleting_a_member_records_member_removed(admin_client, staff_user):
    owner, member = tenant_with_owner_and_member()

    response = bulk_delete(admin_client, Membership, [member, owner])

    assert not Membership.objects.filter(pk=member.pk).exists()
    assert Membership.objects.filter(pk=owner.pk).exists()  # the last owner: refused
    (event,) = AuditEvent.objects.filter(event_type="member.removed")
    assert event.tenant_id == owner.tenant_id
    assert event.actor_id == staff_user.pk
    assert event.payload["membership_id"] == str(member.pk)
    assert event.payload["user_id"] == str(member.user_id)
    assert (message_levels.SUCCESS, "Deleted 1 of 2 memberships.") in messages_of(response)
    assert len(errors_of(response)) == 1
    assert deletions_logged(Membership) == 1


@pytest.mark.django_db
def test_the_bulk_delete_confirmation_is_offered_for_members_who_joined_by_invitation(
    admin_client,
):
    owner, _ = tenant_with_owner_and_member()
    invitation = InvitationFactory(
        tenant=owner.tenant, status=InvitationStatus.ACCEPTED, membership__user=UserFactory()
    )
    Membership.objects.filter(pk=invitation.membership_id).update(status=MembershipStatus.ACTIVE)

    confirm = bulk_delete(admin_client, Membership, [invitation.membership], confirm=False)

    assert confirm.status_code == 200
    assert not confirm.context["perms_lacking"]
    assert Membership.objects.filter(pk=invitation.membership_id).exists()


@pytest.mark.django_db
def test_single_delete_of_the_last_owner_is_refused_without_a_500(admin_client):
    owner, _ = tenant_with_owner_and_member()
    url = admin_url(Membership, "delete", owner.pk)

    page = admin_client.get(url)
    response = admin_client.post(url, {"post": "yes"})
    followed = admin_client.get(response["Location"])

    assert page.status_code == 200
    assert response.status_code == 302
    assert response["Location"] == admin_url(Membership, "change", owner.pk)
    assert Membership.objects.filter(pk=owner.pk, status=MembershipStatus.ACTIVE).exists()
    (error,) = errors_of(followed)
    assert "last active owner" in error
    assert not any("deleted successfully" in text for _, text in messages_of(followed))
    assert not AuditEvent.objects.filter(event_type="member.removed").exists()
    assert deletions_logged(Membership) == 0


@pytest.mark.django_db
def test_single_delete_of_a_member_goes_through_member_remove(admin_client, staff_user):
    _, member = tenant_with_owner_and_member()

    response = admin_client.post(admin_url(Membership, "delete", member.pk), {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == admin_url(Membership, "changelist")
    assert not Membership.objects.filter(pk=member.pk).exists()
    event = AuditEvent.objects.get(event_type="member.removed")
    assert event.actor_id == staff_user.pk
    assert event.payload["membership_id"] == str(member.pk)
    assert deletions_logged(Membership) == 1


@pytest.mark.django_db
def test_deleting_an_invited_membership_revokes_its_invitation(admin_client, staff_user):
    invitation = InvitationFactory()

    response = admin_client.post(
        admin_url(Membership, "delete", invitation.membership_id), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=invitation.membership_id).exists()
    event = AuditEvent.objects.get(event_type="invitation.revoked")
    assert event.actor_id == staff_user.pk
    assert event.payload["invitation_ids"] == [str(invitation.pk)]
    refused = APIClient().post(
        "/api/v1/invitations/accept",
        {"token": invitation.token, "name": "Late", "password": TEST_PASSWORD},
        format="json",
    )
    assert refused.status_code == 400


# Users -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_a_user_who_is_a_last_owner_is_refused(admin_client):
    owner, member = tenant_with_owner_and_member()
    user = owner.user
    url = admin_url(User, "delete", user.pk)

    single = admin_client.post(url, {"post": "yes"})
    followed = admin_client.get(single["Location"])
    bulk = bulk_delete(admin_client, User, [user])

    assert single.status_code == 302
    assert single["Location"] == admin_url(User, "change", user.pk)
    assert User.objects.filter(pk=user.pk).exists()
    assert Membership.objects.filter(pk=owner.pk).exists()
    assert Membership.objects.filter(pk=member.pk).exists()
    for response in (followed, bulk):
        (error,) = errors_of(response)
        assert owner.tenant.name in error and owner.tenant.slug in error
        assert "last active owner" in error
    assert not AuditEvent.objects.filter(event_type__in=["user.deleted", "member.removed"]).exists()
    assert deletions_logged(User) == 0


@pytest.mark.django_db
def test_deleting_a_user_removes_each_membership_through_the_service(admin_client, staff_user):
    user = UserFactory()
    owner, _ = tenant_with_owner_and_member()
    as_owner = MembershipFactory(tenant=owner.tenant, user=user, role=Role.OWNER)
    elsewhere = MembershipFactory(role=Role.OWNER)
    as_viewer = MembershipFactory(tenant=elsewhere.tenant, user=user, role=Role.VIEWER)
    joined = InvitationFactory(
        tenant=elsewhere.tenant, status=InvitationStatus.ACCEPTED, membership=as_viewer
    )
    api_key, _ = issue_api_key(as_owner)
    token_for(user)

    confirm = admin_client.get(admin_url(User, "delete", user.pk))
    response = admin_client.post(admin_url(User, "delete", user.pk), {"post": "yes"})

    assert confirm.status_code == 200
    assert not confirm.context["perms_lacking"]
    assert response.status_code == 302
    assert not User.objects.filter(pk=user.pk).exists()
    assert not Membership.objects.filter(pk__in=[as_owner.pk, as_viewer.pk]).exists()
    assert not Invitation.objects.filter(pk=joined.pk).exists()
    assert not AuthToken.objects.filter(user_id=user.pk).exists()
    assert Membership.objects.filter(pk__in=[owner.pk, elsewhere.pk]).count() == 2
    removed = AuditEvent.objects.filter(event_type="member.removed")
    assert {event.payload["membership_id"] for event in removed} == {
        str(as_owner.pk),
        str(as_viewer.pk),
    }
    assert {event.actor_id for event in removed} == {staff_user.pk}
    revoked = AuditEvent.objects.get(event_type="api_key.revoked")
    assert revoked.payload["api_key_id"] == str(api_key.pk)
    assert APIKey.objects.get(pk=api_key.pk).revoked_at is not None
    deleted = AuditEvent.objects.get(event_type="user.deleted")
    assert deleted.tenant_id is None
    assert deleted.actor_id == staff_user.pk
    assert deleted.payload == {
        "user_id": str(user.pk),
        "is_staff": False,
        "memberships_removed": 2,
        "api_keys_revoked": 1,
    }
    assert deletions_logged(User) == 1


@pytest.mark.django_db
def test_the_user_admins_membership_inline_does_not_change_a_role(admin_client):
    membership = MembershipFactory(role=Role.VIEWER)
    url = admin_url(User, "change", membership.user_id)
    page = admin_client.get(url)
    data = admin_form_data(page) | {
        "memberships-0-id": str(membership.pk),
        "memberships-0-user": str(membership.user_id),
        "memberships-0-role": Role.OWNER,
        "memberships-0-status": MembershipStatus.SUSPENDED,
        "memberships-0-DELETE": "on",
    }

    response = admin_client.post(url, data)

    assert page.status_code == 200
    assert b'name="memberships-0-role"' not in page.content
    assert response.status_code == 302, response.context["adminform"].form.errors
    membership.refresh_from_db()
    assert (membership.role, membership.status) == (Role.VIEWER, MembershipStatus.ACTIVE)
    assert not AuditEvent.objects.filter(event_type__startswith="member.").exists()


@pytest.mark.django_db
def test_deactivating_a_user_in_the_change_form_ends_their_access(admin_client):
    membership = MembershipFactory(role=Role.VIEWER)
    token = token_for(membership.user)
    url = admin_url(User, "change", membership.user_id)
    data = admin_form_data(admin_client.get(url))
    data.pop("is_active")

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert not User.objects.get(pk=membership.user_id).is_active
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/auth/me").status_code == 401


def user_add_form(admin_client, email: str, **fields) -> tuple[str, dict]:
    """The user add page's URL and its form filled in for `email` with a usable password."""
    add = admin_url(User, "add")
    data = admin_form_data(admin_client.get(add)) | {
        "email": email,
        "usable_password": "true",
        "password1": TEST_PASSWORD,
        "password2": TEST_PASSWORD,
        **fields,
    }
    return add, data


@pytest.mark.django_db
def test_adding_a_user_in_the_admin_goes_through_user_create(admin_client, staff_user):
    add, data = user_add_form(admin_client, "New.Person@Example.com", name="New Person")

    response = admin_client.post(add, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    user = User.objects.get(email="new.person@example.com")
    assert user.check_password(TEST_PASSWORD)
    event = AuditEvent.objects.get(event_type="user.created")
    assert event.actor_id == staff_user.pk
    assert event.payload == {"user_id": str(user.pk), "is_staff": False}


# Tokens ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_a_token_in_the_admin_logs_that_session_out(admin_client):
    user = UserFactory()
    raw = token_for(user)
    kept = token_for(user)
    token = AuthToken.objects.get(digest=hash_secret(raw))

    response = bulk_delete(admin_client, AuthToken, [token])

    assert response.status_code == 200
    assert not AuthToken.objects.filter(pk=token.pk).exists()
    assert AuthToken.objects.filter(digest=hash_secret(kept)).exists()
    event = AuditEvent.objects.get(event_type="auth.logout")
    assert event.actor_id == user.pk
    assert event.payload == {"ended": ["token"]}
    ended = APIClient()
    ended.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert ended.get("/api/v1/auth/me").status_code == 401
    assert deletions_logged(AuthToken) == 1


# A service's refusal on the add and change pages ------------------------------------------


def _form_checks_nothing_unique(monkeypatch):
    """The form's uniqueness check passes, as it does when the other save commits after it (a
    double-clicked "Save", two staff at once): only the service and the database can refuse."""
    monkeypatch.setattr(forms.BaseModelForm, "validate_unique", lambda self: None)
    monkeypatch.setattr(models.Model, "validate_constraints", lambda self, exclude=None: None)


def _refusal_shown(response, text: str, typed: dict) -> None:
    """The page again, as for an invalid form: the refusal at the top of the form, and what
    was typed still in it."""
    assert response.status_code == 200, response.content[:300]
    form = response.context["adminform"].form
    assert any(text in error for error in form.non_field_errors()), form.errors
    for field, value in typed.items():
        assert form[field].value() == value, (field, form[field].value())
    assert text in response.content.decode()


@pytest.mark.django_db
def test_adding_a_user_whose_email_was_just_taken_is_a_message_not_a_500(admin_client, monkeypatch):
    add, data = user_add_form(admin_client, "twice@example.com")
    UserFactory(email="twice@example.com")
    _form_checks_nothing_unique(monkeypatch)

    response = admin_client.post(add, data)

    _refusal_shown(response, "already exists", {"email": "twice@example.com"})
    assert User.objects.filter(email="twice@example.com").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("what", ["provider", "model", "plan"])
def test_a_catalogue_name_taken_after_the_form_checked_it_is_a_message_not_a_500(
    what, admin_client, monkeypatch
):
    model, factory, field = {
        "provider": (Provider, ProviderFactory, "name"),
        "model": (LanguageModel, LanguageModelFactory, "name"),
        "plan": (Plan, PlanFactory, "code"),
    }[what]
    taken = factory()
    mine = factory()
    change = admin_url(model, "change", mine.pk)
    data = admin_form_data(admin_client.get(change)) | {field: getattr(taken, field)}
    _form_checks_nothing_unique(monkeypatch)

    response = admin_client.post(change, data)

    _refusal_shown(response, "already exists", {field: getattr(taken, field)})
    assert model.objects.filter(**{field: getattr(taken, field)}).count() == 1
