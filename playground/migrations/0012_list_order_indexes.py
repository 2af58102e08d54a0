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
        ("playground", "0011_gateway_call_created"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="promptexecution",
            index=models.Index(
                fields=["tenant", "template", "-created_at", "-id"], name="prompt_execution_order"
            ),
        ),
        RemoveIndexConcurrently(model_name="promptexecution", name="prompt_execution_time"),
        AddIndexConcurrently(
            model_name="orchestrationrun",
            index=models.Index(fields=["tenant", "-created_at", "-id"], name="orch_run_created"),
        ),
        AddIndexConcurrently(
            model_name="orchestrationrun",
            index=models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="orch_run_status_time"
            ),
        ),
        RemoveIndexConcurrently(model_name="orchestrationrun", name="orch_run_status"),
        AddIndexConcurrently(
            model_name="project",
            index=models.Index(fields=["tenant", "-created_at", "-id"], name="project_created"),
        ),
        AddIndexConcurrently(
            model_name="project",
            index=models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="project_status_time"
            ),
        ),
        RemoveIndexConcurrently(model_name="project", name="project_status"),
        AddIndexConcurrently(
            model_name="workflowjob",
            index=models.Index(
                fields=["tenant", "-created_at", "-id"], name="workflow_job_created"
            ),
        ),
        AddIndexConcurrently(
            model_name="workflowjob",
            index=models.Index(
                fields=["tenant", "status", "-created_at", "-id"], name="workflow_job_status_time"
            ),
        ),
        RemoveIndexConcurrently(model_name="workflowjob", name="workflow_job_status"),
        AddIndexConcurrently(
            model_name="artifact",
            index=models.Index(fields=["tenant", "-created_at", "-id"], name="artifact_created"),
        ),
        # The new index starts with the tenant column (tenants.models.index_the_tenant_column_once).
        DropForeignKeyIndex(
            model_name="artifact",
            name="tenant",
            field=models.ForeignKey(
                db_index=False,
                editable=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="artifacts",
                to="tenants.tenant",
            ),
        ),
    ]
