"""AuthToken's primary key becomes a UUID `id`; the digest stays, unique (and indexed), and every
existing token keeps working.

1. `id` is added, nullable.
2. Each existing row gets its own uuid4() (an AddField default is one value for every row).
3. The primary key moves: digest stops being it (and stays unique), then id becomes it.

Step 3 is written out rather than left to two AlterField operations: between them the model
would have no primary key, and Django would then imagine an automatic `id` beside ours (on
SQLite, a table with two `id` columns; on PostgreSQL, a migration that cannot be reversed).
The state changes are those two AlterFields; the database changes are made with the schema
editor, the same statements the AlterFields would run for a sound intermediate model.

The whole migration is one transaction, and on PostgreSQL the first ALTER TABLE locks the table
until it commits: no token can be inserted without an id between steps 2 and 3.
"""

import uuid

from django.db import migrations, models

BATCH_SIZE = 1000

DIGEST = {"max_length": 64, "primary_key": True, "serialize": False}
DIGEST_UNIQUE = {"max_length": 64, "unique": True}
ID_NULLABLE = {"null": True, "editable": False}
ID_NOT_NULL = {"default": uuid.uuid4, "editable": False}
ID_PRIMARY_KEY = {"default": uuid.uuid4, "editable": False, "primary_key": True, "serialize": False}


def fill_ids(apps, schema_editor):
    """Each existing token its own UUID."""
    AuthToken = apps.get_model("accounts", "AuthToken")
    tokens = AuthToken.objects.using(schema_editor.connection.alias)
    while batch := list(tokens.filter(id__isnull=True).only("digest")[:BATCH_SIZE]):
        for token in batch:
            token.id = uuid.uuid4()
        tokens.bulk_update(batch, ["id"])


def _field(model, name, field_class, kwargs):
    field = field_class(**kwargs)
    field.set_attributes_from_name(name)
    field.model = model
    return field


def _key_fields(apps):
    """AuthToken and its fields before the move (digest the key, id nullable) and after."""
    AuthToken = apps.get_model("accounts", "AuthToken")
    return (
        AuthToken,
        AuthToken._meta.get_field("digest"),
        AuthToken._meta.get_field("id"),
        _field(AuthToken, "digest", models.CharField, DIGEST_UNIQUE),
        _field(AuthToken, "id", models.UUIDField, ID_PRIMARY_KEY),
    )


def move_primary_key(apps, schema_editor):
    AuthToken, digest, id_nullable, digest_unique, id_primary_key = _key_fields(apps)
    if schema_editor.connection.vendor == "sqlite":
        # SQLite alters a table by copying it: both changes in one copy.
        schema_editor._remake_table(
            AuthToken, alter_fields=[(digest, digest_unique), (id_nullable, id_primary_key)]
        )
        return
    schema_editor.alter_field(AuthToken, digest, digest_unique)
    schema_editor.alter_field(AuthToken, id_nullable, id_primary_key)


def restore_digest_primary_key(apps, schema_editor):
    """Backwards: `apps` is the state before the move (digest the primary key, id nullable)."""
    AuthToken, digest, id_nullable, digest_unique, id_primary_key = _key_fields(apps)
    if schema_editor.connection.vendor == "sqlite":
        schema_editor._remake_table(
            AuthToken, alter_fields=[(digest_unique, digest), (id_primary_key, id_nullable)]
        )
        return
    # A primary key column cannot be made nullable: drop the key first, the NOT NULL last.
    id_not_null = _field(AuthToken, "id", models.UUIDField, ID_NOT_NULL)
    schema_editor.alter_field(AuthToken, id_primary_key, id_not_null)
    schema_editor.alter_field(AuthToken, digest_unique, digest)
    schema_editor.alter_field(AuthToken, id_not_null, id_nullable)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_text_rules"),
    ]

    operations = [
        migrations.AddField(
            model_name="authtoken",
            name="id",
            field=models.UUIDField(**ID_NULLABLE),
        ),
        # Backwards, the ids go with the column (the AddField's reverse).
        migrations.RunPython(fill_ids, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunPython(move_primary_key, restore_digest_primary_key),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="authtoken",
                    name="digest",
                    field=models.CharField(**DIGEST_UNIQUE),
                ),
                migrations.AlterField(
                    model_name="authtoken",
                    name="id",
                    field=models.UUIDField(**ID_PRIMARY_KEY),
                ),
            ],
        ),
    ]
