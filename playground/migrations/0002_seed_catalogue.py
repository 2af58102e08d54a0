"""Seed the gateway's catalogue (playground.catalogue): the providers and the eight models."""

from django.db import migrations


def seed(apps, schema_editor):
    from playground.catalogue import seed_catalogue

    seed_catalogue(
        apps.get_model("playground", "Provider"), apps.get_model("playground", "LanguageModel")
    )


class Migration(migrations.Migration):
    dependencies = [("playground", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
