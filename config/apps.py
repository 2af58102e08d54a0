"""The project's own configuration of Django's apps."""

from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    """Django's admin with the project's site (config.admin.AdminSite) as `admin.site`."""

    default_site = "config.admin.AdminSite"

    def ready(self):
        super().ready()  # every app's admin loaded, django-celery-beat's among them
        from django.contrib import admin

        from .package_admins import replace_admins

        replace_admins(admin.site)
