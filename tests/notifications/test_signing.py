"""Signing secrets and signatures (notifications.signing): the Standard Webhooks scheme checked
against its published test vector and its reference library, the body signature, the secret
format, encryption at rest across SECRET_KEY rotation, and secret rotation through the API
with real deliveries to a loopback receiver. The secret is shown on creation and rotation
only: never in a read, a list, an audit payload, an event or the stored row."""

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta

import pytest
import time_machine
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from audit.models import AuditEvent
from notifications import signing
from notifications.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from notifications.services import webhook_deliveries_send
from tests.conftest import assert_envelope

from .factories import WebhookDeliveryFactory
from .receiver import Receiver

pytestmark = pytest.mark.django_db

# The Standard Webhooks specification's test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _secret_of(raw: bytes) -> str:
    return "whsec_" + base64.b64encode(raw).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def _hex_body_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_state():
    """The cipher is cached per SECRET_KEY."""
    signing._cipher.cache_clear()
    yield
    signing._cipher.cache_clear()


# Signatures ----------------------------------------------------------------------------------


def test_the_standard_signature_matches_the_specification_test_vector():
    key = signing.secret_key_bytes(VECTOR_SECRET)

    signature = signing.standard_signature(
        key, msg_id=VECTOR_MSG_ID, timestamp=VECTOR_TIMESTAMP, body=VECTOR_BODY
    )

    assert signature == VECTOR_SIGNATURE


def test_the_reference_library_verifies_the_signature_headers():
    key = signing.secret_key_bytes(VECTOR_SECRET)
    now = int(time.time())

    headers = signing.signature_headers(
        [key], msg_id=VECTOR_MSG_ID, timestamp=now, body=VECTOR_BODY
    )

    assert headers["webhook-id"] == VECTOR_MSG_ID
    assert headers["webhook-timestamp"] == str(now)
    assert Webhook(VECTOR_SECRET).verify(VECTOR_BODY, headers) == {"test": 2432232314}
    with pytest.raises(WebhookVerificationError):
        Webhook(VECTOR_SECRET).verify(b'{"test": 2432232315}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(VECTOR_BODY, headers)


def test_the_body_signature_is_the_hex_hmac_sha256_of_the_body():
    key = signing.secret_key_bytes(VECTOR_SECRET)

    headers = signing.signature_headers(
        [key], msg_id=VECTOR_MSG_ID, timestamp=VECTOR_TIMESTAMP, body=VECTOR_BODY
    )

    expected = "sha256=" + hmac.new(key, VECTOR_BODY, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == expected
    assert signing.body_signature(key, VECTOR_BODY) == expected


def test_two_keys_give_two_signatures_in_each_header_current_first():
    current, previous = signing.new_secret(), signing.new_secret()

    headers = signing.signature_headers(
        [_key(current), _key(previous)], msg_id="msg_1", timestamp=VECTOR_TIMESTAMP, body=b"{}"
    )

    standard = headers["webhook-signature"].split(" ")
    assert standard == [
        signing.standard_signature(_key(secret), msg_id="msg_1", timestamp=1614265330, body=b"{}")
        for secret in (current, previous)
    ]
    assert headers["X-Webhook-Signature"].split(" ") == [
        _hex_body_signature(current, b"{}"),
        _hex_body_signature(previous, b"{}"),
    ]


# The secret's format --------------------------------------------------------------------------


def test_a_new_secret_is_whsec_and_the_base64_of_32_random_bytes():
    secrets = {signing.new_secret() for _ in range(50)}

    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        assert len(raw) == 32
        assert signing.secret_key_bytes(secret) == raw


@pytest.mark.parametrize("size", [24, 32, 64])
def test_a_secret_of_24_to_64_bytes_is_a_key(size):
    raw = bytes(range(size))
    assert signing.secret_key_bytes(_secret_of(raw)) == raw


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        pytest.param("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with", id="no-prefix"),
        pytest.param("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with", id="upper-prefix"),
        pytest.param("", "starts with", id="empty"),
        pytest.param(None, "starts with", id="not-a-string"),
        pytest.param("whsec_not base64!!", "base64", id="bad-base64"),
        pytest.param("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "base64", id="bad-padding"),
        pytest.param("whsec_", "0", id="nothing-after-prefix"),
        pytest.param(_secret_of(b"k" * 23), "23", id="23-bytes"),
        pytest.param(_secret_of(b"k" * 65), "65", id="65-bytes"),
    ],
)
def test_a_malformed_secret_is_refused(secret, reason):
    with pytest.raises(signing.InvalidSecret) as refused:
        signing.secret_key_bytes(secret)
    assert reason in str(refused.value)


# Encryption at rest ---------------------------------------------------------------------------


def test_an_encrypted_secret_decrypts_and_does_not_contain_it():
    secret = signing.new_secret()

    token = signing.encrypt(secret)

    assert secret not in token and secret.removeprefix("whsec_") not in token
    assert signing.decrypt(token) == secret
    assert signing.encrypt(secret) != token  # a fresh IV each time


def test_a_secret_encrypted_under_the_old_secret_key_decrypts_from_the_fallbacks(settings):
    secret = signing.new_secret()
    old_key = settings.SECRET_KEY
    token = signing.encrypt(secret)

    settings.SECRET_KEY = "a-new-django-secret-key-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = [old_key]
    signing._cipher.cache_clear()

    assert signing.decrypt(token) == secret
    rewritten = signing.encrypt(secret)  # new values are encrypted with the new key
    settings.SECRET_KEY_FALLBACKS = []
    signing._cipher.cache_clear()
    assert signing.decrypt(rewritten) == secret
    with pytest.raises(signing.InvalidSecret, match="SECRET_KEY_FALLBACKS"):
        signing.decrypt(token)


def test_a_secret_encrypted_under_a_lost_secret_key_is_invalid(settings):
    token = signing.encrypt(signing.new_secret())

    settings.SECRET_KEY = "a-new-django-secret-key-" + "y" * 40
    settings.SECRET_KEY_FALLBACKS = []
    signing._cipher.cache_clear()

    with pytest.raises(signing.InvalidSecret, match="Rotate the endpoint's secret"):
        signing.decrypt(token)
    with pytest.raises(signing.InvalidSecret):
        signing.decrypt("not a fernet token")


def test_a_delivery_whose_secret_cannot_be_decrypted_is_not_sent(settings):
    with Receiver() as receiver:
        delivery = WebhookDeliveryFactory(endpoint__url=receiver.url)
        settings.SECRET_KEY = "a-new-django-secret-key-" + "z" * 40
        settings.SECRET_KEY_FALLBACKS = []
        signing._cipher.cache_clear()

        webhook_deliveries_send(concurrency=1)

    assert receiver.requests == []
    delivery.refresh_from_db()
    (attempt,) = delivery.attempts.all()
    assert delivery.status == DeliveryStatus.FAILED
    assert attempt.error.startswith("Not sent: The stored webhook secret cannot be decrypted")


# Through the API --------------------------------------------------------------------------------


def _create_endpoint(caller, url, **extra):
    response = caller.client.post(
        "/api/v1/webhooks/",
        {"name": "Receiver", "url": url, "events": ["*"], **extra},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def _invite(caller, email):
    response = caller.client.post(
        "/api/v1/organizations/members/invite", {"email": email, "role": "member"}, format="json"
    )
    assert response.status_code == 201, response.content


def _verifies(secret, request) -> bool:
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


def test_after_rotation_deliveries_carry_both_signatures_then_only_the_new_one(owner):
    with Receiver() as receiver:
        created = _create_endpoint(owner, receiver.url)
        old = created["secret"]

        response = owner.client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret")

        assert response.status_code == 200, response.content
        rotated = response.json()
        new = rotated["secret"]
        assert new.startswith("whsec_") and new != old
        assert rotated["id"] == created["id"]
        overlap_ends = datetime.fromisoformat(rotated["previous_secret_expires_at"])
        assert abs(overlap_ends - (timezone.now() + timedelta(hours=24))) < timedelta(minutes=1)

        _invite(owner, "during@example.com")
        webhook_deliveries_send(concurrency=1)

        (during,) = receiver.requests
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert during.headers["x-webhook-signature"].split(" ") == [
            _hex_body_signature(new, during.body),
            _hex_body_signature(old, during.body),
        ]
        assert _verifies(new, during) and _verifies(old, during)
        assert not _verifies(signing.new_secret(), during)
        assert json.loads(during.body)["data"]["email"] == "during@example.com"

        with time_machine.travel(timezone.now() + timedelta(hours=25), tick=False):
            _invite(owner, "after@example.com")
            webhook_deliveries_send(concurrency=1)

            after = receiver.requests[1]
            assert json.loads(after.body)["data"]["email"] == "after@example.com"
            assert len(after.headers["webhook-signature"].split(" ")) == 1
            assert after.headers["x-webhook-signature"] == _hex_body_signature(new, after.body)
            assert _verifies(new, after)
            assert not _verifies(old, after)

    assert len(receiver.requests) == 2
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"succeeded"}


def test_rotating_twice_drops_the_first_secret(owner):
    with Receiver() as receiver:
        created = _create_endpoint(owner, receiver.url)
        path = f"/api/v1/webhooks/{created['id']}/rotate-secret"
        second = owner.client.post(path).json()["secret"]
        third = owner.client.post(path).json()["secret"]

        _invite(owner, "new@example.com")
        webhook_deliveries_send(concurrency=1)

    (request,) = receiver.requests
    assert _verifies(third, request) and _verifies(second, request)
    assert not _verifies(created["secret"], request)


def test_a_secret_supplied_at_creation_signs_the_deliveries(owner):
    supplied = _secret_of(bytes(range(100, 140)))
    with Receiver() as receiver:
        created = _create_endpoint(owner, receiver.url, secret_key=supplied)
        assert created["secret"] == supplied

        response = owner.client.post(f"/api/v1/webhooks/{created['id']}/test")

    assert response.status_code == 200, response.content
    assert response.json()["succeeded"] is True
    (request,) = receiver.requests
    payload = Webhook(supplied).verify(request.body, request.headers)
    assert payload["type"] == "webhook.test"
    assert request.headers["x-webhook-signature"] == _hex_body_signature(supplied, request.body)
    endpoint = WebhookEndpoint.objects.get(pk=created["id"])
    assert signing.decrypt(endpoint.secret_encrypted) == supplied


@pytest.mark.parametrize(
    "secret_key",
    [
        pytest.param("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="no-prefix"),
        pytest.param("whsec_not base64!!", id="bad-base64"),
        pytest.param(_secret_of(b"k" * 16), id="too-short"),
        pytest.param(_secret_of(b"k" * 65), id="too-long"),
    ],
)
def test_an_invalid_supplied_secret_is_a_400_and_creates_nothing(owner, secret_key):
    response = owner.client.post(
        "/api/v1/webhooks/",
        {
            "name": "Mine",
            "url": "http://127.0.0.1:9/hooks",
            "events": ["*"],
            "secret_key": secret_key,
        },
        format="json",
    )

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "secret_key" in error["details"]
    assert secret_key not in json.dumps(error)
    assert not WebhookEndpoint.objects.exists()


def test_the_secret_is_shown_on_creation_and_rotation_only(owner):
    created = _create_endpoint(owner, "http://127.0.0.1:9/hooks")
    endpoint_id = created["id"]
    first = created["secret"]
    rotated = owner.client.post(f"/api/v1/webhooks/{endpoint_id}/rotate-secret").json()
    second = rotated["secret"]
    assert first.startswith("whsec_") and second.startswith("whsec_") and first != second

    detail = owner.client.get(f"/api/v1/webhooks/{endpoint_id}")
    listing = owner.client.get("/api/v1/webhooks/")
    assert detail.status_code == 200 and listing.status_code == 200
    assert "secret" not in detail.json()
    assert [item["id"] for item in listing.json()["results"]] == [endpoint_id]
    assert "secret" not in listing.json()["results"][0]

    audit = AuditEvent.objects.filter(tenant=owner.tenant, event_type__startswith="webhook.")
    assert set(audit.values_list("event_type", flat=True)) >= {
        "webhook.endpoint.created",
        "webhook.endpoint.secret_rotated",
    }
    endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
    stored = [endpoint.secret_encrypted, endpoint.previous_secret_encrypted]
    places = {
        "detail": detail.content.decode(),
        "list": listing.content.decode(),
        "audit": json.dumps([event.payload for event in audit]),
        "events": json.dumps(list(WebhookEvent.objects.values_list("body", flat=True))),
        "stored": json.dumps(stored),
    }
    for secret in (first, second):
        for place, text in places.items():
            assert secret.removeprefix("whsec_") not in text, place
    assert [signing.decrypt(value) for value in stored] == [second, first]
