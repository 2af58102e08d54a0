"""Abstract bases every model of the project is built on, and the guard that keeps a model from
getting an implicit bigint key.

Abstract only: `config` is no app, holds no tables and imports none of the apps. A model gets
its UUID primary key (and timestamps) from these bases, never from DEFAULT_AUTO_FIELD.
"""

import uuid

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class UUIDModel(models.Model):
    """A random UUID primary key: ids reveal no row count or order and are unique across
    tables and shards (Citus), so they can be generated before the row is written."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)

    class Meta:
        abstract = True


class TimestampedModel(UUIDModel):
    """A UUID primary key, when the row was created and when it last changed.

    `updated_at` is set by save() (auto_now); a queryset update() must set it itself.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class ExplicitPrimaryKeyRequired(models.BigAutoField):
    """The project apps' `default_auto_field`: a model that declares no primary key is refused
    when its class is created, instead of silently getting a bigint key.

    The only models that may take it are the join tables Django creates for a ManyToManyField
    without `through` (e.g. accounts_user_groups): they stay bigint as they always were, so the
    column type, and every migration, is unchanged.
    """

    def contribute_to_class(self, cls, name, **kwargs):
        if not cls._meta.auto_created:
            raise ImproperlyConfigured(
                f"{cls._meta.label} declares no primary key: build it on "
                "config.models.UUIDModel or TimestampedModel (tenant-owned models on "
                "tenants.models.TenantOwned), which give it a UUID `id`."
            )
        super().contribute_to_class(cls, name, **kwargs)


def creator_field():
    """The member who made a row, kept (as null) when their account goes: never edited, no
    reverse accessor on the user."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
