# The relay's claim reads due deliveries by organization: the partial index on due rows is now
# (tenant, next_attempt_at). Built before the old one goes, both without blocking writes to the
# table on PostgreSQL (every audited change writes deliveries), so the relay always has one.

from django.db import migrations, models

from config.migration_operations import AddIndexConcurrently, RemoveIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('notifications', '0002_tenant_column_indexed_once'),
        ('tenants', '0008_tenant_column_indexed_once'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='webhookdelivery',
            index=models.Index(condition=models.Q(('status__in', ['pending', 'retrying'])), fields=['tenant', 'next_attempt_at'], name='webhook_delivery_due_tenant'),
        ),
        RemoveIndexConcurrently(
            model_name='webhookdelivery',
            name='webhook_delivery_due',
        ),
    ]
