"""API views of the billing app: thin viewsets on the app kit (`tenants.api`).

- `billing/plans`: the catalogue, for any signed-in caller (no organization needed);
- `billing/subscription` and its actions (change-plan with its preview, cancel, resume),
  `billing/checkout` (a hosted checkout for a paid plan), and `billing/usage` (the ended
  periods) with `billing/usage/current`;
- `billing/invoices`: the organization's issued invoices, each with its PDF, and `pay`;
- `billing/credit-notes`: refunds and credit against paid invoices;
- `billing/webhooks/<provider>`: the payment provider's signed events (no credentials: the
  signature is the authentication);
- `/billing/checkout/<session_id>`: the local provider's hosted checkout page (HTML).

The POST actions that move money (change-plan, checkout, pay, credit notes) honour `Idempotency-Key`
(tenants.idempotency).

Reading the subscription and the invoices still works while the organization is suspended
(a suspended organization can still see what it owes, and pay it).
"""

import secrets
from urllib.parse import urlencode, urlsplit, urlunsplit

from django.http import HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views import View
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from config.exceptions import ApplicationError, PaymentFailed, error_body
from config.pagination import StandardPagination
from config.schema import ErrorEnvelopeSerializer
from tenants.api import (
    PlatformViewSet,
    ServiceWriteMixin,
    TenantContextViewSet,
    TenantScopedViewSet,
)
from tenants.idempotency import idempotent, provider_idempotency_key
from tenants.permissions import AUTHENTICATED, PUBLIC

from . import selectors, services
from .filters import CreditNoteFilter, InvoiceFilter
from .models import CheckoutSession, CreditNote, Invoice, PaymentStatus
from .pdf import invoice_pdf
from .providers import provider as payment_provider
from .providers.local import TEST_PAYMENT_METHODS
from .serializers import (
    CancelSerializer,
    ChangePlanSerializer,
    CheckoutSerializer,
    CheckoutSessionSerializer,
    CreditNoteCreateSerializer,
    CreditNoteSerializer,
    InvoiceSerializer,
    PayResultSerializer,
    PaySerializer,
    PlanChangePreviewSerializer,
    PlanChangeResultSerializer,
    PlanSerializer,
    SubscriptionSerializer,
    UsageCurrentSerializer,
    UsageHistorySerializer,
    UsageQuerySerializer,
    UsageRecordSerializer,
)


class PlanViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, PlatformViewSet):
    """GET billing/plans: the active plans, cheapest first."""

    serializer_class = PlanSerializer
    pagination_class = StandardPagination
    required_permissions = {"list": AUTHENTICATED, "retrieve": AUTHENTICATED}
    filter_backends = ()

    def get_queryset(self):
        return selectors.plans_offered()


class SubscriptionViewSet(ServiceWriteMixin, TenantContextViewSet):
    """GET billing/subscription; POST its change-plan (and preview), cancel and resume."""

    serializer_class = SubscriptionSerializer
    required_permissions = {
        "current": "billing.read",
        "change_plan": "billing.write",
        "change_plan_preview": "billing.read",
        "cancel": "billing.write",
        "resume": "billing.write",
        "checkout": "billing.write",
        "usage": "billing.read",
        "usage_current": "billing.read",
    }
    allowed_when_suspended = frozenset({"current"})
    throttle_scope = "billing"
    # Singletons and reports: nothing to filter (`billing/usage` pages its at most 12 rows).
    filter_backends = ()
    pagination_class = None

    def subscription(self):
        tenant = getattr(self.request, "tenant", None)
        if tenant is None:
            raise NotFound()
        return services.subscription_ensure(tenant=tenant)

    def new_plan(self):
        return self.plan(self.validated_input(ChangePlanSerializer)["plan"])

    def plan(self, reference: str):
        plan = selectors.plan_by_reference(reference)
        if plan is None:
            raise NotFound(f"No plan {reference!r}.")
        return plan

    @extend_schema(responses={200: SubscriptionSerializer})
    @action(detail=False, methods=["get"], url_path="subscription")
    def current(self, request):
        return Response(self.get_serializer(self.subscription()).data)

    @extend_schema(request=ChangePlanSerializer, responses={200: PlanChangePreviewSerializer})
    @action(detail=False, methods=["post"], url_path="subscription/change-plan/preview")
    def change_plan_preview(self, request):
        change = services.plan_change_quote(
            subscription=self.subscription(),
            plan=self.new_plan(),
            at=timezone.now(),
            by_staff=request.user.is_staff,
        )
        return Response(PlanChangePreviewSerializer(change).data)

    @extend_schema(request=ChangePlanSerializer, responses={200: PlanChangeResultSerializer})
    @action(detail=False, methods=["post"], url_path="subscription/change-plan")
    @idempotent
    def change_plan(self, request):
        result = self.call_service(
            services.subscription_change_plan, tenant=request.tenant, plan=self.new_plan()
        )
        change, invoice = result.change, result.invoice
        message = (
            "Subscription plan changed successfully"
            if change.applies_now
            else f"The plan changes to {change.new_plan.name} at the end of the current period"
        )
        data = {
            "old_plan": change.old_plan.name,
            "new_plan": change.new_plan.name,
            "proration_amount_cents": change.proration_amount_cents,
            "change": change.kind,
            "applies_now": change.applies_now,
            "effective_at": change.effective_at,
            "invoice": invoice
            and {
                "id": invoice.pk,
                "invoice_number": invoice.number,
                "total_cents": invoice.total_cents,
                "currency": invoice.currency,
            },
            "subscription": result.subscription,
        }
        body = {"success": True, "message": message, "data": data, "timestamp": timezone.now()}
        return Response(
            PlanChangeResultSerializer(body, context=self.get_serializer_context()).data
        )

    @extend_schema(request=CancelSerializer, responses={200: SubscriptionSerializer})
    @action(detail=False, methods=["post"], url_path="subscription/cancel")
    def cancel(self, request):
        immediately = self.validated_input(CancelSerializer)["immediately"]
        subscription = self.call_service(
            services.subscription_cancel, subscription=self.subscription(), immediately=immediately
        )
        return Response(self.get_serializer(subscription).data)

    @extend_schema(request=None, responses={200: SubscriptionSerializer})
    @action(detail=False, methods=["post"], url_path="subscription/resume")
    def resume(self, request):
        subscription = self.call_service(
            services.subscription_resume, subscription=self.subscription()
        )
        return Response(self.get_serializer(subscription).data)

    @extend_schema(request=CheckoutSerializer, responses={201: CheckoutSessionSerializer})
    @action(detail=False, methods=["post"], url_path="checkout")
    @idempotent
    def checkout(self, request):
        data = self.validated_input(CheckoutSerializer)
        session = self.call_service(
            services.checkout_create,
            tenant=request.tenant,
            plan=self.plan(data["plan"]),
            success_url=data["success_url"],
            cancel_url=data["cancel_url"],
        )
        body = CheckoutSessionSerializer(session, context=self.get_serializer_context()).data
        return Response(body, status=201)

    @extend_schema(parameters=[UsageQuerySerializer], responses={200: UsageHistorySerializer})
    @action(detail=False, methods=["get"], url_path="usage")
    def usage(self, request):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        history = selectors.usage_history(
            tenant=request.tenant,
            subscription=self.subscription(),
            months=query.validated_data["months"],
        )
        paginator = StandardPagination()
        page = paginator.paginate_queryset(history, request, view=self)
        return paginator.get_paginated_response(UsageRecordSerializer(page, many=True).data)

    @extend_schema(responses={200: UsageCurrentSerializer})
    @action(detail=False, methods=["get"], url_path="usage/current")
    def usage_current(self, request):
        current = selectors.usage_current(tenant=request.tenant, subscription=self.subscription())
        return Response(UsageCurrentSerializer(current).data)


class InvoiceViewSet(
    ServiceWriteMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    """GET billing/invoices (filter by status), one invoice, and its PDF."""

    queryset = Invoice.objects.all()
    serializer_class = InvoiceSerializer
    filterset_class = InvoiceFilter
    permission_area = "billing"
    required_permissions = {"pdf": "billing.read", "pay": "billing.write"}
    # A suspended organization can still see what it owes, and pay it.
    allowed_when_suspended = frozenset({"list", "retrieve", "pdf", "pay"})
    throttle_scope = "billing"
    ordering_fields = ("issued_at", "due_date", "total_cents")

    def scope_queryset(self, queryset):
        return queryset.exclude(status="draft").prefetch_related("lines")

    @extend_schema(
        responses={(200, "application/pdf"): OpenApiResponse(description="The invoice as a PDF.")}
    )
    @action(detail=True, methods=["get"], url_path="pdf")
    def pdf(self, request, pk=None):
        invoice = self.get_object()
        response = HttpResponse(invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{invoice.number}.pdf"'
        return response

    @extend_schema(
        request=PaySerializer,
        responses={
            200: PayResultSerializer,
            402: OpenApiResponse(
                response=ErrorEnvelopeSerializer,
                description="The provider declined the payment (PAYMENT_FAILED).",
            ),
        },
    )
    @action(detail=True, methods=["post"], url_path="pay")
    @idempotent
    def pay(self, request, pk=None):
        invoice = self.get_object()
        data = self.validated_input(PaySerializer)
        payment = self.call_service(
            services.invoice_pay,
            invoice=invoice,
            payment_method=data["payment_method_id"],
            idempotency_key=provider_idempotency_key(request, "charge") or "",
        )
        if payment.status == PaymentStatus.FAILED:
            # Answered, not raised: the failed attempt is recorded (and, with an
            # Idempotency-Key, this answer is what a retry gets).
            return self.handle_exception(
                PaymentFailed(
                    payment.failure_message or None,
                    details={"code": payment.failure_code, "payment_id": str(payment.pk)},
                )
            )
        body = {"payment": payment, "invoice": self.refreshed(invoice)}
        return Response(PayResultSerializer(body, context=self.get_serializer_context()).data)


class CreditNoteViewSet(
    ServiceWriteMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    """GET and POST billing/credit-notes: money given back against a paid invoice."""

    queryset = CreditNote.objects.select_related("invoice")
    serializer_class = CreditNoteSerializer
    filterset_class = CreditNoteFilter
    permission_area = "billing"
    required_permissions = {"create": "billing.write"}
    throttle_scope = "billing"
    ordering_fields = ("created_at", "amount_cents")

    @extend_schema(request=CreditNoteCreateSerializer, responses={201: CreditNoteSerializer})
    @idempotent
    def create(self, request):
        data = self.validated_input(CreditNoteCreateSerializer)
        note = self.call_service(
            services.credit_note_issue,
            **data,
            idempotency_key=provider_idempotency_key(request, "refund") or "",
        )
        return Response(self.get_serializer(self.refreshed(note)).data, status=201)


class ProviderWebhookViewSet(PlatformViewSet):
    """POST billing/webhooks/<provider>: the provider's signed events. No credentials: the
    signature over the exact body is the authentication (a bad one is 400, nothing changes);
    a replayed event answers 200 and changes nothing."""

    authentication_classes = ()
    required_permissions = {"create": PUBLIC}
    anonymous_throttle_scope = "provider_webhooks"

    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={200: {"type": "object"}},
        auth=[],
    )
    def create(self, request, provider=None):
        event = services.provider_event_receive(
            provider_name=provider, body=request.body, headers=request.headers
        )
        return Response(
            {
                "received": True,
                "event_id": event.event_id,
                "type": event.type,
                "outcome": event.outcome,
            }
        )


# The local provider's hosted checkout page -------------------------------------------------------


def _with_session(url: str, session_id: str) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode({"session_id": session_id})]))
    return urlunsplit(parts._replace(query=query))


class CheckoutPage(View):
    """GET /billing/checkout/<session_id>: the local provider's hosted page. The session id
    (random, expiring) is what lets the payer in, as with a real provider's page. Paying with a
    test method that succeeds sends the signed `checkout.session.completed` event through the
    provider event entry point, then back to the session's success URL; a declined method is
    shown on the page and changes nothing."""

    http_method_names = ["get", "post", "head", "options"]

    def session(self, session_id: str) -> CheckoutSession | None:
        return (
            CheckoutSession.objects.filter(session_id=session_id, provider="local")
            .select_related("plan", "tenant")
            .first()
        )

    def page(self, request, session, *, error: str = "", status: int = 200):
        nonce = secrets.token_urlsafe(16)
        state = (
            "complete"
            if session.status == "complete"
            else ("open" if services.checkout_is_open(session) else "expired")
        )
        response = render(
            request,
            "billing/checkout_page.html",
            {
                "session": session,
                "plan": session.plan,
                "price": f"{session.plan.currency} {session.plan.price_cents / 100:,.2f}",
                "state": state,
                "methods": TEST_PAYMENT_METHODS,
                "error": error,
                "nonce": nonce,
            },
            status=status,
        )
        response["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self' "
            f"{_origin(session.success_url)} {_origin(session.cancel_url)}; base-uri 'none'; "
            "frame-ancestors 'none'"
        )
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"
        return response

    def get(self, request, session_id):
        session = self.session(session_id)
        if session is None:
            return _not_found()
        return self.page(request, session)

    def post(self, request, session_id):
        session = self.session(session_id)
        if session is None:
            return _not_found()
        if request.POST.get("action") == "cancel":
            return HttpResponseRedirect(session.cancel_url)
        if not services.checkout_is_open(session):
            return self.page(request, session, error="This checkout is no longer open.", status=409)
        method = request.POST.get("payment_method", "")
        provider = payment_provider("local")
        try:
            _, decline_code, decline_message = provider.method(method)
        except ApplicationError as refusal:
            return self.page(request, session, error=refusal.message, status=400)
        if decline_code:
            return self.page(request, session, error=decline_message, status=402)
        body, headers = provider.signed_event(
            "checkout.session.completed",
            {"session_id": session.session_id, "payment_method": method},
        )
        event = services.provider_event_receive(provider_name="local", body=body, headers=headers)
        if event.outcome != "subscribed":
            return self.page(request, session, error=f"Not completed: {event.outcome}.", status=409)
        return HttpResponseRedirect(_with_session(session.success_url, session.session_id))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _not_found():
    return JsonResponse(error_body("RESOURCE_NOT_FOUND", "No such checkout session."), status=404)
