# The analytics roll-up job reads the tickets and escalations changed since its last run, every
# minute: without an index on their update time it read both tables whole each time. Built
# without blocking the desk's writes on PostgreSQL.

from django.db import migrations, models

from config.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('support', '0006_tenant_column_indexed_once'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='escalation',
            index=models.Index(fields=['updated_at'], name='escalation_updated'),
        ),
        AddIndexConcurrently(
            model_name='ticket',
            index=models.Index(fields=['updated_at'], name='ticket_updated'),
        ),
    ]
