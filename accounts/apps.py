from django.apps import AppConfig


class AccountsConfig(AppConfig):
    # A model without a declared primary key is refused, never given a bigint one: models
    # take their UUID `id` from config.models.UUIDModel (see ExplicitPrimaryKeyRequired).
    default_auto_field = "config.models.ExplicitPrimaryKeyRequired"
    name = "accounts"

    def ready(self):
        from django.db.backends.signals import connection_created

        from config import epoch
        from tenants.models import Membership, Tenant

        # Registers the OpenAPI extensions for our authentication classes.
        from . import schema  # noqa: F401
        from .models import AuthToken, User

        # What a kept principal lookup is read from (accounts.principals): a write to any of
        # these tables moves the principals' epoch, and every kept lookup is read again.
        epoch.watch(*(model._meta.db_table for model in (User, AuthToken, Membership, Tenant)))
        connection_created.connect(epoch.install, dispatch_uid="config.epoch.install")
