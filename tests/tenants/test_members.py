"""Members: GET, PUT/PATCH, DELETE organizations/members and
the rules every change obeys (owners, self-service, grants, seats)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import resolve
from rest_framework.test import APIClient

from audit.models import AuditEvent
from config.exceptions import QuotaExceeded
from tenants.models import Invitation, Membership, MembershipStatus, PlanTier, Role
from tenants.permissions import ROLE_PERMISSIONS, permissions_as_object
from tenants.services import membership_add
from tenants.views.members import InvitationViewSet, MemberViewSet
from tenants.views.organizations import OrganizationViewSet
from tests.conftest import assert_envelope, token_for
from tests.factories import (
    InvitationFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
    issue_api_key,
)

pytestmark = pytest.mark.django_db

MEMBERS = "/api/v1/organizations/members"


def member_url(membership) -> str:
    return f"{MEMBERS}/{membership.pk}"


def events(event_type: str, tenant=None):
    found = AuditEvent.objects.filter(event_type=event_type)
    return list(found.filter(tenant=tenant) if tenant is not None else found)


@pytest.fixture
def tenant():
    """A tenant with room for everyone these tests add (seats are tested on their own)."""
    return TenantFactory(plan=PlanTier.ENTERPRISE)


@pytest.fixture
def owner(make_caller, tenant):
    return make_caller(Role.OWNER, tenant=tenant)


@pytest.fixture
def admin(make_caller, tenant):
    return make_caller(Role.ADMIN, tenant=tenant)


# Routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "view"),
    [
        ("/api/v1/organizations/members", MemberViewSet),
        ("/api/v1/organizations/members/invite", MemberViewSet),
        ("/api/v1/organizations/members/0b7c4b9e-3d55-4a67-9a43-9d0a8f6d2c11", MemberViewSet),
        ("/api/v1/invitations/accept", InvitationViewSet),
        ("/api/v1/organizations/current", OrganizationViewSet),
    ],
)
@pytest.mark.parametrize("slash", ["", "/"])
def test_member_paths_resolve_next_to_the_organization(path, view, slash):
    assert resolve(path + slash).func.cls is view


def test_invite_is_an_action_not_a_member_id():
    match = resolve("/api/v1/organizations/members/invite")

    assert match.func.actions == {"post": "invite"}


# GET organizations/members -----------------------------------------------------------------


def test_list_shows_members_with_effective_permissions(owner, tenant):
    viewer = MembershipFactory(
        tenant=tenant, role=Role.VIEWER, permissions={"billing": {"read": True}}
    )
    inviter = owner.user
    viewer.invited_by = inviter
    viewer.save()

    response = owner.client.get(MEMBERS)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 2
    row = next(r for r in body["results"] if r["id"] == str(viewer.pk))
    assert row == {
        "id": str(viewer.pk),
        "user_id": str(viewer.user.pk),
        "email": viewer.user.email,
        "name": viewer.user.name,
        "role": "viewer",
        "status": "active",
        "permissions": permissions_as_object(ROLE_PERMISSIONS[Role.VIEWER] | {"billing.read"}),
        "custom_permissions": {"billing": {"read": True}},
        "invited_at": None,
        "joined_at": row["joined_at"],
        "last_active": None,
        "invited_by": str(inviter.pk),
        "invitation_expires_at": None,
    }
    assert row["permissions"]["billing"] == {"read": True, "write": False}
    assert row["permissions"]["documents"] == {"read": True, "write": False, "delete": False}


def test_a_pending_invitation_is_listed_with_its_address_and_expiry(owner, tenant):
    invitation = InvitationFactory(tenant=tenant, email="pending@example.com")

    rows = owner.client.get(MEMBERS, {"status": "invited"}).json()["results"]

    assert len(rows) == 1
    assert rows[0]["id"] == str(invitation.membership.pk)
    assert rows[0]["email"] == "pending@example.com"
    assert rows[0]["user_id"] is None
    assert rows[0]["name"] == ""
    assert rows[0]["status"] == "invited"
    assert rows[0]["joined_at"] is None
    assert rows[0]["invitation_expires_at"] is not None


def test_filters_by_role_and_status(owner, tenant):
    MembershipFactory(tenant=tenant, role=Role.VIEWER)
    suspended = MembershipFactory(
        tenant=tenant, role=Role.VIEWER, status=MembershipStatus.SUSPENDED
    )
    MembershipFactory(tenant=tenant, role=Role.BILLING)

    viewers = owner.client.get(MEMBERS, {"role": "viewer"}).json()["results"]
    suspended_rows = owner.client.get(MEMBERS, {"status": "suspended"}).json()["results"]
    both = owner.client.get(MEMBERS, {"role": "viewer", "status": "active"}).json()["results"]

    assert {r["role"] for r in viewers} == {"viewer"} and len(viewers) == 2
    assert [r["id"] for r in suspended_rows] == [str(suspended.pk)]
    assert len(both) == 1


def test_search_matches_email_name_and_an_invited_address(owner, tenant):
    by_email = MembershipFactory(tenant=tenant, user=UserFactory(email="grace@navy.example"))
    by_name = MembershipFactory(tenant=tenant, user=UserFactory(name="Ada Lovelace"))
    invited = InvitationFactory(tenant=tenant, email="linus@kernel.example").membership

    def found(term):
        return {r["id"] for r in owner.client.get(MEMBERS, {"search": term}).json()["results"]}

    assert found("NAVY") == {str(by_email.pk)}
    assert found("lovelace") == {str(by_name.pk)}
    assert found("kernel.example") == {str(invited.pk)}
    assert found("nobody-matches") == set()


def test_an_unknown_role_filter_is_a_validation_error(owner):
    error = assert_envelope(owner.client.get(MEMBERS, {"role": "emperor"}), 400, "VALIDATION_ERROR")

    assert "role" in error["details"]


def test_list_query_count_does_not_grow_with_invitations_and_members(owner, tenant):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = owner.client.get(MEMBERS, {"page_size": 100})
        assert response.status_code == 200
        return len(captured)

    MembershipFactory(tenant=tenant)
    InvitationFactory(tenant=tenant)
    queries()  # the tenant's first request also starts its api_calls counter
    few = queries()
    MembershipFactory.create_batch(10, tenant=tenant)
    InvitationFactory.create_batch(10, tenant=tenant)

    assert queries() == few


def test_retrieve_one_member(owner, tenant):
    member = MembershipFactory(tenant=tenant, role=Role.DPO)

    response = owner.client.get(member_url(member))

    assert response.status_code == 200
    assert response.json()["role"] == "dpo"
    assert response.json()["permissions"]["security"] == {"read": True, "write": True}


def test_another_tenants_member_is_not_found(owner):
    foreign = MembershipFactory(tenant=TenantFactory())

    assert_envelope(owner.client.get(member_url(foreign)), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(
        owner.client.patch(member_url(foreign), {"role": "viewer"}), 404, "RESOURCE_NOT_FOUND"
    )
    foreign.refresh_from_db()
    assert foreign.role == Role.MEMBER


def test_a_viewer_reads_but_cannot_change_members(make_caller, tenant):
    viewer = make_caller(Role.VIEWER, tenant=tenant)
    other = MembershipFactory(tenant=tenant)

    assert viewer.client.get(MEMBERS).status_code == 200
    assert_envelope(
        viewer.client.patch(member_url(other), {"role": "admin"}), 403, "INSUFFICIENT_PERMISSIONS"
    )
    assert_envelope(viewer.client.delete(member_url(other)), 403, "INSUFFICIENT_PERMISSIONS")


# PUT / PATCH organizations/members/{id} ----------------------------------------------------


def test_patch_changes_the_role_and_records_old_and_new(owner, tenant):
    member = MembershipFactory(tenant=tenant, role=Role.VIEWER)

    response = owner.client.patch(member_url(member), {"role": "member"})

    assert response.status_code == 200, response.content
    assert response.json()["role"] == "member"
    assert response.json()["permissions"]["documents"]["write"] is True
    member.refresh_from_db()
    assert member.role == Role.MEMBER
    (event,) = events("member.role_changed", tenant)
    assert event.payload["old_role"] == "viewer"
    assert event.payload["new_role"] == "member"
    assert event.payload["membership_id"] == str(member.pk)
    assert event.actor == owner.user


def test_patch_sets_permission_overrides(owner, tenant):
    member = MembershipFactory(tenant=tenant, role=Role.VIEWER)
    overrides = {"documents": {"write": True}, "analytics": {"read": False}}

    response = owner.client.patch(
        member_url(member), {"custom_permissions": overrides}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["custom_permissions"] == overrides
    assert response.json()["permissions"]["documents"]["write"] is True
    assert response.json()["permissions"]["analytics"]["read"] is False
    (event,) = events("member.updated", tenant)
    assert event.payload["changes"] == {"custom_permissions": {"from": {}, "to": overrides}}


@pytest.mark.parametrize(
    "permissions",
    [
        {"reports": {"read": True}},
        {"documents": {"print": True}},
        {"documents": {"read": "yes"}},
        {"documents": True},
    ],
)
def test_unknown_permission_areas_actions_or_values_are_refused(owner, tenant, permissions):
    member = MembershipFactory(tenant=tenant, role=Role.VIEWER)

    error = assert_envelope(
        owner.client.patch(member_url(member), {"custom_permissions": permissions}, format="json"),
        400,
        "VALIDATION_ERROR",
    )

    assert "custom_permissions" in error["details"]
    member.refresh_from_db()
    assert member.permissions == {}


def test_put_requires_role_and_status_and_replaces_the_overrides(owner, tenant):
    member = MembershipFactory(
        tenant=tenant, role=Role.VIEWER, permissions={"analytics": {"read": False}}
    )

    incomplete = owner.client.put(member_url(member), {"role": "member"})
    response = owner.client.put(member_url(member), {"role": "member", "status": "active"})

    error = assert_envelope(incomplete, 400, "VALIDATION_ERROR")
    assert "status" in error["details"]
    assert response.status_code == 200, response.content
    member.refresh_from_db()
    assert (member.role, member.permissions) == (Role.MEMBER, {})


def test_an_unchanged_update_records_nothing(owner, tenant):
    member = MembershipFactory(tenant=tenant, role=Role.VIEWER)

    response = owner.client.patch(member_url(member), {"role": "viewer", "status": "active"})

    assert response.status_code == 200
    assert not events("member.updated") and not events("member.role_changed")


# Suspension --------------------------------------------------------------------------------


def test_a_suspended_member_loses_access_on_the_next_request(owner, make_caller, tenant):
    member = make_caller(Role.MEMBER, tenant=tenant)
    _, raw_key = issue_api_key(member.membership, scopes=["read"])
    key_client = APIClient()
    key_client.credentials(HTTP_X_API_KEY=raw_key)
    assert member.client.get(MEMBERS).status_code == 200
    assert key_client.get(MEMBERS).status_code == 200

    response = owner.client.patch(member_url(member.membership), {"status": "suspended"})

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "suspended"
    assert_envelope(member.client.get(MEMBERS), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(member.client_for(None).get(MEMBERS), 400, "TENANT_REQUIRED")
    assert_envelope(key_client.get(MEMBERS), 401, "AUTHENTICATION_REQUIRED")
    (event,) = events("member.updated", tenant)
    assert event.payload["changes"] == {"status": {"from": "active", "to": "suspended"}}


def test_a_reactivated_member_gets_access_back(owner, make_caller, tenant):
    member = make_caller(Role.MEMBER, tenant=tenant)
    owner.client.patch(member_url(member.membership), {"status": "suspended"})

    response = owner.client.patch(member_url(member.membership), {"status": "active"})

    assert response.status_code == 200
    assert member.client.get(MEMBERS).status_code == 200


def test_reactivating_beyond_max_users_is_a_quota_error(make_caller):
    tenant = TenantFactory(settings={"maxUsers": 2})
    owner = make_caller(Role.OWNER, tenant=tenant)
    MembershipFactory(tenant=tenant)
    suspended = MembershipFactory(tenant=tenant, status=MembershipStatus.SUSPENDED)

    error = assert_envelope(
        owner.client.patch(member_url(suspended), {"status": "active"}), 429, "QUOTA_EXCEEDED"
    )

    assert error["details"] == {"resource": "users", "limit": 2, "current": 2}
    suspended.refresh_from_db()
    assert suspended.status == MembershipStatus.SUSPENDED


def test_an_invited_member_cannot_be_activated_or_suspended_by_hand(owner, tenant):
    invited = InvitationFactory(tenant=tenant).membership

    for status in ("active", "suspended"):
        assert_envelope(
            owner.client.patch(member_url(invited), {"status": status}), 409, "CONFLICT"
        )
    response = owner.client.patch(member_url(invited), {"role": "viewer"})

    assert response.status_code == 200
    invited.refresh_from_db()
    assert (invited.status, invited.role) == (MembershipStatus.INVITED, Role.VIEWER)


def test_a_joined_member_cannot_be_set_back_to_invited(owner, tenant):
    member = MembershipFactory(tenant=tenant)

    assert_envelope(owner.client.patch(member_url(member), {"status": "invited"}), 409, "CONFLICT")


# The last active owner ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda client, url: client.patch(url, {"role": "admin"}),
        lambda client, url: client.patch(url, {"status": "suspended"}),
        lambda client, url: client.put(url, {"role": "viewer", "status": "active"}),
        lambda client, url: client.delete(url),
    ],
    ids=["demote", "suspend", "replace", "remove"],
)
def test_the_last_active_owner_cannot_be_demoted_suspended_or_removed(owner, tenant, change):
    MembershipFactory(tenant=tenant, role=Role.OWNER, status=MembershipStatus.SUSPENDED)

    error = assert_envelope(change(owner.client, member_url(owner.membership)), 409, "CONFLICT")

    assert "last active owner" in error["message"]
    owner.membership.refresh_from_db()
    assert (owner.membership.role, owner.membership.status) == (Role.OWNER, "active")


def test_an_owner_steps_down_once_another_owner_exists(owner, make_caller, tenant):
    make_caller(Role.OWNER, tenant=tenant)

    response = owner.client.patch(member_url(owner.membership), {"role": "admin"})

    assert response.status_code == 200, response.content
    owner.membership.refresh_from_db()
    assert owner.membership.role == Role.ADMIN


def test_an_owner_may_leave_when_another_owner_remains(owner, make_caller, tenant):
    make_caller(Role.OWNER, tenant=tenant)

    response = owner.client.delete(member_url(owner.membership))

    assert response.status_code == 204
    assert not Membership.objects.filter(pk=owner.membership.pk).exists()


# Owner and self rules ----------------------------------------------------------------------


def test_only_an_owner_grants_the_owner_role(owner, admin, tenant):
    member = MembershipFactory(tenant=tenant, role=Role.MEMBER)

    refused = admin.client.patch(member_url(member), {"role": "owner"})
    granted = owner.client.patch(member_url(member), {"role": "owner"})

    error = assert_envelope(refused, 403, "INSUFFICIENT_PERMISSIONS")
    assert "owner" in error["message"]
    assert granted.status_code == 200
    member.refresh_from_db()
    assert member.role == Role.OWNER


def test_only_an_owner_changes_or_removes_an_owner(owner, admin, make_caller, tenant):
    other_owner = make_caller(Role.OWNER, tenant=tenant).membership

    demote = admin.client.patch(member_url(other_owner), {"role": "viewer"})
    permissions = admin.client.patch(
        member_url(other_owner),
        {"custom_permissions": {"billing": {"write": False}}},
        format="json",
    )
    remove = admin.client.delete(member_url(other_owner))

    for response in (demote, permissions, remove):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    other_owner.refresh_from_db()
    assert (other_owner.role, other_owner.permissions) == (Role.OWNER, {})
    assert owner.client.delete(member_url(other_owner)).status_code == 204


def test_nobody_raises_their_own_role(make_caller, tenant):
    member = make_caller(Role.MEMBER, tenant=tenant, permissions={"members": {"write": True}})

    response = member.client.patch(member_url(member.membership), {"role": "admin"})

    error = assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert "your own" in error["message"]
    member.membership.refresh_from_db()
    assert member.membership.role == Role.MEMBER


def test_an_admin_cannot_make_themselves_owner(admin):
    response = admin.client.patch(member_url(admin.membership), {"role": "owner"})

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


def test_nobody_grants_themselves_permissions(make_caller, tenant):
    member = make_caller(Role.MEMBER, tenant=tenant, permissions={"members": {"write": True}})

    response = member.client.patch(
        member_url(member.membership),
        {"custom_permissions": {"members": {"write": True}, "billing": {"read": True}}},
        format="json",
    )

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    member.membership.refresh_from_db()
    assert member.membership.permissions == {"members": {"write": True}}


def test_lowering_your_own_permissions_is_allowed(admin):
    response = admin.client.patch(
        member_url(admin.membership),
        {"custom_permissions": {"billing": {"write": False}}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["permissions"]["billing"]["write"] is False


def test_nobody_grants_permissions_they_do_not_hold(make_caller, tenant):
    manager = make_caller(Role.MEMBER, tenant=tenant, permissions={"members": {"write": True}})
    viewer = MembershipFactory(tenant=tenant, role=Role.VIEWER)

    to_admin = manager.client.patch(member_url(viewer), {"role": "admin"})
    billing = manager.client.patch(
        member_url(viewer), {"custom_permissions": {"billing": {"write": True}}}, format="json"
    )
    held = manager.client.patch(
        member_url(viewer), {"custom_permissions": {"documents": {"write": True}}}, format="json"
    )

    error = assert_envelope(to_admin, 403, "INSUFFICIENT_PERMISSIONS")
    assert "billing.write" in error["message"]
    assert_envelope(billing, 403, "INSUFFICIENT_PERMISSIONS")
    assert held.status_code == 200, held.content


def test_reactivating_grants_the_members_permissions_again(make_caller, tenant):
    manager = make_caller(Role.MEMBER, tenant=tenant, permissions={"members": {"write": True}})
    admin = MembershipFactory(tenant=tenant, role=Role.ADMIN, status=MembershipStatus.SUSPENDED)

    response = manager.client.patch(member_url(admin), {"status": "active"})

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    admin.refresh_from_db()
    assert admin.status == MembershipStatus.SUSPENDED


def test_an_invited_members_role_is_a_grant_too(make_caller, tenant):
    manager = make_caller(Role.MEMBER, tenant=tenant, permissions={"members": {"write": True}})
    invited = InvitationFactory(tenant=tenant).membership

    response = manager.client.patch(member_url(invited), {"role": "admin"})

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


def test_staff_act_with_an_owners_authority(owner, tenant):
    staff = UserFactory(is_staff=True)
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {token_for(staff)}", HTTP_X_ORGANIZATION_ID=str(tenant.pk)
    )
    member = MembershipFactory(tenant=tenant)

    response = client.patch(member_url(member), {"role": "owner"})

    assert response.status_code == 200, response.content
    (event,) = events("member.role_changed", tenant)
    assert event.actor == staff


def test_api_keys_read_members_but_cannot_manage_them(owner, tenant):
    _, raw = issue_api_key(owner.membership, scopes=["read", "write"])
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    member = MembershipFactory(tenant=tenant)

    assert client.get(MEMBERS).status_code == 200
    for response in (
        client.patch(member_url(member), {"role": "viewer"}),
        client.delete(member_url(member)),
        client.post(f"{MEMBERS}/invite", {"email": "new@example.com"}),
    ):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


# DELETE organizations/members/{id} ---------------------------------------------------------


def test_removing_a_member_deletes_the_membership_and_records_it(owner, tenant):
    member = MembershipFactory(tenant=tenant, role=Role.VIEWER)

    response = owner.client.delete(member_url(member))

    assert response.status_code == 204
    assert not Membership.objects.filter(pk=member.pk).exists()
    assert member.user.__class__.objects.filter(pk=member.user.pk).exists()  # the account stays
    (event,) = events("member.removed", tenant)
    assert event.payload == {
        "membership_id": str(member.pk),
        "user_id": str(member.user.pk),
        "email": member.user.email,
        "role": "viewer",
        "status": "active",
    }


def test_removing_an_invited_member_revokes_the_invitation(owner, tenant, api_client):
    invitation = InvitationFactory(tenant=tenant)

    response = owner.client.delete(member_url(invitation.membership))
    accept = api_client.post("/api/v1/invitations/accept", {"token": invitation.token})

    assert response.status_code == 204
    assert not Invitation.objects.filter(pk=invitation.pk).exists()
    assert_envelope(accept, 400, "VALIDATION_ERROR")
    (event,) = events("invitation.revoked", tenant)
    assert event.payload["invitation_ids"] == [str(invitation.pk)]
    assert not events("member.removed")


def test_adding_a_member_directly_needs_a_seat():
    """membership_add (tenant creation, commands) counts seats as an invitation does."""
    tenant = TenantFactory(settings={"maxUsers": 2})
    MembershipFactory(tenant=tenant)
    InvitationFactory(tenant=tenant)
    newcomer = UserFactory()

    with pytest.raises(QuotaExceeded) as refused:
        membership_add(tenant=tenant, user=newcomer, role=Role.VIEWER, actor=None)

    assert refused.value.details == {"resource": "users", "limit": 2, "current": 2}
    assert not Membership.objects.filter(tenant=tenant, user=newcomer).exists()
    assert not events("member.added", tenant)


def test_adding_a_member_directly_takes_a_free_seat():
    tenant = TenantFactory(settings={"maxUsers": 2})
    MembershipFactory(tenant=tenant)
    newcomer = UserFactory()

    membership = membership_add(tenant=tenant, user=newcomer, role=Role.VIEWER, actor=None)

    assert (membership.status, membership.role) == (MembershipStatus.ACTIVE, Role.VIEWER)
    assert len(events("member.added", tenant)) == 1
