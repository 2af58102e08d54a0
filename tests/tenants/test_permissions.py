"""tenants.permissions: the role table, per-area overrides, and the one permission class."""

from types import SimpleNamespace

import pytest
from django.contrib.auth.models import AnonymousUser

from tenants.models import Role
from tenants.permissions import (
    ALL_PERMISSIONS,
    AUTHENTICATED,
    PERMISSIONS_BY_AREA,
    PUBLIC,
    ROLE_PERMISSIONS,
    STAFF,
    TENANT_MEMBER,
    AnyOf,
    HasRequiredPermission,
    effective_permissions,
    permissions_as_object,
    permissions_in,
)
from tests.factories import TenantFactory, UserFactory

# Every area and its actions, written out so that a change to the table is deliberate.
DESIGNED_PERMISSIONS = {
    "documents.read", "documents.write", "documents.delete",
    "conversations.read", "conversations.moderate",
    "analytics.read", "analytics.write",
    "settings.read", "settings.write",
    "billing.read", "billing.write",
    "security.read", "security.write",
    "support.read", "support.write",
    "playground.read", "playground.write", "playground.execute",
    "audit.read",
    "members.read", "members.write",
    "keys.read", "keys.write",
}  # fmt: skip


# The role table ----------------------------------------------------------------------------


def test_permission_strings_are_the_designed_ones():
    assert set(ALL_PERMISSIONS) == DESIGNED_PERMISSIONS


@pytest.mark.parametrize("role", list(Role))
def test_every_role_has_a_permission_set(role):
    assert role in ROLE_PERMISSIONS


@pytest.mark.parametrize("role", list(ROLE_PERMISSIONS))
def test_every_role_set_holds_only_known_permissions(role):
    assert ROLE_PERMISSIONS[role] <= ALL_PERMISSIONS, ROLE_PERMISSIONS[role] - ALL_PERMISSIONS


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owner_and_admin_hold_every_permission(role):
    assert ROLE_PERMISSIONS[role] == ALL_PERMISSIONS


def test_viewer_holds_no_write_permission():
    writes = {name for name in ROLE_PERMISSIONS[Role.VIEWER] if name.endswith(".write")}

    assert not writes


def test_viewer_only_reads():
    assert ROLE_PERMISSIONS[Role.VIEWER]
    assert all(name.endswith(".read") for name in ROLE_PERMISSIONS[Role.VIEWER])


# Overrides (a permission object: area -> action -> bool) -----------------------------------


def test_role_without_overrides_holds_its_default_set():
    assert effective_permissions(Role.MEMBER) == ROLE_PERMISSIONS[Role.MEMBER]
    assert effective_permissions(Role.MEMBER, {}) == ROLE_PERMISSIONS[Role.MEMBER]


def test_override_true_grants_a_permission_the_role_lacks():
    assert "audit.read" not in ROLE_PERMISSIONS[Role.VIEWER]

    granted = effective_permissions(Role.VIEWER, {"audit": {"read": True}})

    assert granted == ROLE_PERMISSIONS[Role.VIEWER] | {"audit.read"}


def test_override_false_removes_a_permission_the_role_holds():
    removed = effective_permissions(Role.OWNER, {"audit": {"read": False}})

    assert removed == ALL_PERMISSIONS - {"audit.read"}


def test_overrides_in_several_areas_apply_together():
    result = effective_permissions(
        Role.VIEWER,
        {"documents": {"read": False, "write": True}, "billing": {"read": True}},
    )

    assert result == (ROLE_PERMISSIONS[Role.VIEWER] - {"documents.read"}) | {
        "documents.write",
        "billing.read",
    }


def test_override_does_not_change_the_role_table():
    effective_permissions(Role.OWNER, {"audit": {"read": False}})
    effective_permissions(Role.VIEWER, {"audit": {"read": True}})

    assert ROLE_PERMISSIONS[Role.OWNER] == ALL_PERMISSIONS
    assert "audit.read" not in ROLE_PERMISSIONS[Role.VIEWER]


@pytest.mark.parametrize(
    "overrides",
    [
        {"rockets": {"launch": True}},
        {"audit": {"write": True}},
        {"audit": {"delete": True}, "documents": {"read.write": True}},
        {"": {"": True}},
    ],
)
def test_unknown_areas_and_actions_are_ignored(overrides):
    assert effective_permissions(Role.VIEWER, overrides) == ROLE_PERMISSIONS[Role.VIEWER]


@pytest.mark.parametrize("value", [1, "true", "yes", [True], {"x": True}, None])
def test_non_bool_grant_is_ignored(value):
    result = effective_permissions(Role.VIEWER, {"audit": {"read": value}})

    assert "audit.read" not in result
    assert result == ROLE_PERMISSIONS[Role.VIEWER]


@pytest.mark.parametrize("value", [0, "false", "", [], None])
def test_non_bool_removal_is_ignored(value):
    assert effective_permissions(Role.OWNER, {"audit": {"read": value}}) == ALL_PERMISSIONS


@pytest.mark.parametrize("area_value", [True, False, ["read"], "read", None, 1])
def test_area_that_is_not_an_object_is_ignored(area_value):
    assert effective_permissions(Role.OWNER, {"audit": area_value}) == ALL_PERMISSIONS
    assert (
        effective_permissions(Role.VIEWER, {"audit": area_value}) == ROLE_PERMISSIONS[Role.VIEWER]
    )


def test_unknown_role_holds_nothing():
    assert effective_permissions("superuser") == frozenset()


def test_effective_permissions_is_immutable():
    assert isinstance(effective_permissions(Role.MEMBER, {"audit": {"read": True}}), frozenset)


# The permission object ---------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_permission_object_lists_every_area_and_action(role):
    obj = permissions_as_object(ROLE_PERMISSIONS[role])

    assert list(obj) == list(PERMISSIONS_BY_AREA)
    for area, actions in PERMISSIONS_BY_AREA.items():
        assert list(obj[area]) == list(actions)
        assert all(isinstance(allowed, bool) for allowed in obj[area].values())


@pytest.mark.parametrize("role", list(Role))
def test_permission_object_round_trips_to_the_same_set(role):
    obj = permissions_as_object(ROLE_PERMISSIONS[role])

    held = {
        f"{area}.{action}" for area, actions in obj.items() for action, ok in actions.items() if ok
    }

    assert held == ROLE_PERMISSIONS[role]


def test_permission_object_marks_what_is_held_and_what_is_not():
    obj = permissions_as_object(frozenset({"documents.read", "audit.read"}))

    assert obj["documents"] == {"read": True, "write": False, "delete": False}
    assert obj["audit"] == {"read": True}
    assert obj["billing"] == {"read": False, "write": False}


def test_permission_object_of_nothing_is_all_false():
    obj = permissions_as_object(frozenset())

    assert not any(allowed for actions in obj.values() for allowed in actions.values())


def test_permission_object_fed_back_as_overrides_reproduces_the_set():
    """An object read from the API can be stored as a membership's overrides unchanged."""
    wanted = ROLE_PERMISSIONS[Role.DPO]

    assert effective_permissions(Role.VIEWER, permissions_as_object(wanted)) == wanted


# HasRequiredPermission ---------------------------------------------------------------------


def view_for(required: dict, action: str | None = "list"):
    return SimpleNamespace(required_permissions=required, action=action)


def request_for(user, *, tenant=None, permissions=frozenset(), method="GET"):
    return SimpleNamespace(user=user, tenant=tenant, permissions=permissions, method=method)


@pytest.fixture
def staff_user():
    return UserFactory.build(is_staff=True, is_superuser=True)


@pytest.fixture
def plain_user():
    return UserFactory.build()


@pytest.fixture
def tenant():
    return TenantFactory.build()


def allowed(view, request) -> bool:
    return HasRequiredPermission().has_permission(request, view)


def test_action_without_an_entry_is_denied_even_for_staff(staff_user, tenant):
    view = view_for({"list": "audit.read"}, action="destroy")
    request = request_for(staff_user, tenant=tenant, permissions=ALL_PERMISSIONS)

    assert not allowed(view, request)


def test_view_with_no_entries_denies_everyone(staff_user, tenant):
    request = request_for(staff_user, tenant=tenant, permissions=ALL_PERMISSIONS)

    assert not allowed(view_for({}), request)
    assert not allowed(view_for({}), request_for(AnonymousUser()))


def test_plain_view_without_action_uses_the_http_method(plain_user, tenant):
    view = view_for({"get": TENANT_MEMBER}, action=None)

    assert allowed(view, request_for(plain_user, tenant=tenant, method="GET"))
    assert not allowed(view, request_for(plain_user, tenant=tenant, method="POST"))


def test_staff_entry_refuses_non_staff(plain_user, tenant):
    view = view_for({"list": STAFF})

    assert not allowed(view, request_for(plain_user, tenant=tenant, permissions=ALL_PERMISSIONS))
    assert not allowed(view, request_for(AnonymousUser()))


def test_staff_entry_admits_staff_without_a_tenant(staff_user):
    assert allowed(view_for({"list": STAFF}), request_for(staff_user))


def test_public_entry_admits_anonymous_callers():
    assert allowed(view_for({"list": PUBLIC}), request_for(AnonymousUser()))


def test_authenticated_entry_needs_a_user_but_no_tenant(plain_user):
    view = view_for({"list": AUTHENTICATED})

    assert allowed(view, request_for(plain_user))
    assert not allowed(view, request_for(AnonymousUser()))


def test_tenant_member_entry_needs_a_resolved_tenant(plain_user, tenant):
    view = view_for({"list": TENANT_MEMBER})

    assert allowed(view, request_for(plain_user, tenant=tenant))
    assert not allowed(view, request_for(plain_user))
    assert not allowed(view, request_for(AnonymousUser(), tenant=tenant))


def test_permission_entry_needs_the_permission_in_the_tenant(plain_user, tenant):
    view = view_for({"list": "audit.read"})

    assert allowed(view, request_for(plain_user, tenant=tenant, permissions={"audit.read"}))
    assert not allowed(view, request_for(plain_user, tenant=tenant, permissions={"audit.write"}))
    assert not allowed(view, request_for(plain_user, permissions={"audit.read"}))
    assert not allowed(
        view, request_for(AnonymousUser(), tenant=tenant, permissions={"audit.read"})
    )


def test_staff_without_the_permission_string_is_refused(staff_user, tenant):
    view = view_for({"list": "audit.read"})

    assert not allowed(view, request_for(staff_user, tenant=tenant, permissions=frozenset()))


def test_metadata_action_needs_only_authentication(plain_user):
    view = view_for({}, action="metadata")

    assert allowed(view, request_for(plain_user))
    assert not allowed(view, request_for(AnonymousUser()))


# AnyOf -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "granted, expected",
    [
        (frozenset({"support.write"}), True),
        (frozenset({"billing.write"}), True),
        (frozenset({"support.write", "billing.write"}), True),
        (frozenset({"support.read", "billing.read"}), False),
        (frozenset(), False),
    ],
    ids=["first", "second", "both", "neither", "none"],
)
def test_any_of_is_met_by_any_one_of_its_permissions(plain_user, tenant, granted, expected):
    view = view_for({"list": AnyOf("support.write", "billing.write")})
    request = request_for(plain_user, tenant=tenant, permissions=granted)

    assert allowed(view, request) is expected


@pytest.mark.parametrize(
    "names",
    [("support.write",), ("support.write", "support.print"), ("@public", "support.read")],
    ids=["one", "unknown", "access-level"],
)
def test_any_of_needs_two_known_permissions(names):
    with pytest.raises(ValueError):
        AnyOf(*names)


def test_permissions_in_names_the_strings_of_each_kind_of_requirement():
    assert permissions_in(AnyOf("support.read", "billing.read")) == (
        "support.read",
        "billing.read",
    )
    assert permissions_in("audit.read") == ("audit.read",)
    assert permissions_in(PUBLIC) == ()
    assert permissions_in(None) == ()
