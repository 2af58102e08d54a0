"""Themes: GET/PUT/PATCH /api/v1/organizations/theme, POST /api/v1/organizations/theme/logo,
the public GET /api/v1/themes/{slug}/css, the services behind them, the admin, and uploaded
media in development."""

import importlib
import io
import json
import threading
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.urls import clear_url_caches, reverse
from PIL import Image
from rest_framework.test import APIClient

from audit import tasks as audit_tasks
from audit.models import AuditEvent
from config.exceptions import ApplicationError
from tenants.models import Role, TenantStatus, Theme
from tenants.serializers.themes import ThemeSerializer
from tenants.services import themes
from tenants.services.themes import theme_logo_set, theme_update
from tenants.theme_assets import SVG_NS, stylesheet_etag
from tests.conftest import assert_envelope
from tests.factories import TenantFactory, ThemeFactory, UserFactory, issue_api_key

pytestmark = pytest.mark.django_db

THEME_URL = "/api/v1/organizations/theme"
LOGO_URL = "/api/v1/organizations/theme/logo"
DEFAULTS = {
    "name": "Default",
    "primary_color": "#2563eb",
    "secondary_color": "#64748b",
    "accent_color": "#f59e0b",
}
THEME_KEYS = {
    "id",
    "organization_id",
    "name",
    "logo_url",
    "primary_color",
    "secondary_color",
    "accent_color",
    "custom_css",
    "is_active",
    "updated_at",
}


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    settings.MEDIA_ROOT = str(root)
    return root


def stored_files(media_root: Path) -> list[Path]:
    return sorted(path for path in media_root.rglob("*") if path.is_file())


def css_url(slug: str) -> str:
    return f"/api/v1/themes/{slug}/css"


def image_bytes(fmt: str = "PNG", size=(24, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (5, 150, 105)).save(buffer, format=fmt)
    return buffer.getvalue()


def upload(data: bytes, name: str = "logo.png", content_type: str = "image/png"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def post_logo(client, data: bytes, **kwargs):
    return client.post(LOGO_URL, {"file": upload(data, **kwargs)}, format="multipart")


def theme_events(tenant, event_type="theme.updated"):
    return list(AuditEvent.objects.filter(tenant=tenant, event_type=event_type))


SVG_LOGO = (
    f'<svg xmlns="{SVG_NS}" viewBox="0 0 10 10"><!-- exported --><metadata>x</metadata>'
    '<rect width="10" height="10" fill="#059669"/></svg>'
).encode()


# GET organizations/theme -----------------------------------------------------------------------


def test_a_tenant_without_a_theme_gets_the_defaults_and_no_row_is_made(make_caller):
    caller = make_caller(Role.VIEWER)

    response = caller.client.get(THEME_URL)

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == THEME_KEYS
    assert body == {
        **DEFAULTS,
        "id": None,
        "organization_id": str(caller.tenant.pk),
        "logo_url": "",
        "custom_css": "",
        "is_active": True,
        "updated_at": None,
    }
    assert not Theme.objects.exists()


def test_the_saved_theme_is_returned(make_caller):
    caller = make_caller(Role.VIEWER)
    theme = ThemeFactory(
        tenant=caller.tenant,
        name="Acme",
        primary_color="#059669",
        logo_url="https://cdn.example.com/acme.png",
        custom_css=".btn { color: red; }",
        is_active=False,
    )

    body = caller.client.get(THEME_URL + "/").json()

    assert body["id"] == str(theme.pk)
    assert body["organization_id"] == str(caller.tenant.pk)
    assert body["name"] == "Acme"
    assert body["primary_color"] == "#059669"
    assert body["secondary_color"] == DEFAULTS["secondary_color"]
    assert body["logo_url"] == "https://cdn.example.com/acme.png"
    assert body["custom_css"] == ".btn { color: red; }"
    assert body["is_active"] is False
    assert body["updated_at"].startswith(str(theme.updated_at.year))


def test_organizations_current_still_resolves_beside_the_theme(make_caller):
    caller = make_caller(Role.VIEWER)

    response = caller.client.get("/api/v1/organizations/current")

    assert response.status_code == 200
    assert response.json()["id"] == str(caller.tenant.pk)


def test_options_answers_without_an_error(make_caller):
    caller = make_caller(Role.OWNER)

    response = caller.client.options(THEME_URL)

    assert response.status_code == 200, response.content
    assert response.json()["parses"] == ["application/json"]


# PUT / PATCH organizations/theme ---------------------------------------------------------------


def test_put_creates_the_theme_with_normalised_colours_and_records_the_change(make_caller):
    caller = make_caller(Role.ADMIN)

    response = caller.client.put(
        THEME_URL,
        {
            "name": "Updated Theme",
            "primary_color": "#F00",
            "secondary_color": "#00FF00",
            "custom_css": ".custom { color: red; }",
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    theme = Theme.objects.get(tenant=caller.tenant)
    assert body["id"] == str(theme.pk)
    assert body["updated_at"] is not None
    assert (theme.name, theme.primary_color, theme.secondary_color) == (
        "Updated Theme",
        "#ff0000",
        "#00ff00",
    )
    assert body["primary_color"] == "#ff0000"
    assert theme.accent_color == DEFAULTS["accent_color"]
    assert theme.custom_css == ".custom { color: red; }"
    [event] = theme_events(caller.tenant)
    assert event.actor == caller.user
    assert event.payload == {
        "changed": ["custom_css", "name", "primary_color", "secondary_color"],
        "created": True,
    }


def test_patch_changes_only_the_fields_given(make_caller):
    caller = make_caller(Role.OWNER)
    ThemeFactory(tenant=caller.tenant, name="Keep", primary_color="#111111", custom_css="a{}")

    response = caller.client.patch(THEME_URL, {"accent_color": "#abc"}, format="json")

    assert response.status_code == 200, response.content
    theme = Theme.objects.get(tenant=caller.tenant)
    assert (theme.name, theme.primary_color, theme.custom_css) == ("Keep", "#111111", "a{}")
    assert theme.accent_color == "#aabbcc"
    [event] = theme_events(caller.tenant)
    assert event.payload == {"changed": ["accent_color"], "created": False}


def test_writing_the_same_values_changes_nothing_and_records_nothing(make_caller):
    caller = make_caller(Role.OWNER)
    ThemeFactory(tenant=caller.tenant, primary_color="#111111")
    before = Theme.objects.get(tenant=caller.tenant).updated_at

    response = caller.client.put(THEME_URL, caller.client.get(THEME_URL).json(), format="json")

    assert response.status_code == 200, response.content
    assert Theme.objects.get(tenant=caller.tenant).updated_at == before
    assert theme_events(caller.tenant) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("primary_color", "red"),
        ("secondary_color", "#12345"),
        ("accent_color", "rgb(1,2,3)"),
        ("logo_url", "javascript:alert(1)"),
        ("logo_url", "data:image/png;base64,AAAA"),
        ("logo_url", "/relative.png"),
        ("name", ""),
        ("is_active", "maybe"),
        ("custom_css", "a{}" * 7000),
    ],
)
def test_invalid_values_are_a_400_naming_the_field_and_nothing_changes(make_caller, field, value):
    caller = make_caller(Role.OWNER)

    response = caller.client.patch(THEME_URL, {field: value}, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert field in error["details"]
    assert not Theme.objects.exists()
    assert theme_events(caller.tenant) == []


@pytest.mark.parametrize(
    ("css", "named"),
    [
        ("</style><script>alert(1)</script>", "'<'"),
        (".a::after { content: '\\3c /style\\3e' }", "'<'"),
        (".a { width: expression(alert(1)) }", "expression()"),
        (".a { width: expr/**/ession(alert(1)) }", "expression()"),
        (".a { width: expr\\65 ssion(alert(1)) }", "expression()"),
        (".a { background: url(javascript:alert(1)) }", "javascript:"),
        ('.a { background: url("java\\09script:alert(1)") }', "javascript:"),
        (".a { background: url(vbscript:msgbox(1)) }", "vbscript:"),
        (".a { behavior: url(evil.htc) }", "behavior:"),
        (".a { -moz-binding: url(https://evil.example/x.xml#x) }", "-moz-binding"),
        ("@import url(https://evil.example/x.css);", "@import"),
        ("@\\69mport 'x.css';", "@import"),
        (".a { background: url(data:text/html;base64,PHNjcmlwdD4=) }", "data:"),
    ],
)
def test_custom_css_injection_is_refused_with_a_message_naming_it(make_caller, css, named):
    caller = make_caller(Role.OWNER)
    ThemeFactory(tenant=caller.tenant, custom_css=".safe { color: red; }")

    response = caller.client.patch(THEME_URL, {"custom_css": css}, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    [message] = error["details"]["custom_css"]
    assert named in message
    assert Theme.objects.get(tenant=caller.tenant).custom_css == ".safe { color: red; }"


def test_a_body_that_is_not_an_object_is_a_400(make_caller):
    caller = make_caller(Role.OWNER)

    response = caller.client.put(THEME_URL, ["primary_color"], format="json")

    assert_envelope(response, 400, "VALIDATION_ERROR")


# Permissions and isolation ---------------------------------------------------------------------


def test_a_viewer_can_read_but_not_write(make_caller, media_root):
    caller = make_caller(Role.VIEWER)

    assert caller.client.get(THEME_URL).status_code == 200
    for response in (
        caller.client.put(THEME_URL, {"name": "Mine"}, format="json"),
        caller.client.patch(THEME_URL, {"name": "Mine"}, format="json"),
        post_logo(caller.client, image_bytes()),
    ):
        assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert not Theme.objects.exists()
    assert stored_files(media_root) == []


def test_a_member_cannot_write_the_theme(make_caller):
    caller = make_caller(Role.MEMBER)

    response = caller.client.patch(THEME_URL, {"name": "Mine"}, format="json")

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")


def test_a_read_scoped_api_key_can_read_but_not_write(make_caller):
    owner = make_caller(Role.OWNER)
    ThemeFactory(tenant=owner.tenant, name="Acme")
    _, raw = issue_api_key(owner.membership, scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)

    assert client.get(THEME_URL).json()["name"] == "Acme"
    assert_envelope(
        client.put(THEME_URL, {"name": "Key"}, format="json"), 403, "INSUFFICIENT_PERMISSIONS"
    )
    assert_envelope(post_logo(client, image_bytes()), 403, "INSUFFICIENT_PERMISSIONS")
    assert Theme.objects.get(tenant=owner.tenant).name == "Acme"


def test_a_write_scoped_api_key_of_an_owner_can_write(make_caller):
    owner = make_caller(Role.OWNER)
    _, raw = issue_api_key(owner.membership, scopes=["read", "write"])
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)

    response = client.patch(THEME_URL, {"name": "By key"}, format="json")

    assert response.status_code == 200, response.content
    assert Theme.objects.get(tenant=owner.tenant).name == "By key"


def test_each_tenant_sees_and_writes_only_its_own_theme(make_caller):
    first, second = make_caller(Role.OWNER), make_caller(Role.OWNER)
    ThemeFactory(tenant=first.tenant, name="First", primary_color="#111111")

    seen_by_second = second.client.get(THEME_URL).json()
    second.client.patch(THEME_URL, {"name": "Second"}, format="json")

    assert seen_by_second["name"] == "Default"
    assert seen_by_second["organization_id"] == str(second.tenant.pk)
    assert Theme.objects.get(tenant=first.tenant).name == "First"
    assert Theme.objects.get(tenant=second.tenant).name == "Second"


def test_naming_another_tenant_is_a_404_and_changes_nothing(make_caller):
    first, second = make_caller(Role.OWNER), make_caller(Role.OWNER)
    ThemeFactory(tenant=first.tenant, name="First")
    client = second.client_for(first.tenant.pk)

    assert_envelope(client.get(THEME_URL), 404, "RESOURCE_NOT_FOUND")
    assert_envelope(
        client.patch(THEME_URL, {"name": "Hijacked"}, format="json"), 404, "RESOURCE_NOT_FOUND"
    )
    assert_envelope(post_logo(client, image_bytes()), 404, "RESOURCE_NOT_FOUND")
    assert Theme.objects.get(tenant=first.tenant).name == "First"


def test_a_suspended_tenant_cannot_use_the_theme_endpoints(make_caller):
    caller = make_caller(Role.OWNER)
    caller.tenant.status = TenantStatus.SUSPENDED
    caller.tenant.save()

    assert_envelope(caller.client.get(THEME_URL), 403, "TENANT_SUSPENDED")
    assert_envelope(
        caller.client.patch(THEME_URL, {"name": "x"}, format="json"), 403, "TENANT_SUSPENDED"
    )


# POST organizations/theme/logo -----------------------------------------------------------------


def test_a_png_logo_is_stored_and_shown_as_an_absolute_url(make_caller, media_root):
    caller = make_caller(Role.OWNER)
    data = image_bytes("PNG")

    response = post_logo(caller.client, data)

    assert response.status_code == 200, response.content
    theme = Theme.objects.get(tenant=caller.tenant)
    assert theme.logo.name.startswith(f"themes/{caller.tenant.pk}/logo-")
    assert theme.logo.name.endswith(".png")
    [stored] = stored_files(media_root)
    assert stored.read_bytes() == data
    assert response.json()["logo_url"] == f"http://testserver/media/{theme.logo.name}"
    assert set(response.json()) == THEME_KEYS


def test_the_logo_type_comes_from_the_content_not_the_name_or_declared_type(make_caller):
    caller = make_caller(Role.OWNER)

    response = post_logo(caller.client, image_bytes("JPEG"), name="logo.png")

    assert response.status_code == 200, response.content
    assert Theme.objects.get(tenant=caller.tenant).logo.name.endswith(".jpg")


def test_the_upload_is_audited_without_content_or_file_name(make_caller):
    caller = make_caller(Role.OWNER)
    data = image_bytes("PNG")

    post_logo(caller.client, data, name="secret-plan.png")

    [event] = theme_events(caller.tenant, "theme.logo_uploaded")
    assert event.actor == caller.user
    assert event.payload == {
        "changed": ["logo"],
        "created": True,
        "format": "png",
        "size_bytes": len(data),
    }
    dumped = json.dumps(event.payload)
    assert "secret-plan" not in dumped and "PNG" not in dumped


@pytest.mark.parametrize(
    ("data", "name", "content_type"),
    [
        (b"<html><script>alert(1)</script></html>", "logo.png", "image/png"),
        (b"MZ\x90\x00 not an image", "logo.jpg", "image/jpeg"),
        (image_bytes("GIF"), "logo.gif", "image/gif"),
        (image_bytes("PNG")[:50], "logo.png", "image/png"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "logo.png", "image/png"),
    ],
    ids=["html-as-png", "exe-as-jpeg", "gif", "truncated-png", "png-signature-only"],
)
def test_a_file_that_is_not_an_accepted_image_is_refused_and_nothing_is_stored(
    make_caller, media_root, data, name, content_type
):
    caller = make_caller(Role.OWNER)

    response = post_logo(caller.client, data, name=name, content_type=content_type)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "PNG, JPEG or SVG" in error["message"]
    assert "file" in error["details"]
    assert stored_files(media_root) == []
    assert not Theme.objects.exists()
    assert theme_events(caller.tenant, "theme.logo_uploaded") == []


def test_a_logo_over_the_size_limit_is_refused(make_caller, settings, media_root):
    settings.THEME_LOGO_MAX_BYTES = 1024
    caller = make_caller(Role.OWNER)
    data = image_bytes("PNG", size=(300, 300))
    data += b"\x00" * max(0, 1100 - len(data))

    response = post_logo(caller.client, data)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["message"] == "The logo is larger than 1 KiB."
    assert stored_files(media_root) == []


def test_a_body_far_over_the_limit_is_refused_before_it_is_parsed(
    make_caller, settings, monkeypatch
):
    settings.THEME_LOGO_MAX_BYTES = 1024
    caller = make_caller(Role.OWNER)

    def parse(*args, **kwargs):
        raise AssertionError("the body was parsed")

    monkeypatch.setattr("rest_framework.parsers.MultiPartParser.parse", parse)

    response = post_logo(caller.client, b"\x89PNG" + b"\x00" * (200 * 1024))

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert error["details"] == {"file": ["The logo is larger than 1 KiB."]}


def test_a_missing_or_empty_file_is_a_400_naming_the_field(make_caller):
    caller = make_caller(Role.OWNER)

    missing = caller.client.post(LOGO_URL, {"other": "x"}, format="multipart")
    empty = post_logo(caller.client, b"")

    assert "file" in assert_envelope(missing, 400, "VALIDATION_ERROR")["details"]
    assert "file" in assert_envelope(empty, 400, "VALIDATION_ERROR")["details"]


def test_a_json_body_is_refused_as_unsupported(make_caller):
    caller = make_caller(Role.OWNER)

    response = caller.client.post(LOGO_URL, {"file": "aGVsbG8="}, format="json")

    assert_envelope(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_an_svg_logo_is_stored_sanitised(make_caller, media_root):
    caller = make_caller(Role.OWNER)

    response = post_logo(caller.client, SVG_LOGO, name="logo.svg", content_type="image/svg+xml")

    assert response.status_code == 200, response.content
    [stored] = stored_files(media_root)
    assert stored.suffix == ".svg"
    content = stored.read_text()
    assert '<rect width="10" height="10" fill="#059669" />' in content
    assert "exported" not in content and "metadata" not in content


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("<script>alert(document.cookie)</script>", "<script>"),
        ('<rect width="1" height="1" onmouseover="alert(1)"/>', "event-handler"),
        ("<foreignObject><div>x</div></foreignObject>", "<foreignObject>"),
        ('<use href="https://evil.example/sprite.svg#a"/>', "must point inside"),
        ('<a href="javascript:alert(1)"><rect/></a>', "<a>"),
        ("<style>@import url(https://evil.example/x.css);</style>", "@import"),
    ],
)
def test_an_svg_with_active_or_external_content_is_refused(make_caller, media_root, body, named):
    caller = make_caller(Role.OWNER)
    data = f'<svg xmlns="{SVG_NS}">{body}</svg>'.encode()

    response = post_logo(caller.client, data, name="logo.svg", content_type="image/svg+xml")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert named in error["details"]["file"][0]
    assert stored_files(media_root) == []


def test_an_svg_nested_deeper_than_the_limit_is_a_400(make_caller, media_root):
    caller = make_caller(Role.OWNER)
    data = f'<svg xmlns="{SVG_NS}">{"<g>" * 5000}{"</g>" * 5000}</svg>'.encode()

    response = post_logo(caller.client, data, name="logo.svg", content_type="image/svg+xml")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "deep" in error["details"]["file"][0]
    assert stored_files(media_root) == []


def test_an_svg_with_a_dtd_or_entities_is_refused(make_caller, media_root):
    caller = make_caller(Role.OWNER)
    data = (
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<svg xmlns="http://www.w3.org/2000/svg"><text>&xxe;</text></svg>'
    )

    response = post_logo(caller.client, data, name="logo.svg", content_type="image/svg+xml")

    assert "DOCTYPE" in assert_envelope(response, 400)["message"]
    assert stored_files(media_root) == []


def test_a_new_logo_replaces_the_old_file_once_committed(
    make_caller, media_root, django_capture_on_commit_callbacks
):
    caller = make_caller(Role.OWNER)
    post_logo(caller.client, image_bytes("PNG"))
    [first] = stored_files(media_root)

    with django_capture_on_commit_callbacks(execute=False) as pending:
        response = post_logo(caller.client, image_bytes("JPEG"))
    assert response.status_code == 200
    assert first in stored_files(media_root)  # not before the commit

    for callback in pending:
        callback()
    [second] = stored_files(media_root)
    assert second != first and second.suffix == ".jpg"
    assert Theme.objects.get(tenant=caller.tenant).logo.name.endswith(second.name)


def test_uploading_a_logo_clears_the_external_logo_url(make_caller):
    caller = make_caller(Role.OWNER)
    ThemeFactory(tenant=caller.tenant, logo_url="https://cdn.example.com/old.png")

    body = post_logo(caller.client, image_bytes()).json()

    theme = Theme.objects.get(tenant=caller.tenant)
    assert theme.logo_url == ""
    assert body["logo_url"].startswith("http://testserver/media/themes/")
    [event] = theme_events(caller.tenant, "theme.logo_uploaded")
    assert event.payload["changed"] == ["logo", "logo_url"]


def test_setting_an_external_logo_url_drops_the_uploaded_file(
    make_caller, media_root, django_capture_on_commit_callbacks
):
    caller = make_caller(Role.OWNER)
    post_logo(caller.client, image_bytes())

    with django_capture_on_commit_callbacks(execute=True):
        response = caller.client.patch(
            THEME_URL, {"logo_url": "https://cdn.example.com/new.png"}, format="json"
        )

    assert response.json()["logo_url"] == "https://cdn.example.com/new.png"
    theme = Theme.objects.get(tenant=caller.tenant)
    assert not theme.logo
    assert stored_files(media_root) == []
    [event] = theme_events(caller.tenant)
    assert event.payload == {"changed": ["logo", "logo_url"], "created": False}


def test_writing_back_the_uploaded_logo_url_keeps_the_file(make_caller, media_root):
    caller = make_caller(Role.OWNER)
    shown = post_logo(caller.client, image_bytes()).json()

    response = caller.client.put(THEME_URL, {**shown, "name": "Renamed"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["logo_url"] == shown["logo_url"]
    assert len(stored_files(media_root)) == 1
    [event] = theme_events(caller.tenant)
    assert event.payload["changed"] == ["name"]


def test_an_empty_logo_url_removes_the_logo(
    make_caller, media_root, django_capture_on_commit_callbacks
):
    caller = make_caller(Role.OWNER)
    post_logo(caller.client, image_bytes())

    with django_capture_on_commit_callbacks(execute=True):
        response = caller.client.patch(THEME_URL, {"logo_url": ""}, format="json")

    assert response.json()["logo_url"] == ""
    assert stored_files(media_root) == []


def test_a_failed_upload_transaction_leaves_no_new_file_and_keeps_the_old(
    make_caller, media_root, monkeypatch
):
    caller = make_caller(Role.OWNER)
    post_logo(caller.client, image_bytes())
    [old] = stored_files(media_root)

    def fail(**kwargs):
        raise RuntimeError("audit store down")

    monkeypatch.setattr("tenants.services.themes.record", fail)
    with pytest.raises(RuntimeError):
        theme_logo_set(
            tenant=caller.tenant, actor=caller.user, uploaded_file=upload(image_bytes("JPEG"))
        )

    assert stored_files(media_root) == [old]
    assert Theme.objects.get(tenant=caller.tenant).logo.name.endswith(old.name)


# Services called directly ----------------------------------------------------------------------


def test_theme_update_checks_values_whoever_calls():
    tenant = TenantFactory()

    with pytest.raises(ApplicationError) as refused:
        theme_update(
            tenant=tenant,
            actor=None,
            data={"custom_css": "a{b:expression(1)}", "primary_color": "blue"},
        )

    assert set(refused.value.details) == {"custom_css", "primary_color"}
    assert not Theme.objects.filter(tenant=tenant).exists()


def test_theme_update_refuses_fields_it_does_not_set():
    with pytest.raises(TypeError, match="logo"):
        theme_update(tenant=TenantFactory(), actor=None, data={"logo": "x.png"})


def test_theme_update_creates_the_theme_on_its_first_change_with_a_system_actor():
    tenant = TenantFactory()

    theme = theme_update(tenant=tenant, actor=None, data={"name": "Brand"})

    assert theme.pk and theme.primary_color == DEFAULTS["primary_color"]
    [event] = theme_events(tenant)
    assert event.actor is None and event.actor_type == "system"
    assert event.payload == {"changed": ["name"], "created": True}


def test_writing_the_defaults_to_a_tenant_without_a_theme_creates_nothing():
    tenant = TenantFactory()

    theme = theme_update(
        tenant=tenant, actor=None, data={"primary_color": DEFAULTS["primary_color"]}
    )

    assert theme.pk is None or theme._state.adding
    assert not Theme.objects.filter(tenant=tenant).exists()
    assert theme_events(tenant) == []


def test_the_serializer_validates_and_shows_a_theme_without_a_request():
    tenant = TenantFactory()
    serializer = ThemeSerializer(None, data={"primary_color": "#ABC"}, partial=True)

    assert serializer.is_valid(), serializer.errors
    theme = theme_update(tenant=tenant, actor=None, data=serializer.validated_data)
    theme_logo_set(tenant=tenant, actor=None, uploaded_file=upload(image_bytes()))
    theme.refresh_from_db()

    shown = ThemeSerializer(theme).data
    assert shown["primary_color"] == "#aabbcc"
    assert shown["logo_url"] == f"/media/{theme.logo.name}"
    rejected = ThemeSerializer(theme, data={"custom_css": "@import 'x';"}, partial=True)
    assert not rejected.is_valid()
    assert "@import" in rejected.errors["custom_css"][0]


# GET themes/{slug}/css -------------------------------------------------------------------------


def test_the_stylesheet_is_public_css_with_caching_headers(api_client):
    tenant = TenantFactory(slug="acme")
    ThemeFactory(
        tenant=tenant,
        primary_color="#059669",
        secondary_color="#6b7280",
        accent_color="#f59e0b",
        custom_css=".btn { color: var(--cp-primary-color); }",
    )

    response = api_client.get(css_url("acme"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/css; charset=utf-8"
    body = response.content.decode()
    assert "--cp-primary-color: #059669;" in body
    assert "--cp-primary-color-rgb: 5, 150, 105;" in body
    assert "--cp-secondary-color: #6b7280;" in body
    assert body.rstrip().endswith(".btn { color: var(--cp-primary-color); }")
    assert response["ETag"] == stylesheet_etag(body)
    assert not response["ETag"].startswith("W/")
    assert response["Cache-Control"] == "public, max-age=300"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Request-ID"]


def test_a_tenant_without_a_theme_gets_the_default_stylesheet(api_client):
    TenantFactory(slug="plain")

    body = api_client.get(css_url("plain") + "/").content.decode()

    assert "--cp-primary-color: #2563eb;" in body
    assert "--cp-logo-url: none;" in body


def test_the_slug_is_matched_case_insensitively(api_client):
    TenantFactory(slug="acme")

    assert api_client.get(css_url("ACME")).status_code == 200


@pytest.mark.parametrize("accept", ["text/css", "text/css,*/*;q=0.1", "*/*"])
def test_an_unknown_slug_is_a_json_404_envelope_even_when_css_was_asked_for(api_client, accept):
    response = api_client.get(css_url("nobody"), HTTP_ACCEPT=accept)

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


def test_asking_for_json_is_a_406_envelope(api_client):
    TenantFactory(slug="acme")

    response = api_client.get(css_url("acme"), HTTP_ACCEPT="application/json")

    assert_envelope(response, 406, "NOT_ACCEPTABLE")


def test_a_browser_accept_header_gets_the_css(api_client):
    TenantFactory(slug="acme")

    response = api_client.get(css_url("acme"), HTTP_ACCEPT="text/css,*/*;q=0.1")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/css; charset=utf-8"


def test_credentials_are_not_read_so_a_stale_token_still_gets_the_css(api_client):
    TenantFactory(slug="acme")
    api_client.credentials(HTTP_AUTHORIZATION="Token expired-or-foreign")

    assert api_client.get(css_url("acme")).status_code == 200


@pytest.mark.parametrize(
    "header",
    ["{etag}", "W/{etag}", '"stale", {etag}', '"a",W/{etag} , "b"', "*"],
)
def test_a_matching_if_none_match_is_a_304_without_a_body(api_client, header):
    TenantFactory(slug="acme")
    etag = api_client.get(css_url("acme"))["ETag"]

    response = api_client.get(css_url("acme"), HTTP_IF_NONE_MATCH=header.format(etag=etag))

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert response["Cache-Control"] == "public, max-age=300"


@pytest.mark.parametrize("header", ['"stale"', 'W/"stale", "other"', "garbage"])
def test_a_non_matching_if_none_match_gets_the_css(api_client, header):
    TenantFactory(slug="acme")

    response = api_client.get(css_url("acme"), HTTP_IF_NONE_MATCH=header)

    assert response.status_code == 200
    assert b"--cp-primary-color" in response.content


def test_a_theme_change_changes_the_etag(api_client, make_caller):
    caller = make_caller(Role.OWNER)
    url = css_url(caller.tenant.slug)
    old = api_client.get(url)["ETag"]

    caller.client.patch(THEME_URL, {"primary_color": "#000000"}, format="json")
    response = api_client.get(url, HTTP_IF_NONE_MATCH=old)

    assert response.status_code == 200
    assert response["ETag"] != old
    assert b"--cp-primary-color: #000000;" in response.content


def test_an_inactive_theme_serves_the_defaults(api_client):
    tenant = TenantFactory(slug="acme")
    ThemeFactory(tenant=tenant, primary_color="#000000", custom_css=".x{}", is_active=False)

    body = api_client.get(css_url("acme")).content.decode()

    assert "--cp-primary-color: #2563eb;" in body
    assert ".x{}" not in body


def test_a_suspended_tenants_stylesheet_is_still_served(api_client):
    tenant = TenantFactory(slug="acme", status=TenantStatus.SUSPENDED)
    ThemeFactory(tenant=tenant, primary_color="#000000")

    response = api_client.get(css_url("acme"))

    assert response.status_code == 200
    assert b"--cp-primary-color: #000000;" in response.content


def test_the_stylesheet_names_the_logo_by_absolute_url(api_client, make_caller):
    caller = make_caller(Role.OWNER)
    post_logo(caller.client, image_bytes())
    theme = Theme.objects.get(tenant=caller.tenant)

    body = api_client.get(css_url(caller.tenant.slug)).content.decode()

    assert f'--cp-logo-url: url("http://testserver/media/{theme.logo.name}");' in body


def test_hostile_css_stored_behind_the_services_back_is_left_out(api_client):
    tenant = TenantFactory(slug="acme")
    ThemeFactory(
        tenant=tenant,
        custom_css="</style><script>alert(1)</script>",
        primary_color="};<b>",
        logo_url='javascript:alert("x")',
    )

    body = api_client.get(css_url("acme")).content.decode()

    assert "<" not in body and "script" not in body
    assert "Custom CSS left out" in body
    assert "--cp-primary-color: #2563eb;" in body
    assert "--cp-logo-url: none;" in body


def test_the_stylesheet_costs_one_query(api_client, django_assert_num_queries):
    tenant = TenantFactory(slug="acme")
    ThemeFactory(tenant=tenant)

    with django_assert_num_queries(1):
        assert api_client.get(css_url("acme")).status_code == 200


# Schema ----------------------------------------------------------------------------------------


@pytest.fixture
def schema(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_documents_the_stylesheet_as_css_with_its_validators(schema):
    operation = schema["paths"]["/api/v1/themes/{slug}/css/"]["get"]

    assert set(operation["responses"]["200"]["content"]) == {"text/css"}
    assert {"ETag", "Cache-Control"} <= set(operation["responses"]["200"]["headers"])
    assert "304" in operation["responses"]
    assert "If-None-Match" in {p["name"] for p in operation["parameters"]}
    assert operation.get("security", []) in ([], [{}])
    assert operation["responses"]["404"]["content"]["application/json"]


def test_the_schema_documents_the_theme_and_the_logo_upload(schema):
    theme = schema["paths"]["/api/v1/organizations/theme/"]
    logo = schema["paths"]["/api/v1/organizations/theme/logo/"]["post"]

    assert {"get", "put", "patch"} <= set(theme)
    assert set(schema["components"]["schemas"]["Theme"]["properties"]) == THEME_KEYS
    assert "multipart/form-data" in logo["requestBody"]["content"]
    assert logo["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Theme"
    )


# Admin -----------------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    client.staff = staff
    return client


def admin_form(theme, **changes) -> dict:
    data = {
        "name": theme.name,
        "primary_color": theme.primary_color,
        "secondary_color": theme.secondary_color,
        "accent_color": theme.accent_color,
        "logo_url": theme.logo_url,
        "custom_css": theme.custom_css,
        "is_active": "on" if theme.is_active else "",
    }
    return {**data, **changes}


def test_the_theme_admin_lists_and_shows_themes(admin_client):
    theme = ThemeFactory(name="Acme look")

    changelist = admin_client.get(reverse("admin:tenants_theme_changelist"))
    change = admin_client.get(reverse("admin:tenants_theme_change", args=[theme.pk]))

    assert changelist.status_code == 200 and b"Acme look" in changelist.content
    assert change.status_code == 200 and change.context["original"] == theme


def test_the_theme_admin_saves_through_the_service(admin_client):
    theme = ThemeFactory(custom_css="a{}")
    url = reverse("admin:tenants_theme_change", args=[theme.pk])

    response = admin_client.post(
        url, admin_form(theme, custom_css=".b { color: red; }", primary_color="#ABC")
    )

    assert response.status_code == 302, response.content[:2000]
    theme.refresh_from_db()
    assert theme.custom_css == ".b { color: red; }"
    assert theme.primary_color == "#aabbcc"
    [event] = theme_events(theme.tenant)
    assert event.actor == admin_client.staff
    assert event.payload == {"changed": ["custom_css", "primary_color"], "created": False}


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("custom_css", "</style><script>alert(1)</script>", "&#x27;&lt;&#x27;"),
        ("custom_css", "a{width:expr\\65ssion(1)}", "expression()"),
        ("primary_color", "blue", "#rrggbb"),
        ("logo_url", "javascript:alert(1)", "http or https"),
    ],
)
def test_the_theme_admin_applies_the_same_checks(admin_client, field, value, named):
    theme = ThemeFactory(custom_css="a{}")
    url = reverse("admin:tenants_theme_change", args=[theme.pk])

    response = admin_client.post(url, admin_form(theme, **{field: value}))

    assert response.status_code == 200
    assert named in response.content.decode()
    theme.refresh_from_db()
    assert theme.custom_css == "a{}"
    assert theme_events(theme.tenant) == []


def test_the_theme_admin_cannot_add_or_delete(admin_client):
    theme = ThemeFactory()

    assert admin_client.get(reverse("admin:tenants_theme_add")).status_code == 403
    delete = admin_client.post(reverse("admin:tenants_theme_delete", args=[theme.pk]), {"post": 1})
    assert delete.status_code == 403
    assert Theme.objects.filter(pk=theme.pk).exists()


# Uploaded media in development -----------------------------------------------------------------


@pytest.fixture
def reload_urls(settings):
    """Rebuild the URL map under the current settings; restore it (DEBUG off) afterwards."""
    import config.urls

    def reload():
        importlib.reload(config.urls)
        clear_url_caches()

    yield reload
    settings.DEBUG = False
    reload()


def test_uploaded_media_is_served_in_debug(client, settings, media_root, reload_urls):
    (media_root / "themes").mkdir(parents=True)
    (media_root / "themes" / "logo.png").write_bytes(image_bytes())
    settings.DEBUG = True
    reload_urls()

    response = client.get("/media/themes/logo.png")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == image_bytes()
    assert_envelope(client.get("/media-missing/x"), 404, "RESOURCE_NOT_FOUND")


def test_uploaded_media_is_not_served_without_debug(client, media_root, reload_urls):
    (media_root / "themes").mkdir(parents=True)
    (media_root / "themes" / "logo.png").write_bytes(image_bytes())
    reload_urls()

    assert_envelope(client.get("/media/themes/logo.png"), 404, "RESOURCE_NOT_FOUND")


def test_the_stylesheet_has_its_own_window_apart_from_other_anonymous_endpoints(
    api_client, settings
):
    TenantFactory(slug="nat-org")
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "anon": "1/min",
            "stylesheet": "3/min",
        },
    }

    answers = [api_client.get(css_url("nat-org")).status_code for _ in range(4)]

    assert answers == [200, 200, 200, 429]  # the anonymous 1/min would have refused the second
    response = api_client.get(css_url("nat-org"))
    assert_envelope(response, 429, "RATE_LIMIT_EXCEEDED")
    assert response["X-RateLimit-Limit"] == "3"


@pytest.mark.postgres
def test_a_logo_uploaded_while_an_update_holds_the_theme_is_not_written_over(
    transactional_db, media_root, monkeypatch
):
    """theme_update reads the theme, then saves it whole; an upload that committed in between
    would be written over with the old (empty) logo, its new file left orphaned. The upload
    takes the tenant's lock first, as the update does, so it waits for the update to commit,
    then sets its logo on the row as the update left it."""
    monkeypatch.setattr(audit_tasks.seal_audit_chains, "apply_async", lambda *a, **k: None)
    tenant = TenantFactory()
    ThemeFactory(tenant=tenant, primary_color="#111111")
    update_read = threading.Event()
    upload_done = threading.Event()
    original_save = Theme.save

    def save_after_the_upload_had_its_chance(self, *args, **kwargs):
        if threading.current_thread().name == "update":
            update_read.set()
            # Long enough for the upload to commit, had it not waited for the tenant's lock.
            upload_done.wait(timeout=2)
        return original_save(self, *args, **kwargs)

    monkeypatch.setattr(Theme, "save", save_after_the_upload_had_its_chance)

    def update():
        try:
            themes.theme_update(tenant=tenant, actor=None, data={"primary_color": "#222222"})
        finally:
            connections.close_all()

    def upload_logo():
        try:
            update_read.wait(timeout=30)
            theme_logo_set(tenant=tenant, actor=None, uploaded_file=io.BytesIO(image_bytes()))
            upload_done.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=update, name="update"), threading.Thread(target=upload_logo)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    theme = Theme.objects.get(tenant=tenant)
    assert theme.primary_color == "#222222"
    assert theme.logo.name, "the upload's logo was written over"
    assert [path.name for path in stored_files(media_root)] == [Path(theme.logo.name).name]
