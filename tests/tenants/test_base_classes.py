"""tenants.api base classes refuse unsafe subclasses; tenants.serializers scopes references."""

import uuid
from types import SimpleNamespace

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework import mixins, serializers

from audit.views import AuditEventViewSet
from tenants.api import (
    PlatformViewSet,
    TenantContextViewSet,
    TenantCrudViewSet,
    TenantScopedViewSet,
)
from tenants.models import Membership, Role
from tenants.permissions import HasRequiredPermission
from tenants.serializers import TenantScopedPrimaryKeyRelatedField, tenant_queryset
from tests.factories import MembershipFactory, TenantFactory, UserFactory

BASES = [PlatformViewSet, TenantContextViewSet, TenantScopedViewSet]


def _method(self, *args, **kwargs):
    return None


SEALED_OVERRIDES = {
    "get_permissions": _method,
    "initial": _method,
    "perform_authentication": _method,
    "check_permissions": _method,
    "permission_classes": (),
}


# Class creation ----------------------------------------------------------------------------


def test_scoped_viewset_overriding_get_queryset_is_refused():
    with pytest.raises(ImproperlyConfigured, match="get_queryset"):

        class Leaky(TenantScopedViewSet):
            queryset = Membership.objects.all()

            def get_queryset(self):
                return Membership.objects.all()


@pytest.mark.parametrize("base", BASES, ids=lambda base: base.__name__)
@pytest.mark.parametrize("name", list(SEALED_OVERRIDES))
def test_overriding_a_sealed_member_is_refused(base, name):
    with pytest.raises(ImproperlyConfigured) as excinfo:
        type("Unsafe", (base,), {"__module__": __name__, name: SEALED_OVERRIDES[name]})

    assert name in str(excinfo.value)
    assert "Unsafe" in str(excinfo.value)


def test_claiming_to_be_a_base_class_outside_tenants_api_does_not_unseal():
    with pytest.raises(ImproperlyConfigured, match="get_queryset"):

        class Sneaky(TenantScopedViewSet):
            _is_base = True
            queryset = Membership.objects.all()

            def get_queryset(self):
                return Membership.objects.all()


def test_every_overridden_sealed_member_is_named():
    with pytest.raises(ImproperlyConfigured) as excinfo:
        type("Unsafe", (TenantScopedViewSet,), {"__module__": __name__, **SEALED_OVERRIDES})

    for name in SEALED_OVERRIDES:
        assert name in str(excinfo.value)


def test_subclass_of_a_concrete_viewset_is_refused_too():
    with pytest.raises(ImproperlyConfigured, match="get_queryset"):

        class WiderAuditEvents(AuditEventViewSet):
            def get_queryset(self):
                return self.queryset


def test_subclass_using_scope_queryset_is_accepted():
    class OwnersOnly(TenantScopedViewSet):
        queryset = Membership.objects.all()
        required_permissions = {"list": "members.read"}

        def scope_queryset(self, queryset):
            return queryset.filter(role=Role.OWNER)

    assert OwnersOnly.get_queryset is TenantScopedViewSet.get_queryset
    assert OwnersOnly.permission_classes == (HasRequiredPermission,)


# get_queryset and scope_queryset -----------------------------------------------------------


class OwnerMemberships(TenantScopedViewSet):
    """A subclass as apps write them: narrows through the hook only."""

    queryset = Membership.objects.all()
    required_permissions = {"list": "members.read"}

    def scope_queryset(self, queryset):
        return queryset.filter(role=Role.OWNER)


class StaffWideOwnerMemberships(OwnerMemberships):
    staff_cross_tenant = True


def queryset_of(viewset_class, *, tenant=None, user=None):
    view = viewset_class()
    view.request = SimpleNamespace(tenant=tenant, user=user or UserFactory.build())
    return view.get_queryset()


@pytest.mark.django_db
def test_scoped_queryset_is_the_tenants_rows_narrowed_by_the_hook():
    tenant = TenantFactory()
    owner = MembershipFactory(tenant=tenant, role=Role.OWNER)
    MembershipFactory(tenant=tenant, role=Role.VIEWER)
    MembershipFactory(role=Role.OWNER)

    assert list(queryset_of(OwnerMemberships, tenant=tenant)) == [owner]


@pytest.mark.django_db
def test_scoped_queryset_without_a_tenant_is_empty_even_for_staff():
    MembershipFactory(role=Role.OWNER)
    staff = UserFactory.build(is_staff=True)

    assert not queryset_of(OwnerMemberships).exists()
    assert not queryset_of(OwnerMemberships, user=staff).exists()


@pytest.mark.django_db
def test_staff_cross_tenant_queryset_spans_tenants_but_keeps_the_hook():
    owners = {MembershipFactory(role=Role.OWNER).pk for _ in range(2)}
    MembershipFactory(role=Role.VIEWER)
    staff = UserFactory.build(is_staff=True)

    result = {m.pk for m in queryset_of(StaffWideOwnerMemberships, user=staff)}

    assert result == owners
    assert not queryset_of(StaffWideOwnerMemberships).exists()


# TenantScopedPrimaryKeyRelatedField --------------------------------------------------------


class AssignSerializer(serializers.Serializer):
    membership = TenantScopedPrimaryKeyRelatedField(queryset=Membership.objects.all())


def errors_for(pk, tenant) -> list:
    serializer = AssignSerializer(data={"membership": str(pk)}, context={"tenant": tenant})
    assert not serializer.is_valid()
    return serializer.errors["membership"]


def does_not_exist(pk) -> str:
    message = TenantScopedPrimaryKeyRelatedField.default_error_messages["does_not_exist"]
    return message.format(pk_value=pk)


@pytest.mark.django_db
def test_scoped_field_accepts_an_id_of_the_tenants_object():
    membership = MembershipFactory()
    serializer = AssignSerializer(
        data={"membership": str(membership.pk)}, context={"tenant": membership.tenant}
    )

    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["membership"] == membership


@pytest.mark.django_db
def test_scoped_field_rejects_another_tenants_id_like_a_random_one():
    tenant = TenantFactory()
    foreign = MembershipFactory()
    random_id = uuid.uuid4()

    foreign_errors = errors_for(foreign.pk, tenant)
    random_errors = errors_for(random_id, tenant)

    assert [str(e) for e in foreign_errors] == [does_not_exist(foreign.pk)]
    assert [str(e) for e in random_errors] == [does_not_exist(random_id)]
    assert [e.code for e in foreign_errors] == [e.code for e in random_errors] == ["does_not_exist"]


@pytest.mark.django_db
def test_scoped_field_without_a_tenant_accepts_nothing():
    membership = MembershipFactory()

    errors = errors_for(membership.pk, None)

    assert [e.code for e in errors] == ["does_not_exist"]


# tenant_queryset (FilterSet querysets) -----------------------------------------------------


@pytest.mark.django_db
def test_tenant_queryset_is_scoped_to_the_requests_tenant():
    tenant = TenantFactory()
    mine = {MembershipFactory(tenant=tenant).pk for _ in range(2)}
    MembershipFactory()

    scoped = tenant_queryset(Membership)(SimpleNamespace(tenant=tenant))

    assert {m.pk for m in scoped} == mine


@pytest.mark.django_db
@pytest.mark.parametrize("request_", [SimpleNamespace(tenant=None), SimpleNamespace(), None])
def test_tenant_queryset_without_a_tenant_is_empty(request_):
    MembershipFactory()

    assert not tenant_queryset(Membership)(request_).exists()


@pytest.mark.parametrize("name", ["get_object", "filter_queryset"])
def test_scoped_viewset_overriding_how_objects_are_found_is_refused(name):
    with pytest.raises(ImproperlyConfigured, match=name):
        type("Finder", (TenantScopedViewSet,), {"__module__": __name__, name: _method})


# The app kit: permission areas and service-backed writes ------------------------------------


def test_a_permission_area_derives_the_standard_actions_entries():
    class Keys(TenantCrudViewSet):
        queryset = Membership.objects.all()
        permission_area = "keys"
        required_permissions = {"rotate": "keys.write", "destroy": "members.write"}

    assert Keys.required_permissions == {
        "list": "keys.read",
        "retrieve": "keys.read",
        "create": "keys.write",
        "update": "keys.write",
        "partial_update": "keys.write",
        "destroy": "members.write",  # an explicit entry wins
        "rotate": "keys.write",
    }


def test_only_the_actions_a_viewset_has_get_entries():
    class ReadOnly(mixins.ListModelMixin, TenantScopedViewSet):
        queryset = Membership.objects.all()
        permission_area = "audit"

    assert ReadOnly.required_permissions == {"list": "audit.read"}


def test_an_area_without_read_and_write_is_refused_at_class_creation():
    with pytest.raises(ImproperlyConfigured, match="permission_area"):

        class Wrong(TenantCrudViewSet):
            queryset = Membership.objects.all()
            permission_area = "audit"  # read only


def test_a_subclass_keeps_its_parents_explicit_entries_over_a_new_area():
    class Parent(TenantCrudViewSet):
        queryset = Membership.objects.all()
        permission_area = "keys"
        required_permissions = {"rotate": "keys.write"}

    class Child(Parent):
        permission_area = "members"

    assert Child.required_permissions["list"] == "members.read"
    assert Child.required_permissions["rotate"] == "keys.write"


def _recording_service(calls):
    def service(*, membership, actor, role):
        calls.append({"membership": membership, "actor": actor, "role": role})
        return membership

    return service


def test_service_hooks_are_called_as_plain_functions_with_the_context_they_declare():
    calls = []

    class Members(TenantCrudViewSet):
        queryset = Membership.objects.all()
        permission_area = "members"
        update_service = _recording_service(calls)
        service_object_name = "membership"

    view = Members()
    view.request = SimpleNamespace(user="the-actor", permissions=frozenset({"members.write"}))
    view.call_service(Members.update_service, membership="m", role="viewer")

    # actor_permissions is not passed: the service does not declare it.
    assert calls == [{"membership": "m", "actor": "the-actor", "role": "viewer"}]


def test_a_service_taking_any_keyword_gets_the_whole_context():
    received = {}

    def service(**kwargs):
        received.update(kwargs)

    class Anything(TenantCrudViewSet):
        queryset = Membership.objects.all()
        permission_area = "members"

    view = Anything()
    view.request = SimpleNamespace(user="u", permissions=frozenset())
    view.call_service(service, value=1)

    assert received == {"actor": "u", "actor_permissions": frozenset(), "value": 1}


def test_the_object_kwarg_defaults_to_the_models_name_in_snake_case():
    from accounts.models import APIKey

    class Keys(TenantCrudViewSet):
        queryset = APIKey.objects.all()
        permission_area = "keys"

    assert Keys().service_object_kwarg() == "api_key"
