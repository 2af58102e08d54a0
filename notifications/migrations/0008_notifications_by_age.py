# The retention's daily prune reads the oldest notifications: an index on their creation time,
# built without blocking writes to the table on PostgreSQL (every public event writes some).

from django.db import migrations, models

from config.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('notifications', '0007_notification_sending'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='notification',
            index=models.Index(fields=['created_at'], name='notification_created'),
        ),
    ]
