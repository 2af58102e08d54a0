"""GET /api/v1/audit/verify/ (a chain's verification result) and GET /api/v1/audit/public-key/."""

import uuid

import pytest

from audit import signing
from audit.verification import HASH_MISMATCH
from tenants.models import Role
from tests.conftest import assert_envelope
from tests.factories import AuditEventFactory, MembershipFactory, TenantFactory

from .chain_helpers import (
    edit_payload,
    forge_checkpoint,
    recipe_document,
    recipe_hash,
    sealed_chain,
)

pytestmark = pytest.mark.django_db

VERIFY_URL = "/api/v1/audit/verify/"
PUBLIC_KEY_URL = "/api/v1/audit/public-key/"

RESULT_FIELDS = {
    "chain",
    "chain_valid",
    "verified_count",
    "total_events",
    "unsealed_count",
    "chain_head",
    "last_seq",
    "checkpoints_checked",
    "broken_links",
}
LINK_FIELDS = {
    "event_id",
    "event_type",
    "timestamp",
    "seq",
    "reason",
    "computed_hash",
    "stored_hash",
}


def verified(response) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == RESULT_FIELDS, body
    return body


# The caller's chain ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [VERIFY_URL, VERIFY_URL.rstrip("/")])
def test_valid_chain_reports_counts_head_and_checkpoints(owner, url):
    events = sealed_chain(owner.tenant, 3, checkpoint=True)
    AuditEventFactory(tenant=owner.tenant)  # recorded, not yet sealed
    sealed_chain(TenantFactory(), 2)  # another tenant's chain is not counted

    body = verified(owner.client.get(url))

    assert body == {
        "chain": str(owner.tenant.pk),
        "chain_valid": True,
        "verified_count": 3,
        "total_events": 4,
        "unsealed_count": 1,
        "chain_head": events[-1].hash,
        "last_seq": 3,
        "checkpoints_checked": 1,
        "broken_links": [],
    }


def test_empty_chain_is_valid_with_no_head(owner):
    body = verified(owner.client.get(VERIFY_URL))

    assert body["chain_valid"] is True
    assert (body["verified_count"], body["total_events"], body["last_seq"]) == (0, 0, 0)
    assert body["chain_head"] is None


def test_broken_link_names_the_event_with_both_hashes(owner):
    events = sealed_chain(owner.tenant, 4)
    edited = events[1]
    edit_payload(edited, {"forged": True})

    body = verified(owner.client.get(VERIFY_URL))

    assert body["chain_valid"] is False
    assert body["verified_count"] == 3
    assert body["total_events"] == 4
    assert body["chain_head"] == events[-1].hash
    [link] = body["broken_links"]
    assert set(link) == LINK_FIELDS
    assert link == {
        "event_id": str(edited.pk),
        "event_type": edited.event_type,
        "timestamp": recipe_document(edited)["created_at"],
        "seq": 2,
        "reason": HASH_MISMATCH,
        "computed_hash": recipe_hash(
            edited.prev_hash, recipe_document(edited, payload={"forged": True})
        ),
        "stored_hash": edited.hash,
    }


def test_forged_checkpoint_is_a_broken_link_without_an_event(owner):
    events = sealed_chain(owner.tenant, 2)
    forge_checkpoint(owner.tenant, seq=2, head_hash=events[-1].hash)

    body = verified(owner.client.get(VERIFY_URL))

    assert body["chain_valid"] is False
    assert body["verified_count"] == 2
    [link] = body["broken_links"]
    assert link["event_id"] is None
    assert link["event_type"] is None
    assert link["seq"] == 2
    assert link["reason"] == "Checkpoint signature invalid (seq 2)"
    assert link["stored_hash"] == events[-1].hash


# Permissions and tenancy -----------------------------------------------------------------------


def test_unauthenticated_caller_is_refused(api_client):
    assert_envelope(api_client.get(VERIFY_URL), 401, "AUTHENTICATION_REQUIRED")


def test_role_without_audit_read_is_refused(make_caller):
    viewer = make_caller(Role.VIEWER)
    sealed_chain(viewer.tenant, 1)

    assert_envelope(viewer.client.get(VERIFY_URL), 403, "INSUFFICIENT_PERMISSIONS")


@pytest.mark.parametrize("role", [Role.DPO, Role.ADMIN, Role.OWNER])
def test_roles_with_audit_read_verify_their_chain(make_caller, role):
    caller = make_caller(role)
    sealed_chain(caller.tenant, 2)

    body = verified(caller.client.get(VERIFY_URL))

    assert (body["chain"], body["verified_count"]) == (str(caller.tenant.pk), 2)


def test_member_cannot_verify_another_tenants_chain(owner):
    foreign = TenantFactory()
    sealed_chain(foreign, 2)

    response = owner.client_for(foreign.pk).get(VERIFY_URL)

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("param", ["tenant_id", "chain"])
def test_member_naming_another_chain_still_gets_their_own(owner, param):
    foreign = TenantFactory()
    sealed_chain(foreign, 3)
    sealed_chain(None, 4)
    mine = sealed_chain(owner.tenant, 1)
    value = str(foreign.pk) if param == "tenant_id" else "platform"

    body = verified(owner.client.get(VERIFY_URL, {param: value}))

    assert body["chain"] == str(owner.tenant.pk)
    assert (body["verified_count"], body["chain_head"]) == (1, mine[-1].hash)


# Staff -----------------------------------------------------------------------------------------


def test_staff_verifies_a_tenant_named_by_tenant_id(staff_client):
    tenant = TenantFactory()
    events = sealed_chain(tenant, 3)
    sealed_chain(TenantFactory(), 5)

    body = verified(staff_client.get(VERIFY_URL, {"tenant_id": str(tenant.pk)}))

    assert body["chain"] == str(tenant.pk)
    assert (body["verified_count"], body["chain_head"]) == (3, events[-1].hash)


def test_staff_verifies_a_tenant_named_by_the_organization_header(staff_client):
    tenant = TenantFactory()
    sealed_chain(tenant, 2)

    body = verified(staff_client.get(VERIFY_URL, HTTP_X_ORGANIZATION_ID=str(tenant.pk)))

    assert (body["chain"], body["verified_count"]) == (str(tenant.pk), 2)


def test_staff_verifies_the_platform_chain(staff_client):
    events = sealed_chain(None, 2, event_type="platform.thing")
    AuditEventFactory(tenant=None)
    sealed_chain(TenantFactory(), 3)

    body = verified(staff_client.get(VERIFY_URL, {"chain": "platform"}))

    assert body["chain"] == "platform"
    assert body["chain_valid"] is True
    # The platform chain also holds the staff login's own events.
    assert {event.event_type for event in events} >= {"platform.thing"}
    assert body["verified_count"] == body["last_seq"] == len(events)
    assert (body["total_events"], body["unsealed_count"]) == (len(events) + 1, 1)
    assert body["chain_head"] == events[-1].hash


def test_staff_naming_no_chain_is_told_to_name_one(staff_client):
    sealed_chain(TenantFactory(), 1)

    assert_envelope(staff_client.get(VERIFY_URL), 400, "TENANT_REQUIRED")


def test_staff_naming_an_unknown_tenant_is_not_found(staff_client):
    response = staff_client.get(VERIFY_URL, {"tenant_id": str(uuid.uuid4())})

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize(("param", "value"), [("tenant_id", "not-a-uuid"), ("chain", "all")])
def test_invalid_chain_parameter_is_a_validation_error(staff_client, param, value):
    error = assert_envelope(staff_client.get(VERIFY_URL, {param: value}), 400, "VALIDATION_ERROR")

    assert param in error["details"], error


# Public key ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [PUBLIC_KEY_URL, PUBLIC_KEY_URL.rstrip("/")])
def test_public_key_is_the_key_that_verifies_checkpoints(owner, url):
    response = owner.client.get(url)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "algorithm": "Ed25519",
        "public_key": signing.public_key(),
        "key_id": signing.key_id(),
    }


def test_public_key_is_public_and_platform_wide(api_client, make_caller):
    # A verifying key is public: anyone, with or without an account, gets the same one.
    anonymous = api_client.get(PUBLIC_KEY_URL)
    viewer = make_caller(Role.VIEWER).client.get(PUBLIC_KEY_URL)

    assert anonymous.status_code == viewer.status_code == 200
    assert anonymous.json() == viewer.json()
    assert anonymous.json()["public_key"] == signing.public_key()


def test_public_key_needs_no_tenant_for_a_member_of_two(make_caller):
    first = make_caller(Role.OWNER)
    MembershipFactory(user=first.user, role=Role.VIEWER)

    response = first.client_for().get(PUBLIC_KEY_URL)

    assert response.status_code == 200, response.content
    assert response.json()["public_key"] == signing.public_key()


def test_public_key_ignores_credentials(api_client):
    # No credential is read, so a stale or foreign one cannot turn it into a 401.
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-token")

    assert api_client.get(PUBLIC_KEY_URL).status_code == 200


def test_staff_reads_the_public_key_without_naming_a_tenant(staff_client):
    response = staff_client.get(PUBLIC_KEY_URL)

    assert response.status_code == 200, response.content
    assert response.json()["public_key"] == signing.public_key()
