"""Migrations of the billing app, made by `manage.py makemigrations` (CI
fails on a missing one).

A data migration uses the historical models (`apps.get_model`), never the app's models or
services, which will have changed by the time it runs elsewhere; it has a reverse step.
"""
