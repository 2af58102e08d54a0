"""The tenant column is indexed once: a model's `tenant` foreign key has no index of its own
when one of the model's indexes or unique constraints already starts with it
(tenants.models.index_the_tenant_column_once), and every tenant-owned table keeps an index
that starts with it."""

import pytest
from django.apps import apps
from django.db import connection, models
from django.db.models.functions import Lower
from django.test.utils import isolate_apps

from tenants.models import Tenant, TenantOwned
from tests.conftest import migrate_to, migrated_back_to
from tests.test_citus_readiness import tenant_fk


def _tenant_field(model):
    return model._meta.get_field("tenant")


def _owned(name: str, **meta):
    """A TenantOwned model of the test app with a `code` column and these Meta options."""
    return type(
        name,
        (TenantOwned,),
        {
            "__module__": __name__,
            "code": models.CharField(max_length=10),
            "Meta": type("Meta", (), {"app_label": "tests", **meta}),
        },
    )


@isolate_apps("tests")
def test_a_composite_index_leading_with_the_tenant_replaces_its_own():
    led = _owned(
        "Led", indexes=[models.Index(fields=["tenant", "-created_at"], name="led_tenant_time")]
    )

    assert _tenant_field(led).db_index is False


@isolate_apps("tests")
def test_a_unique_constraint_or_unique_together_leading_with_the_tenant_replaces_it():
    unique = _owned(
        "Unique",
        constraints=[models.UniqueConstraint(fields=["tenant", "code"], name="unique_code")],
    )
    together = _owned("Together", unique_together=[("tenant", "code")])
    by_column = _owned(
        "ByColumn", indexes=[models.Index(fields=["tenant_id", "code"], name="by_column")]
    )
    by_expression = _owned(
        "ByExpression",
        constraints=[
            models.UniqueConstraint(models.F("tenant"), Lower("code"), name="by_expression")
        ],
    )
    expression_first = _owned(
        "ExpressionFirst",
        constraints=[
            models.UniqueConstraint(Lower("code"), models.F("tenant"), name="lower_first")
        ],
    )

    assert _tenant_field(by_column).db_index is False
    assert _tenant_field(by_expression).db_index is False
    assert _tenant_field(expression_first).db_index is True
    assert _tenant_field(unique).db_index is False
    assert _tenant_field(together).db_index is False


@isolate_apps("tests")
def test_the_tenant_keeps_its_own_index_when_nothing_else_serves_lookups_by_tenant():
    plain = _owned("Plain")
    partial = _owned(
        "Partial",
        indexes=[
            models.Index(
                fields=["tenant", "code"], condition=~models.Q(code=""), name="partial_code"
            )
        ],
        constraints=[
            models.UniqueConstraint(
                fields=["tenant", "code"], condition=~models.Q(code=""), name="partial_unique"
            )
        ],
    )
    second = _owned("Second", indexes=[models.Index(fields=["code", "tenant"], name="code_first")])

    for model in (plain, partial, second):
        assert _tenant_field(model).db_index is True, model


@isolate_apps("tests")
def test_a_one_to_one_tenant_and_other_foreign_keys_are_left_alone():
    class Single(TenantOwned):
        tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "tests"
            indexes = [models.Index(fields=["tenant", "created_at"], name="single_tenant")]

    class Other(models.Model):
        tenant = models.ForeignKey("tests.Single", on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "tests"
            indexes = [models.Index(fields=["tenant", "id"], name="other_tenant")]

        def __str__(self):
            return str(self.pk)

    assert _tenant_field(Single).unique
    assert _tenant_field(Other).db_index is True


def _tenant_models():
    return [model for model in apps.get_models() if tenant_fk(model) is not None]


def test_every_project_model_whose_tenant_lookups_are_served_otherwise_drops_the_own_index():
    dropped = [m for m in _tenant_models() if not _tenant_field(m).db_index]
    assert len(dropped) >= 41
    from audit.models import AuditEvent
    from playground.models import GatewayCall

    assert AuditEvent in dropped and GatewayCall in dropped


@pytest.mark.postgres
@pytest.mark.django_db
def test_every_tenant_table_keeps_one_full_index_starting_with_the_tenant_and_no_spare():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.relname,
                   array_agg(i.indnkeyatts ORDER BY i.indexrelid)
                       FILTER (WHERE NOT i.indisunique)
            FROM pg_index i
            JOIN pg_class t ON t.oid = i.indrelid
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
            WHERE a.attname = 'tenant_id' AND i.indpred IS NULL
            GROUP BY t.relname
            """
        )
        # Each table with a full index starting with tenant_id: its plain indexes' widths.
        leading = {table: plain or [] for table, plain in cursor.fetchall()}
    for model in _tenant_models():
        table = model._meta.db_table
        assert table in leading, f"{table}: no full index starts with tenant_id"
        plain_widths = leading[table]
        if not _tenant_field(model).db_index:
            assert 1 not in plain_widths, f"{table}: tenant_id indexed alone, {plain_widths}"


# The migrations that drop the indexes --------------------------------------------------------

BEFORE = ("playground", "0006_workflow_job_reservation_note")
AFTER = ("playground", "0007_tenant_column_indexed_once")
DDL = {"ALTER", "CREATE", "DROP"}


def _tenant_indexes(table):
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        name: info
        for name, info in constraints.items()
        if info["columns"] == ["tenant_id"] and (info["index"] or info["foreign_key"])
    }


@pytest.fixture
def playground_before_the_drop():
    with migrated_back_to(BEFORE):
        yield


@pytest.mark.smoke
@pytest.mark.django_db(transaction=True)
def test_the_migration_drops_only_the_index_and_keeps_the_foreign_key(
    playground_before_the_drop,
):
    before = _tenant_indexes("playground_gatewaycall")
    own = [name for name, info in before.items() if info["index"] and not info["foreign_key"]]
    assert len(own) == 1, before

    statements = migrate_to(AFTER)

    after = _tenant_indexes("playground_gatewaycall")
    assert set(before) - set(after) == set(own), "only the own index is gone"
    assert all(after[name] == before[name] for name in after), "the foreign key is as it was"
    schema = [sql for sql in statements if sql.split(None, 1)[0].upper() in DDL]
    assert schema and all(sql.startswith("DROP INDEX") for sql in schema), schema

    migrate_to(BEFORE)
    assert set(_tenant_indexes("playground_gatewaycall")) == set(before)
