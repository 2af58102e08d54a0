from django.db import migrations


def logged(apps, schema_editor):
    # The notes are written to the WAL like every other table: an UNLOGGED table is emptied by a
    # crash of PostgreSQL and is not copied to replicas, so a crash or a failover lost the notes
    # of the calls in flight, and their worst cases stayed counted until the month's end. The
    # WAL records of a note ride the commit its reservation's and settlement's statements flush
    # anyway (docs/gateway.md).
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE playground_gatewayreservation SET LOGGED")


def unlogged(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE playground_gatewayreservation SET UNLOGGED")


class Migration(migrations.Migration):
    dependencies = [
        ("playground", "0008_gateway_reservations"),
    ]

    operations = [
        migrations.RunPython(logged, unlogged),
    ]
