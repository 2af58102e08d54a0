"""The webhooks API: endpoints (the generic battery plus their own rules: the secret shown once,
URL and subscription checks, API keys refused, another tenant's endpoint invisible), the event
catalogue, and deliveries with their attempts."""

import itertools
import json
from dataclasses import asdict

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from notifications import catalog
from notifications.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from tenants.models import Role
from tenants.permissions import ROLE_PERMISSIONS
from tests.api.battery import ResourceBattery
from tests.conftest import assert_envelope, race
from tests.factories import TenantFactory, issue_api_key

from .factories import (
    TEST_WEBHOOK_SECRET,
    WebhookAttemptFactory,
    WebhookDeliveryFactory,
    WebhookEndpointFactory,
)

URL = "/api/v1/webhooks/"
pytestmark = pytest.mark.django_db

BODY = {"name": "Orders", "url": "https://hooks.example.com/in", "events": ["*"]}


class TestWebhookEndpoints(ResourceBattery):
    url = URL
    # hooks.example.com does not resolve (the machine is offline): accepted at creation.
    create_data = BODY
    update_data = {
        "name": "Renamed",
        "url": "https://hooks.example.com/in",
        "events": ["organization.member.joined"],
    }
    audit_prefix = "webhook.endpoint"

    def make(self, tenant, **fields):
        endpoint = super().make(tenant, **fields)
        WebhookDeliveryFactory(tenant=tenant, endpoint=endpoint)
        return endpoint

    def assert_destroyed(self, obj):
        # The endpoint goes with its deliveries (and their attempts).
        assert not WebhookEndpoint.objects.filter(pk=obj.pk).exists()
        assert not WebhookDelivery.objects.filter(endpoint_id=obj.pk).exists()


class TestWebhookDeliveries(ResourceBattery):
    # List and retrieve only: the battery leaves out the create/update/destroy tests.
    url = "/api/v1/webhooks/deliveries/"
    filter_examples = {
        "since": lambda delivery: delivery.created_at.isoformat(),
        "until": lambda delivery: (delivery.created_at + timezone.timedelta(seconds=1)).isoformat(),
    }


def create(caller, **overrides):
    return caller.client.post(URL, {**BODY, **overrides}, format="json")


def detail(endpoint) -> str:
    return f"{URL}{endpoint.pk}"


# The secret -----------------------------------------------------------------------------------


def test_creation_answers_the_secret_once_and_reads_never_show_it(owner):
    response = create(owner)

    assert response.status_code == 201, response.content
    secret = response.json()["secret"]
    assert secret.startswith("whsec_")
    listed = owner.client.get(URL)
    retrieved = owner.client.get(detail(WebhookEndpoint.objects.get(pk=response.json()["id"])))
    for read in (listed, retrieved):
        assert read.status_code == 200, read.content
        assert b"whsec_" not in read.content
        assert secret.encode() not in read.content
    assert "secret" not in retrieved.json()


def test_a_given_secret_is_kept_and_an_invalid_one_is_refused(owner):
    kept = create(owner, secret_key=TEST_WEBHOOK_SECRET)
    refused = create(owner, name="Bad secret", secret_key="whsec_short")

    assert kept.status_code == 201, kept.content
    assert kept.json()["secret"] == TEST_WEBHOOK_SECRET
    assert "secret_key" in assert_envelope(refused, 400)["details"]


def test_rotate_secret_answers_a_new_secret_and_keeps_the_previous_one_for_a_while(owner):
    created = create(owner).json()
    endpoint = WebhookEndpoint.objects.get(pk=created["id"])

    response = owner.client.post(f"{detail(endpoint)}/rotate-secret")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != created["secret"]
    assert body["previous_secret_expires_at"] is not None
    endpoint.refresh_from_db()
    assert endpoint.previous_secret_encrypted and endpoint.previous_secret_expires_at


# URL and subscription rules -------------------------------------------------------------------


@override_settings(WEBHOOKS_ALLOW_HTTP=False)
def test_http_is_refused_unless_allowed(owner):
    error = assert_envelope(create(owner, url="http://hooks.example.com/in"), 400)

    assert "url" in error["details"]
    assert not WebhookEndpoint.objects.filter(tenant=owner.tenant).exists()


@override_settings(WEBHOOKS_ALLOW_PRIVATE_TARGETS=False)
@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/in",
        "https://10.0.0.8/in",
        "https://169.254.169.254/latest",
        "https://user:pass@hooks.example.com/in",
        "ftp://hooks.example.com/in",
    ],
)
def test_urls_webhooks_may_not_go_to_are_refused(owner, url):
    error = assert_envelope(create(owner, url=url), 400)

    assert "url" in error["details"]


def test_the_update_checks_a_new_url_too(owner):
    endpoint = WebhookEndpointFactory(tenant=owner.tenant)

    with override_settings(WEBHOOKS_ALLOW_HTTP=False):
        response = owner.client.patch(
            detail(endpoint), {"url": "http://hooks.example.com/in"}, format="json"
        )

    assert "url" in assert_envelope(response, 400)["details"]
    endpoint.refresh_from_db()
    assert endpoint.url.startswith("https://")


def test_a_url_is_stored_as_a_uri(owner):
    created = create(owner, url="HTTPS://Bücher.Example:8443/ä/b?q=ü#top")

    assert created.status_code == 201, created.content
    stored = "https://xn--bcher-kva.example:8443/%C3%A4/b?q=%C3%BC#top"
    assert created.json()["url"] == stored
    endpoint = WebhookEndpoint.objects.get(pk=created.json()["id"])
    assert endpoint.url == stored
    # Sent back as shown, or as first written: the same URL, left as it is.
    for url in (stored, "https://bücher.example:8443/ä/b?q=ü#top"):
        response = owner.client.patch(detail(endpoint), {"url": url}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["url"] == stored


def test_a_host_that_is_no_domain_name_is_refused(owner):
    error = assert_envelope(create(owner, url="https://½/in"), 400)

    assert "not a valid domain name" in error["details"]["url"][0]
    assert not WebhookEndpoint.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize(
    "events",
    [
        ["organization.nothing_happened"],
        [],
        ["*", "organization.member.joined"],
        ["webhook.test"],
        "*",
    ],
    ids=["unknown type", "empty list", "star with others", "not subscribable", "not a list"],
)
def test_events_must_be_catalogue_types_or_star_alone(owner, events):
    error = assert_envelope(create(owner, events=events), 400)

    assert "events" in error["details"]
    assert not WebhookEndpoint.objects.filter(tenant=owner.tenant).exists()


def test_repeated_event_types_are_stored_once(owner):
    joined = "organization.member.joined"

    response = create(owner, events=[joined, "organization.status_changed", joined])

    assert response.status_code == 201, response.content
    assert response.json()["events"] == [joined, "organization.status_changed"]


def test_subscribing_needs_the_permission_each_event_type_names(make_caller):
    # billing has settings.read but not keys.read; members.read is taken away.
    assert "settings.read" in ROLE_PERMISSIONS[Role.BILLING]
    assert "keys.read" not in ROLE_PERMISSIONS[Role.BILLING]
    caller = make_caller(
        Role.BILLING, permissions={"settings": {"write": True}, "members": {"read": False}}
    )

    joined = create(caller, events=["organization.member.joined"])
    everything = create(caller, events=["*"])
    status_changed = create(caller, events=["organization.status_changed"])

    assert assert_envelope(joined, 403, "INSUFFICIENT_PERMISSIONS")["details"] == {
        "missing_permissions": ["members.read"]
    }
    assert assert_envelope(everything, 403, "INSUFFICIENT_PERMISSIONS")["details"] == {
        "missing_permissions": [
            "keys.read",
            "members.read",
            "playground.read",
            "security.read",
            "support.read",
        ]
    }
    assert status_changed.status_code == 201, status_changed.content
    assert WebhookEndpoint.objects.filter(tenant=caller.tenant).count() == 1


def test_star_needs_every_permission_the_subscribable_types_need(make_caller):
    # billing with settings.write still holds members.read: it lacks only keys.read,
    # playground.read (the prompt template events), security.read (incidents) and support.read
    # (tickets) for "*".
    caller = make_caller(Role.BILLING, permissions={"settings": {"write": True}})

    everything = create(caller, events=["*"])
    joined = create(caller, events=["organization.member.joined"])

    error = assert_envelope(everything, 403, "INSUFFICIENT_PERMISSIONS")
    assert error["details"] == {
        "missing_permissions": ["keys.read", "playground.read", "security.read", "support.read"]
    }
    assert joined.status_code == 201, joined.content


def test_an_update_cannot_subscribe_past_the_callers_permissions(make_caller):
    caller = make_caller(Role.BILLING, permissions={"settings": {"write": True}})
    endpoint = WebhookEndpointFactory(tenant=caller.tenant, events=["organization.status_changed"])

    response = caller.client.patch(
        detail(endpoint), {"events": ["organization.api_key.created"]}, format="json"
    )

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    endpoint.refresh_from_db()
    assert endpoint.events == ["organization.status_changed"]


def test_enabling_a_disabled_endpoint_clears_its_failure_record(owner):
    endpoint = WebhookEndpointFactory(
        tenant=owner.tenant,
        is_active=False,
        failure_count=7,
        failing_since=timezone.now(),
        disabled_at=timezone.now(),
        disabled_reason="Failing since yesterday.",
    )

    response = owner.client.patch(detail(endpoint), {"is_active": True}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["is_active"] is True
    assert (body["failure_count"], body["failing_since"]) == (0, None)
    assert (body["disabled_reason"], body["disabled_at"]) == ("", None)


def test_a_disabled_endpoint_cannot_be_tested_or_replayed(owner):
    endpoint = WebhookEndpointFactory(tenant=owner.tenant, is_active=False)
    since = {"since": timezone.now().isoformat()}

    assert_envelope(owner.client.post(f"{detail(endpoint)}/test"), 409, "CONFLICT")
    assert_envelope(owner.client.post(f"{detail(endpoint)}/replay", since), 409, "CONFLICT")
    assert not WebhookDelivery.objects.filter(endpoint=endpoint).exists()


def test_replay_queues_the_subscribed_events_since_a_time(owner):
    since = timezone.now() - timezone.timedelta(minutes=1)
    issue_api_key(owner.membership, name="Before the endpoint")
    endpoint = WebhookEndpointFactory(tenant=owner.tenant, events=["organization.api_key.created"])
    url = f"{detail(endpoint)}/replay"

    response = owner.client.post(url, {"since": since.isoformat()}, format="json")
    future = owner.client.post(
        url, {"since": (timezone.now() + timezone.timedelta(hours=1)).isoformat()}, format="json"
    )

    assert response.status_code == 202, response.content
    assert response.json() == {"queued": 1}
    (delivery,) = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert delivery.event_type == "organization.api_key.created"
    assert "since" in assert_envelope(future, 400)["details"]


# Who may call ---------------------------------------------------------------------------------


def test_a_viewer_cannot_create_an_endpoint(make_caller):
    viewer = make_caller(Role.VIEWER)

    assert_envelope(create(viewer), 403, "INSUFFICIENT_PERMISSIONS")
    assert not WebhookEndpoint.objects.filter(tenant=viewer.tenant).exists()


def test_the_endpoint_actions_need_settings_write_and_deliveries_settings_read(make_caller):
    no_write = make_caller(Role.OWNER, permissions={"settings": {"write": False}})
    no_read = make_caller(Role.OWNER, permissions={"settings": {"read": False}})
    since = {"since": timezone.now().isoformat()}

    for caller, method, suffix, body in (
        (no_write, "post", "/test", None),
        (no_write, "post", "/rotate-secret", None),
        (no_write, "post", "/replay", since),
        (no_read, "get", "/deliveries", None),
    ):
        endpoint = WebhookEndpointFactory(tenant=caller.tenant)
        response = getattr(caller.client, method)(
            f"{detail(endpoint)}{suffix}", body, format="json"
        )
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


def _every_webhooks_request(tenant):
    endpoint = WebhookEndpointFactory(tenant=tenant)
    delivery = WebhookDeliveryFactory(tenant=tenant, endpoint=endpoint)
    since = {"since": timezone.now().isoformat()}
    return [
        ("get", URL, None),
        ("post", URL, BODY),
        ("get", f"{URL}event-types", None),
        ("get", detail(endpoint), None),
        ("patch", detail(endpoint), {"name": "Renamed"}),
        ("put", detail(endpoint), BODY),
        ("delete", detail(endpoint), None),
        ("post", f"{detail(endpoint)}/test", None),
        ("post", f"{detail(endpoint)}/rotate-secret", None),
        ("post", f"{detail(endpoint)}/replay", since),
        ("get", f"{detail(endpoint)}/deliveries", None),
        ("get", f"{URL}deliveries/", None),
        ("get", f"{URL}deliveries/{delivery.pk}", None),
        ("post", f"{URL}deliveries/{delivery.pk}/retry", None),
    ]


@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_an_api_key_is_refused_on_every_webhooks_action(owner, header):
    _, raw = issue_api_key(owner.membership, scopes=("read", "write"))
    client = APIClient()
    client.credentials(**{header: raw if header == "HTTP_X_API_KEY" else f"Api-Key {raw}"})
    assert client.get("/api/v1/organizations/current").status_code == 200
    requests = _every_webhooks_request(owner.tenant)
    endpoints_before = WebhookEndpoint.objects.filter(tenant=owner.tenant).count()

    for method, url, body in requests:
        response = getattr(client, method)(url, body, format="json")
        error = assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
        assert "API key" in error["message"], (method, url)

    assert WebhookEndpoint.objects.filter(tenant=owner.tenant).count() == endpoints_before


def test_another_tenants_endpoint_is_404_on_every_detail_action(owner):
    requests = [
        (method, url, body)
        for method, url, body in _every_webhooks_request(TenantFactory())
        if url not in (URL, f"{URL}event-types", f"{URL}deliveries/")
    ]
    foreign = WebhookEndpoint.objects.exclude(tenant=owner.tenant).get()
    events_before = AuditEvent.objects.filter(tenant=foreign.tenant).count()
    deliveries_before = WebhookDelivery.objects.filter(endpoint=foreign).count()

    for method, url, body in requests:
        response = getattr(owner.client, method)(url, body, format="json")
        assert_envelope(response, 404, "RESOURCE_NOT_FOUND")

    unchanged = WebhookEndpoint.objects.get(pk=foreign.pk)
    assert (unchanged.name, unchanged.secret_encrypted) == (foreign.name, foreign.secret_encrypted)
    assert unchanged.previous_secret_encrypted == ""
    assert AuditEvent.objects.filter(tenant=foreign.tenant).count() == events_before
    assert WebhookDelivery.objects.filter(endpoint=foreign).count() == deliveries_before


# The catalogue --------------------------------------------------------------------------------


def test_event_types_lists_the_whole_catalogue_to_any_member(make_caller):
    viewer = make_caller(Role.VIEWER)

    response = viewer.client.get(f"{URL}event-types", {"page_size": 100})

    assert response.status_code == 200, response.content
    listed = response.json()["results"]
    assert [row["type"] for row in listed] == [entry.type for entry in catalog.CATALOG]
    assert listed == json.loads(json.dumps([asdict(view) for view in catalog.listing()]))
    for row in listed:
        assert set(row) == {
            "type",
            "description",
            "permission",
            "roles",
            "notify_roles",
            "subscribable",
            "schema",
            "example",
        }
    by_type = {row["type"]: row for row in listed}
    assert by_type["webhook.test"]["subscribable"] is False
    assert by_type["organization.member.joined"]["notify_roles"] == ["admin"]
    assert "billing" not in by_type["organization.api_key.created"]["roles"]
    assert "viewer" in by_type["organization.status_changed"]["roles"]


# Deliveries -----------------------------------------------------------------------------------


def _deliveries(endpoint, count, **fields):
    made = []
    for _ in range(count):
        delivery = WebhookDeliveryFactory(tenant=endpoint.tenant, endpoint=endpoint, **fields)
        WebhookAttemptFactory(
            tenant=endpoint.tenant, delivery=delivery, number=1, succeeded=False, status_code=503
        )
        WebhookAttemptFactory(tenant=endpoint.tenant, delivery=delivery, number=2)
        made.append(delivery)
    return made


def test_an_endpoints_deliveries_come_with_attempts_and_payload_newest_first(owner):
    endpoint = WebhookEndpointFactory(tenant=owner.tenant)
    (older,) = _deliveries(endpoint, 1)
    (delivery,) = _deliveries(endpoint, 1, status=DeliveryStatus.SUCCEEDED)
    WebhookDeliveryFactory(tenant=owner.tenant)  # another endpoint's

    response = owner.client.get(f"{detail(endpoint)}/deliveries")

    assert response.status_code == 200, response.content
    row, last = response.json()["results"]
    assert (row["id"], last["id"]) == (str(delivery.pk), str(older.pk))
    assert row["endpoint_id"] == str(endpoint.pk)
    assert row["payload"] == json.loads(delivery.event.body)
    assert [(a["number"], a["succeeded"], a["status_code"]) for a in row["attempts"]] == [
        (1, False, 503),
        (2, True, 200),
    ]


def test_deliveries_are_cursor_paginated(owner):
    endpoint = WebhookEndpointFactory(tenant=owner.tenant)
    made = {str(delivery.pk) for delivery in _deliveries(endpoint, 5)}

    seen, url, params, pages = [], f"{detail(endpoint)}/deliveries", {"page_size": 2}, 0
    while url:
        response = owner.client.get(url, params)
        assert response.status_code == 200, response.content
        body = response.json()
        assert len(body["results"]) <= 2
        seen += [row["id"] for row in body["results"]]
        url, params, pages = body["next"], None, pages + 1

    assert pages == 3
    assert len(seen) == len(set(seen)) and set(seen) == made


def test_deliveries_filter_on_status_and_event_type(owner):
    endpoint = WebhookEndpointFactory(tenant=owner.tenant)
    (failed,) = _deliveries(endpoint, 1, status=DeliveryStatus.FAILED)
    (pending,) = _deliveries(endpoint, 1, event__event_type="organization.status_changed")
    url = f"{detail(endpoint)}/deliveries"

    def ids(**params):
        response = owner.client.get(url, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(status="failed") == {str(failed.pk)}
    assert ids(status="pending") == {str(pending.pk)}
    assert ids(event_type="organization.status_changed") == {str(pending.pk)}
    assert ids(event_type="organization.member.joined") == {str(failed.pk)}
    assert "status" in assert_envelope(owner.client.get(url, {"status": "lost"}), 400)["details"]


def test_the_deliveries_query_count_does_not_grow_with_the_deliveries(make_caller):
    def count(rows):
        caller = make_caller(Role.OWNER)
        endpoint = WebhookEndpointFactory(tenant=caller.tenant)
        _deliveries(endpoint, rows)
        with CaptureQueriesContext(connection) as captured:
            response = caller.client.get(f"{detail(endpoint)}/deliveries", {"page_size": 100})
        assert response.status_code == 200, response.content
        assert len(response.json()["results"]) == rows
        return len(captured)

    assert count(2) == count(20)


# Audit ----------------------------------------------------------------------------------------


def test_every_endpoint_change_is_audited_without_its_secret(owner):
    created = create(owner, secret_key=TEST_WEBHOOK_SECRET).json()
    url = f"{URL}{created['id']}"
    rotated = owner.client.post(f"{url}/rotate-secret").json()
    assert owner.client.patch(url, {"name": "Renamed"}, format="json").status_code == 200
    assert owner.client.delete(url).status_code == 204

    events = AuditEvent.objects.filter(
        tenant=owner.tenant, event_type__startswith="webhook.endpoint."
    ).order_by("created_at")
    assert [event.event_type for event in events] == [
        "webhook.endpoint.created",
        "webhook.endpoint.secret_rotated",
        "webhook.endpoint.updated",
        "webhook.endpoint.deleted",
    ]
    for event in events:
        assert event.payload["endpoint_id"] == created["id"]
        text = json.dumps(event.payload)
        assert "whsec_" not in text, event.event_type
        assert created["secret"] not in text and rotated["secret"] not in text
        assert "secret" not in event.payload
    assert events[2].payload["changed"] == ["name"]


# The ceiling on endpoints ---------------------------------------------------------------------


def test_an_organization_has_at_most_the_ceiling_of_endpoints(owner, settings):
    settings.WEBHOOK_ENDPOINTS_PER_TENANT = 3
    WebhookEndpointFactory.create_batch(2, tenant=owner.tenant, is_active=False)
    WebhookEndpointFactory(tenant=TenantFactory())  # another organization's does not count
    assert create(owner, name="Third").status_code == 201
    events = AuditEvent.objects.count()

    error = assert_envelope(create(owner, name="Fourth"), 409, "CONFLICT")

    assert error["details"] == {"webhook_endpoints": 3, "limit": 3}
    assert "may have at most 3" in error["message"]
    assert WebhookEndpoint.objects.filter(tenant=owner.tenant).count() == 3
    assert not WebhookEndpoint.objects.filter(name="Fourth").exists()
    assert AuditEvent.objects.count() == events
    assert "secret" not in json.dumps(error).lower()


def test_deleting_an_endpoint_makes_room(owner, settings):
    settings.WEBHOOK_ENDPOINTS_PER_TENANT = 1
    first = WebhookEndpointFactory(tenant=owner.tenant)
    assert_envelope(create(owner), 409, "CONFLICT")

    assert owner.client.delete(detail(first)).status_code == 204

    assert create(owner).status_code == 201


@pytest.mark.postgres
def test_parallel_creations_stop_at_the_ceiling(transactional_db, make_caller, settings):
    """Six creations at once with room for two: two are made, four answer 409."""
    settings.WEBHOOK_ENDPOINTS_PER_TENANT = 3
    caller = make_caller(Role.OWNER)
    WebhookEndpointFactory(tenant=caller.tenant)
    numbers = itertools.count()

    def post():
        body = {**BODY, "name": f"Racer {next(numbers)}"}
        return caller.client_for(caller.tenant.pk).post(URL, body, format="json")

    statuses = [response.status_code for response in race(6, post)]

    assert sorted(statuses) == [201, 201, 409, 409, 409, 409]
    assert WebhookEndpoint.objects.filter(tenant=caller.tenant).count() == 3
