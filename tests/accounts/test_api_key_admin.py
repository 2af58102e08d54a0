"""The back-office for credentials: API keys masked with a revoke action, JWT records without
the tokens themselves."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts.models import APIKey
from audit.models import AuditEvent
from tenants.models import Role
from tests.factories import TEST_PASSWORD, MembershipFactory, UserFactory, issue_api_key

from .conftest import key_client

pytestmark = pytest.mark.django_db


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def make_keys(count: int) -> list[tuple[APIKey, str]]:
    return [issue_api_key(MembershipFactory(role=Role.OWNER)) for _ in range(count)]


def test_key_pages_show_the_prefix_never_the_secret(admin_client):
    (key, raw), *_ = make_keys(2)

    changelist = admin_client.get(admin_url(APIKey, "changelist"))
    change = admin_client.get(admin_url(APIKey, "change", key.pk))

    assert changelist.status_code == change.status_code == 200
    assert key.key_prefix.encode() in changelist.content
    for page in (changelist, change):
        assert raw.encode() not in page.content
        assert key.secret_hash.encode() not in page.content
    assert b'name="name"' not in change.content  # read-only


def test_key_changelist_queries_do_not_grow_with_rows(admin_client):
    make_keys(2)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(admin_url(APIKey, "changelist"))
    make_keys(10)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(admin_url(APIKey, "changelist"))

    assert response.status_code == 200
    assert len(many) == len(few)


def test_revoke_action_revokes_through_the_service(admin_client):
    (key, raw), (other, other_raw) = make_keys(2)

    response = admin_client.post(
        admin_url(APIKey, "changelist"),
        {"action": "revoke_keys", "_selected_action": [str(key.pk)]},
    )

    assert response.status_code == 302
    key.refresh_from_db()
    other.refresh_from_db()
    assert key.revoked_at is not None and not key.is_active
    assert other.revoked_at is None
    event = AuditEvent.objects.get(event_type="api_key.revoked")
    assert event.payload["api_key_id"] == str(key.pk)
    assert key_client(raw).get("/api/v1/organizations/current").status_code == 401
    assert key_client(other_raw).get("/api/v1/organizations/current").status_code == 200


def test_keys_cannot_be_added_or_deleted_in_the_admin(admin_client):
    (key, _), *_ = make_keys(1)

    assert admin_client.get(admin_url(APIKey, "add")).status_code == 403
    assert (
        admin_client.post(admin_url(APIKey, "delete", key.pk), {"post": "yes"}).status_code == 403
    )
    assert APIKey.objects.filter(pk=key.pk).exists()


def test_staff_without_change_permission_cannot_revoke(client):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(*_permissions("view_apikey"))
    client.force_login(staff)
    (key, _), *_ = make_keys(1)

    client.post(
        admin_url(APIKey, "changelist"),
        {"action": "revoke_keys", "_selected_action": [str(key.pk)]},
    )

    key.refresh_from_db()
    assert key.revoked_at is None


def _permissions(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)


def test_refresh_token_records_never_show_the_token(admin_client):
    user = UserFactory()
    refresh = (
        APIClient()
        .post("/api/v1/auth/login", {"email": user.email, "password": TEST_PASSWORD})
        .json()["refresh_token"]
    )
    record = OutstandingToken.objects.get()

    changelist = admin_client.get(admin_url(OutstandingToken, "changelist"))
    change = admin_client.get(admin_url(OutstandingToken, "change", record.pk))

    assert changelist.status_code == change.status_code == 200
    assert record.jti.encode() in changelist.content
    for page in (changelist, change):
        assert refresh.encode() not in page.content
