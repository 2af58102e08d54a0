"""Tenant resolution (tenants/resolution.py), exercised through real API requests.

Order: X-Organization-ID header (UUID or slug), the organization_id query parameter, the
caller's only active membership, else 400 TENANT_REQUIRED. A tenant the caller cannot see is
404, exactly like one that does not exist; a blocked tenant is 403 TENANT_SUSPENDED except on
the actions that stay open (reading the organization).
"""

import uuid

import pytest

from tenants.models import MembershipStatus, Role, TenantStatus
from tests.conftest import assert_envelope
from tests.factories import AuditEventFactory, MembershipFactory, TenantFactory

pytestmark = pytest.mark.django_db

ORG_URL = "/api/v1/organizations/current"
EVENTS_URL = "/api/v1/audit/events/"
TENANT_URLS = [ORG_URL, EVENTS_URL]

ODD_IDENTIFIERS = [
    "acme co",
    "../",
    "../../etc/passwd",
    "\x00",
    "tenant\x00",
    "a" * 500,
    "' OR 1=1 --",
    "%00",
    "\u00e9t\u00e9",
]


def current_org_id(response) -> str:
    assert response.status_code == 200, response.content
    return response.json()["id"]


def not_found_answer(response) -> tuple:
    """What a 404 tells the caller, minus the per-request id."""
    error = assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
    return error["code"], error["message"], error["details"]


@pytest.fixture
def two_tenant_owner(make_caller):
    """An owner of two tenants: nothing is implied, the request must name one."""
    caller = make_caller(Role.OWNER)
    second = MembershipFactory(user=caller.user, role=Role.OWNER).tenant
    return caller, second


# Naming the tenant -------------------------------------------------------------------------


def test_header_with_tenant_uuid_selects_that_tenant(two_tenant_owner):
    caller, second = two_tenant_owner

    response = caller.client_for(second.pk).get(ORG_URL)

    assert current_org_id(response) == str(second.pk)


def test_header_with_uppercase_uuid_selects_that_tenant(two_tenant_owner):
    caller, second = two_tenant_owner

    response = caller.client_for(str(second.pk).upper()).get(ORG_URL)

    assert current_org_id(response) == str(second.pk)


def test_header_with_tenant_slug_selects_that_tenant(two_tenant_owner):
    caller, second = two_tenant_owner

    response = caller.client_for(second.slug).get(ORG_URL)

    assert current_org_id(response) == str(second.pk)


def test_header_slug_is_case_insensitive(two_tenant_owner):
    caller, second = two_tenant_owner

    response = caller.client_for(second.slug.upper()).get(ORG_URL)

    assert response.status_code == 200
    assert response.json()["id"] == str(second.pk)


@pytest.mark.parametrize("by", ["pk", "slug"])
def test_query_parameter_selects_that_tenant(two_tenant_owner, by):
    caller, second = two_tenant_owner

    response = caller.client_for(None).get(ORG_URL, {"organization_id": getattr(second, by)})

    assert current_org_id(response) == str(second.pk)


def test_header_and_query_parameter_naming_two_tenants_is_a_400(two_tenant_owner):
    caller, second = two_tenant_owner

    response = caller.client_for(caller.tenant.slug).get(ORG_URL, {"organization_id": second.slug})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "organization_id" in error["details"]


def test_header_and_query_parameter_may_name_one_tenant_two_ways(two_tenant_owner):
    caller, _ = two_tenant_owner

    response = caller.client_for(caller.tenant.slug.upper()).get(
        ORG_URL, {"organization_id": str(caller.tenant.pk)}
    )

    assert current_org_id(response) == str(caller.tenant.pk)


def test_named_tenant_scopes_the_audit_events(two_tenant_owner):
    caller, second = two_tenant_owner
    mine = AuditEventFactory(tenant=second, event_type="second.only")
    AuditEventFactory(tenant=caller.tenant, event_type="first.only")

    response = caller.client_for(second.slug).get(EVENTS_URL)

    assert response.status_code == 200, response.content
    assert [event["id"] for event in response.json()["results"]] == [str(mine.pk)]


# Implied tenant ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", TENANT_URLS)
def test_single_active_membership_needs_no_header_or_parameter(owner, url):
    AuditEventFactory(tenant=owner.tenant)
    AuditEventFactory(tenant=TenantFactory())

    response = owner.client_for(None).get(url)

    assert response.status_code == 200, response.content
    if url == ORG_URL:
        assert response.json()["id"] == str(owner.tenant.pk)
    else:
        tenants = {event["tenant_id"] for event in response.json()["results"]}
        assert tenants == {str(owner.tenant.pk)}


@pytest.mark.parametrize("status", [MembershipStatus.SUSPENDED, MembershipStatus.INVITED])
def test_inactive_memberships_do_not_count_towards_the_implied_tenant(owner, status):
    MembershipFactory(user=owner.user, status=status)

    response = owner.client_for(None).get(ORG_URL)

    assert current_org_id(response) == str(owner.tenant.pk)


@pytest.mark.parametrize("url", TENANT_URLS)
def test_two_memberships_and_no_tenant_named_is_tenant_required(two_tenant_owner, url):
    caller, _ = two_tenant_owner

    error = assert_envelope(caller.client_for(None).get(url), 400, "TENANT_REQUIRED")

    assert "X-Organization-ID" in error["message"]


def test_user_without_memberships_and_no_tenant_named_is_tenant_required(make_caller):
    caller = make_caller()
    caller.membership.delete()

    assert_envelope(caller.client_for(None).get(ORG_URL), 400, "TENANT_REQUIRED")


def test_empty_header_falls_back_to_the_implied_tenant(owner):
    response = owner.client_for("").get(ORG_URL)

    assert current_org_id(response) == str(owner.tenant.pk)


# Tenants the caller cannot see -------------------------------------------------------------


@pytest.mark.parametrize("url", TENANT_URLS)
@pytest.mark.parametrize("by", ["pk", "slug"])
def test_foreign_tenant_is_not_found_exactly_like_a_missing_one(owner, url, by):
    foreign = TenantFactory()
    AuditEventFactory(tenant=foreign)

    foreign_answer = not_found_answer(owner.client_for(getattr(foreign, by)).get(url))
    random_uuid_answer = not_found_answer(owner.client_for(uuid.uuid4()).get(url))
    missing_slug_answer = not_found_answer(owner.client_for("no-such-tenant").get(url))

    assert foreign_answer == random_uuid_answer == missing_slug_answer


def test_foreign_tenant_by_query_parameter_is_not_found(owner):
    foreign = TenantFactory()

    response = owner.client_for(None).get(ORG_URL, {"organization_id": str(foreign.pk)})

    assert not_found_answer(response) == not_found_answer(
        owner.client_for(None).get(ORG_URL, {"organization_id": str(uuid.uuid4())})
    )


def test_suspended_foreign_tenant_is_not_found_rather_than_suspended(owner):
    foreign = TenantFactory(status=TenantStatus.SUSPENDED)

    assert_envelope(owner.client_for(foreign.pk).get(EVENTS_URL), 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("url", TENANT_URLS)
@pytest.mark.parametrize("identifier", ODD_IDENTIFIERS)
def test_odd_identifier_in_header_is_not_found_never_an_error(owner, url, identifier):
    response = owner.client_for(identifier).get(url)

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("url", TENANT_URLS)
@pytest.mark.parametrize("identifier", ODD_IDENTIFIERS)
def test_odd_identifier_in_query_parameter_is_not_found_never_an_error(owner, url, identifier):
    response = owner.client_for(None).get(url, {"organization_id": identifier})

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("identifier", ODD_IDENTIFIERS)
def test_odd_identifier_from_staff_is_not_found_never_an_error(staff_client, identifier):
    response = staff_client.get(ORG_URL, HTTP_X_ORGANIZATION_ID=identifier)

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("status", [MembershipStatus.SUSPENDED, MembershipStatus.INVITED])
@pytest.mark.parametrize("url", TENANT_URLS)
def test_member_loses_access_on_the_next_request_once_not_active(owner, url, status):
    assert owner.client.get(url).status_code == 200

    owner.membership.status = status
    owner.membership.save()

    assert_envelope(owner.client.get(url), 404, "RESOURCE_NOT_FOUND")


def test_member_regains_access_once_membership_is_active_again(owner):
    owner.membership.status = MembershipStatus.SUSPENDED
    owner.membership.save()
    assert_envelope(owner.client.get(ORG_URL), 404, "RESOURCE_NOT_FOUND")

    owner.membership.status = MembershipStatus.ACTIVE
    owner.membership.save()

    assert current_org_id(owner.client.get(ORG_URL)) == str(owner.tenant.pk)


# Staff -------------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["pk", "slug"])
def test_staff_can_use_any_tenant(staff_client, by):
    tenant = TenantFactory()
    event = AuditEventFactory(tenant=tenant)
    AuditEventFactory(tenant=TenantFactory())
    identifier = str(getattr(tenant, by))

    org = staff_client.get(ORG_URL, HTTP_X_ORGANIZATION_ID=identifier)
    events = staff_client.get(EVENTS_URL, HTTP_X_ORGANIZATION_ID=identifier)

    assert current_org_id(org) == str(tenant.pk)
    assert events.status_code == 200, events.content
    assert [e["id"] for e in events.json()["results"]] == [str(event.pk)]


def test_staff_naming_a_missing_tenant_is_not_found(staff_client):
    response = staff_client.get(ORG_URL, HTTP_X_ORGANIZATION_ID=str(uuid.uuid4()))

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


# Suspended and cancelled tenants -----------------------------------------------------------


@pytest.mark.parametrize("status", [TenantStatus.SUSPENDED, TenantStatus.CANCELLED])
def test_blocked_tenant_refuses_tenant_endpoints_from_the_next_request(owner, status):
    assert owner.client.get(EVENTS_URL).status_code == 200

    owner.tenant.status = status
    owner.tenant.save()

    assert_envelope(owner.client.get(EVENTS_URL), 403, "TENANT_SUSPENDED")


@pytest.mark.parametrize("status", [TenantStatus.SUSPENDED, TenantStatus.CANCELLED])
def test_blocked_tenant_still_serves_the_current_organization(owner, status):
    owner.tenant.status = status
    owner.tenant.save()

    response = owner.client.get(ORG_URL)

    assert current_org_id(response) == str(owner.tenant.pk)
    assert response.json()["status"] == status


@pytest.mark.parametrize("status", [TenantStatus.SUSPENDED, TenantStatus.CANCELLED])
def test_blocked_tenant_is_refused_to_staff_too(staff_client, status):
    tenant = TenantFactory(status=status)

    response = staff_client.get(EVENTS_URL, HTTP_X_ORGANIZATION_ID=str(tenant.pk))

    assert_envelope(response, 403, "TENANT_SUSPENDED")


def test_reactivated_tenant_serves_again_on_the_next_request(owner):
    owner.tenant.status = TenantStatus.SUSPENDED
    owner.tenant.save()
    assert_envelope(owner.client.get(EVENTS_URL), 403, "TENANT_SUSPENDED")

    owner.tenant.status = TenantStatus.ACTIVE
    owner.tenant.save()

    assert owner.client.get(EVENTS_URL).status_code == 200


def test_trial_tenant_is_not_blocked(owner):
    owner.tenant.status = TenantStatus.TRIAL
    owner.tenant.save()
    event = AuditEventFactory(tenant=owner.tenant)

    response = owner.client.get(EVENTS_URL)

    assert response.status_code == 200, response.content
    assert [e["id"] for e in response.json()["results"]] == [str(event.pk)]
