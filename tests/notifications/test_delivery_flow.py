"""From a state change to a verified delivery: the outbox row commits with the change, the
relay sends it signed, a Standard Webhooks receiver verifies it."""

import json

import pytest
from django.db import transaction
from standardwebhooks import Webhook

from notifications.models import DeliveryStatus, WebhookDelivery, WebhookEvent
from notifications.services import webhook_deliveries_send
from tenants.models import Role
from tenants.services import member_invite
from tests.factories import TenantFactory

from .receiver import Receiver

# Also on SQLite (the smoke run), where events and deliveries are written through the ORM.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.smoke]


def _create_endpoint(caller, url, events=("*",)):
    response = caller.client.post(
        "/api/v1/webhooks/", {"name": "Receiver", "url": url, "events": list(events)}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_an_invitation_is_delivered_signed_and_verifies(make_caller):
    owner = make_caller(Role.OWNER)
    with Receiver() as receiver:
        created = _create_endpoint(owner, receiver.url)
        response = owner.client.post(
            "/api/v1/organizations/members/invite",
            {"email": "new@example.com", "role": "member"},
            format="json",
        )
        assert response.status_code == 201, response.content

        report = webhook_deliveries_send(concurrency=1)

    assert report.succeeded == 1
    (request,) = receiver.requests
    payload = Webhook(created["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "organization.member.invited"
    assert payload["organization_id"] == str(owner.tenant.pk)
    assert payload["data"]["email"] == "new@example.com"
    assert set(payload["data"]) == {
        "membership_id",
        "user_id",
        "email",
        "role",
        "invitation_id",
        "expires_at",
    }
    assert request.headers["webhook-id"] == payload["id"]
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempt_count == 1


def test_a_rolled_back_change_leaves_no_event_and_no_delivery(make_caller):
    owner = make_caller(Role.OWNER)
    with Receiver() as receiver:
        _create_endpoint(owner, receiver.url)
    with pytest.raises(RuntimeError), transaction.atomic():
        member_invite(
            tenant=owner.tenant, actor=owner.user, email="x@example.com", send_email=False
        )
        raise RuntimeError("the change fails after recording")
    assert not WebhookEvent.objects.filter(event_type="organization.member.invited").exists()
    assert not WebhookDelivery.objects.exists()


def test_the_test_action_answers_the_attempt(make_caller):
    owner = make_caller(Role.OWNER)
    with Receiver() as receiver:
        created = _create_endpoint(owner, receiver.url, events=["organization.member.joined"])
        response = owner.client.post(f"/api/v1/webhooks/{created['id']}/test")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["succeeded"] is True
    assert body["attempt"]["status_code"] == 200
    assert body["delivery"]["event_type"] == "webhook.test"
    (request,) = receiver.requests
    assert json.loads(request.body)["type"] == "webhook.test"
    other = TenantFactory()
    assert not WebhookDelivery.objects.filter(tenant=other).exists()
