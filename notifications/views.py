"""API views of the notifications app: webhook endpoints (with the event catalogue, tests,
secret rotation, replay and their deliveries), deliveries, and the caller's notifications and
preferences. Thin: parse, call a service or selector, answer."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from config.pagination import EventCursorPagination
from tenants.api import (
    ServiceCreateMixin,
    ServiceWriteMixin,
    TenantContextViewSet,
    TenantCrudViewSet,
    TenantScopedViewSet,
)
from tenants.permissions import TENANT_MEMBER

from . import catalog, selectors, services
from .filters import NotificationFilter, WebhookDeliveryFilter, WebhookEndpointFilter
from .models import (
    DeliveryStatus,
    Notification,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
)
from .serializers import (
    EventTypeSerializer,
    NotificationPreferenceSerializer,
    NotificationSendSerializer,
    NotificationSerializer,
    PhoneCodeSentSerializer,
    PhoneConfirmSerializer,
    ReadAllResultSerializer,
    ReplayResultSerializer,
    ReplaySerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSecretSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookTestResultSerializer,
)

_DELIVERY_FILTER_PARAMETERS = [
    OpenApiParameter("status", str, enum=DeliveryStatus.values),
    OpenApiParameter("event_type", str),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="Created at or after."),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="Created before."),
    OpenApiParameter("cursor", str),
    OpenApiParameter("page_size", int),
]


def _filtered(filterset_class, request, queryset):
    filterset = filterset_class(request.query_params, queryset=queryset, request=request)
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    return filterset.qs


@extend_schema_view(
    create=extend_schema(
        request=WebhookEndpointCreateSerializer,
        responses={201: WebhookEndpointSecretSerializer},
        summary="Create an endpoint; the answer shows its signing secret, once",
    ),
    destroy=extend_schema(summary="Delete the endpoint with its deliveries"),
)
class WebhookEndpointViewSet(TenantCrudViewSet):
    """The tenant's webhook endpoints. Managed by people with settings.write; an API key is
    refused here (a leaked key must not be able to redirect the tenant's events)."""

    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointSerializer
    filterset_class = WebhookEndpointFilter
    permission_area = "settings"
    required_permissions = {
        "event_types": TENANT_MEMBER,
        "rotate_secret": "settings.write",
        "test": "settings.write",
        "replay": "settings.write",
        "deliveries": "settings.read",
    }
    api_key_actions = frozenset()
    search_fields = ("name", "url")
    ordering_fields = ("created_at", "name", "last_triggered_at")
    create_serializer_class = WebhookEndpointCreateSerializer
    create_output_serializer_class = WebhookEndpointSecretSerializer
    update_serializer_class = WebhookEndpointUpdateSerializer
    update_service = services.webhook_endpoint_update
    destroy_service = services.webhook_endpoint_delete
    service_object_name = "webhook_endpoint"

    def perform_service_create(self, data):
        endpoint, secret = self.call_service(
            services.webhook_endpoint_create, tenant=self.request.tenant, **data
        )
        endpoint.secret = secret
        return endpoint

    @extend_schema(
        responses={200: EventTypeSerializer(many=True)},
        summary="The public event catalogue: types, who may subscribe, schemas of `data`",
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="event-types",
        filter_backends=[],
        serializer_class=EventTypeSerializer,
    )
    def event_types(self, request):
        page = self.paginate_queryset(catalog.listing())
        return self.get_paginated_response(EventTypeSerializer(page, many=True).data)

    @extend_schema(
        request=None,
        responses={200: WebhookEndpointSecretSerializer},
        summary="New signing secret; the previous one keeps signing too for 24 hours",
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        endpoint, secret = services.webhook_endpoint_rotate_secret(
            webhook_endpoint=self.get_object(), actor=request.user
        )
        endpoint.secret = secret
        return Response(WebhookEndpointSecretSerializer(endpoint).data)

    @extend_schema(
        request=None,
        responses={200: WebhookTestResultSerializer},
        summary="Send a webhook.test event now and answer the attempt's result",
    )
    @action(detail=True, methods=["post"], url_path="test")
    def test(self, request, pk=None):
        delivery = services.webhook_endpoint_test(
            webhook_endpoint=self.get_object(), actor=request.user
        )
        delivery = services.webhook_delivery_send_now(delivery=delivery)
        delivery = selectors.with_event_and_attempts(WebhookDelivery.objects).get(pk=delivery.pk)
        attempt = max(delivery.attempts.all(), key=lambda a: a.number, default=None)
        data = {
            "delivery": delivery,
            "succeeded": delivery.status == "succeeded",
            "attempt": attempt,
        }
        return Response(WebhookTestResultSerializer(data).data)

    @extend_schema(
        request=ReplaySerializer,
        parameters=[ReplaySerializer],
        responses={202: ReplayResultSerializer},
        summary="Queue again every subscribed event since a time (receivers that were down)",
    )
    @action(detail=True, methods=["post"], url_path="replay")
    def replay(self, request, pk=None):
        endpoint = self.get_object()
        source = request.data if request.data else request.query_params
        serializer = ReplaySerializer(data={"since": source.get("since")})
        serializer.is_valid(raise_exception=True)
        queued = services.webhook_endpoint_replay(
            webhook_endpoint=endpoint,
            actor=request.user,
            since=serializer.validated_data["since"],
        )
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="webhooks_endpoint_deliveries",
        parameters=_DELIVERY_FILTER_PARAMETERS,
        responses={200: WebhookDeliverySerializer(many=True)},
        summary="The endpoint's deliveries with their attempts, newest first",
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="deliveries",
        pagination_class=EventCursorPagination,
        serializer_class=WebhookDeliverySerializer,
    )
    def deliveries(self, request, pk=None):
        endpoint = self.get_object()
        queryset = selectors.with_event_and_attempts(endpoint.deliveries.all())
        page = self.paginate_queryset(_filtered(WebhookDeliveryFilter, request, queryset))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookDeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Every delivery of the tenant's endpoints, newest first; retry re-queues one now."""

    queryset = WebhookDelivery.objects.all()
    serializer_class = WebhookDeliverySerializer
    filterset_class = WebhookDeliveryFilter
    pagination_class = EventCursorPagination
    permission_area = "settings"
    required_permissions = {"retry": "settings.write"}
    api_key_actions = frozenset()

    def scope_queryset(self, queryset):
        return selectors.with_event_and_attempts(queryset)

    @extend_schema(
        request=None,
        responses={200: WebhookDeliverySerializer},
        summary="Send a failed delivery (or one waiting to retry) again now",
    )
    @action(detail=True, methods=["post"], url_path="retry")
    def retry(self, request, pk=None):
        delivery = services.webhook_delivery_retry(delivery=self.get_object(), actor=request.user)
        return Response(WebhookDeliverySerializer(self.get_queryset().get(pk=delivery.pk)).data)


@extend_schema_view(
    list=extend_schema(summary="Your notifications in this organization, newest first"),
    retrieve=extend_schema(summary="One of your notifications"),
    create=extend_schema(
        request=NotificationSendSerializer,
        responses={201: NotificationSerializer},
        summary="Send a notification to a member (settings.write)",
    ),
)
class NotificationViewSet(
    ServiceCreateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    """The caller's own notifications: nobody reads another member's. Sending one to a member
    needs settings.write (an API key with it may send)."""

    queryset = Notification.objects.all()
    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter
    required_permissions = {
        "list": TENANT_MEMBER,
        "retrieve": TENANT_MEMBER,
        "create": "settings.write",
        "read": TENANT_MEMBER,
        "read_all": TENANT_MEMBER,
    }
    api_key_actions = frozenset({"create"})
    ordering_fields = ("created_at",)
    create_serializer_class = NotificationSendSerializer
    create_service = services.notification_send
    owner_field = "recipient"

    def perform_service_create(self, data):
        # The recipient is usually someone else: the answer is the row as created, not read
        # back through the caller's own inbox.
        return self.call_service(self.create_service, tenant=self.request.tenant, **data)

    @extend_schema(request=None, responses={200: NotificationSerializer}, summary="Mark read")
    @action(detail=True, methods=["post", "put"], url_path="read")
    def read(self, request, pk=None):
        notification = services.notification_mark_read(notification=self.get_object())
        return Response(NotificationSerializer(notification).data)

    @extend_schema(request=None, responses={200: ReadAllResultSerializer}, summary="Mark all read")
    @action(detail=False, methods=["post"], url_path="read-all", filter_backends=[])
    def read_all(self, request):
        updated = services.notifications_mark_all_read(tenant=request.tenant, user=request.user)
        return Response({"updated": updated})


class NotificationPreferenceViewSet(ServiceWriteMixin, TenantContextViewSet):
    """The caller's notification preferences in the current organization: GET, PUT and PATCH
    notifications/preferences. Registered on the `notifications` prefix before
    NotificationViewSet, whose detail route would read "preferences" as an id."""

    serializer_class = NotificationPreferenceSerializer
    required_permissions = {
        "preferences": TENANT_MEMBER,
        "update_preferences": TENANT_MEMBER,
        "partial_update_preferences": TENANT_MEMBER,
        "send_phone_code": TENANT_MEMBER,
        "confirm_phone": TENANT_MEMBER,
    }
    api_key_actions = frozenset()

    def get_object(self) -> NotificationPreference:
        """The caller's preferences, or the unsaved defaults."""
        # OPTIONS describes PUT on a clone of the request that has no tenant.
        tenant = getattr(self.request, "tenant", None)
        if tenant is None:
            raise NotFound()
        return selectors.preferences_of(tenant_id=tenant.pk, user_id=self.request.user.pk)

    def perform_service_update(self, instance, data, *, partial):
        request = self.request
        return self.call_service(
            services.notification_preferences_update,
            tenant=request.tenant,
            user=request.user,
            data=data,
        )

    @extend_schema(
        responses={200: NotificationPreferenceSerializer},
        summary="Your notification channels and opt-outs in this organization",
    )
    @action(detail=False, methods=["get"], url_path="preferences")
    def preferences(self, request):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        request=NotificationPreferenceSerializer,
        responses={200: NotificationPreferenceSerializer},
        summary="Set your notification channels and opt-outs (all three switches)",
    )
    @preferences.mapping.put
    def update_preferences(self, request):
        return self.service_update(partial=False)

    @extend_schema(
        request=NotificationPreferenceSerializer,
        responses={200: NotificationPreferenceSerializer},
        summary="Change some of your notification preferences",
    )
    @preferences.mapping.patch
    def partial_update_preferences(self, request):
        return self.service_update(partial=True)

    @extend_schema(
        request=None,
        responses={200: PhoneCodeSentSerializer},
        summary="Send a code to your phone number, to confirm it",
        description="SMS goes to your number only once you confirmed it. A new code replaces "
        "the last; one a minute and a few a day (429 RATE_LIMIT_EXCEEDED with Retry-After).",
    )
    @action(detail=False, methods=["post"], url_path="preferences/phone/code", filter_backends=[])
    def send_phone_code(self, request):
        confirmation = self.call_service(
            services.phone_confirmation_send, tenant=request.tenant, user=request.user
        )
        return Response(PhoneCodeSentSerializer(confirmation).data)

    @extend_schema(
        request=PhoneConfirmSerializer,
        responses={200: NotificationPreferenceSerializer},
        summary="Confirm your phone number with the code sent to it",
    )
    @action(
        detail=False, methods=["post"], url_path="preferences/phone/confirm", filter_backends=[]
    )
    def confirm_phone(self, request):
        data = self.validated_input(PhoneConfirmSerializer)
        preference = self.call_service(
            services.phone_confirmation_confirm,
            tenant=request.tenant,
            user=request.user,
            code=data["code"],
        )
        return Response(NotificationPreferenceSerializer(preference).data)
