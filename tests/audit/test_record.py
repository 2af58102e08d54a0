"""audit.services.record(): redaction, the transaction rule, request context and actors."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from audit.models import ActorType, AuditEvent
from audit.services import REDACTED, AuditOutsideTransaction, record
from config.request_context import RequestContext, activate, current, deactivate
from tests.factories import TenantFactory, UserFactory


def record_now(**kwargs) -> AuditEvent:
    """record() with defaults, inside its own transaction, as a service would call it."""
    kwargs.setdefault("tenant", None)
    kwargs.setdefault("event_type", "test.recorded")
    with transaction.atomic():
        return record(**kwargs)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "new_password",
        "passwd",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apiKey",
        "api-key",
        "key",
        "secret",
        "client_secret",
        "Authorization",
        "signature",
        "private_key",
    ],
)
def test_secret_looking_key_is_redacted(key):
    event = record_now(payload={key: "s3cr3t-value", "name": "kept"})

    event.refresh_from_db()
    assert event.payload == {key: REDACTED, "name": "kept"}


@pytest.mark.django_db
def test_secrets_are_redacted_at_any_depth_in_dicts_and_lists():
    payload = {
        "user": {"email": "a@example.com", "credentials": {"password": "hunter2", "otp": 123}},
        "keys": [{"id": "k1", "api_key": "sk-live-1"}, {"id": "k2", "secret": "shh"}],
        "matrix": [[{"token": "t-1"}], ("plain", {"deep": {"webhook_secret": "whsec"}})],
        "count": 3,
    }

    event = record_now(payload=payload)

    event.refresh_from_db()
    assert event.payload == {
        # "credentials" names a secret: its whole value goes, not just the password inside.
        "user": {"email": "a@example.com", "credentials": REDACTED},
        "keys": [{"id": "k1", "api_key": REDACTED}, {"id": "k2", "secret": REDACTED}],
        "matrix": [[{"token": REDACTED}], ["plain", {"deep": {"webhook_secret": REDACTED}}]],
        "count": 3,
    }
    for raw in ("hunter2", "sk-live-1", "shh", "t-1", "whsec"):
        assert raw not in str(event.payload)


@pytest.mark.django_db
def test_a_secret_keys_whole_value_is_redacted_even_when_it_is_a_structure():
    event = record_now(payload={"token": {"value": "abc", "scopes": ["read"]}})

    assert event.payload == {"token": REDACTED}


@pytest.mark.django_db
def test_redaction_does_not_modify_the_callers_payload():
    payload = {"password": "hunter2", "nested": {"token": "t"}}

    record_now(payload=payload)

    assert payload == {"password": "hunter2", "nested": {"token": "t"}}


def test_record_refuses_to_run_outside_a_transaction(transactional_db):
    with pytest.raises(AuditOutsideTransaction):
        record(tenant=None, event_type="test.outside")

    assert not AuditEvent.objects.exists()


def test_event_is_rolled_back_with_its_transaction(transactional_db):
    with pytest.raises(RuntimeError, match="boom"), transaction.atomic():
        record(tenant=None, event_type="test.rolled_back")
        raise RuntimeError("boom")

    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_request_context_is_recorded_on_the_event():
    context = RequestContext(
        request_id="req-1234", ip_address="203.0.113.7", user_agent="pytest-agent/1.0"
    )
    token = activate(context)
    try:
        event = record_now()
    finally:
        deactivate(token)

    event.refresh_from_db()
    assert event.request_id == "req-1234"
    assert event.ip_address == "203.0.113.7"
    assert event.user_agent == "pytest-agent/1.0"
    assert current() == RequestContext()


@pytest.mark.django_db
def test_event_outside_a_request_has_empty_request_context():
    event = record_now()

    assert event.request_id == ""
    assert event.ip_address is None
    assert event.user_agent == ""


@pytest.mark.django_db
def test_api_request_context_reaches_the_event(owner):
    response = owner.client.post(
        "/api/v1/tenants/",
        {"name": "Context Co"},
        HTTP_X_REQUEST_ID="trace-abc-123",
        HTTP_USER_AGENT="context-test/2.0",
    )

    assert response.status_code == 201, response.content
    assert response["X-Request-ID"] == "trace-abc-123"
    event = AuditEvent.objects.get(
        event_type="tenant.created", tenant__slug=response.json()["slug"]
    )
    assert event.request_id == "trace-abc-123"
    assert event.user_agent == "context-test/2.0"
    assert event.ip_address == "127.0.0.1"
    assert event.actor_id == owner.user.pk
    # Every event of the request carries the same id.
    assert set(
        AuditEvent.objects.filter(tenant=event.tenant).values_list("request_id", flat=True)
    ) == {"trace-abc-123"}


@pytest.mark.django_db
def test_api_request_without_request_id_gets_a_generated_one_on_the_event(owner):
    response = owner.client.post("/api/v1/tenants/", {"name": "Generated Id Co"})

    event = AuditEvent.objects.get(
        event_type="tenant.created", tenant__slug=response.json()["slug"]
    )
    assert event.request_id
    assert event.request_id == response["X-Request-ID"]


@pytest.mark.django_db
def test_user_actor_is_recorded_as_user_with_email_label():
    user = UserFactory()
    tenant = TenantFactory()

    event = record_now(tenant=tenant, actor=user, payload={"x": 1})

    event.refresh_from_db()
    assert event.actor_type == ActorType.USER
    assert event.actor_id == user.pk
    assert event.actor_label == user.email
    assert event.tenant_id == tenant.pk
    assert event.payload == {"x": 1}
    assert event.created_at is not None


@pytest.mark.django_db
def test_explicit_actor_label_wins_over_the_email():
    user = UserFactory()

    event = record_now(actor=user, actor_label="via support console")

    assert event.actor_type == ActorType.USER
    assert event.actor_label == "via support console"


@pytest.mark.parametrize("actor", [None, AnonymousUser()])
@pytest.mark.django_db
def test_missing_or_anonymous_actor_is_recorded_as_system(actor):
    event = record_now(actor=actor)

    event.refresh_from_db()
    assert event.actor_type == ActorType.SYSTEM
    assert event.actor_id is None
    assert event.actor_label == ""
    assert event.tenant_id is None
