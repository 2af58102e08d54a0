"""The notifications app's Django admin: webhook endpoints (never their secrets; enable,
disable and test actions), deliveries with their attempts (retry action), events, and
notifications with preferences. Everything is read-only by hand; the actions call the same
services as the API."""

from django.contrib import admin, messages

from config.admin import ReadOnlyAdmin, apply_each
from config.exceptions import Conflict

from . import services
from .models import (
    Notification,
    NotificationPreference,
    PhoneConfirmation,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "tenant",
        "url",
        "is_active",
        "last_triggered_at",
        "last_success_at",
        "failure_count",
        "disabled_reason",
    )
    list_select_related = ("tenant",)
    list_filter = ("is_active",)
    search_fields = ("name", "url", "tenant__slug")
    fields = (
        "name",
        "tenant",
        "url",
        "description",
        "events",
        "is_active",
        "last_triggered_at",
        "last_success_at",
        "failure_count",
        "failing_since",
        "disabled_reason",
        "disabled_at",
        "previous_secret_expires_at",
        "created_by",
        "created_at",
        "updated_at",
    )
    actions = ("enable_endpoints", "disable_endpoints", "send_test_events")

    def has_manage_permission(self, request):
        return request.user.has_perm("notifications.change_webhookendpoint")

    def _set_active(self, request, queryset, active: bool) -> int:
        return apply_each(
            self,
            request,
            queryset.select_related("tenant"),
            lambda endpoint: services.webhook_endpoint_update(
                webhook_endpoint=endpoint, actor=request.user, is_active=active
            ),
            str,
        )

    @admin.action(description="Enable selected endpoints", permissions=["manage"])
    def enable_endpoints(self, request, queryset):
        done = self._set_active(request, queryset, True)
        self.message_user(request, f"Enabled {done} endpoint(s).", messages.SUCCESS)

    @admin.action(description="Disable selected endpoints", permissions=["manage"])
    def disable_endpoints(self, request, queryset):
        done = self._set_active(request, queryset, False)
        self.message_user(request, f"Disabled {done} endpoint(s).", messages.SUCCESS)

    @admin.action(description="Send a test event to selected endpoints", permissions=["manage"])
    def send_test_events(self, request, queryset):
        for endpoint in queryset.select_related("tenant"):
            try:
                delivery = services.webhook_endpoint_test(
                    webhook_endpoint=endpoint, actor=request.user
                )
            except Conflict as error:
                self.message_user(request, f"{endpoint}: {error.message}", messages.ERROR)
                continue
            delivery = services.webhook_delivery_send_now(delivery=delivery)
            attempt = delivery.last_attempt
            if delivery.status == "succeeded":
                self.message_user(request, f"{endpoint}: delivered.", messages.SUCCESS)
            else:
                reason = attempt.error if attempt else "queued for the relay"
                self.message_user(
                    request, f"{endpoint}: not delivered ({reason}).", messages.WARNING
                )


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = (
        "number",
        "succeeded",
        "status_code",
        "duration_ms",
        "error",
        "response_excerpt",
        "created_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "event_type",
        "endpoint",
        "tenant",
        "status",
        "attempt_count",
        "next_attempt_at",
        "last_attempt_at",
        "created_at",
    )
    list_select_related = ("endpoint", "tenant")
    list_filter = ("status", "event_type")
    search_fields = ("event_type", "endpoint__name", "endpoint__url", "tenant__slug")
    date_hierarchy = "created_at"
    inlines = (WebhookAttemptInline,)
    actions = ("retry_deliveries",)

    def has_retry_permission(self, request):
        return request.user.has_perm("notifications.change_webhookdelivery")

    @admin.action(description="Retry selected deliveries now", permissions=["retry"])
    def retry_deliveries(self, request, queryset):
        done = apply_each(
            self,
            request,
            queryset.select_related("endpoint", "tenant"),
            lambda delivery: services.webhook_delivery_retry(delivery=delivery, actor=request.user),
            str,
        )
        self.message_user(request, f"Re-queued {done} deliveries.", messages.SUCCESS)


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("event_type", "tenant", "created_at")
    list_select_related = ("tenant",)
    list_filter = ("event_type",)
    search_fields = ("event_type", "tenant__slug")
    date_hierarchy = "created_at"


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = (
        "title",
        "recipient",
        "tenant",
        "channel",
        "type",
        "status",
        "is_read",
        "created_at",
    )
    list_select_related = ("recipient", "tenant")
    list_filter = ("channel", "status", "type", "is_read")
    search_fields = ("title", "recipient__email", "tenant__slug", "event_type")
    date_hierarchy = "created_at"


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(ReadOnlyAdmin):
    list_display = (
        "user",
        "tenant",
        "email_enabled",
        "in_app_enabled",
        "sms_enabled",
        "phone_confirmed_at",
    )
    list_select_related = ("user", "tenant")
    search_fields = ("user__email", "tenant__slug")


@admin.register(PhoneConfirmation)
class PhoneConfirmationAdmin(ReadOnlyAdmin):
    """Codes sent to confirm phone numbers (the code itself is not kept): what support needs
    to answer "I never got the code"."""

    list_display = ("user", "tenant", "phone_number", "created_at", "expires_at", "attempts")
    list_select_related = ("user", "tenant")
    list_filter = (("confirmed_at", admin.EmptyFieldListFilter),)
    search_fields = ("user__email", "tenant__slug", "number_key")
    exclude = ("code_hash",)
    date_hierarchy = "created_at"
