"""Models of the notifications app: webhook endpoints, the public events and their deliveries
(the outbox), delivery attempts, and user notifications with their preferences.

Rows change through notifications.services only; each model's factory lives in
tests/notifications/factories.py.
"""

from django.conf import settings
from django.db import models

from tenants.models import Tenant, TenantOwned


class WebhookEndpoint(TenantOwned):
    """A URL of the tenant's that receives the public events it subscribes to, signed with
    its secret (Standard Webhooks)."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints", editable=False
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    url = models.URLField(max_length=2000)
    # Public event types from notifications.catalog, or ["*"] for every one.
    events = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    # The signing secret, `whsec_...`, encrypted at rest (notifications.signing): it must be
    # readable to sign, so it cannot be hashed like a password.
    secret_encrypted = models.TextField(editable=False)
    # After a rotation the previous secret keeps signing too until it expires.
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_triggered_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Failed attempts since the last success; `failing_since` is the first of them.
    failure_count = models.PositiveIntegerField(default=0, editable=False)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=255, blank=True, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "is_active"], name="webhook_endpoint_active")]

    def __str__(self):
        return f"{self.name} ({self.url})"

    def subscribes_to(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class WebhookEvent(TenantOwned):
    """A public event: what every subscribed endpoint receives, built once from the audit event
    that recorded the change (notifications.catalog). Its id is the audit event's and the
    `webhook-id` of every delivery, so receivers can de-duplicate retries."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="webhook_events", editable=False
    )
    event_type = models.CharField(max_length=100)
    # The exact JSON body sent, stored as text so that every retry sends the same bytes.
    body = models.TextField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="webhook_event_tenant_time"),
        ]

    def __str__(self):
        return f"{self.event_type} {self.pk}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


# Statuses the relay sends (when `next_attempt_at` is due).
DUE_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


class WebhookDelivery(TenantOwned):
    """One event to one endpoint (the outbox row), written in the event's transaction and sent
    by the relay when `next_attempt_at` is due."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="webhook_deliveries", editable=False
    )
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", editable=False
    )
    event = models.ForeignKey(
        WebhookEvent, on_delete=models.CASCADE, related_name="deliveries", editable=False
    )
    # Denormalised from the event: the deliveries list filters on it.
    event_type = models.CharField(max_length=100, editable=False)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempt_count = models.PositiveSmallIntegerField(default=0)
    # When the relay may send it next; while a relay holds it, the end of that relay's lease.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The relay run that holds the delivery (empty when none does).
    claim = models.CharField(max_length=32, blank=True, editable=False)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "endpoint", "event"], name="webhook_delivery_unique_event"
            ),
        ]
        indexes = [
            # The relay's claim: the organizations with rows due (a skip scan), and each
            # one's oldest due rows.
            models.Index(
                fields=["tenant", "next_attempt_at"],
                name="webhook_delivery_due_tenant",
                condition=models.Q(status__in=["pending", "retrying"]),
            ),
            # The rows a relay run holds.
            models.Index(
                fields=["claim"], name="webhook_delivery_claim", condition=~models.Q(claim="")
            ),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint"),
            models.Index(fields=["created_at"], name="webhook_delivery_created"),
        ]

    def __str__(self):
        return f"{self.event_type} to {self.endpoint_id} ({self.status})"


class WebhookAttempt(TenantOwned):
    """One HTTP attempt of a delivery: what the receiver answered, or why nothing was sent."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="webhook_attempts", editable=False
    )
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempts", editable=False
    )
    number = models.PositiveSmallIntegerField()
    succeeded = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    # The start of the receiver's answer (at most WEBHOOK_RESPONSE_EXCERPT_BYTES).
    response_excerpt = models.TextField(blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "delivery", "number"], name="webhook_attempt_unique_number"
            ),
        ]

    def __str__(self):
        return f"attempt {self.number} of {self.delivery_id}"


class NotificationType(models.TextChoices):
    INFO = "info", "Info"
    SUCCESS = "success", "Success"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class Channel(models.TextChoices):
    IN_APP = "in_app", "In-app"
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"


class NotificationStatus(models.TextChoices):
    # Waiting for its channel (email and SMS are sent after the transaction commits).
    PENDING = "pending", "Pending"
    # Claimed by a worker and handed to its channel: `sent` once the channel took it. One still
    # sending after NOTIFICATIONS_SENDING_LEASE_SECONDS lost its worker and is sent again.
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    # The recipient's preferences turn the channel (or the event type) off.
    SUPPRESSED = "suppressed", "Suppressed"
    FAILED = "failed", "Failed"


class Notification(TenantOwned):
    """A message to one member of the tenant on one channel. In-app notifications are these
    rows; email and SMS ones are sent after commit and keep their delivery status here."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="notifications", editable=False
    )
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        editable=False,
    )
    title = models.CharField(max_length=200)
    message = models.TextField()
    type = models.CharField(
        max_length=16, choices=NotificationType.choices, default=NotificationType.INFO
    )
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.IN_APP)
    # The public event type that raised it (empty for one sent by a person).
    event_type = models.CharField(max_length=100, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    error = models.CharField(max_length=500, blank=True)
    is_read = models.BooleanField(default=False)
    read_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "recipient", "-created_at"], name="notification_inbox"),
            # The retention's daily prune (notifications_prune) reads the oldest rows.
            models.Index(fields=["created_at"], name="notification_created"),
            # Beat's sweep of email and SMS still pending (notifications_deliver_overdue): few
            # rows, however many notifications were ever sent.
            models.Index(
                fields=["updated_at"],
                condition=models.Q(status=NotificationStatus.PENDING),
                name="notification_pending",
            ),
            # ... and its look for those whose worker stopped while sending them.
            models.Index(
                fields=["updated_at"],
                condition=models.Q(status=NotificationStatus.SENDING),
                name="notification_sending",
            ),
        ]

    def __str__(self):
        return f"{self.title} to {self.recipient_id} ({self.channel})"


class NotificationPreference(TenantOwned):
    """A member's channels in one tenant, and the event types they opted out of."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="notification_preferences", editable=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notification_preferences",
        editable=False,
    )
    email_enabled = models.BooleanField(default=True)
    in_app_enabled = models.BooleanField(default=True)
    sms_enabled = models.BooleanField(default=False)
    # E.164; SMS goes nowhere without it, and nowhere until its member confirmed it with a code
    # sent to it (PhoneConfirmation). Changing the number clears the confirmation.
    phone_number = models.CharField(max_length=32, blank=True)
    phone_confirmed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Public event types (notifications.catalog) this member is not notified of.
    disabled_event_types = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "user"], name="notification_preference_unique_user"
            ),
        ]

    def __str__(self):
        return f"preferences of {self.user_id} in {self.tenant_id}"

    def channel_enabled(self, channel: str) -> bool:
        return {
            Channel.IN_APP: self.in_app_enabled,
            Channel.EMAIL: self.email_enabled,
            Channel.SMS: self.sms_enabled and self.phone_confirmed,
        }[channel]

    @property
    def phone_confirmed(self) -> bool:
        return bool(self.phone_number) and self.phone_confirmed_at is not None


class PhoneConfirmation(TenantOwned):
    """A code sent by SMS to a member's phone number, which they enter to show the number is
    theirs. Only an HMAC of the code is kept (keyed by SECRET_KEY, so a copy of the database
    does not give it away). A code is good for one number, PHONE_CONFIRMATION_TTL and
    PHONE_CONFIRMATION_ATTEMPTS tries; the rows of the last 24 hours count the codes sent."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="phone_confirmations", editable=False
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="phone_confirmations",
        editable=False,
    )
    phone_number = models.CharField(max_length=32, editable=False)
    # The number's digits: codes to one number are counted across organizations by it.
    number_key = models.CharField(max_length=32, editable=False)
    code_hash = models.CharField(max_length=64, editable=False)
    expires_at = models.DateTimeField(editable=False)
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)
    confirmed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["tenant", "user", "-created_at"], name="phone_confirmation_recent"
            ),
            models.Index(fields=["number_key", "-created_at"], name="phone_confirmation_number"),
        ]

    def __str__(self):
        return f"phone confirmation of {self.user_id} in {self.tenant_id}"
