"""Stored webhook URLs become URIs, as new ones are stored (notifications.targets.normalize):
an international host in its ASCII form, other non-ASCII characters percent-encoded, scheme and
host lower-cased. A URL that normalize refuses (it could not be sent to either) stays as it was;
sending refuses it with its reason, as before."""

from django.db import migrations


def urls_as_uris(apps, schema_editor):
    from notifications.targets import ForbiddenTarget, normalize

    endpoints = apps.get_model("notifications", "WebhookEndpoint").objects
    for endpoint in endpoints.only("pk", "url").iterator(chunk_size=500):
        try:
            url = normalize(endpoint.url)
        except ForbiddenTarget:
            continue
        if url != endpoint.url:
            endpoints.filter(pk=endpoint.pk).update(url=url)


class Migration(migrations.Migration):
    dependencies = [("notifications", "0004_phone_confirmation")]

    operations = [migrations.RunPython(urls_as_uris, migrations.RunPython.noop)]
