# The lists' pages read each organization's rows in their order from an index instead of sorting
# all of them on every request: the default order (newest first), and by status. The status
# indexes hold the list's own order after the status (config.pagination.in_total_order breaks
# ties by it), so one serves `ordering=status`, `ordering=-status` and a filter on a status in
# the default order; they replace the indexes on (tenant, status) alone, which filters used.
# Built and dropped without blocking writes on PostgreSQL.

import django.db.models.deletion
from django.db import migrations, models

from config.migration_operations import (
    AddIndexConcurrently,
    DropForeignKeyIndex,
    RemoveIndexConcurrently,
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("support", "0007_updated_indexes"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="ticket",
            index=models.Index(fields=["tenant", "-created_at", "-id"], name="ticket_created"),
        ),
        AddIndexConcurrently(
            model_name="ticket",
            index=models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="ticket_status_time"
            ),
        ),
        RemoveIndexConcurrently(model_name="ticket", name="ticket_status"),
        AddIndexConcurrently(
            model_name="escalation",
            index=models.Index(fields=["tenant", "-created_at", "-id"], name="escalation_created"),
        ),
        AddIndexConcurrently(
            model_name="escalation",
            index=models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="escalation_status_time"
            ),
        ),
        RemoveIndexConcurrently(model_name="escalation", name="escalation_status"),
        AddIndexConcurrently(
            model_name="refund",
            index=models.Index(fields=["tenant", "-created_at", "-id"], name="refund_created"),
        ),
        AddIndexConcurrently(
            model_name="refund",
            index=models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="refund_status_time"
            ),
        ),
        RemoveIndexConcurrently(model_name="refund", name="refund_tenant_status"),
        AddIndexConcurrently(
            model_name="ticketattachment",
            index=models.Index(fields=["tenant", "created_at", "id"], name="attachment_created"),
        ),
        # The new index starts with the tenant column (tenants.models.index_the_tenant_column_once).
        DropForeignKeyIndex(
            model_name="ticketattachment",
            name="tenant",
            field=models.ForeignKey(
                db_index=False,
                editable=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="tenants.tenant",
            ),
        ),
        AddIndexConcurrently(
            model_name="customerprofile",
            index=models.Index(fields=["tenant", "name", "id"], name="customer_profile_name"),
        ),
    ]
