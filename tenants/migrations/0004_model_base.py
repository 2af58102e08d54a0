"""Tenant-owned models share their base's `id`, `created_at` and `updated_at` (TenantOwned).

Membership, Theme and Tenant already had the same fields, so moving them into the base changes
no table. Two models lacked one, and QuotaCounter's `updated_at` becomes auto_now:

- Invitation gets `updated_at`. An existing row's last change is its acceptance when it was
  accepted, else its creation (a revocation left no time of its own; creation is the closest
  known lower bound). The column is added with the migration's time, then set from those.
- QuotaCounter gets `created_at`. Every counted resource's counter is created together with its
  tenant (tenants.services.lifecycle.tenant_create), so an existing row takes its tenant's
  `created_at`, bounded by the row's own `updated_at` (a row cannot be created after its last
  change).
- QuotaCounter.updated_at goes from default=timezone.now to auto_now: no column change (neither
  is a database default); the quota services' UPDATEs keep setting it themselves.
"""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Coalesce, Least
from django.utils import timezone


def fill_timestamps(apps, schema_editor):
    db = schema_editor.connection.alias
    Invitation = apps.get_model("tenants", "Invitation")
    QuotaCounter = apps.get_model("tenants", "QuotaCounter")
    Tenant = apps.get_model("tenants", "Tenant")

    Invitation.objects.using(db).update(updated_at=Coalesce("accepted_at", "created_at"))
    tenant_created = Tenant.objects.using(db).filter(pk=OuterRef("tenant_id")).values("created_at")
    QuotaCounter.objects.using(db).update(
        created_at=Least(Subquery(tenant_created[:1]), "updated_at")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0003_text_rules"),
    ]

    operations = [
        migrations.AddField(
            model_name="invitation",
            name="updated_at",
            field=models.DateTimeField(auto_now=True),
        ),
        migrations.AddField(
            model_name="quotacounter",
            name="created_at",
            field=models.DateTimeField(auto_now_add=True, default=timezone.now),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="quotacounter",
            name="updated_at",
            field=models.DateTimeField(auto_now=True),
        ),
        # Backwards, the columns go with the AddFields; there is nothing to restore.
        migrations.RunPython(fill_timestamps, migrations.RunPython.noop),
    ]
