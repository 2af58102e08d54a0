# The analytics roll-up job reads the gateway calls recorded since its last run, every minute:
# without an index on their creation time it read the whole (tenant, created_at) index each
# time. Built without blocking the gateway's writes on PostgreSQL.

from django.db import migrations, models

from config.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('playground', '0010_gateway_notes_of_work_in_flight'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='gatewaycall',
            index=models.Index(fields=['created_at'], name='gateway_call_created'),
        ),
    ]
