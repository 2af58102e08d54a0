"""Inputs that used to be accepted but were wrong: over-long descriptions, domains that are not
host names, names carrying control, invisible or bidi-override characters, numbers and booleans
where text belongs, read-only or unknown keys in a write, plans and limits only staff may grant;
and what must keep working: international names, a GET document written back whole, and limits
staff granted surviving a tenant's PUT."""

import json

import pytest
from django.db import transaction
from django.urls import reverse

from accounts.models import APIKey, User
from audit.models import AuditEvent
from config.exceptions import InsufficientPermissions
from tenants.models import (
    Invitation,
    InvitationStatus,
    Membership,
    PlanTier,
    Role,
    Tenant,
    Theme,
)
from tenants.services import lifecycle
from tests.conftest import assert_envelope
from tests.factories import InvitationFactory, MembershipFactory, ThemeFactory, UserFactory
from tests.project import admin_form_data

pytestmark = pytest.mark.django_db

ORG_URL = "/api/v1/organizations/current"
THEME_URL = "/api/v1/organizations/theme"
TENANTS_URL = "/api/v1/tenants/"
KEYS_URL = "/api/v1/api-keys/"
MEMBERS_URL = "/api/v1/organizations/members"
INVITE_URL = f"{MEMBERS_URL}/invite"
ACCEPT_URL = "/api/v1/invitations/accept"
NEW_PASSWORD = "a-long-and-unusual-passphrase-42"

# Characters a name refuses, with the code point the error names.
REFUSED_IN_NAMES = {
    "U+202E": "\u202e",  # right-to-left override
    "U+200B": "\u200b",  # zero-width space
    "U+0007": "\u0007",  # bell
    "U+0000": "\u0000",  # NUL
    "U+0009": "\t",  # tab
    "U+FEFF": "\ufeff",  # byte order mark / zero-width no-break space
}
INTERNATIONAL_NAMES = [
    "Café Ünïcode",
    "مرحبا",
    "می\u200cخواهم",  # noqa: RUF001 (Persian, with a zero-width non-joiner)
    "👨\u200d👩\u200d👧",  # an emoji ZWJ sequence
]
WRONG_TYPES = [123, True, ["x"], {"a": 1}]
NOT_DOMAINS = ["not a domain!!", "http://x.com", "x.com:80", "localhost"]


def tenant_url(tenant) -> str:
    return f"{TENANTS_URL}{tenant.slug}"


def row(tenant) -> dict:
    return Tenant.objects.filter(pk=tenant.pk).values().get()


def events(tenant, event_type):
    return AuditEvent.objects.filter(tenant=tenant, event_type=event_type)


def assert_refused(response, field: str, status: int = 400, code="VALIDATION_ERROR") -> list:
    """The envelope with `details` naming `field`; returns that field's messages."""
    error = assert_envelope(response, status, code)
    assert field in error["details"], error
    return error["details"][field]


def acme(name: str) -> str:
    """A name with `name` in the middle (a leading or trailing tab would just be trimmed)."""
    return f"Ac{name}me"


@pytest.fixture
def owner(make_caller):
    """The owner of a free tenant named Acme."""
    caller = make_caller(Role.OWNER)
    Tenant.objects.filter(pk=caller.tenant.pk).update(
        name="Acme", description="Anvils", plan=PlanTier.FREE
    )
    caller.tenant.refresh_from_db()
    return caller


@pytest.fixture
def staff_user():
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


# Descriptions ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["organization", "tenant"])
def test_a_description_over_2000_characters_is_refused_and_nothing_is_stored(owner, where):
    url = ORG_URL if where == "organization" else tenant_url(owner.tenant)
    before = row(owner.tenant)

    messages = assert_refused(
        owner.client.patch(url, {"description": "x" * 2001}, format="json"), "description"
    )

    assert "2000" in messages[0]
    assert row(owner.tenant) == before
    assert not events(owner.tenant, "tenant.updated").exists()


@pytest.mark.parametrize("where", ["organization", "tenant"])
def test_a_description_of_exactly_2000_characters_is_stored(owner, where):
    url = ORG_URL if where == "organization" else tenant_url(owner.tenant)

    response = owner.client.patch(url, {"description": "x" * 2000}, format="json")

    assert response.status_code == 200, response.content[:500]
    assert Tenant.objects.get(pk=owner.tenant.pk).description == "x" * 2000


def test_a_one_megabyte_description_is_refused_too(owner):
    description = "x" * 1_000_000

    messages = assert_refused(
        owner.client.patch(ORG_URL, {"description": description}, format="json"), "description"
    )

    assert "2000" in messages[0]
    assert Tenant.objects.get(pk=owner.tenant.pk).description == "Anvils"


# Domains -----------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", NOT_DOMAINS)
def test_a_domain_that_is_not_a_host_name_is_refused_on_update(owner, domain):
    before = row(owner.tenant)

    response = owner.client.patch(tenant_url(owner.tenant), {"domain": domain}, format="json")

    assert_refused(response, "domain")
    assert row(owner.tenant) == before


@pytest.mark.parametrize("domain", NOT_DOMAINS)
def test_a_domain_that_is_not_a_host_name_is_refused_on_create(owner, domain):
    response = owner.client.post(TENANTS_URL, {"name": "Globex", "domain": domain}, format="json")

    assert_refused(response, "domain")
    assert not Tenant.objects.filter(name="Globex").exists()


def test_a_domain_is_stored_lowercase(owner):
    response = owner.client.patch(
        tenant_url(owner.tenant), {"domain": "Acme.Example.COM"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["domain"] == "acme.example.com"
    assert Tenant.objects.get(pk=owner.tenant.pk).domain == "acme.example.com"


def test_a_created_tenants_domain_is_stored_lowercase(owner):
    response = owner.client.post(
        TENANTS_URL, {"name": "Globex", "domain": "Globex.Example.COM"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert Tenant.objects.get(name="Globex").domain == "globex.example.com"


def test_a_blank_domain_clears_it(owner):
    Tenant.objects.filter(pk=owner.tenant.pk).update(domain="acme.example.com")

    response = owner.client.patch(tenant_url(owner.tenant), {"domain": ""}, format="json")

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=owner.tenant.pk).domain == ""


# Names: refused characters -----------------------------------------------------------------


def name_writes(caller):
    """(field, send(value) -> response, stored() -> the value kept) for every name the API
    writes."""
    tenant = caller.tenant

    def theme_name():
        theme = Theme.objects.filter(tenant=tenant).first()
        return theme.name if theme else None

    return {
        "tenant create": (
            "name",
            lambda value: caller.client.post(TENANTS_URL, {"name": value}, format="json"),
            lambda: sorted(Tenant.objects.values_list("name", flat=True)),
        ),
        "organization patch": (
            "name",
            lambda value: caller.client.patch(ORG_URL, {"name": value}, format="json"),
            lambda: Tenant.objects.get(pk=tenant.pk).name,
        ),
        "theme put": (
            "name",
            lambda value: caller.client.put(THEME_URL, {"name": value}, format="json"),
            theme_name,
        ),
        "theme patch": (
            "name",
            lambda value: caller.client.patch(THEME_URL, {"name": value}, format="json"),
            theme_name,
        ),
        "api key create": (
            "name",
            lambda value: caller.client.post(
                KEYS_URL, {"name": value, "scopes": ["read"]}, format="json"
            ),
            lambda: list(APIKey.objects.filter(tenant=tenant).values_list("name", flat=True)),
        ),
        "tenant contact_name": (
            "contact_name",
            lambda value: caller.client.patch(
                tenant_url(tenant), {"contact_name": value}, format="json"
            ),
            lambda: Tenant.objects.get(pk=tenant.pk).contact_name,
        ),
    }


NAME_WRITES = [
    "tenant create",
    "organization patch",
    "theme put",
    "theme patch",
    "api key create",
    "tenant contact_name",
]


@pytest.mark.parametrize("code_point", list(REFUSED_IN_NAMES))
@pytest.mark.parametrize("where", NAME_WRITES)
def test_a_name_with_a_control_invisible_or_bidi_character_is_refused(owner, where, code_point):
    field, send, stored = name_writes(owner)[where]
    before = stored()

    messages = assert_refused(send(acme(REFUSED_IN_NAMES[code_point])), field)

    assert any(code_point in message for message in messages), messages
    assert stored() == before


@pytest.mark.parametrize("name", INTERNATIONAL_NAMES)
@pytest.mark.parametrize("where", NAME_WRITES)
def test_international_names_are_accepted(owner, where, name):
    field, send, stored = name_writes(owner)[where]

    response = send(name)

    assert response.status_code in (200, 201), response.content[:500]
    assert response.json()[field] == name
    kept = stored()
    assert name in kept if isinstance(kept, list) else kept == name


@pytest.mark.parametrize("code_point", list(REFUSED_IN_NAMES))
def test_a_new_accounts_name_on_accepting_an_invitation_refuses_the_same(make_caller, code_point):
    owner = make_caller(Role.OWNER)
    invitation = InvitationFactory(tenant=owner.tenant)

    response = owner.client.post(
        ACCEPT_URL,
        {
            "token": invitation.token,
            "name": acme(REFUSED_IN_NAMES[code_point]),
            "password": NEW_PASSWORD,
        },
        format="json",
    )

    messages = assert_refused(response, "name")
    assert any(code_point in message for message in messages), messages
    assert not User.objects.filter(email=invitation.email).exists()
    invitation.refresh_from_db()
    assert invitation.status == InvitationStatus.PENDING


@pytest.mark.parametrize("name", INTERNATIONAL_NAMES)
def test_a_new_accounts_international_name_is_accepted(make_caller, name):
    owner = make_caller(Role.OWNER)
    invitation = InvitationFactory(tenant=owner.tenant)

    response = owner.client.post(
        ACCEPT_URL,
        {"token": invitation.token, "name": name, "password": NEW_PASSWORD},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert User.objects.get(email=invitation.email).name == name


# Free text ---------------------------------------------------------------------------------


MULTILINE = "First line\nSecond line\r\n\tindented"


def test_a_description_keeps_line_breaks_and_tabs(owner):
    response = owner.client.patch(ORG_URL, {"description": MULTILINE}, format="json")

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=owner.tenant.pk).description == MULTILINE


def test_custom_css_keeps_line_breaks_and_tabs(owner):
    css = ".a {\n\tcolor: red;\r\n}"

    response = owner.client.patch(THEME_URL, {"custom_css": css}, format="json")

    assert response.status_code == 200, response.content
    assert Theme.objects.get(tenant=owner.tenant).custom_css == css


@pytest.mark.parametrize("code_point", ["U+0007", "U+202E"])
def test_a_description_refuses_control_and_bidi_characters(owner, code_point):
    char = REFUSED_IN_NAMES[code_point]

    messages = assert_refused(
        owner.client.patch(ORG_URL, {"description": f"Anvils{char} and more"}, format="json"),
        "description",
    )

    assert any(code_point in message for message in messages), messages
    assert Tenant.objects.get(pk=owner.tenant.pk).description == "Anvils"


@pytest.mark.parametrize("code_point", ["U+0007", "U+202E"])
def test_custom_css_refuses_control_and_bidi_characters(owner, code_point):
    ThemeFactory(tenant=owner.tenant, custom_css="a{}")
    char = REFUSED_IN_NAMES[code_point]

    messages = assert_refused(
        owner.client.patch(THEME_URL, {"custom_css": f".a {{ color: red; }}{char}"}, format="json"),
        "custom_css",
    )

    assert any(code_point in message for message in messages), messages
    assert Theme.objects.get(tenant=owner.tenant).custom_css == "a{}"


# Phone numbers -----------------------------------------------------------------------------


def test_a_phone_number_with_the_usual_separators_is_accepted(owner):
    response = owner.client.patch(
        tenant_url(owner.tenant), {"contact_phone": "+1 (555) 010-0000"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=owner.tenant.pk).contact_phone == "+1 (555) 010-0000"


@pytest.mark.parametrize("phone", ["abc", "12", "+1 555\u202e0100"])
def test_a_phone_number_that_is_not_one_is_refused(owner, phone):
    Tenant.objects.filter(pk=owner.tenant.pk).update(contact_phone="+44 20 7946 0000")

    response = owner.client.patch(tenant_url(owner.tenant), {"contact_phone": phone}, format="json")

    assert_refused(response, "contact_phone")
    assert Tenant.objects.get(pk=owner.tenant.pk).contact_phone == "+44 20 7946 0000"


# Strict types ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", WRONG_TYPES, ids=lambda value: type(value).__name__)
def test_a_tenant_name_that_is_not_a_json_string_is_refused(owner, value):
    before = Tenant.objects.count()

    response = owner.client.post(TENANTS_URL, {"name": value}, format="json")

    assert assert_refused(response, "name") == ["Must be a string."]
    assert Tenant.objects.count() == before


@pytest.mark.parametrize("value", WRONG_TYPES, ids=lambda value: type(value).__name__)
def test_an_organization_name_that_is_not_a_json_string_is_refused(owner, value):
    response = owner.client.patch(ORG_URL, {"name": value}, format="json")

    assert assert_refused(response, "name") == ["Must be a string."]
    assert Tenant.objects.get(pk=owner.tenant.pk).name == "Acme"
    assert not events(owner.tenant, "tenant.updated").exists()


@pytest.mark.parametrize("value", WRONG_TYPES, ids=lambda value: type(value).__name__)
def test_an_api_key_name_that_is_not_a_json_string_is_refused(owner, value):
    response = owner.client.post(KEYS_URL, {"name": value, "scopes": ["read"]}, format="json")

    assert assert_refused(response, "name") == ["Must be a string."]
    assert not APIKey.objects.filter(tenant=owner.tenant).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "newcomer@example.com", "role": 1}, "role"),
        ({"email": 42}, "email"),
    ],
)
def test_an_invitation_with_a_non_string_role_or_email_is_refused(owner, body, field):
    response = owner.client.post(INVITE_URL, body, format="json")

    assert assert_refused(response, field) == ["Must be a string."]
    assert Membership.objects.filter(tenant=owner.tenant).count() == 1
    assert not Invitation.objects.filter(tenant=owner.tenant).exists()


# The admin refuses the same ----------------------------------------------------------------


def made_by_service(name="Acme", slug="acme") -> Tenant:
    with transaction.atomic():
        return lifecycle.tenant_create(actor=None, name=name, slug=slug)


def test_the_tenant_admin_refuses_a_name_with_a_bidi_override(admin_client):
    tenant = made_by_service()
    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    before = row(tenant)
    data = admin_form_data(admin_client.get(url)) | {"name": "Ac\u202eme"}

    response = admin_client.post(url, data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["name"]
    assert "U+202E" in errors["name"][0]
    assert "U+202E" in response.content.decode()
    assert row(tenant) == before
    assert not events(tenant, "tenant.updated").exists()


def test_the_theme_admin_refuses_a_name_with_a_bidi_override(admin_client):
    theme = ThemeFactory(name="Acme look", custom_css="a{}")
    url = reverse("admin:tenants_theme_change", args=[theme.pk])
    data = {
        "name": "Acme\u202e look",
        "primary_color": theme.primary_color,
        "secondary_color": theme.secondary_color,
        "accent_color": theme.accent_color,
        "logo_url": theme.logo_url,
        "custom_css": theme.custom_css,
        "is_active": "on",
    }

    response = admin_client.post(url, data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["name"]
    assert "U+202E" in errors["name"][0]
    theme.refresh_from_db()
    assert theme.name == "Acme look"
    assert not events(theme.tenant, "theme.updated").exists()


# Read-only and unknown keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"plan": "enterprise"},
        {"status": "cancelled"},
        {"slug": "x"},
        {"created_at": "2000-01-01T00:00:00Z"},
    ],
    ids=lambda body: next(iter(body)),
)
def test_a_read_only_field_in_a_patch_is_refused_by_name(owner, body):
    before = row(owner.tenant)

    messages = assert_refused(owner.client.patch(ORG_URL, body, format="json"), next(iter(body)))

    assert messages == ["This field is read-only."]
    assert row(owner.tenant) == before
    assert not events(owner.tenant, "tenant.updated").exists()


def test_every_read_only_key_is_named_together_with_other_errors(owner):
    before = row(owner.tenant)

    error = assert_envelope(
        owner.client.patch(
            ORG_URL,
            {"plan": "enterprise", "status": "cancelled", "slug": "x", "name": 5},
            format="json",
        ),
        400,
        "VALIDATION_ERROR",
    )

    assert set(error["details"]) == {"plan", "status", "slug", "name"}
    assert row(owner.tenant) == before


def test_an_unknown_key_is_refused_with_the_writable_fields(owner):
    before = row(owner.tenant)

    messages = assert_refused(
        owner.client.patch(ORG_URL, {"colour": "blue"}, format="json"), "colour"
    )

    assert messages == ["Unknown field. Writable fields: name, description, settings, branding."]
    assert row(owner.tenant) == before
    assert not events(owner.tenant, "tenant.updated").exists()


@pytest.mark.parametrize(
    "left_out",
    [(), ("api_quota_used",)],
    ids=["whole", "without its usage counter, which the PUT's own counting changes"],
)
def test_the_organization_get_document_put_back_changes_only_what_differs(owner, left_out):
    document = owner.client.get(ORG_URL).json()
    for key in left_out:
        del document[key]

    response = owner.client.put(ORG_URL, {**document, "description": "Rockets"}, format="json")

    assert response.status_code == 200, response.content
    after = Tenant.objects.get(pk=owner.tenant.pk)
    assert (after.name, after.description, after.plan) == ("Acme", "Rockets", PlanTier.FREE)
    (event,) = events(owner.tenant, "tenant.updated")
    assert event.payload == {"changed": ["description"]}


def test_the_organization_document_put_back_leaves_the_unchanged_branding_alone(owner):
    document = owner.client.get(ORG_URL).json()
    del document["api_quota_used"]

    response = owner.client.put(ORG_URL, {**document, "description": "Rockets"}, format="json")

    assert response.status_code == 200, response.content
    assert not events(owner.tenant, "theme.updated").exists()
    assert not Theme.objects.filter(tenant=owner.tenant).exists()


def test_a_read_only_field_sent_back_with_another_value_is_still_refused(owner):
    document = owner.client.get(ORG_URL).json()
    del document["api_quota_used"]

    response = owner.client.put(
        ORG_URL, {**document, "plan": "enterprise", "description": "Rockets"}, format="json"
    )

    assert assert_refused(response, "plan") == ["This field is read-only."]
    assert Tenant.objects.get(pk=owner.tenant.pk).description == "Anvils"


def test_the_theme_get_document_put_back_whole_changes_only_what_differs(owner):
    ThemeFactory(tenant=owner.tenant, name="Acme look", custom_css="a{}")
    document = owner.client.get(THEME_URL).json()

    response = owner.client.put(THEME_URL, {**document, "name": "Rocket look"}, format="json")

    assert response.status_code == 200, response.content
    theme = Theme.objects.get(tenant=owner.tenant)
    assert (theme.name, theme.custom_css) == ("Rocket look", "a{}")
    (event,) = events(owner.tenant, "theme.updated")
    assert event.payload["changed"] == ["name"]


def test_the_default_theme_document_put_back_whole_saves_it(owner):
    document = owner.client.get(THEME_URL).json()
    assert document["id"] is None

    response = owner.client.put(THEME_URL, {**document, "name": "Rocket look"}, format="json")

    assert response.status_code == 200, response.content
    assert Theme.objects.get(tenant=owner.tenant).name == "Rocket look"


def test_the_tenant_get_document_patched_back_whole_changes_only_what_differs(owner):
    document = owner.client.get(tenant_url(owner.tenant)).json()

    response = owner.client.patch(
        tenant_url(owner.tenant), {**document, "contact_name": "Wile E."}, format="json"
    )

    assert response.status_code == 200, response.content
    after = Tenant.objects.get(pk=owner.tenant.pk)
    assert (after.contact_name, after.name, after.plan) == ("Wile E.", "Acme", PlanTier.FREE)
    (event,) = events(owner.tenant, "tenant.updated")
    assert event.payload == {"changed": ["contact_name"]}


def test_a_tenant_document_read_before_other_requests_still_patches_back(owner):
    document = owner.client.get(tenant_url(owner.tenant)).json()
    assert owner.client.get(ORG_URL).status_code == 200  # any request in the tenant

    response = owner.client.patch(
        tenant_url(owner.tenant), {**document, "contact_name": "Wile E."}, format="json"
    )

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=owner.tenant.pk).contact_name == "Wile E."


def test_a_tenant_document_with_a_changed_read_only_field_is_refused(owner):
    document = owner.client.get(tenant_url(owner.tenant)).json()

    response = owner.client.patch(
        tenant_url(owner.tenant), {**document, "status": "cancelled"}, format="json"
    )

    assert assert_refused(response, "status") == ["This field is read-only."]
    assert not events(owner.tenant, "tenant.updated").exists()


# Members: custom_permissions is the one name ------------------------------------------------


@pytest.fixture
def member(owner):
    return MembershipFactory(tenant=owner.tenant, role=Role.VIEWER)


def member_url(membership) -> str:
    return f"{MEMBERS_URL}/{membership.pk}"


def test_patch_custom_permissions_sets_the_overrides(owner, member):
    overrides = {"billing": {"read": True}}

    response = owner.client.patch(
        member_url(member), {"custom_permissions": overrides}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["custom_permissions"] == overrides
    assert response.json()["permissions"]["billing"]["read"] is True
    member.refresh_from_db()
    assert member.permissions == overrides
    (event,) = events(owner.tenant, "member.updated")
    assert event.payload["changes"] == {"custom_permissions": {"from": {}, "to": overrides}}


def test_the_old_permissions_key_is_refused_and_names_custom_permissions(owner, member):
    response = owner.client.patch(
        member_url(member), {"permissions": {"billing": {"read": True}}}, format="json"
    )

    (message,) = assert_refused(response, "permissions")
    assert message.startswith("Unknown field. Writable fields:")
    assert "custom_permissions" in message
    member.refresh_from_db()
    assert member.permissions == {}
    assert not events(owner.tenant, "member.updated").exists()


def test_put_without_custom_permissions_clears_the_overrides(owner):
    overrides = {"billing": {"read": True}}
    member = MembershipFactory(tenant=owner.tenant, role=Role.VIEWER, permissions=overrides)

    response = owner.client.put(
        member_url(member), {"role": "viewer", "status": "active"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["custom_permissions"] == {}
    member.refresh_from_db()
    assert member.permissions == {}
    (event,) = events(owner.tenant, "member.updated")
    assert event.payload["changes"] == {"custom_permissions": {"from": overrides, "to": {}}}


# Limits only staff could set survive the tenant's PUT ---------------------------------------


@pytest.fixture
def free_ceilings(settings):
    """The production free tier rate (100/hour) instead of the test settings' huge one, so
    50,000 requests an hour is above what a free tenant may choose."""
    settings.API_PLAN_RATES = {**settings.API_PLAN_RATES, "free": {"tenant": "100/hour"}}
    return settings


@pytest.fixture
def negotiated(owner, staff_client, free_ceilings):
    """Staff grant the owner's free tenant 50,000 requests an hour."""
    response = staff_client.patch(
        tenant_url(owner.tenant), {"settings": {"rateLimitPerHour": 50_000}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=owner.tenant.pk).settings == {"rateLimitPerHour": 50_000}
    return owner


def test_a_tenants_put_keeps_the_rate_limit_staff_granted(negotiated):
    response = negotiated.client.put(
        ORG_URL,
        {"name": "Acme", "description": "Anvils", "settings": {"dataResidency": "eu"}},
        format="json",
    )

    assert response.status_code == 200, response.content
    expected = {"dataResidency": "eu", "rateLimitPerHour": 50_000}
    assert Tenant.objects.get(pk=negotiated.tenant.pk).settings == expected
    assert response.json()["settings"] == expected


def test_the_owner_may_remove_the_granted_rate_limit_explicitly(negotiated):
    response = negotiated.client.patch(
        ORG_URL, {"settings": {"rateLimitPerHour": None}}, format="json"
    )

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=negotiated.tenant.pk).settings == {}


def test_a_staff_put_replaces_the_settings_whole(negotiated, staff_client):
    staff_client.credentials(
        HTTP_AUTHORIZATION=staff_client._credentials["HTTP_AUTHORIZATION"],
        HTTP_X_ORGANIZATION_ID=str(negotiated.tenant.pk),
    )

    response = staff_client.put(
        ORG_URL, {"name": "Acme", "settings": {"dataResidency": "eu"}}, format="json"
    )

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=negotiated.tenant.pk).settings == {"dataResidency": "eu"}


def test_a_limit_the_owner_set_below_the_ceiling_is_not_kept_by_a_put(owner, free_ceilings):
    Tenant.objects.filter(pk=owner.tenant.pk).update(settings={"maxUsers": 2})

    response = owner.client.put(
        ORG_URL, {"name": "Acme", "settings": {"dataResidency": "eu"}}, format="json"
    )

    assert response.status_code == 200, response.content
    assert Tenant.objects.get(pk=owner.tenant.pk).settings == {"dataResidency": "eu"}


# Plans -------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", [PlanTier.PRO, PlanTier.ENTERPRISE, PlanTier.CUSTOM])
def test_an_ordinary_user_cannot_create_a_tenant_on_a_paid_tier(owner, tier):
    before = set(Tenant.objects.values_list("pk", flat=True))

    response = owner.client.post(
        TENANTS_URL, {"name": "Globex", "subscription_tier": tier}, format="json"
    )

    messages = assert_refused(response, "subscription_tier", 403, "INSUFFICIENT_PERMISSIONS")
    assert messages == ["Must be free (or omitted)."]
    assert set(Tenant.objects.values_list("pk", flat=True)) == before
    assert not AuditEvent.objects.filter(event_type="tenant.created").exists()


def test_an_ordinary_user_creates_a_free_tenant(owner):
    response = owner.client.post(
        TENANTS_URL, {"name": "Globex", "subscription_tier": "free"}, format="json"
    )

    assert response.status_code == 201, response.content
    tenant = Tenant.objects.get(name="Globex")
    assert tenant.plan == PlanTier.FREE
    assert Membership.objects.get(tenant=tenant).user == owner.user
    (event,) = events(tenant, "tenant.created")
    assert event.payload["plan"] == "free"


@pytest.mark.parametrize("tier", list(PlanTier))
def test_staff_create_a_tenant_on_any_tier(staff_client, tier):
    response = staff_client.post(
        TENANTS_URL, {"name": "Globex", "subscription_tier": tier}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["subscription_tier"] == tier
    tenant = Tenant.objects.get(name="Globex")
    assert tenant.plan == tier
    assert events(tenant, "tenant.created").get().payload["plan"] == tier


def test_the_owner_cannot_raise_the_tier_through_the_directory(owner):
    before = row(owner.tenant)

    response = owner.client.patch(
        tenant_url(owner.tenant), {"subscription_tier": "enterprise"}, format="json"
    )

    assert_envelope(response, 403, "INSUFFICIENT_PERMISSIONS")
    assert row(owner.tenant) == before
    assert not events(owner.tenant, "tenant.updated").exists()


def test_the_system_creates_a_tenant_on_a_paid_tier():
    with transaction.atomic():
        tenant = lifecycle.tenant_create(actor=None, name="Globex", plan=PlanTier.PRO)

    assert Tenant.objects.get(pk=tenant.pk).plan == PlanTier.PRO
    assert not Membership.objects.filter(tenant=tenant).exists()
    assert events(tenant, "tenant.created").get().payload["plan"] == PlanTier.PRO


def test_an_ordinary_user_cannot_create_a_tenant_with_limits_above_the_plan():
    user = UserFactory()

    with pytest.raises(InsufficientPermissions) as refused, transaction.atomic():
        lifecycle.tenant_create(actor=user, name="Globex", settings={"maxUsers": 1000})

    assert "maxUsers" in refused.value.details
    assert not Tenant.objects.filter(name="Globex").exists()
    assert not Membership.objects.filter(user=user).exists()


def test_an_ordinary_user_may_create_a_tenant_with_limits_within_the_plan():
    user = UserFactory()

    with transaction.atomic():
        tenant = lifecycle.tenant_create(actor=user, name="Globex", settings={"maxUsers": 2})

    assert Tenant.objects.get(pk=tenant.pk).settings == {"maxUsers": 2}
    assert Membership.objects.get(tenant=tenant).user == user


def test_staff_may_create_a_tenant_with_limits_above_the_plan(staff_user):
    with transaction.atomic():
        tenant = lifecycle.tenant_create(
            actor=staff_user, name="Globex", settings={"maxUsers": 1000}, add_owner=False
        )

    assert Tenant.objects.get(pk=tenant.pk).settings == {"maxUsers": 1000}


def test_a_refused_write_leaves_the_settings_as_they_were(owner):
    """A refused write leaves the stored settings byte for byte (no partial merge)."""
    Tenant.objects.filter(pk=owner.tenant.pk).update(settings={"dataResidency": "eu"})

    response = owner.client.patch(
        ORG_URL, {"settings": {"dataResidency": "us"}, "slug": "other"}, format="json"
    )

    assert_refused(response, "slug")
    assert json.dumps(Tenant.objects.get(pk=owner.tenant.pk).settings) == '{"dataResidency": "eu"}'
