"""Migration operations the apps share."""

from django.contrib.postgres import operations as postgres_operations
from django.db import migrations
from django.db.models import Index


class DropForeignKeyIndex(migrations.AlterField):
    """A foreign key's `db_index=True` → `False` that only drops the column's own index.

    Django's AlterField drops the foreign key constraint and adds it back for this change; adding
    it back checks every row of the table while writes to it wait, which on a large table (audit
    events, gateway calls) is an outage. The constraint needs nothing: only the index goes, and
    on SQLite without rebuilding the table. Backwards, the index is created again.
    """

    def _field(self, model):
        return model._meta.get_field(self.name)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        # As Django's own AlterField finds the index: b-tree, on the column alone, not one of
        # the model's declared indexes.
        declared = {index.name for index in model._meta.indexes}
        for name in schema_editor._constraint_names(
            model, [self._field(model).column], index=True, type_=Index.suffix, exclude=declared
        ):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        schema_editor.execute(schema_editor._create_index_sql(model, fields=[self._field(model)]))

    def describe(self):
        return f"Drop the own index of {self.model_name}.{self.name}"


class _ConcurrentlyOnPostgreSQL:
    """Django's concurrent index operation on PostgreSQL (django.contrib.postgres: CREATE or
    DROP INDEX CONCURRENTLY, in a migration with `atomic = False`), the plain one it extends
    elsewhere: Django's own refuses other databases, and the quick start migrates SQLite.

    A plain CREATE INDEX reads the whole table while every write to it waits; on a large
    table (webhook deliveries: every audited change writes some) that stalls the requests
    that write."""

    plain: type[migrations.AddIndex | migrations.RemoveIndex]

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return self.plain.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return self.plain.database_backwards(self, app_label, schema_editor, from_state, to_state)


class AddIndexConcurrently(_ConcurrentlyOnPostgreSQL, postgres_operations.AddIndexConcurrently):
    plain = migrations.AddIndex


class RemoveIndexConcurrently(
    _ConcurrentlyOnPostgreSQL, postgres_operations.RemoveIndexConcurrently
):
    plain = migrations.RemoveIndex
