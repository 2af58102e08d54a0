# The lists' pages read each organization's rows in their order from an index instead of sorting
# all of them on every request: the default order (newest first) and the order by status, each
# ending with the key as every page-number list's ordering does. The status indexes ending in
# the key replace those without it (same leading columns, so filters use them as before).
# Built and dropped without blocking writes on PostgreSQL.

from django.db import migrations, models

from config.migration_operations import (
    AddIndexConcurrently,
    RemoveIndexConcurrently,
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("security", "0003_tenant_column_indexed_once"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="incident",
            index=models.Index(fields=["tenant", "status", "id"], name="incident_status_id"),
        ),
        RemoveIndexConcurrently(model_name="incident", name="incident_status"),
    ]
