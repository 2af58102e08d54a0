# The lists' pages read each organization's rows in their order from an index instead of sorting
# all of them on every request: the default order (newest first), and by status. The status
# indexes hold the list's own order after the status (config.pagination.in_total_order breaks
# ties by it), so one serves `ordering=status`, `ordering=-status` and a filter on a status in
# the default order; they replace the indexes on (tenant, status) alone, which filters used.
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
            index=models.Index(
                fields=["tenant", "status", "-detected_at", "-id"], name="incident_status_time"
            ),
        ),
        RemoveIndexConcurrently(model_name="incident", name="incident_status"),
    ]
