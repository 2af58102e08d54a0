"""The Django admin (the back-office): reachable for staff, constant-query changelists, and a
read-only audit log."""

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import AuthToken, User
from audit.models import AuditEvent
from tenants.models import Membership, Tenant

from .conftest import token_for
from .factories import AuditEventFactory, MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db


def make_token():
    token_for(UserFactory())


# model -> a callable that adds one row of it (with the related rows its changelist shows).
ROW_MAKERS = {
    User: UserFactory,
    AuthToken: make_token,
    Tenant: MembershipFactory,
    Membership: MembershipFactory,
    AuditEvent: lambda: AuditEventFactory(actor=UserFactory(), actor_type="user"),
}
MODELS = list(ROW_MAKERS)


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def fill(model, rows: int) -> None:
    """Add rows until `model` has `rows` of them."""
    while model.objects.count() < rows:
        ROW_MAKERS[model]()


def changelist_queries(client, model) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(admin_url(model, "changelist"))
    assert response.status_code == 200, response.content[:500]
    return len(queries)


@pytest.fixture
def staff_user():
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_admin_index_lists_every_app(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert response.status_code == 200
    for model in MODELS:
        assert admin_url(model, "changelist").encode() in response.content


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_changelist_shows_the_rows(admin_client, model):
    fill(model, 3)

    response = admin_client.get(admin_url(model, "changelist"))

    assert response.status_code == 200
    for obj in model.objects.all():
        assert admin_url(model, "change", obj.pk).encode() in response.content


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_change_page_renders(admin_client, model):
    fill(model, 1)
    obj = model.objects.first()

    response = admin_client.get(admin_url(model, "change", obj.pk))

    assert response.status_code == 200
    assert response.context["original"] == obj


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_changelist_query_count_does_not_grow_with_rows(admin_client, model):
    fill(model, 3)
    few = changelist_queries(admin_client, model)
    fill(model, 15)

    many = changelist_queries(admin_client, model)

    assert model.objects.count() == 15
    assert many == few


def test_token_admin_never_shows_the_secret(admin_client):
    raw = token_for(UserFactory())
    token = AuthToken.objects.get()

    changelist = admin_client.get(admin_url(AuthToken, "changelist"))
    change = admin_client.get(admin_url(AuthToken, "change", token.pk))

    assert raw.encode() not in changelist.content
    assert raw.encode() not in change.content


def test_audit_event_admin_refuses_add(admin_client):
    response = admin_client.get(admin_url(AuditEvent, "add"))

    assert response.status_code == 403
    assert admin_client.post(admin_url(AuditEvent, "add"), {"event_type": "x"}).status_code == 403
    assert not AuditEvent.objects.exists()


def test_audit_event_admin_refuses_change(admin_client):
    event = AuditEventFactory(event_type="original.type", actor_label="original")

    page = admin_client.get(admin_url(AuditEvent, "change", event.pk))
    response = admin_client.post(
        admin_url(AuditEvent, "change", event.pk),
        {"event_type": "tampered.type", "actor_label": "tampered", "payload": "{}"},
    )

    assert page.status_code == 200
    assert b'name="event_type"' not in page.content
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.event_type == "original.type"
    assert event.actor_label == "original"


def test_audit_event_admin_refuses_delete(admin_client):
    event = AuditEventFactory()

    page = admin_client.get(admin_url(AuditEvent, "delete", event.pk))
    confirm = admin_client.post(admin_url(AuditEvent, "delete", event.pk), {"post": "yes"})
    admin_client.post(
        admin_url(AuditEvent, "changelist"),
        {"action": "delete_selected", "_selected_action": [str(event.pk)], "post": "yes"},
    )

    assert page.status_code == 403
    assert confirm.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_non_staff_user_is_sent_to_the_admin_login(client):
    client.force_login(UserFactory())

    for url in (reverse("admin:index"), admin_url(AuditEvent, "changelist")):
        response = client.get(url)

        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_visitor_is_sent_to_the_admin_login(client):
    response = client.get(reverse("admin:index"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_every_registered_admin_bounds_its_input():
    from django.contrib import admin

    from config.admin import BoundedInputMixin

    assert admin.site._registry
    for model, model_admin in admin.site._registry.items():
        assert isinstance(model_admin, BoundedInputMixin), model


def test_a_search_past_the_bounds_keeps_its_first_words_and_says_so(admin_client):
    from config.filters import SearchFilter

    found = TenantFactory(name="Umbrella Logistics")
    TenantFactory(name="Umbrella Pharmacy")
    words = ["umbrella", "logistics"] + [f"w{index}" for index in range(3000)]

    response = admin_client.get(admin_url(Tenant, "changelist"), {"q": " ".join(words)})

    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    # The kept words are the first MAX_TERMS, the filler among them matching nothing.
    assert shown == []
    message = [str(m) for m in response.context["messages"]]
    assert len(message) == 1 and f"at most {SearchFilter.MAX_TERMS} words" in message[0]
    last_kept = f"w{SearchFilter.MAX_TERMS - 3}"
    assert "“umbrella logistics w0 w1 w2 " in message[0] and f" {last_kept}” only" in message[0]

    within = admin_client.get(admin_url(Tenant, "changelist"), {"q": "umbrella LOGISTICS umbrella"})
    assert list(within.context["cl"].result_list) == [found]
    assert not list(within.context["messages"])


def _hostile_filters(model_admin) -> list[dict]:
    """Query strings that failed only once the changelist's query ran: a year out of range on
    each date field, a NUL in each text field the admin filters on."""
    fields = {field.name: field for field in model_admin.model._meta.concrete_fields}
    queries = []
    for field in fields.values():
        if isinstance(field, models.DateField):  # DateTimeField too
            queries += [{f"{field.name}__year": "0"}, {f"{field.name}__year": "9" * 20}]
    for entry in model_admin.list_filter:
        name = entry if isinstance(entry, str) else None
        if isinstance(fields.get(name), models.CharField | models.TextField):
            queries.append({f"{name}__exact": "\x00"})
    return queries


def test_changelist_filters_that_fail_in_the_query_are_the_admins_invalid_lookup(admin_client):
    from django.contrib import admin

    checked = 0
    for model, model_admin in admin.site._registry.items():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for query in _hostile_filters(model_admin):
            response = admin_client.get(url, query)
            # Django's answer to a filter it cannot use: the changelist without its parameters.
            assert response.status_code in (200, 302), (url, query)
            if response.status_code == 302:
                assert response["Location"] == f"{url}?e=1", (url, query)
            checked += 1
    assert checked > 100


def test_a_year_out_of_range_redirects_to_the_changelist_without_filters(admin_client):
    url = admin_url(Tenant, "changelist")

    response = admin_client.get(url, {"created_at__year": "0"})

    assert response.status_code == 302
    assert response["Location"] == f"{url}?e=1"
    assert admin_client.get(url, {"status__exact": "\x00"})["Location"] == f"{url}?e=1"


def _is_an_id(model, value: str) -> bool:
    key = model._meta.pk
    try:
        key.run_validators(key.to_python(value))
    except ValidationError:
        return False
    return "\x00" not in value


@pytest.mark.parametrize("selected", ["not-an-id", "\x00", "", "-1", "9" * 30])
def test_an_action_on_values_that_are_no_ids_changes_nothing(admin_client, staff_user, selected):
    from django.contrib import admin
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = staff_user
    tenant = TenantFactory()
    checked = 0
    for model, model_admin in admin.site._registry.items():
        actions = model_admin.get_actions(request)
        if not actions:
            continue
        if _is_an_id(model, selected):
            continue  # `-1` for an integer key: Django's own path
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for action in actions:
            response = admin_client.post(
                url, {"action": action, "_selected_action": selected, "index": "0"}
            )
            assert response.status_code == 302, (url, action)
            checked += 1
    assert checked > 20
    tenant.refresh_from_db()
    assert tenant.status == "active"


def test_a_refused_selection_says_so(admin_client):
    url = admin_url(Tenant, "changelist")
    tenant = TenantFactory()

    response = admin_client.post(
        url,
        {"action": "suspend_tenants", "_selected_action": "not-an-id", "index": "0"},
        follow=True,
    )

    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    assert shown == [
        "The selection holds a value that is not an id of this list; nothing was changed."
    ]
    tenant.refresh_from_db()
    assert tenant.status == "active"


# django-celery-beat's pages (config/package_admins.py): a refused value shows the form again.


def beat_url(model: str, view: str = "add") -> str:
    return reverse(f"admin:django_celery_beat_{model}_{view}")


@pytest.mark.parametrize(
    ("field", "value"),
    [("task", "t" * 300), ("task", "a\x00b"), ("args", "[" * 5000), ("kwargs", "[" * 5000)],
)
def test_a_periodic_task_refused_by_a_field_shows_the_form_again(admin_client, field, value):
    from django_celery_beat.models import PeriodicTask

    data = {"name": "nightly", "task": "audit.tasks.seal", "args": "[]", "kwargs": "{}"}
    response = admin_client.post(beat_url("periodictask"), {**data, field: value})

    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not PeriodicTask.objects.filter(name="nightly").exists()


def test_a_crontab_out_of_range_shows_the_form_again(admin_client):
    from django_celery_beat.models import CrontabSchedule

    before = CrontabSchedule.objects.count()
    data = {"minute": "0", "hour": "-1", "day_of_month": "*", "month_of_year": "*"}
    response = admin_client.post(beat_url("crontabschedule"), {**data, "day_of_week": "*"})

    assert response.status_code == 200
    assert "hour" in response.context["adminform"].form.errors
    assert "not a valid schedule" in response.content.decode()
    assert CrontabSchedule.objects.count() == before


def test_the_login_attempts_cleanup_action_cleans_up(admin_client):
    # django-axes' own action read the time of a login attempt no admin request has: a 500 on
    # every use.
    from axes.models import AccessAttempt
    from django.utils import timezone

    fields = {"user_agent": "test", "ip_address": "10.0.0.1", "get_data": "", "post_data": ""}
    fields |= {"http_accept": "*/*", "path_info": "/api/v1/auth/token/"}
    old = AccessAttempt.objects.create(username="old@example.com", failures_since_start=3, **fields)
    AccessAttempt.objects.filter(pk=old.pk).update(
        attempt_time=timezone.now() - timezone.timedelta(days=2)
    )
    recent = AccessAttempt.objects.create(
        username="recent@example.com", failures_since_start=1, **fields
    )

    response = admin_client.post(
        reverse("admin:axes_accessattempt_changelist"),
        {"action": "cleanup_expired_attempts", "_selected_action": [recent.pk], "index": "0"},
    )

    assert response.status_code == 302
    assert list(AccessAttempt.objects.values_list("pk", flat=True)) == [recent.pk]


def test_a_relation_given_an_id_past_the_databases_range_is_a_form_error(admin_client):
    # SQLite raised OverflowError (a 500) for a 20-digit id where Django expects ValueError.
    from django.contrib.auth.models import Group

    url = reverse("admin:auth_group_add")
    response = admin_client.post(url, {"name": "ops", "permissions": ["9" * 20]})

    assert response.status_code == 200
    assert "permissions" in response.context["adminform"].form.errors
    assert not Group.objects.filter(name="ops").exists()
