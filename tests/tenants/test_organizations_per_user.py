"""The ceiling on organizations one user may own and still create another through
POST /api/v1/tenants/ (ORGANIZATIONS_PER_USER): each new organization brings its plan's free
quotas, so one account must not multiply them."""

import itertools
import threading

import pytest
from rest_framework.test import APIClient

from audit import tasks as audit_tasks
from audit.models import AuditEvent
from config.exceptions import Conflict
from tenants.models import Membership, MembershipStatus, Role, Tenant, TenantStatus
from tenants.services import lifecycle
from tenants.services.lifecycle import tenant_create
from tests.conftest import assert_envelope, race, token_for
from tests.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

TENANTS_URL = "/api/v1/tenants/"


@pytest.fixture
def ceiling(settings):
    settings.ORGANIZATIONS_PER_USER = 3
    return 3


def client_of(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def own(user, count: int, **tenant_fields) -> list[Tenant]:
    tenants = TenantFactory.create_batch(count, **tenant_fields)
    for tenant in tenants:
        MembershipFactory(tenant=tenant, user=user, role=Role.OWNER)
    return tenants


def create(user, name: str):
    return client_of(user).post(TENANTS_URL, {"name": name}, format="json")


def test_a_user_below_the_ceiling_creates_up_to_it(ceiling):
    user = UserFactory()
    own(user, ceiling - 1)

    assert create(user, "Last One").status_code == 201
    assert Membership.objects.filter(user=user, role=Role.OWNER).count() == ceiling


def test_past_the_ceiling_the_answer_is_409_and_nothing_is_made(ceiling):
    user = UserFactory()
    own(user, ceiling)
    client = client_of(user)
    tenants, events = Tenant.objects.count(), AuditEvent.objects.count()

    response = client.post(TENANTS_URL, {"name": "One Too Many"}, format="json")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {"organizations_owned": ceiling, "limit": ceiling}
    assert error["message"].startswith(f"You already own {ceiling} organizations; one user")
    assert Tenant.objects.count() == tenants
    assert not Tenant.objects.filter(name="One Too Many").exists()
    assert AuditEvent.objects.count() == events


def test_cancelled_organizations_and_other_roles_do_not_count(ceiling):
    user = UserFactory()
    own(user, ceiling - 1)
    own(user, 2, status=TenantStatus.CANCELLED)
    for role in (Role.ADMIN, Role.MEMBER):
        MembershipFactory(user=user, role=role)
    MembershipFactory(user=user, role=Role.OWNER, status=MembershipStatus.SUSPENDED)

    assert create(user, "Still Room").status_code == 201
    assert_envelope(create(user, "No Room"), 409, "CONFLICT")


def test_suspended_organizations_count(ceiling):
    """A suspended organization still exists (staff may restore it), with its quotas."""
    user = UserFactory()
    own(user, ceiling - 1)
    own(user, 1, status=TenantStatus.SUSPENDED)

    assert_envelope(create(user, "No Room"), 409, "CONFLICT")


def test_cancelling_one_makes_room(ceiling):
    user = UserFactory()
    owned = own(user, ceiling)
    assert_envelope(create(user, "Waiting"), 409, "CONFLICT")

    Tenant.objects.filter(pk=owned[0].pk).update(status=TenantStatus.CANCELLED)

    assert create(user, "Waiting").status_code == 201


def test_staff_and_the_system_are_not_held_to_it(ceiling):
    staff = UserFactory(is_staff=True)
    own(staff, ceiling)

    assert create(staff, "Staff Made").status_code == 201
    tenant_create(actor=None, owner=staff, name="System Made")
    assert Membership.objects.filter(user=staff, role=Role.OWNER).count() == ceiling + 2


def test_zero_leaves_creating_organizations_to_staff(settings):
    settings.ORGANIZATIONS_PER_USER = 0
    user, staff = UserFactory(), UserFactory(is_staff=True)

    error = assert_envelope(create(user, "Self Service"), 409, "CONFLICT")
    assert error["details"] == {"organizations_owned": 0, "limit": 0}
    assert error["message"] == "Organizations are created by the platform's staff here."
    assert create(staff, "Staff Service").status_code == 201


@pytest.mark.postgres
def test_parallel_creations_stop_at_the_ceiling(transactional_db, settings, monkeypatch):
    """Eight creations at once by a user with room for two: two are made, six answer 409."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    settings.ORGANIZATIONS_PER_USER = 3
    user = UserFactory()
    own(user, 1)
    token = token_for(user)
    numbers = itertools.count()

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client.post(TENANTS_URL, {"name": f"Racer {next(numbers)}"}, format="json")

    statuses = [response.status_code for response in race(8, post)]

    assert sorted(statuses) == [201, 201] + [409] * 6
    assert Membership.objects.filter(user=user, role=Role.OWNER).count() == 3
    assert Tenant.objects.filter(name__startswith="Racer ").count() == 2


@pytest.mark.postgres
def test_parallel_creations_of_one_name_by_different_users_all_get_a_slug(
    transactional_db, monkeypatch
):
    """Six users naming their organization "Acme" at once, none giving a slug: each is made,
    with its own slug derived from the name (a creation that loses the race for `acme` derives
    the next free one instead of answering 409)."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    tokens = iter([token_for(UserFactory()) for _ in range(6)])
    lock = threading.Lock()

    def post():
        with lock:
            token = next(tokens)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        return client.post(TENANTS_URL, {"name": "Acme Rockets"}, format="json")

    responses = race(6, post)

    assert [response.status_code for response in responses] == [201] * 6
    slugs = sorted(response.json()["slug"] for response in responses)
    assert slugs == ["acme-rockets"] + [f"acme-rockets-{n}" for n in range(2, 7)]


def test_a_slug_given_and_taken_is_not_derived_again():
    """Only a derived slug is derived again: one the caller chose and another organization has
    is theirs to change (the API's serializer says so first, 400; the service, 409)."""
    TenantFactory(slug="taken")

    with pytest.raises(Conflict):
        tenant_create(actor=None, name="Mine", slug="taken")

    response = client_of(UserFactory()).post(
        TENANTS_URL, {"name": "Mine", "slug": "taken"}, format="json"
    )
    assert_envelope(response, 400, "VALIDATION_ERROR")
    assert not Tenant.objects.filter(name="Mine").exists()


def test_a_rename_to_a_slug_taken_after_its_check_is_409(monkeypatch):
    """A creation or rename to the same slug can commit between the rename's check and its
    write: the unique constraint refuses it, answered 409 like the check's refusal."""
    TenantFactory(slug="taken")
    tenant = TenantFactory(slug="mine")
    monkeypatch.setattr(lifecycle, "slug_in_use", lambda slug, excluding=None: False)

    with pytest.raises(Conflict):
        lifecycle.tenant_update(tenant=tenant, actor=None, data={"slug": "taken"})

    assert Tenant.objects.get(pk=tenant.pk).slug == "mine"
