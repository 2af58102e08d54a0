"""The notifications app's configuration.

Every project app refuses a model without a declared primary key (below), so each model takes
its UUID `id` from its base class. `ready()` registers the public event catalogue with the
audit recorder: a state change is one call, `audit.services.record()`, and the catalogue turns
the audit events it names into webhook deliveries and notifications inside the same
transaction (notifications.services.events; `publish_many` for a batch of events recorded
together). This is the one hook of its kind; other side
effects of a change are the service's, called explicitly. It also checks that SMS_PROVIDER
names a provider, so that a process started with a wrong one stops at once.
"""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    # A model without a declared primary key is refused, never given a bigint one: models
    # take their UUID `id` from config.models.UUIDModel (see ExplicitPrimaryKeyRequired).
    default_auto_field = "config.models.ExplicitPrimaryKeyRequired"
    name = "notifications"

    def ready(self):
        from django.conf import settings

        from audit.services import on_record

        from .channels import provider_class
        from .services.events import publish, publish_many

        on_record(publish, many=publish_many)
        # A provider that names no class stops the process here, not each SMS later.
        provider_class(settings.SMS_PROVIDER)
