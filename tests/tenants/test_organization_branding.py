"""The organization's `branding` on organizations/current: read from and written to the theme."""

import pytest

from audit.models import AuditEvent
from config.metering import Window
from tenants.models import Role, Tenant, TenantStatus, Theme
from tenants.services import lifecycle
from tests.conftest import assert_envelope
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

ORG_URL = "/api/v1/organizations/current"


def test_put_with_branding_sets_the_theme_and_the_profile_together(owner):
    response = owner.client.put(
        ORG_URL,
        {
            "name": "Acme Rebranded",
            "branding": {
                "logo": "https://cdn.example.com/new-logo.png",
                "primaryColor": "#059669",
                "secondaryColor": "#6B7280",
            },
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json()["branding"] == {
        "logo": "https://cdn.example.com/new-logo.png",
        "primaryColor": "#059669",
        "secondaryColor": "#6b7280",
        "accentColor": "#f59e0b",
    }
    theme = Theme.objects.get(tenant=owner.tenant)
    assert (theme.primary_color, theme.secondary_color) == ("#059669", "#6b7280")
    assert Tenant.objects.get(pk=owner.tenant.pk).name == "Acme Rebranded"
    assert AuditEvent.objects.filter(tenant=owner.tenant, event_type="theme.updated").exists()


def test_patch_branding_changes_only_the_keys_given(owner):
    Theme.objects.create(tenant=owner.tenant, primary_color="#111111", accent_color="#222222")

    response = owner.client.patch(ORG_URL, {"branding": {"primaryColor": "#333"}}, format="json")

    assert response.status_code == 200
    assert response.json()["branding"]["primaryColor"] == "#333333"
    assert response.json()["branding"]["accentColor"] == "#222222"


@pytest.mark.parametrize(
    "branding, key",
    [
        ({"primaryColor": "red"}, "primaryColor"),
        ({"logo": "javascript:alert(1)"}, "logo"),
        ({"fontFamily": "Comic Sans"}, "fontFamily"),
    ],
)
def test_bad_branding_is_refused_by_its_branding_key_and_changes_nothing(owner, branding, key):
    response = owner.client.patch(ORG_URL, {"name": "Changed", "branding": branding}, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert key in error["details"]["branding"]
    assert not Theme.objects.filter(tenant=owner.tenant).exists()
    assert Tenant.objects.get(pk=owner.tenant.pk).name != "Changed"


def test_branding_needs_settings_write(make_caller):
    viewer = make_caller(Role.VIEWER)

    response = viewer.client.patch(ORG_URL, {"branding": {"primaryColor": "#000"}}, format="json")

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


def _new_themes_branding() -> dict:
    theme = Theme()
    return {
        "logo": theme.logo_in_use(),
        "primaryColor": theme.primary_color,
        "secondaryColor": theme.secondary_color,
        "accentColor": theme.accent_color,
    }


def test_an_inactive_theme_shows_the_default_branding(owner):
    Theme.objects.create(
        tenant=owner.tenant,
        primary_color="#111111",
        logo_url="https://x.test/l.png",
        is_active=False,
    )

    branding = owner.client.get(ORG_URL).json()["branding"]

    assert branding == _new_themes_branding()


def test_an_organization_without_a_theme_shows_a_new_themes_branding(owner):
    assert not Theme.objects.filter(tenant=owner.tenant).exists()

    first = owner.client.get(ORG_URL).json()["branding"]
    first["primaryColor"] = "#000000"  # each answer its own
    second = owner.client.get(ORG_URL).json()["branding"]

    assert (
        second
        == _new_themes_branding()
        == {
            "logo": "",
            "primaryColor": "#2563eb",
            "secondaryColor": "#64748b",
            "accentColor": "#f59e0b",
        }
    )


def test_cancelling_a_suspended_tenant_does_not_repeat_the_suspension_reason():
    tenant = TenantFactory()
    lifecycle.tenant_suspend(tenant=tenant, actor=None, reason="Payment overdue")

    lifecycle.tenant_cancel(tenant=tenant, actor=None)

    event = AuditEvent.objects.get(tenant=tenant, event_type="tenant.cancelled")
    assert event.payload == {"from": TenantStatus.SUSPENDED, "to": TenantStatus.CANCELLED}


def test_cancelled_at_is_in_the_tenant_representation(staff_client):
    tenant = TenantFactory()

    body = staff_client.post(f"/api/v1/tenants/{tenant.slug}/cancel/").json()

    assert body["status"] == TenantStatus.CANCELLED
    assert body["cancelled_at"] is not None


@pytest.mark.parametrize("rate", ["10/month", "10/week", "10/hours", "ten/min", "10"])
def test_rates_are_read_strictly(rate):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        Window.from_rate("k", rate)


@pytest.mark.parametrize(
    "rate, seconds", [("5/s", 1), ("5/sec", 1), ("5/min", 60), ("5/hour", 3600), ("5/day", 86400)]
)
def test_drf_rate_spellings_are_understood(rate, seconds):
    assert Window.from_rate("k", rate).seconds == seconds
