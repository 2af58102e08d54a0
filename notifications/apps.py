"""The notifications app's configuration.

Every project app refuses a model without a declared primary key (below), so each model takes
its UUID `id` from its base class. `ready()` registers the public event catalogue with the
audit recorder: a state change is one call, `audit.services.record()`, and the catalogue turns
the audit events it names into webhook deliveries and notifications inside the same
transaction (notifications.services.events; `publish_many` for a batch of events recorded
together). This is the one hook of its kind; other side
effects of a change are the service's, called explicitly. It also checks that SMS_PROVIDER
and EMAIL_BACKEND name classes, so that a process started with a wrong one stops at once.
"""

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    # A model without a declared primary key is refused, never given a bigint one: models
    # take their UUID `id` from config.models.UUIDModel (see ExplicitPrimaryKeyRequired).
    default_auto_field = "config.models.ExplicitPrimaryKeyRequired"
    name = "notifications"

    def ready(self):
        from audit.services import on_record

        from .channels import check_configured
        from .services.events import publish, publish_many

        on_record(publish, many=publish_many)
        check_configured()
