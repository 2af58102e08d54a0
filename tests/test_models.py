"""Every model of the project has a UUID primary key, and every tenant-owned model carries the
base's timestamps: `id`, `tenant`, `created_at` and `updated_at` come from TenantOwned
(config.models.TimestampedModel)."""

import pytest
from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models
from django.test.utils import isolate_apps

from accounts.models import AuthToken, User
from config.models import ExplicitPrimaryKeyRequired, UUIDModel
from tenants.models import Tenant, TenantOwned
from tests.project import PROJECT_APPS

pytestmark = pytest.mark.smoke


def label(model) -> str:
    return model._meta.label


def project_models() -> list:
    return [model for model in apps.get_models() if model._meta.app_label in PROJECT_APPS]


def key_field(model) -> models.Field:
    """The column the primary key holds: a child table's key is its parent link, which holds
    the parent's key."""
    field = model._meta.pk
    while field.is_relation:
        field = field.target_field
    return field


def primary_key_problems(all_models) -> list[str]:
    return [
        f"{label(model)}: primary key `{model._meta.pk.name}` is a "
        f"{type(key_field(model)).__name__}, not a UUIDField (build it on config.models.UUIDModel)"
        for model in all_models
        if not isinstance(key_field(model), models.UUIDField)
    ]


TIMESTAMPS = {"created_at": {"auto_now_add": True}, "updated_at": {"auto_now": True}}


def timestamp_problems(all_models) -> list[str]:
    """Concrete TenantOwned subclasses without the base's `created_at` / `updated_at`."""
    problems = []
    for model in all_models:
        if not issubclass(model, TenantOwned) or model._meta.abstract or model._meta.proxy:
            continue
        for name, flags in TIMESTAMPS.items():
            try:
                field = model._meta.get_field(name)
            except FieldDoesNotExist:
                problems.append(f"{label(model)} has no `{name}`")
                continue
            if not isinstance(field, models.DateTimeField) or any(
                getattr(field, flag) is not value for flag, value in flags.items()
            ):
                problems.append(f"{label(model)}.{name} is not the base's DateTimeField({flags})")
    return problems


# The rules over every installed model ------------------------------------------------------


def test_the_checks_see_the_project_models():
    seen = set(project_models())

    assert {User, AuthToken, Tenant, apps.get_model("tenants", "Membership")} <= seen
    assert {model for model in seen if issubclass(model, TenantOwned)} >= {
        apps.get_model("tenants", name)
        for name in ("Membership", "Invitation", "Theme", "QuotaCounter")
    } | {apps.get_model("accounts", "APIKey")}


def test_every_project_model_has_a_uuid_primary_key():
    problems = primary_key_problems(project_models())

    assert not problems, "\n".join(problems)


def test_every_tenant_owned_model_has_created_at_and_updated_at():
    problems = timestamp_problems(project_models())

    assert not problems, "\n".join(problems)


def test_every_project_app_refuses_an_implicit_primary_key():
    """A model that forgets its base fails loudly instead of getting a bigint key."""
    for name in PROJECT_APPS:
        assert apps.get_app_config(name).default_auto_field == (
            f"{ExplicitPrimaryKeyRequired.__module__}.{ExplicitPrimaryKeyRequired.__name__}"
        )


# The checks themselves catch what they are for ---------------------------------------------


@isolate_apps("tenants")
def test_checks_name_the_models_they_refuse():
    class Coded(models.Model):
        code = models.CharField(max_length=10, primary_key=True)

        class Meta:
            app_label = "tenants"

        def __str__(self):
            return self.code

    class Numbered(models.Model):
        id = models.BigAutoField(primary_key=True)

        class Meta:
            app_label = "tenants"

        def __str__(self):
            return str(self.pk)

    class Parent(UUIDModel):
        class Meta:
            app_label = "tenants"

    class Child(Parent):
        class Meta:
            app_label = "tenants"

    class Stamped(TenantOwned):
        class Meta:
            app_label = "tenants"

    class Unstamped(TenantOwned):
        updated_at = None

        class Meta:
            app_label = "tenants"

    class Manual(TenantOwned):
        created_at = models.DateTimeField()

        class Meta:
            app_label = "tenants"

    problems = primary_key_problems([Coded, Numbered, Parent, Child, Stamped]) + timestamp_problems(
        [Stamped, Unstamped, Manual]
    )

    assert sorted(problems) == sorted(
        [
            "tenants.Coded: primary key `code` is a CharField, not a UUIDField (build it on "
            "config.models.UUIDModel)",
            "tenants.Numbered: primary key `id` is a BigAutoField, not a UUIDField (build it on "
            "config.models.UUIDModel)",
            "tenants.Unstamped has no `updated_at`",
            "tenants.Manual.created_at is not the base's DateTimeField({'auto_now_add': True})",
        ]
    )


@isolate_apps("billing")
def test_a_model_without_a_primary_key_is_refused():
    with pytest.raises(ImproperlyConfigured, match=r"billing\.Invoice declares no primary key"):

        class Invoice(models.Model):
            class Meta:
                app_label = "billing"

            def __str__(self):
                return str(self.pk)

    class Receipt(UUIDModel):
        class Meta:
            app_label = "billing"

    assert isinstance(Receipt._meta.pk, models.UUIDField)


@isolate_apps("billing")
def test_many_to_many_join_tables_keep_their_automatic_key():
    """Django's own join table (no `through`) is the one model that still gets the automatic
    key, as before: the column type of existing join tables such as accounts_user_groups does
    not change."""

    class Label(UUIDModel):
        class Meta:
            app_label = "billing"

    class Ledger(UUIDModel):
        labels = models.ManyToManyField(Label)

        class Meta:
            app_label = "billing"

    join = Ledger.labels.through
    assert join._meta.auto_created
    assert isinstance(join._meta.pk, models.BigAutoField)
