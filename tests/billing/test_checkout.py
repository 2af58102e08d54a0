"""Checkout through the local payment provider: the session, its hosted page, the signed event
it sends through the provider webhook's entry point, and the subscription it starts (a trial,
or the first period charged pro rata at once); the webhook's signature and replay rules."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from billing.models import (
    CheckoutSession,
    Invoice,
    InvoiceStatus,
    Payment,
    Plan,
    ProviderEvent,
    Subscription,
    SubscriptionStatus,
)
from billing.providers.base import sign
from billing.providers.local import LocalProvider, webhook_secret
from tenants.models import Tenant
from tenants.plans import tenant_limits
from tests.conftest import assert_envelope

pytestmark = pytest.mark.django_db

JAN_12 = datetime(2026, 1, 12, 10, 30, tzinfo=UTC)
CHECKOUT = "/api/v1/billing/checkout"
WEBHOOK = "/api/v1/billing/webhooks/local"
BODY = {
    "plan": "starter",
    "success_url": "https://app.example.com/billing/done",
    "cancel_url": "https://app.example.com/billing",
}


def open_checkout(caller, **overrides) -> dict:
    response = caller.client.post(CHECKOUT, {**BODY, **overrides}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def pay_on_the_page(session: dict, method: str = "pm_card_visa"):
    """The payer on the hosted page: a browser (CSRF enforced), the session's URL."""
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(session["url"])
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value
    return browser.post(
        session["url"],
        {"payment_method": method, "action": "pay", "csrfmiddlewaretoken": token},
    )


def no_trials():
    Plan.objects.update(trial_days=0)


# The session -------------------------------------------------------------------------------------


def test_checkout_answers_a_session_and_the_hosted_page_url(owner):
    session = open_checkout(owner)
    assert session["session_id"].startswith("cs_local_")
    assert session["url"] == f"http://testserver/billing/checkout/{session['session_id']}"
    assert session["status"] == "open" and session["plan"] == "starter"
    stored = CheckoutSession.objects.get(session_id=session["session_id"])
    assert stored.tenant == owner.tenant
    assert AuditEvent.objects.filter(event_type="billing.checkout.created").count() == 1


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"plan": "free"}, 409, "CONFLICT"),
        ({"plan": "nope"}, 404, "RESOURCE_NOT_FOUND"),
        ({"success_url": "not a url"}, 400, "VALIDATION_ERROR"),
        ({"cancel_url": "javascript:alert(1)"}, 400, "VALIDATION_ERROR"),
    ],
)
def test_bad_checkouts_are_refused(owner, overrides, status, code):
    assert_envelope(owner.client.post(CHECKOUT, {**BODY, **overrides}, format="json"), status, code)
    assert not CheckoutSession.objects.exists()


def test_an_organization_already_paying_uses_change_plan(owner):
    no_trials()
    pay_on_the_page(open_checkout(owner))
    assert_envelope(owner.client.post(CHECKOUT, BODY, format="json"), 409, "CONFLICT")


# The hosted page -------------------------------------------------------------------------------


def test_the_page_shows_the_plan_and_the_test_methods(owner):
    session = open_checkout(owner)
    page = Client().get(session["url"])
    assert page.status_code == 200
    html = page.content.decode()
    assert "Starter plan" in html and "USD 49.00" in html
    assert "pm_card_chargeDeclined" in html
    assert "default-src 'none'" in page["Content-Security-Policy"]
    assert page["Cache-Control"] == "no-store"
    assert Client().get("/billing/checkout/cs_local_nope").status_code == 404


@time_machine.travel(JAN_12, tick=False)
def test_paying_starts_the_trial_and_charges_nothing_yet(owner):
    session = open_checkout(owner)
    response = pay_on_the_page(session)
    assert response.status_code == 302
    assert response["Location"] == (
        f"https://app.example.com/billing/done?session_id={session['session_id']}"
    )
    subscription = Subscription.objects.get(tenant=owner.tenant)
    assert subscription.plan.code == "starter"
    assert subscription.status == SubscriptionStatus.TRIALING
    assert subscription.trial_end == JAN_12 + timedelta(days=14)
    assert subscription.current_period_end == subscription.trial_end
    assert subscription.default_payment_method == "pm_card_visa"
    tenant = Tenant.objects.get(pk=owner.tenant.pk)
    assert tenant.plan == "pro"
    assert not Invoice.objects.filter(tenant=tenant).exists()
    event = ProviderEvent.objects.get()
    assert (event.type, event.outcome, event.organization_id) == (
        "checkout.session.completed",
        "subscribed",
        tenant.pk,
    )
    changed = AuditEvent.objects.get(event_type="billing.subscription.changed")
    assert changed.payload["change"] == "trial_started"


@time_machine.travel(JAN_12, tick=False)
def test_without_a_trial_the_first_period_is_charged_pro_rata_at_once(owner):
    no_trials()
    pay_on_the_page(open_checkout(owner, plan="team"))
    subscription = Subscription.objects.get(tenant=owner.tenant)
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert (subscription.current_period_start, subscription.current_period_end) == (
        JAN_12,
        datetime(2026, 2, 1, tzinfo=UTC),
    )
    invoice = Invoice.objects.get(tenant=owner.tenant)
    # 14,900 x 1,690,200 / 2,678,400 = 9,402.6... -> 9,403 cents.
    assert invoice.total_cents == 9_403
    assert invoice.status == InvoiceStatus.PAID
    payment = Payment.objects.get(invoice=invoice)
    assert (payment.status, payment.amount_cents, payment.payment_method) == (
        "succeeded",
        9_403,
        "visa ending 4242",
    )
    assert tenant_limits(Tenant.objects.get(pk=owner.tenant.pk))["users"] == 10


def test_a_second_trial_is_not_given(owner):
    pay_on_the_page(open_checkout(owner))
    subscription = Subscription.objects.get(tenant=owner.tenant)
    subscription.status = SubscriptionStatus.CANCELED
    subscription.save()
    pay_on_the_page(open_checkout(owner))
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.ACTIVE
    assert Invoice.objects.filter(tenant=owner.tenant).count() == 1


@pytest.mark.parametrize(
    ("method", "status", "message"),
    [
        ("pm_card_chargeDeclined", 402, "Your card was declined."),
        ("pm_card_chargeDeclinedInsufficientFunds", 402, "insufficient funds"),
        ("pm_card_bogus", 400, "No such payment method"),
    ],
)
def test_a_declined_or_unknown_method_is_shown_and_changes_nothing(owner, method, status, message):
    session = open_checkout(owner)
    response = pay_on_the_page(session, method)
    assert response.status_code == status
    assert message in response.content.decode()
    assert CheckoutSession.objects.get(session_id=session["session_id"]).status == "open"
    assert not ProviderEvent.objects.exists()
    assert Subscription.objects.get(tenant=owner.tenant).plan.code == "free"


def test_cancel_goes_back_and_an_expired_session_cannot_be_paid(owner):
    session = open_checkout(owner)
    browser = Client()
    response = browser.post(session["url"], {"action": "cancel"})
    assert response.status_code == 302 and response["Location"] == BODY["cancel_url"]
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=25)):
        expired = browser.post(session["url"], {"payment_method": "pm_card_visa"})
        assert expired.status_code == 409
        assert "no longer open" in expired.content.decode()
    assert Subscription.objects.get(tenant=owner.tenant).plan.code == "free"


def test_a_completed_page_says_so_and_paying_again_changes_nothing(owner):
    session = open_checkout(owner)
    pay_on_the_page(session)
    again = Client().post(session["url"], {"payment_method": "pm_card_visa"})
    assert again.status_code == 409
    page = Client().get(session["url"])
    assert "This checkout is complete" in page.content.decode()
    assert ProviderEvent.objects.count() == 1


# The provider webhook ---------------------------------------------------------------------------


def signed(event: dict, *, secret: str | None = None, at: int | None = None):
    body = json.dumps(event).encode()
    return body, sign(secret or webhook_secret(), body, timestamp=at)


def post_event(body: bytes, signature: str | None):
    headers = {"HTTP_LOCAL_SIGNATURE": signature} if signature else {}
    return APIClient().post(WEBHOOK, body, content_type="application/json", **headers)


def completed(session_id: str, event_id: str = "evt_1") -> dict:
    return {
        "id": event_id,
        "type": "checkout.session.completed",
        "data": {"session_id": session_id, "payment_method": "pm_card_visa"},
    }


def test_a_signed_event_subscribes_and_its_replay_changes_nothing(owner):
    no_trials()
    session = open_checkout(owner)
    body, signature = signed(completed(session["session_id"]))
    first = post_event(body, signature)
    assert first.status_code == 200, first.content
    assert first.json()["outcome"] == "subscribed"
    replay = post_event(body, signature)
    assert replay.status_code == 200
    assert ProviderEvent.objects.count() == 1
    assert Invoice.objects.filter(tenant=owner.tenant).count() == 1
    assert Payment.objects.count() == 1


def test_another_event_of_a_completed_session_is_recorded_as_already_complete(owner):
    # The hosted page posted twice sends two events of its own: only the first subscribes.
    no_trials()
    session = open_checkout(owner)
    first = post_event(*signed(completed(session["session_id"], "evt_1")))
    second = post_event(*signed(completed(session["session_id"], "evt_2")))

    assert (first.json()["outcome"], second.json()["outcome"]) == (
        "subscribed",
        "already complete",
    )
    assert ProviderEvent.objects.get(event_id="evt_2").organization_id == owner.tenant.pk
    assert Invoice.objects.filter(tenant=owner.tenant).count() == 1
    assert Payment.objects.count() == 1


@pytest.mark.parametrize(
    "tamper",
    ["no signature", "wrong secret", "other body", "too old", "from the future", "garbled"],
)
def test_a_bad_signature_is_400_and_changes_nothing(owner, tamper):
    session = open_checkout(owner)
    event = completed(session["session_id"])
    now = int(datetime.now(UTC).timestamp())
    body, signature = signed(event)
    if tamper == "no signature":
        signature = None
    elif tamper == "wrong secret":
        body, signature = signed(event, secret="whsec_other")
    elif tamper == "other body":
        body = json.dumps({**event, "id": "evt_2"}).encode()
    elif tamper == "too old":
        body, signature = signed(event, at=now - 301)
    elif tamper == "from the future":
        body, signature = signed(event, at=now + 301)
    else:
        signature = "t=abc,v1="
    assert_envelope(post_event(body, signature), 400, "VALIDATION_ERROR")
    assert not ProviderEvent.objects.exists()
    assert Subscription.objects.get(tenant=owner.tenant).plan.code == "free"


def test_unknown_events_are_kept_and_ignored_and_unknown_providers_are_404():
    body, signature = signed({"id": "evt_9", "type": "invoice.finalized", "data": {}})
    response = post_event(body, signature)
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    missing = signed(completed("cs_local_missing", "evt_10"))
    assert "no checkout session" in post_event(*missing).json()["outcome"]
    assert_envelope(
        APIClient().post("/api/v1/billing/webhooks/paypal", b"{}", content_type="application/json"),
        404,
        "RESOURCE_NOT_FOUND",
    )


def test_an_event_for_an_expired_session_is_kept_with_its_refusal(owner):
    session = open_checkout(owner)
    CheckoutSession.objects.update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    response = post_event(*signed(completed(session["session_id"])))
    assert response.status_code == 200
    assert response.json()["outcome"].startswith("refused:")
    assert Subscription.objects.get(tenant=owner.tenant).plan.code == "free"


def test_the_local_provider_signs_what_it_verifies():
    provider = LocalProvider()
    body, headers = provider.signed_event("checkout.session.completed", {"session_id": "cs_x"})
    event = provider.verify_event(body=body, headers=headers)
    assert event.type == "checkout.session.completed" and event.data == {"session_id": "cs_x"}


# The signature scheme is Stripe's own ------------------------------------------------------------


def test_stripes_official_library_verifies_what_the_local_provider_signs():
    import stripe

    body, headers = LocalProvider().signed_event("checkout.session.completed", {"x": 1})
    # Raises SignatureVerificationError on any mismatch, and checks the tolerance.
    assert stripe.WebhookSignature.verify_header(
        body, headers["Local-Signature"], webhook_secret(), tolerance=300
    )


def test_a_header_signed_by_stripes_library_is_accepted():
    import time

    import stripe

    from billing.providers.base import verify

    body = json.dumps({"id": "evt_1", "type": "ping", "data": {}}).encode()
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), "whsec_test", timestamp=int(time.time())
    )
    verify("whsec_test", body, header)
