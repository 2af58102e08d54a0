"""API keys: created by people, shown once, stored hashed, bound to one tenant,
holding their scopes intersected with their creator's current permissions."""

import hashlib
import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import APIKey
from audit.models import AuditEvent
from tenants.models import MembershipStatus, Role, TenantStatus
from tenants.permissions import ALL_PERMISSIONS, READ_PERMISSIONS, ROLE_PERMISSIONS
from tests.conftest import assert_envelope, race
from tests.factories import MembershipFactory, TenantFactory, UserFactory, issue_api_key

from .conftest import key_client

pytestmark = pytest.mark.django_db

KEYS_URL = "/api/v1/api-keys/"
ME_URL = "/api/v1/auth/me"
ORG_URL = "/api/v1/organizations/current"
EVENTS_URL = "/api/v1/audit/events/"
KEY_FORMAT = re.compile(r"^cp_[0-9a-f]{32}_[A-Za-z0-9_-]{43}$")


def secret_of(raw: str) -> str:
    """The secret part of `cp_<key_id>_<secret>` (the secret itself may contain '_')."""
    return raw[len("cp_") + 32 + 1 :]


def key_url(api_key, suffix: str = "") -> str:
    return f"{KEYS_URL}{api_key.pk}/{suffix}"


def create_key(caller, **body) -> dict:
    body.setdefault("name", "CI key")
    body.setdefault("scopes", ["read"])
    response = caller.client.post(KEYS_URL, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def audit_trail_text() -> str:
    return json.dumps(list(AuditEvent.objects.values()), default=str)


# Creating and showing ---------------------------------------------------------------------


def test_create_answers_the_full_key_once_and_stores_only_its_hash(owner):
    body = create_key(owner, name="Production API Key", scopes=["read", "write"])

    raw = body["key"]
    assert KEY_FORMAT.match(raw), raw
    key = APIKey.objects.get(pk=body["id"])
    secret = secret_of(raw)
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.key_id in raw
    assert body["key_prefix"] == key.key_prefix
    assert body["key_prefix"].startswith("cp_") and "..." in body["key_prefix"]
    assert raw not in body["key_prefix"]
    assert body["name"] == "Production API Key"
    assert body["scopes"] == ["read", "write"]
    assert body["organization_id"] == str(owner.tenant.pk)
    assert body["user_id"] == str(owner.user.pk)
    assert body["is_active"] is True
    assert body["usage_count"] == 0
    assert body["expires_at"] is None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {APIKey._meta.db_table}")  # noqa: S608
        assert all(
            raw not in str(value) and secret not in str(value) for value in cursor.fetchone()
        )


def test_list_and_retrieve_are_masked(owner):
    raw = create_key(owner)["key"]
    key = APIKey.objects.get()

    listed = owner.client.get(KEYS_URL)
    retrieved = owner.client.get(key_url(key))

    assert listed.status_code == retrieved.status_code == 200
    assert listed.json()["results"][0]["key_prefix"] == key.key_prefix
    assert "key" not in retrieved.json() and "secret_hash" not in retrieved.json()
    for response in (listed, retrieved):
        assert raw not in response.content.decode()
        assert key.secret_hash not in response.content.decode()


def test_expires_days_sets_the_expiry(owner):
    with time_machine.travel("2026-03-01T12:00:00Z", tick=False):
        body = create_key(owner, expires_days=365)

    assert parse_datetime(body["expires_at"]) == parse_datetime("2027-03-01T12:00:00Z")


def test_expires_at_and_expires_days_together_are_refused(owner):
    response = owner.client.post(
        KEYS_URL,
        {
            "name": "k",
            "scopes": ["read"],
            "expires_days": 3,
            "expires_at": "2099-01-01T00:00:00Z",
        },
        format="json",
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "expires_days" in error["details"]
    assert not APIKey.objects.exists()


def test_expiry_in_the_past_is_refused(owner):
    response = owner.client.post(
        KEYS_URL,
        {"name": "k", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
        format="json",
    )

    assert "expires_at" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]


@pytest.mark.parametrize("scopes", [["admin"], ["read", "documents.fly"], ["*"]])
def test_unknown_scopes_are_refused_with_a_clear_message(owner, scopes):
    response = owner.client.post(KEYS_URL, {"name": "k", "scopes": scopes}, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "Unknown scope" in error["details"]["scopes"][0]
    assert not APIKey.objects.exists()


def test_empty_scopes_are_refused(owner):
    response = owner.client.post(KEYS_URL, {"name": "k", "scopes": []}, format="json")

    assert "scopes" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]


def test_an_explicit_permission_the_creator_lacks_cannot_be_granted(make_caller):
    member = make_caller(Role.MEMBER)
    assert "billing.write" not in ROLE_PERMISSIONS[Role.MEMBER]

    response = member.client.post(
        KEYS_URL, {"name": "k", "scopes": ["documents.read", "billing.write"]}, format="json"
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "billing.write" in error["details"]["scopes"][0]
    assert not APIKey.objects.exists()


def test_staff_who_is_not_a_member_cannot_create_a_key(staff_client, owner):
    response = staff_client.post(
        KEYS_URL,
        {"name": "k", "scopes": ["read"]},
        format="json",
        HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk),
    )

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert not APIKey.objects.exists()


def test_creation_is_audited_without_the_key(owner):
    body = create_key(owner, scopes=["documents.read"])

    event = AuditEvent.objects.get(event_type="api_key.created")
    assert event.tenant_id == owner.tenant.pk
    assert event.actor_id == owner.user.pk
    assert event.payload["api_key_id"] == body["id"]
    assert event.payload["scopes"] == ["documents.read"]
    key = APIKey.objects.get()
    trail = audit_trail_text()
    assert body["key"] not in trail
    assert secret_of(body["key"]) not in trail
    assert key.secret_hash not in trail


# Authenticating with a key ----------------------------------------------------------------


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_key_authenticates_as_its_creator_in_its_tenant(owner, header):
    key, raw = issue_api_key(owner.membership, scopes=["read"])

    response = key_client(raw, header=header).get(ME_URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["user"]["id"] == str(owner.user.pk)
    assert body["tenant"]["id"] == str(owner.tenant.pk)
    assert body["role"] == Role.OWNER
    assert body["api_key"] == {
        "id": str(key.pk),
        "name": key.name,
        "key_prefix": key.key_prefix,
        "scopes": ["read"],
    }
    assert body["permissions"] == sorted(READ_PERMISSIONS)


def test_me_shows_scopes_intersected_with_the_creators_rights(make_caller):
    billing = make_caller(Role.BILLING)
    _, raw = issue_api_key(billing.membership, scopes=["read", "billing.write"])

    body = key_client(raw).get(ME_URL).json()

    expected = (READ_PERMISSIONS | {"billing.write"}) & ROLE_PERMISSIONS[Role.BILLING]
    assert body["permissions"] == sorted(expected)
    assert "audit.read" not in body["permissions"]


def test_me_through_a_key_lists_only_the_keys_organization(owner):
    MembershipFactory(user=owner.user, role=Role.OWNER)
    _, raw = issue_api_key(owner.membership)

    memberships = key_client(raw).get(ME_URL).json()["memberships"]

    assert [m["tenant"]["id"] for m in memberships] == [str(owner.tenant.pk)]


def test_the_keys_tenant_wins_even_when_the_creator_has_several(owner):
    MembershipFactory(user=owner.user, role=Role.OWNER)
    _, raw = issue_api_key(owner.membership)

    response = key_client(raw).get(ORG_URL)

    assert response.json()["id"] == str(owner.tenant.pk)


@pytest.mark.parametrize("identifier", ["pk", "slug"])
def test_naming_the_keys_own_tenant_is_accepted(owner, identifier):
    _, raw = issue_api_key(owner.membership)

    response = key_client(raw, HTTP_X_ORGANIZATION_ID=str(getattr(owner.tenant, identifier))).get(
        ORG_URL
    )

    assert response.json()["id"] == str(owner.tenant.pk)


@pytest.mark.parametrize("where", ["header", "query"])
def test_naming_another_tenant_with_a_key_is_forbidden(owner, where):
    other = MembershipFactory(user=owner.user, role=Role.OWNER).tenant
    _, raw = issue_api_key(owner.membership)

    if where == "header":
        response = key_client(raw, HTTP_X_ORGANIZATION_ID=str(other.pk)).get(ORG_URL)
    else:
        response = key_client(raw).get(ORG_URL, {"organization_id": other.slug})

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


@pytest.mark.parametrize(
    "raw",
    [
        "not-a-key",
        "cp_" + "0" * 32 + "_" + "A" * 43,
        "cp_" + "g" * 32 + "_" + "A" * 43,
        "",
    ],
)
def test_malformed_or_unknown_keys_are_401(raw):
    response = key_client(raw, header="authorization").get(ORG_URL)

    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_right_key_id_with_a_wrong_secret_is_401(owner):
    _, raw = issue_api_key(owner.membership)
    forged = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")

    assert_envelope(key_client(forged).get(ORG_URL), 401, "AUTHENTICATION_REQUIRED")


def test_expired_key_is_401(owner):
    _, raw = issue_api_key(owner.membership, expires_at=timezone.now() + timedelta(days=1))
    assert key_client(raw).get(ORG_URL).status_code == 200

    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=1)):
        response = key_client(raw).get(ORG_URL)

    error = assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")
    assert "expired" in error["message"]


def test_key_of_a_suspended_tenant_is_refused(owner):
    _, raw = issue_api_key(owner.membership)
    owner.tenant.status = TenantStatus.SUSPENDED
    owner.tenant.save()

    assert_envelope(key_client(raw).get(EVENTS_URL), 403, "TENANT_SUSPENDED")


def test_scopes_limit_what_the_key_may_do(owner):
    _, raw = issue_api_key(owner.membership, scopes=["documents.read"])

    response = key_client(raw).get(EVENTS_URL)

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert key_client(raw).get(ORG_URL).status_code == 200


def test_read_scope_reads_audit_events(owner):
    _, raw = issue_api_key(owner.membership, scopes=["read"])

    assert key_client(raw).get(EVENTS_URL).status_code == 200


# The creator's current rights ---------------------------------------------------------------


def test_creator_losing_the_membership_makes_the_key_fail(owner):
    _, raw = issue_api_key(owner.membership)
    assert key_client(raw).get(ORG_URL).status_code == 200

    owner.membership.delete()

    error = assert_envelope(key_client(raw).get(ORG_URL), 401, "AUTHENTICATION_REQUIRED")
    assert "creator" in error["message"]


def test_creator_suspended_in_the_tenant_makes_the_key_fail(owner):
    _, raw = issue_api_key(owner.membership)
    owner.membership.status = MembershipStatus.SUSPENDED
    owner.membership.save()

    assert_envelope(key_client(raw).get(ORG_URL), 401, "AUTHENTICATION_REQUIRED")


def test_deactivated_creator_makes_the_key_fail(owner):
    _, raw = issue_api_key(owner.membership)
    owner.user.is_active = False
    owner.user.save()

    assert_envelope(key_client(raw).get(ORG_URL), 401, "AUTHENTICATION_REQUIRED")


def test_creator_losing_a_permission_takes_it_from_the_key(owner):
    _, raw = issue_api_key(owner.membership, scopes=["read"])
    assert key_client(raw).get(EVENTS_URL).status_code == 200

    owner.membership.permissions = {"audit": {"read": False}}
    owner.membership.save()

    assert_envelope(key_client(raw).get(EVENTS_URL), 403, "INSUFFICIENT_PERMISSIONS")
    assert key_client(raw).get(ORG_URL).status_code == 200


def test_creator_demoted_to_viewer_narrows_the_key(owner):
    _, raw = issue_api_key(owner.membership, scopes=["read"])
    owner.membership.role = Role.VIEWER
    owner.membership.save()

    body = key_client(raw).get(ME_URL).json()

    assert body["permissions"] == sorted(READ_PERMISSIONS & ROLE_PERMISSIONS[Role.VIEWER])


def test_a_staff_creators_key_carries_no_staff_powers(make_caller):
    staff_owner = make_caller(Role.VIEWER, is_staff=True)
    _, raw = issue_api_key(staff_owner.membership, scopes=["read"])

    me = key_client(raw).get(ME_URL).json()
    directory = key_client(raw).get("/api/v1/tenants/")

    assert set(me["permissions"]) == READ_PERMISSIONS & ROLE_PERMISSIONS[Role.VIEWER]
    assert set(me["permissions"]) != ALL_PERMISSIONS
    assert_envelope(directory, 403, "INSUFFICIENT_PERMISSIONS")


@pytest.mark.redis
def test_key_authentication_is_one_query(owner):
    """Key, tenant, creator and membership in one query, reused by tenant resolution: the key
    path runs the view's query plus one, as the token path does (accounts.principals)."""
    _, raw = issue_api_key(owner.membership)
    client = key_client(raw)
    client.get(ORG_URL)

    with CaptureQueriesContext(connection) as by_key:
        assert client.get(ORG_URL).status_code == 200
    with CaptureQueriesContext(connection) as by_token:
        assert owner.client.get(ORG_URL).status_code == 200

    assert len(by_key) == 2, [q["sql"] for q in by_key]
    assert len(by_key) == len(by_token)
    assert all(q["sql"].lstrip().upper().startswith("SELECT") for q in by_key)


# Keys are managed by people ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("post", ""), ("get", "{id}/"), ("patch", "{id}/"), ("post", "{id}/revoke/")],
)
def test_managing_keys_with_a_key_is_forbidden(owner, method, suffix):
    key, raw = issue_api_key(owner.membership, scopes=["read", "write"])
    url = KEYS_URL + suffix.format(id=key.pk)

    response = getattr(key_client(raw), method)(url, {"name": "x"}, format="json")

    error = assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert "API key" in error["message"]
    key.refresh_from_db()
    assert key.is_active and key.name == "Test key"


def test_a_key_cannot_log_out(owner):
    _, raw = issue_api_key(owner.membership, scopes=["read", "write"])

    response = key_client(raw).post("/api/v1/auth/logout", {}, format="json")

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


# Update, revoke, delete -------------------------------------------------------------------


def test_patch_renames_and_rescopes_and_audits_the_change(owner):
    key, _ = issue_api_key(owner.membership, scopes=["read"])

    response = owner.client.patch(
        key_url(key), {"name": "Renamed", "scopes": ["documents.read"]}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Renamed"
    assert response.json()["scopes"] == ["documents.read"]
    event = AuditEvent.objects.get(event_type="api_key.updated")
    assert event.payload["changes"] == {
        "name": {"from": "Test key", "to": "Renamed"},
        "scopes": {"from": ["read"], "to": ["documents.read"]},
    }


def test_put_needs_name_and_scopes(owner):
    key, _ = issue_api_key(owner.membership)

    response = owner.client.put(key_url(key), {"name": "Only name"}, format="json")

    assert "scopes" in assert_envelope(response, 400, "VALIDATION_ERROR")["details"]


def test_update_refuses_unknown_scopes(owner):
    key, _ = issue_api_key(owner.membership)

    response = owner.client.patch(key_url(key), {"scopes": ["superuser"]}, format="json")

    assert_envelope(response, 400, "VALIDATION_ERROR")
    key.refresh_from_db()
    assert key.scopes == ["read"]


def test_deactivated_key_fails_and_can_be_reactivated(owner):
    key, raw = issue_api_key(owner.membership)

    owner.client.patch(key_url(key), {"is_active": False}, format="json")
    refused = key_client(raw).get(ORG_URL)
    owner.client.patch(key_url(key), {"is_active": True}, format="json")
    accepted = key_client(raw).get(ORG_URL)

    assert "deactivated" in assert_envelope(refused, 401, "AUTHENTICATION_REQUIRED")["message"]
    assert accepted.status_code == 200


def test_revoke_stops_the_key_keeps_the_row_and_is_audited(owner):
    key, raw = issue_api_key(owner.membership)

    response = owner.client.post(key_url(key, "revoke/"))

    assert response.status_code == 200, response.content
    assert response.json()["is_active"] is False
    assert response.json()["revoked_at"] is not None
    error = assert_envelope(key_client(raw).get(ORG_URL), 401, "AUTHENTICATION_REQUIRED")
    assert "revoked" in error["message"]
    event = AuditEvent.objects.get(event_type="api_key.revoked")
    assert event.payload["api_key_id"] == str(key.pk)
    assert raw not in audit_trail_text()


def test_revoking_twice_is_harmless_and_audited_once(owner):
    key, _ = issue_api_key(owner.membership)

    first = owner.client.post(key_url(key, "revoke/")).json()
    second = owner.client.post(key_url(key, "revoke/")).json()

    assert first["revoked_at"] == second["revoked_at"]
    assert AuditEvent.objects.filter(event_type="api_key.revoked").count() == 1


def test_delete_revokes_and_keeps_the_row(owner):
    key, raw = issue_api_key(owner.membership)

    response = owner.client.delete(key_url(key))

    assert response.status_code == 204
    key.refresh_from_db()
    assert key.revoked_at is not None and key.is_active is False
    assert_envelope(key_client(raw).get(ORG_URL), 401, "AUTHENTICATION_REQUIRED")
    assert owner.client.get(key_url(key)).json()["revoked_at"] is not None


def test_a_revoked_key_cannot_be_reactivated(owner):
    key, raw = issue_api_key(owner.membership)
    owner.client.post(key_url(key, "revoke/"))

    response = owner.client.patch(key_url(key), {"is_active": True}, format="json")

    assert_envelope(response, 409, "CONFLICT")
    assert_envelope(key_client(raw).get(ORG_URL), 401, "AUTHENTICATION_REQUIRED")


# The ceiling on keys ---------------------------------------------------------------------


def test_an_organization_has_at_most_the_ceiling_of_keys_not_revoked(owner, settings):
    settings.API_KEYS_PER_TENANT = 3
    issue_api_key(owner.membership, name="Active")
    deactivated, _ = issue_api_key(owner.membership, name="Deactivated")
    APIKey.objects.filter(pk=deactivated.pk).update(is_active=False)  # may be reactivated
    revoked, _ = issue_api_key(owner.membership, name="Revoked")
    owner.client.post(key_url(revoked, "revoke/"))  # kept, not counted
    other = MembershipFactory(tenant=TenantFactory(), role=Role.OWNER)
    issue_api_key(other)  # another organization's does not count
    create_key(owner, name="Third")
    events = AuditEvent.objects.count()

    response = owner.client.post(KEYS_URL, {"name": "Fourth", "scopes": ["read"]}, format="json")

    error = assert_envelope(response, 409, "CONFLICT")
    assert error["details"] == {"api_keys": 3, "limit": 3}
    assert "may have at most 3" in error["message"]
    assert not APIKey.objects.filter(name="Fourth").exists()
    assert AuditEvent.objects.count() == events
    assert "cp_" not in json.dumps(error)


def test_revoking_a_key_makes_room(owner, settings):
    settings.API_KEYS_PER_TENANT = 1
    key, _ = issue_api_key(owner.membership)
    assert_envelope(
        owner.client.post(KEYS_URL, {"name": "Second", "scopes": ["read"]}, format="json"),
        409,
        "CONFLICT",
    )

    assert owner.client.delete(key_url(key)).status_code == 204

    create_key(owner, name="Second")


@pytest.mark.postgres
def test_parallel_creations_stop_at_the_ceiling(transactional_db, make_caller, settings):
    """Six creations at once with room for two: two are made, four answer 409."""
    settings.API_KEYS_PER_TENANT = 3
    caller = make_caller(Role.OWNER)
    issue_api_key(caller.membership)

    def post():
        return caller.client_for(caller.tenant.pk).post(
            KEYS_URL, {"name": "Racer", "scopes": ["read"]}, format="json"
        )

    statuses = [response.status_code for response in race(6, post)]

    assert sorted(statuses) == [201, 201, 409, 409, 409, 409]
    assert APIKey.objects.filter(tenant=caller.tenant).count() == 3


def test_list_filters_by_active_and_searches_by_name(owner):
    keep, _ = issue_api_key(owner.membership, name="Deploy bot")
    gone, _ = issue_api_key(owner.membership, name="Old script")
    owner.client.post(key_url(gone, "revoke/"))

    active = owner.client.get(KEYS_URL, {"is_active": "true"}).json()["results"]
    found = owner.client.get(KEYS_URL, {"search": "deploy"}).json()["results"]

    assert [row["id"] for row in active] == [str(keep.pk)]
    assert [row["id"] for row in found] == [str(keep.pk)]


def test_another_members_key_is_listed_for_the_tenant(make_caller):
    owner = make_caller(Role.OWNER)
    member = MembershipFactory(tenant=owner.tenant, role=Role.MEMBER, user=UserFactory())
    key, _ = issue_api_key(member)

    ids = [row["id"] for row in owner.client.get(KEYS_URL).json()["results"]]

    assert ids == [str(key.pk)]


def test_keys_of_other_tenants_are_not_found(owner):
    foreign, _ = issue_api_key(MembershipFactory(tenant=TenantFactory(), role=Role.OWNER))

    assert_envelope(owner.client.get(key_url(foreign)), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(owner.client.post(key_url(foreign, "revoke/")), 404, "RESOURCE_NOT_FOUND")
    foreign.refresh_from_db()
    assert foreign.revoked_at is None


# The prepared key lookup --------------------------------------------------------------------


def _described(key) -> dict:
    """Every loaded value of the key and of the rows selected with it."""
    membership = getattr(key, "creator_membership", None)
    return {
        "key": {f: getattr(key, f) for f in key.__dict__ if not f.startswith("_")},
        "deferred": key.get_deferred_fields(),
        "tenant": key.tenant.__dict__ | {"_state": None},
        "creator": key.created_by.__dict__ | {"_state": None},
        "membership": membership.__dict__ | {"_state": None} if membership else None,
    }


@pytest.mark.parametrize("member", [True, False])
def test_prepared_lookup_builds_the_same_objects_as_the_orm(owner, member):
    from accounts.authentication import _find_keys, _key_candidates

    key, _ = issue_api_key(owner.membership)
    if not member:
        owner.membership.delete()

    prepared = _find_keys(key.key_id)
    orm = list(_key_candidates(key.key_id))

    assert len(prepared) == len(orm) == 1
    assert _described(prepared[0]) == _described(orm[0])
    assert ("creator_membership" in prepared[0].__dict__) is member
    assert _find_keys("f" * 32) == []
