"""GET /api/v1/audit/events/: tenant-scoped, permission-checked, cursor-paginated, filterable."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from tenants.models import Role
from tests.conftest import assert_envelope, token_for
from tests.factories import AuditEventFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

EVENTS_URL = "/api/v1/audit/events/"


def make_events(tenant, count: int, *, start=None, step=timedelta(minutes=1), **fields):
    """`count` events of `tenant`, one `step` apart from `start`; returned newest first."""
    start = start or timezone.now() - timedelta(days=1)
    events = [
        AuditEventFactory(tenant=tenant, created_at=start + i * step, **fields)
        for i in range(count)
    ]
    return events[::-1]


def ids(events) -> list[str]:
    return [str(event.pk) for event in events]


def result_ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [event["id"] for event in response.json()["results"]]


def test_unauthenticated_caller_is_refused(api_client):
    assert_envelope(api_client.get(EVENTS_URL), 401, "AUTHENTICATION_REQUIRED")


def test_role_without_audit_read_is_refused(make_caller):
    viewer = make_caller(Role.VIEWER)
    make_events(viewer.tenant, 2)

    response = viewer.client.get(EVENTS_URL)

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


def test_membership_override_removing_audit_read_is_refused(make_caller):
    dpo = make_caller(Role.DPO, permissions={"audit": {"read": False}})

    assert_envelope(dpo.client.get(EVENTS_URL), 403, "INSUFFICIENT_PERMISSIONS")


@pytest.mark.parametrize("role", [Role.DPO, Role.ADMIN, Role.OWNER])
def test_roles_with_audit_read_list_their_tenants_events(make_caller, role):
    caller = make_caller(role)
    events = make_events(caller.tenant, 3)

    response = caller.client.get(EVENTS_URL)

    assert result_ids(response) == ids(events)


def test_list_answers_without_trailing_slash(owner):
    events = make_events(owner.tenant, 2)

    assert result_ids(owner.client.get(EVENTS_URL.rstrip("/"))) == ids(events)


def test_list_shows_only_the_callers_tenant(owner):
    mine = make_events(owner.tenant, 3)
    make_events(TenantFactory(), 4)
    AuditEventFactory(tenant=None, event_type="platform.thing")

    response = owner.client.get(EVENTS_URL)

    assert result_ids(response) == ids(mine)


def test_member_cannot_widen_the_list_with_a_tenant_id_filter(owner):
    mine = make_events(owner.tenant, 1)
    other = TenantFactory()
    make_events(other, 2)

    response = owner.client.get(EVENTS_URL, {"tenant_id": str(other.pk)})

    assert result_ids(response) == []
    assert result_ids(owner.client.get(EVENTS_URL)) == ids(mine)


def test_event_is_serialized_with_actor_and_request_context(owner):
    actor = owner.user
    AuditEventFactory(
        tenant=owner.tenant,
        event_type="member.added",
        actor=actor,
        actor_type="user",
        actor_label=actor.email,
        payload={"role": "viewer"},
        request_id="req-42",
        ip_address="198.51.100.4",
        user_agent="ua/1",
    )

    [event] = owner.client.get(EVENTS_URL).json()["results"]

    stored = AuditEvent.objects.get(tenant=owner.tenant)
    assert event["id"] == str(stored.pk)
    assert event["tenant_id"] == str(owner.tenant.pk)
    assert event["event_type"] == "member.added"
    assert event["actor_type"] == "user"
    assert event["actor_id"] == str(actor.pk)
    assert event["actor_label"] == actor.email
    assert event["payload"] == {"role": "viewer"}
    assert event["request_id"] == "req-42"
    assert event["ip_address"] == "198.51.100.4"
    assert event["user_agent"] == "ua/1"
    assert event["timestamp"]
    assert {"seq", "prev_hash", "hash"} <= set(event)


def test_list_is_cursor_paginated_without_a_count(owner):
    events = make_events(owner.tenant, 5)

    response = owner.client.get(EVENTS_URL, {"page_size": 2})

    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    assert body["previous"] is None
    assert body["next"]
    assert "cursor=" in body["next"]
    assert result_ids(response) == ids(events[:2])


def test_page_size_is_capped_at_100(owner):
    make_events(owner.tenant, 105, step=timedelta(seconds=1))

    response = owner.client.get(EVENTS_URL, {"page_size": 500})

    assert len(result_ids(response)) == 100
    assert response.json()["next"]


def test_default_page_size_is_50(owner):
    make_events(owner.tenant, 55, step=timedelta(seconds=1))

    assert len(result_ids(owner.client.get(EVENTS_URL))) == 50


@pytest.mark.parametrize(
    "step", [timedelta(minutes=1), timedelta(0)], ids=["distinct-times", "same-time"]
)
def test_following_next_walks_every_event_once_newest_first(owner, step):
    events = make_events(owner.tenant, 7, step=step)

    seen, url, pages = [], EVENTS_URL + "?page_size=3", 0
    while url:
        response = owner.client.get(url)
        seen += result_ids(response)
        url = response.json()["next"]
        pages += 1

    assert pages == 3
    assert len(seen) == len(set(seen)) == 7
    # Ties on created_at are broken by id, descending.
    assert seen == ids(sorted(events, key=lambda e: (e.created_at, e.pk), reverse=True))


def test_previous_link_returns_to_the_first_page(owner):
    events = make_events(owner.tenant, 4)
    first = owner.client.get(EVENTS_URL, {"page_size": 2})
    second = owner.client.get(first.json()["next"])

    back = owner.client.get(second.json()["previous"])

    assert result_ids(second) == ids(events[2:])
    assert result_ids(back) == ids(events[:2])


def test_event_type_filter(owner):
    wanted = make_events(owner.tenant, 2, event_type="member.added")
    make_events(owner.tenant, 3, event_type="member.removed")

    response = owner.client.get(EVENTS_URL, {"event_type": "member.added"})

    assert result_ids(response) == ids(wanted)


def test_since_and_until_filter_by_time_window(owner):
    start = timezone.now() - timedelta(hours=5)
    newest_first = make_events(owner.tenant, 4, start=start, step=timedelta(hours=1))
    t0, t1, t2, t3 = reversed(newest_first)

    since = owner.client.get(EVENTS_URL, {"since": t1.created_at.isoformat()})
    until = owner.client.get(EVENTS_URL, {"until": t2.created_at.isoformat()})
    window = owner.client.get(
        EVENTS_URL,
        {"since": t1.created_at.isoformat(), "until": t3.created_at.isoformat()},
    )

    assert result_ids(since) == ids([t3, t2, t1])
    assert result_ids(until) == ids([t1, t0])
    assert result_ids(window) == ids([t2, t1])


def test_since_accepts_a_utc_z_timestamp(owner):
    old, new = make_events(owner.tenant, 2, step=timedelta(hours=2))[::-1]
    cutoff = (old.created_at + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    response = owner.client.get(EVENTS_URL, {"since": cutoff})

    assert result_ids(response) == ids([new])


def test_actor_filter(owner):
    alice, bob = UserFactory(), UserFactory()
    by_alice = make_events(owner.tenant, 2, actor=alice, actor_type="user")
    make_events(owner.tenant, 2, actor=bob, actor_type="user")
    make_events(owner.tenant, 1)

    response = owner.client.get(EVENTS_URL, {"actor": str(alice.pk)})

    assert result_ids(response) == ids(by_alice)


@pytest.mark.parametrize(
    ("param", "value"),
    [("since", "yesterday"), ("until", "2024-13-45T99:00:00Z"), ("actor", "not-a-uuid")],
)
def test_invalid_filter_value_is_a_validation_error(owner, param, value):
    make_events(owner.tenant, 1)

    response = owner.client.get(EVENTS_URL, {param: value})

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert param in error["details"], error


def test_staff_without_tenant_sees_every_tenant_and_platform_events(staff_client):
    first = make_events(TenantFactory(), 2)
    second = make_events(TenantFactory(), 2)
    platform = make_events(None, 1, event_type="platform.thing")

    response = staff_client.get(EVENTS_URL)

    seen = result_ids(response)
    assert set(ids(first + second + platform)) <= set(seen)
    assert set(seen) == {str(pk) for pk in AuditEvent.objects.values_list("pk", flat=True)}


def test_staff_narrows_to_one_tenant_with_tenant_id(staff_client):
    tenant = TenantFactory()
    wanted = make_events(tenant, 2)
    make_events(TenantFactory(), 2)
    make_events(None, 1)

    response = staff_client.get(EVENTS_URL, {"tenant_id": str(tenant.pk)})

    assert result_ids(response) == ids(wanted)


def test_staff_naming_a_tenant_sees_only_that_tenants_events(staff_client):
    tenant = TenantFactory()
    wanted = make_events(tenant, 2)
    make_events(TenantFactory(), 2)

    response = staff_client.get(EVENTS_URL, HTTP_X_ORGANIZATION_ID=str(tenant.pk))

    assert result_ids(response) == ids(wanted)


def test_retrieve_own_tenants_event(owner):
    event = AuditEventFactory(tenant=owner.tenant, event_type="tenant.updated", payload={"a": 1})

    for url in (f"{EVENTS_URL}{event.pk}/", f"{EVENTS_URL}{event.pk}"):
        response = owner.client.get(url)

        assert response.status_code == 200, response.content
        body = response.json()
        assert body["id"] == str(event.pk)
        assert body["event_type"] == "tenant.updated"
        assert body["payload"] == {"a": 1}


@pytest.mark.parametrize("tenant_of_event", ["other", "platform"])
def test_retrieve_event_outside_own_tenant_is_not_found(owner, tenant_of_event):
    tenant = TenantFactory() if tenant_of_event == "other" else None
    event = AuditEventFactory(tenant=tenant)

    response = owner.client.get(f"{EVENTS_URL}{event.pk}/")

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


def test_retrieve_unknown_event_is_not_found(owner):
    assert_envelope(owner.client.get(f"{EVENTS_URL}{uuid.uuid4()}/"), 404, "RESOURCE_NOT_FOUND")


def test_organization_header_for_a_tenant_not_joined_is_not_found(owner):
    foreign = TenantFactory()
    make_events(foreign, 2)
    # Client credentials override per-request headers, so the header is set as a credential.
    owner.client.credentials(
        HTTP_AUTHORIZATION=f"Token {token_for(owner.user)}",
        HTTP_X_ORGANIZATION_ID=str(foreign.pk),
    )

    response = owner.client.get(EVENTS_URL)

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
