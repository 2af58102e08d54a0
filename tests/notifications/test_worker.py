"""The relay in production shape: a state change commits, its commit queues the relay task on
the Redis broker, a real Celery worker runs it and the receiver gets a verifiable webhook. The
test never calls the relay itself."""

import json
import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.cache import cache
from standardwebhooks import Webhook

from config.celery import app
from notifications.models import DeliveryStatus, WebhookDelivery
from notifications.services.events import RELAY_REQUESTED_KEY
from notifications.tasks import send_webhooks
from tenants.models import Role
from tests.factories import TenantFactory

from .receiver import Receiver

WORKER_DEADLINE_SECONDS = 20


@pytest.mark.postgres
@pytest.mark.redis
def test_a_committed_change_is_delivered_by_a_real_worker(
    transactional_db, make_caller, monkeypatch
):
    assert app.conf.broker_url.startswith("redis://"), app.conf.broker_url
    owner = make_caller(Role.OWNER, tenant=TenantFactory(plan="pro"))
    cache.delete(RELAY_REQUESTED_KEY)
    # Count the relay tasks queued (each still goes to the broker as usual).
    queued = []
    queue = send_webhooks.delay
    monkeypatch.setattr(send_webhooks, "delay", lambda: queued.append(queue()))

    with Receiver() as receiver, start_worker(app, perform_ping_check=False):
        created = owner.client.post(
            "/api/v1/webhooks/",
            {"name": "Worker", "url": receiver.url, "events": ["organization.member.invited"]},
            format="json",
        )
        assert created.status_code == 201, created.content
        invited = owner.client.post(
            "/api/v1/organizations/members/invite",
            {"email": "worker@example.com", "role": "member"},
            format="json",
        )
        assert invited.status_code == 201, invited.content
        assert len(queued) == 1, "the invitation's commit did not queue the relay task"

        deadline = time.monotonic() + WORKER_DEADLINE_SECONDS
        while not receiver.requests:
            assert time.monotonic() < deadline, "the worker did not deliver the webhook"
            time.sleep(0.1)
        # The worker records the attempt after the receiver answered.
        delivery = WebhookDelivery.objects.get(endpoint_id=created.json()["id"])
        while delivery.status != DeliveryStatus.SUCCEEDED:
            assert time.monotonic() < deadline, f"the delivery stayed {delivery.status}"
            time.sleep(0.1)
            delivery.refresh_from_db()

    (request,) = receiver.requests
    payload = Webhook(created.json()["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "organization.member.invited"
    assert payload["organization_id"] == str(owner.tenant.pk)
    assert payload["data"]["email"] == "worker@example.com"
    assert request.headers["webhook-id"] == payload["id"] == str(delivery.event_id)
    assert json.loads(request.body) == payload
    assert delivery.attempt_count == 1
    assert delivery.attempts.get().status_code == 200
