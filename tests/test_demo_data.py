"""`manage.py load_demo_data`: refused with DEBUG off unless forced, lists the credentials, and
restores the demo on a rerun. What the demo holds is checked in test_demo_content.py."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import User
from tenants.management.commands.load_demo_data import DEMO_PASSWORD
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

DEMO_SLUGS = ("acme", "globex")


def load(**options) -> str:
    out = StringIO()
    call_command("load_demo_data", stdout=out, **options)
    return out.getvalue()


def test_refused_without_debug_or_force(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="--force"):
        load()

    assert not User.objects.filter(email="admin@example.com").exists()
    assert not Tenant.objects.filter(slug__in=DEMO_SLUGS).exists()


def test_runs_without_force_when_debug_is_on_and_lists_the_credentials(settings):
    # One load for both (each is some ten seconds); --force with DEBUG off: the rerun test.
    settings.DEBUG = True

    out = load()

    assert set(Tenant.objects.values_list("slug", flat=True)) == set(DEMO_SLUGS)
    assert DEMO_PASSWORD in out
    for email in ("admin@example.com", "owner@acme.example.com", "viewer@globex.example.com"):
        assert email in out


@pytest.mark.django_db
def test_rerun_restores_a_changed_demo_password(api_client):
    call_command("load_demo_data", force=True)
    owner = User.objects.get(email="owner@acme.example.com")
    owner.set_password("someone-changed-it-1")
    owner.save()

    call_command("load_demo_data", force=True)

    response = api_client.post(
        "/api/v1/auth/token/", {"email": owner.email, "password": DEMO_PASSWORD}
    )
    assert response.status_code == 200
