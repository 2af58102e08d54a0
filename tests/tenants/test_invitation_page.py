"""GET /invitations/accept: the page invitation emails link to by default, whose script posts
to POST /api/v1/invitations/accept."""

import re
from urllib.parse import urlsplit

import pytest
from django.core import mail
from django.test import Client
from django.urls import resolve
from rest_framework.test import APIClient

from audit import tasks as audit_tasks
from tenants import emails
from tenants.models import MembershipStatus, PlanTier, Role
from tests.conftest import assert_envelope
from tests.factories import TenantFactory

PAGE = "/invitations/accept"
NEW_PASSWORD = "a-long-and-unusual-passphrase-42"


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    """Committed audit events ask for a seal task; keep those off the broker."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)


def form_token(html: str) -> str | None:
    match = re.search(r'<input type="hidden" name="token" value="([^"]*)">', html)
    return match.group(1) if match else None


def test_the_default_accept_url_is_this_page():
    path = urlsplit(emails.accept_url("abc")).path

    assert resolve(path).url_name == "invitation-accept-page"
    assert resolve(path + "/").url_name == "invitation-accept-page"


def test_the_page_carries_the_token_to_the_api():
    # No django_db mark: the page must not touch the database (it would raise here).
    response = Client().get(PAGE, {"token": "abc_DEF-123"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert form_token(html) == "abc_DEF-123"
    assert 'data-api="/api/v1/invitations/accept"' in html


def test_the_page_runs_only_its_own_script_and_keeps_the_token_private():
    response = Client().get(PAGE, {"token": "abc"})
    html = response.content.decode()

    policy = response["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy).group(1)
    assert f'<script nonce="{nonce}">' in html
    assert f'<style nonce="{nonce}">' in html
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert response["Cache-Control"] == "no-store"
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["X-Frame-Options"] == "DENY"
    # A new nonce every time.
    assert Client().get(PAGE, {"token": "abc"})["Content-Security-Policy"] != policy


def test_markup_in_the_token_is_escaped():
    hostile = '"><script>alert(1)</script>'

    html = Client().get(PAGE, {"token": hostile}).content.decode()

    assert "<script>alert(1)" not in html
    assert form_token(html) == "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.mark.parametrize("query", [{}, {"token": ""}, {"token": "   "}, {"token": "x" * 201}])
def test_without_a_usable_token_the_page_says_so_and_shows_no_form(query):
    response = Client().get(PAGE, query)

    assert response.status_code == 200
    html = response.content.decode()
    assert form_token(html) is None
    assert "needs the link from your invitation email" in html


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_page_only_answers_get(method):
    response = getattr(Client(), method)(PAGE, {"token": "abc"})

    assert_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert response["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.django_db
def test_an_emailed_link_opens_the_page_and_its_token_is_accepted(
    make_caller, django_capture_on_commit_callbacks
):
    tenant = TenantFactory(plan=PlanTier.ENTERPRISE, name="Acme Rockets")
    owner = make_caller(Role.OWNER, tenant=tenant)
    with django_capture_on_commit_callbacks(execute=True):
        invited = owner.client.post(
            "/api/v1/organizations/members/invite",
            {"email": "newcomer@example.com"},
            format="json",
        )
    assert invited.status_code == 201, invited.content
    link = re.search(r"https?://\S+", mail.outbox[-1].body).group(0)
    assert link.startswith("http://testserver/invitations/accept?token=")

    parts = urlsplit(link)
    page = Client().get(parts.path + "?" + parts.query)
    token = form_token(page.content.decode())
    # What the page's script posts.
    accepted = APIClient().post(
        "/api/v1/invitations/accept",
        {"token": token, "name": "New Comer", "password": NEW_PASSWORD},
        format="json",
    )

    assert page.status_code == 200
    assert accepted.status_code == 200, accepted.content
    membership = tenant.memberships.get(user__email="newcomer@example.com")
    assert membership.status == MembershipStatus.ACTIVE
