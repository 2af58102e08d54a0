from django.apps import AppConfig


class AccountsConfig(AppConfig):
    # A model without a declared primary key is refused, never given a bigint one: models
    # take their UUID `id` from config.models.UUIDModel (see ExplicitPrimaryKeyRequired).
    default_auto_field = "config.models.ExplicitPrimaryKeyRequired"
    name = "accounts"

    def ready(self):
        from django.db.backends.signals import connection_created

        from config import epoch, pgtypes
        from tenants.models import Membership, Tenant

        # Registers the OpenAPI extensions for our authentication classes.
        from . import schema  # noqa: F401
        from .models import APIKey, AuthToken, User

        # What a kept principal lookup is read from (accounts.principals, and the API-key
        # lookup of accounts.authentication): a write to any of these tables moves the
        # principals' epoch, and every kept lookup is read again. An API key's counters are
        # the exception (accounts.usage.key_counter_writes).
        principal_models = (User, AuthToken, APIKey, Membership, Tenant)
        epoch.watch(*(model._meta.db_table for model in principal_models))
        connection_created.connect(epoch.install, dispatch_uid="config.epoch.install")
        # Not an accounts matter, but where the platform's connection receivers are connected.
        connection_created.connect(pgtypes.use_c_loader, dispatch_uid="config.pgtypes.use_c_loader")
