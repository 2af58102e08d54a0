# Beat's sweep of email and SMS notifications still pending reads them by their last change: a
# partial index on the pending rows only, built without blocking writes to the table on
# PostgreSQL (every public event writes notifications).

from django.db import migrations, models

from config.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('notifications', '0005_webhook_urls_as_uris'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='notification',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['updated_at'], name='notification_pending'),
        ),
    ]
