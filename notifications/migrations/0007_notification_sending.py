# A notification is `sending` from its claim until its channel took it, so beat's sweep can tell
# one whose worker stopped mid-send; the sweep reads those by their last change, through a
# partial index on the few sending rows, built without blocking writes on PostgreSQL. Rows
# already `sent` stay so: whether they left cannot be known now.

from django.db import migrations, models

from config.migration_operations import AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('notifications', '0006_pending_notifications_index'),
    ]

    operations = [
        migrations.AlterField(
            model_name='notification',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('sent', 'Sent'), ('suppressed', 'Suppressed'), ('failed', 'Failed')], default='pending', max_length=16),
        ),
        AddIndexConcurrently(
            model_name='notification',
            index=models.Index(condition=models.Q(('status', 'sending')), fields=['updated_at'], name='notification_sending'),
        ),
    ]
