"""The generic API test battery: a tenant-owned resource's endpoint joins with a short subclass
and inherits the tests every such endpoint must pass.

    class TestAPIKeys(ResourceBattery):
        url = "/api/v1/api-keys/"
        create_data = {"name": "CI", "scopes": ["read"]}
        update_data = {"name": "Renamed"}
        audit_prefix = "api_key"

The viewset is found from `url` (its model, permissions, filters and ordering fields), the
model's factory from the factory registry (tests/factories.py `factory_for`: each app's
tests/<app>/factories.py registers its own). A resource without a create, update or destroy
leaves the data out and the tests that need it are not collected.

Inherited tests:
- list shows the tenant's objects only; retrieve shows one and another tenant's is a 404;
- create makes the object in the request's tenant, refuses a body naming a `tenant`, and
  records its audit event; update (PATCH and PUT) changes it and records its event; destroy
  removes it (or what `assert_destroyed` says) and records its event;
- an id of another tenant's object in a body field (`related_fields`) is refused exactly like
  a random id;
- every declared filter and ordering field answers, and never shows another tenant's rows;
- every action with a permission string answers 403 to a member without it;
- the list's query count does not grow with its page size.
"""

import uuid
from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import resolve
from django_filters.rest_framework import DjangoFilterBackend

from audit.models import AuditEvent
from tenants.models import Role
from tenants.permissions import permissions_in
from tests.conftest import assert_envelope
from tests.factories import TenantFactory, factory_for

_WRITE_TESTS = {
    "create_data": (
        "test_create_makes_the_object_in_the_requests_tenant",
        "test_create_refuses_a_tenant_in_the_body",
        "test_another_tenants_id_in_a_body_field_is_refused_like_a_random_one",
    ),
    "update_data": (
        "test_patch_changes_the_object_and_records_its_event",
        "test_put_changes_the_object_and_records_its_event",
    ),
}


def list_query_count(client, url: str, make_rows: Callable[[int], None], rows: int) -> int:
    """The queries one page of `url` costs after `make_rows(rows)`."""
    make_rows(rows)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, {"page_size": 100})
    assert response.status_code == 200, response.content
    assert len(response.json()["results"]) >= rows
    return len(captured)


@pytest.mark.django_db
class ResourceBattery:
    # The list URL of the resource, e.g. "/api/v1/api-keys/".
    url: str = ""
    # A valid create body; None when the resource has no create.
    create_data: dict | None = None
    # A valid PATCH body (PUT sends it over create_data, or alone); None without updates.
    update_data: dict | None = None
    # Writes record audit events named `<audit_prefix>.<what happened>`.
    audit_prefix: str = ""
    # Body fields that reference another object by id -> the referenced model.
    related_fields: dict = {}
    # Filter name -> function of an own object giving a value that matches it, for filters
    # whose value cannot be read off the object's field of the same name.
    filter_examples: dict[str, Callable] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for data_name, tests in _WRITE_TESTS.items():
            if getattr(cls, data_name) is None:
                for test in tests:
                    setattr(cls, test, None)
        if not cls.related_fields:
            cls.test_another_tenants_id_in_a_body_field_is_refused_like_a_random_one = None
            cls.test_a_referenced_object_deleted_after_the_checks_is_refused_not_a_500 = None
        if "destroy" not in cls.view_class().required_permissions:
            cls.test_destroy_removes_the_object_and_records_its_event = None

    # What a subclass may adapt -----------------------------------------------------------

    @classmethod
    def view_class(cls):
        return resolve(cls.url).func.cls

    @classmethod
    def model(cls):
        return cls.view_class().queryset.model

    def make(self, tenant, **fields):
        """One object of the resource in `tenant`."""
        return factory_for(self.model())(tenant=tenant, **fields)

    def detail_url(self, obj) -> str:
        return f"{self.url.rstrip('/')}/{obj.pk}/"

    def assert_destroyed(self, obj) -> None:
        assert not type(obj).objects.filter(pk=obj.pk).exists()

    # Helpers -------------------------------------------------------------------------------

    @pytest.fixture
    def caller(self, make_caller):
        return make_caller(Role.OWNER)

    def events(self, tenant) -> int:
        return AuditEvent.objects.filter(
            tenant=tenant, event_type__startswith=f"{self.audit_prefix}."
        ).count()

    @staticmethod
    def ids(response) -> set[str]:
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    # Reads ---------------------------------------------------------------------------------

    def test_list_shows_the_tenants_objects_only(self, caller):
        own = {str(self.make(caller.tenant).pk) for _ in range(2)}
        foreign = str(self.make(TenantFactory()).pk)

        listed = self.ids(caller.client.get(self.url, {"page_size": 100}))

        assert own <= listed
        assert foreign not in listed

    def test_retrieve_shows_the_object_and_another_tenants_is_404(self, caller):
        own = self.make(caller.tenant)
        foreign = self.make(TenantFactory())

        response = caller.client.get(self.detail_url(own))
        foreign_error = assert_envelope(caller.client.get(self.detail_url(foreign)), 404)
        random_error = assert_envelope(
            caller.client.get(f"{self.url.rstrip('/')}/{uuid.uuid4()}/"), 404
        )

        assert response.status_code == 200, response.content
        assert response.json()["id"] == str(own.pk)
        assert foreign_error["message"] == random_error["message"]

    def test_the_list_query_count_does_not_grow_with_its_page_size(self, make_caller):
        def count(rows: int) -> int:
            caller = make_caller(Role.OWNER)

            def make_rows(n):
                for _ in range(n):
                    self.make(caller.tenant)

            return list_query_count(caller.client, self.url, make_rows, rows)

        assert count(2) == count(12)

    def test_every_filter_and_ordering_field_answers_within_the_tenant(self, caller):
        own = self.make(caller.tenant)
        foreign_ids = {str(self.make(TenantFactory()).pk)}
        for name, value in self._filter_examples(own).items():
            listed = self.ids(caller.client.get(self.url, {name: value, "page_size": 100}))
            assert not listed & foreign_ids, name
        everything = self.ids(caller.client.get(self.url, {"page_size": 100}))
        for field in self.view_class().ordering_fields:
            for ordering in (field, f"-{field}"):
                ordered = self.ids(caller.client.get(self.url, {"ordering": ordering}))
                assert ordered == everything, ordering

    def _filter_examples(self, obj) -> dict:
        view = self.view_class()
        filterset_class = DjangoFilterBackend().get_filterset_class(view, self.model().objects)
        if filterset_class is None:
            return {}
        examples = {}
        for name, declared in filterset_class.base_filters.items():
            if name in self.filter_examples:
                examples[name] = self.filter_examples[name](obj)
                continue
            value = getattr(obj, declared.field_name, None)
            assert value is not None, (
                f"give filter {name!r} a matching value in {type(self).__name__}.filter_examples"
            )
            examples[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return examples

    def test_each_action_needs_its_permission(self, make_caller):
        view = self.view_class()
        for action, requirement in view.required_permissions.items():
            names = permissions_in(requirement)
            if not names or action not in _ROUTES:
                continue
            withdrawn: dict[str, dict[str, bool]] = {}
            for name in names:
                area, level = name.split(".")
                withdrawn.setdefault(area, {})[level] = False
            caller = make_caller(Role.OWNER, permissions=withdrawn)
            method, detail = _ROUTES[action]
            url = self.detail_url(self.make(caller.tenant)) if detail else self.url
            response = getattr(caller.client, method)(url, {}, format="json")
            assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")

    # Writes --------------------------------------------------------------------------------

    def test_create_makes_the_object_in_the_requests_tenant(self, caller):
        events_before = self.events(caller.tenant)

        response = caller.client.post(self.url, self.create_data, format="json")

        assert response.status_code == 201, response.content
        created = self.model().objects.get(pk=response.json()["id"])
        assert created.tenant_id == caller.tenant.pk
        assert self.events(caller.tenant) == events_before + 1

    def test_create_refuses_a_tenant_in_the_body(self, caller):
        other = TenantFactory()
        count_before = self.model().objects.count()

        for key in ("tenant", "tenant_id"):
            body = {**self.create_data, key: str(other.pk)}
            error = assert_envelope(caller.client.post(self.url, body, format="json"), 400)
            assert key in error["details"]

        assert self.model().objects.count() == count_before

    def test_another_tenants_id_in_a_body_field_is_refused_like_a_random_one(self, caller):
        for field, model in self.related_fields.items():
            foreign = factory_for(model)(tenant=TenantFactory())
            answers = []
            for value in (str(foreign.pk), str(uuid.uuid4())):
                body = {**self.create_data, field: value}
                error = assert_envelope(caller.client.post(self.url, body, format="json"), 400)
                answers.append([str(m).replace(value, "<id>") for m in error["details"][field]])
            assert answers[0] == answers[1], field

    def test_a_referenced_object_deleted_after_the_checks_is_refused_not_a_500(
        self, caller, monkeypatch
    ):
        """The body names an object of the tenant (`related_fields`), found by the checks;
        another request deletes it before the service writes: a refusal, never a 500, and
        nothing is made pointing at it."""
        from tenants.api import ServiceWriteMixin

        original = ServiceWriteMixin.call_service
        for field, model in self.related_fields.items():
            referenced = factory_for(model)(tenant=caller.tenant)

            def delete_then_call(view, service, _referenced=referenced, **arguments):
                type(_referenced).objects.filter(pk=_referenced.pk).delete()
                return original(view, service, **arguments)

            count_before = self.model().objects.count()
            body = {**self.create_data, field: str(referenced.pk)}
            with monkeypatch.context() as patch:
                patch.setattr(ServiceWriteMixin, "call_service", delete_then_call)
                response = caller.client.post(self.url, body, format="json")

            assert response.status_code < 500, (field, response.content[:300])
            assert self.model().objects.count() == count_before, field

    def test_patch_changes_the_object_and_records_its_event(self, caller):
        obj = self.make(caller.tenant)
        events_before = self.events(caller.tenant)

        response = caller.client.patch(self.detail_url(obj), self.update_data, format="json")

        assert response.status_code == 200, response.content
        for key, value in self.update_data.items():
            if key in response.json():
                assert response.json()[key] == value, key
        assert self.events(caller.tenant) == events_before + 1

    def test_put_changes_the_object_and_records_its_event(self, caller):
        obj = self.make(caller.tenant)
        events_before = self.events(caller.tenant)
        body = {**(self.create_data or {}), **self.update_data}

        response = caller.client.put(self.detail_url(obj), body, format="json")

        assert response.status_code == 200, response.content
        assert self.events(caller.tenant) == events_before + 1

    def test_destroy_removes_the_object_and_records_its_event(self, caller):
        obj = self.make(caller.tenant)
        events_before = self.events(caller.tenant)

        response = caller.client.delete(self.detail_url(obj))

        assert response.status_code == 204, response.content
        self.assert_destroyed(obj)
        assert self.events(caller.tenant) == events_before + 1


# action -> (client method, whether it is on the detail route)
_ROUTES = {
    "list": ("get", False),
    "retrieve": ("get", True),
    "create": ("post", False),
    "update": ("put", True),
    "partial_update": ("patch", True),
    "destroy": ("delete", True),
}
