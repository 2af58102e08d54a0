"""Every model is ready for Citus, which shards tenant-owned tables on `tenant_id` (README,
"Tenancy and Citus"): a non-null tenant FK, and every unique rule includes `tenant`."""

import pytest
from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import Q
from django.db.models.expressions import F
from django.db.models.functions import Lower
from django.test.utils import isolate_apps

from audit.models import AuditCheckpoint, AuditEvent
from config.models import UUIDModel
from tenants.models import Tenant, TenantOwned

# Models whose `tenant` FK may be null, and why.
NULLABLE_TENANT_ALLOWLIST = {
    AuditEvent: "platform events (logins, user creation) belong to no tenant: the platform chain",
    AuditCheckpoint: "checkpoints of the platform chain belong to no tenant",
}
TENANT_COLUMNS = {"tenant", "tenant_id"}


def label(model) -> str:
    return model._meta.label


def tenant_fk(model) -> models.ForeignKey | None:
    """The model's `tenant` field when it is a foreign key to Tenant."""
    try:
        field = model._meta.get_field("tenant")
    except FieldDoesNotExist:
        return None
    if isinstance(field, models.ForeignKey) and field.related_model is Tenant:
        return field
    return None


def tenant_owned_models() -> list:
    """Models with a `tenant` FK to Tenant, and every concrete TenantOwned subclass."""
    return [
        model
        for model in apps.get_models()
        if tenant_fk(model) is not None or issubclass(model, TenantOwned)
    ]


def columns_of(constraint: models.UniqueConstraint) -> set[str]:
    """Field names a unique constraint covers, including those inside its expressions."""
    names = set(constraint.fields)
    pending = list(constraint.expressions)
    while pending:
        node = pending.pop()
        if isinstance(node, F):
            names.add(node.name)
        else:
            pending.extend(getattr(node, "get_source_expressions", list)())
    return names


def nullable_tenant_problems(all_models) -> list[str]:
    """Non-allowlisted models whose tenant FK is nullable, or TenantOwned without a Tenant FK."""
    problems = []
    for model in all_models:
        field = tenant_fk(model)
        if field is None:
            if issubclass(model, TenantOwned):
                problems.append(f"{label(model)}: `tenant` is not a ForeignKey to tenants.Tenant")
        elif field.null and model not in NULLABLE_TENANT_ALLOWLIST:
            problems.append(f"{label(model)}.tenant is nullable")
    return problems


def pinned_to_one_tenant(constraint: models.UniqueConstraint) -> bool:
    """A partial constraint whose condition fixes the tenant (e.g. `tenant IS NULL`, the
    platform chain) is per-tenant: every row it covers lives on one shard."""
    condition = constraint.condition
    pending = [condition] if condition is not None else []
    while pending:
        node = pending.pop()
        if isinstance(node, Q):
            if node.connector == Q.AND and not node.negated:
                pending.extend(node.children)
        elif isinstance(node, tuple) and node[0] in ("tenant__isnull", "tenant", "tenant_id"):
            return node[0] != "tenant__isnull" or node[1] is True
    return False


def unique_problems(owned_models) -> list[str]:
    """Unique rules on tenant-owned models that a Citus shard could not enforce."""
    problems = []
    for model in owned_models:
        for constraint in model._meta.constraints:
            if isinstance(constraint, models.UniqueConstraint):
                columns = columns_of(constraint)
                if not columns & TENANT_COLUMNS and not pinned_to_one_tenant(constraint):
                    problems.append(
                        f"{label(model)}: UniqueConstraint {constraint.name!r} on "
                        f"{sorted(columns) or list(constraint.expressions)} lacks `tenant`"
                    )
        for fields in model._meta.unique_together:
            if not set(fields) & TENANT_COLUMNS:
                problems.append(f"{label(model)}: unique_together {tuple(fields)} lacks `tenant`")
        for field in model._meta.concrete_fields:
            # A one-to-one on the tenant is unique(tenant): it includes `tenant`.
            if field.unique and not field.primary_key and field.name not in TENANT_COLUMNS:
                problems.append(
                    f"{label(model)}.{field.name} has unique=True (a unique rule must include "
                    "`tenant`)"
                )
    return problems


# The rules over every installed model ------------------------------------------------------


def test_the_checks_see_the_tenant_owned_models():
    owned = set(tenant_owned_models())

    assert {apps.get_model("tenants", "Membership"), AuditEvent} <= owned
    assert any(issubclass(model, TenantOwned) for model in owned)


def test_tenant_fk_is_non_null_outside_the_allowlist():
    problems = nullable_tenant_problems(apps.get_models())

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("model", list(NULLABLE_TENANT_ALLOWLIST), ids=label)
def test_allowlist_entries_are_still_needed(model):
    field = tenant_fk(model)

    assert field is not None, f"{label(model)} has no tenant FK: drop it from the allowlist"
    assert field.null, f"{label(model)}.tenant is non-null now: drop it from the allowlist"
    assert NULLABLE_TENANT_ALLOWLIST[model]


def test_every_unique_rule_on_tenant_owned_models_includes_tenant():
    problems = unique_problems(tenant_owned_models())

    assert not problems, "\n".join(problems)


# The checks themselves catch what they are for ---------------------------------------------


@isolate_apps("tenants")
def test_checks_name_the_model_and_constraint_they_refuse():
    class Widget(TenantOwned):
        code = models.CharField(max_length=10, unique=True)
        name = models.CharField(max_length=10)
        kind = models.CharField(max_length=10)

        class Meta:
            app_label = "tenants"
            unique_together = [("name", "kind")]
            constraints = [
                models.UniqueConstraint(fields=["name"], name="widget_name_unique"),
                models.UniqueConstraint(Lower("kind"), name="widget_kind_ci_unique"),
                models.UniqueConstraint(fields=["tenant", "kind"], name="widget_tenant_kind"),
                models.UniqueConstraint(F("tenant"), Lower("name"), name="widget_tenant_name_ci"),
            ]

        def __str__(self):
            return self.code

    class Loose(UUIDModel):
        tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, null=True)

        class Meta:
            app_label = "tenants"

        def __str__(self):
            return str(self.pk)

    problems = unique_problems([Widget]) + nullable_tenant_problems([Widget, Loose])

    assert sorted(problems) == sorted(
        [
            "tenants.Widget: UniqueConstraint 'widget_name_unique' on ['name'] lacks `tenant`",
            "tenants.Widget: UniqueConstraint 'widget_kind_ci_unique' on ['kind'] lacks `tenant`",
            "tenants.Widget: unique_together ('name', 'kind') lacks `tenant`",
            "tenants.Widget.code has unique=True (a unique rule must include `tenant`)",
            "tenants.Loose.tenant is nullable",
        ]
    )
