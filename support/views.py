"""API views of the support app: thin viewsets on the app kit
(`tenants.api`).

A tenant-owned resource is a `TenantCrudViewSet`, or a `TenantScopedViewSet` composed with the
`ServiceCreateMixin`, `ServiceUpdateMixin` and `ServiceDestroyMixin` it has: `queryset`,
`serializer_class`, `filterset_class`, `permission_area` and the services that write. A view
parses, calls a service or a selector and answers; it holds no rule. A custom action names its
permission in `required_permissions`; an action without one is refused.
"""

from django.conf import settings
from django.db.models import Case, IntegerField, Prefetch, Value, When
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from config.exceptions import ApplicationError, PayloadTooLarge
from config.views import accepts_uploads
from tenants.api import (
    AcceptsShownDocumentMixin,
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceWriteMixin,
    TenantCrudViewSet,
    TenantScopedViewSet,
)
from tenants.idempotency import idempotent
from tenants.permissions import AnyOf

from . import selectors, services
from .filters import (
    AiAgentFilter,
    AttachmentFilter,
    BudgetFilter,
    CustomerProfileFilter,
    DecisionRuleFilter,
    EscalationFilter,
    RefundFilter,
    RepresentativeFilter,
    TicketFilter,
)
from .models import (
    AiAgent,
    Budget,
    CustomerProfile,
    DecisionRule,
    Escalation,
    Refund,
    Representative,
    SlaPolicy,
    Ticket,
    TicketAttachment,
    TicketComment,
)
from .serializers import (
    AgentAssertionInputSerializer,
    AgentAssertionSerializer,
    AiAgentInputSerializer,
    AiAgentSerializer,
    AiAgentUpdateSerializer,
    BudgetDetailSerializer,
    BudgetInputSerializer,
    BudgetSerializer,
    BudgetUpdateSerializer,
    BudgetUsageInputSerializer,
    BudgetUsageRecordSerializer,
    CustomerProfileDetailSerializer,
    CustomerProfileSerializer,
    DecisionRuleInputSerializer,
    DecisionRuleSerializer,
    DecisionRuleUpdateSerializer,
    EscalationCreateSerializer,
    EscalationSerializer,
    EscalationUpdateSerializer,
    PerformanceQuerySerializer,
    RefundCreateSerializer,
    RefundDetailSerializer,
    RefundRejectSerializer,
    RefundSerializer,
    RefundUpdateSerializer,
    RepresentativeCreateSerializer,
    RepresentativePerformanceSerializer,
    RepresentativeSerializer,
    RepresentativeUpdateSerializer,
    RuleEvaluateSerializer,
    RuleEvaluationSerializer,
    SlaPolicySerializer,
    TicketAssignSerializer,
    TicketAttachmentSerializer,
    TicketAttachmentUploadSerializer,
    TicketCommentCreateSerializer,
    TicketCommentSerializer,
    TicketCreateSerializer,
    TicketDetailSerializer,
    TicketSerializer,
    TicketUpdateSerializer,
)

# Priorities sort LOW < NORMAL < HIGH < URGENT (< CRITICAL), not alphabetically.
PRIORITY_RANK = {"LOW": 1, "NORMAL": 2, "HIGH": 3, "URGENT": 4, "CRITICAL": 5}
# Room for the multipart envelope around the file when refusing an oversized body up front.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def _priority_rank():
    return Case(
        *(When(priority=value, then=Value(rank)) for value, rank in PRIORITY_RANK.items()),
        output_field=IntegerField(),
    )


class CustomerProfileViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """The organization's customers: filters `tier`, `standing` (comma lists), `email`,
    `external_id`; `search` (name, email, external id); `ordering`."""

    queryset = CustomerProfile.objects.all()
    serializer_class = CustomerProfileSerializer
    filterset_class = CustomerProfileFilter
    permission_area = "support"
    search_fields = ("name", "email", "external_id")
    ordering_fields = ("name", "email", "created_at", "lifetime_value_cents", "tier")
    update_serializer_class = CustomerProfileSerializer
    create_service = services.customer_profile_create
    update_service = services.customer_profile_update
    destroy_service = services.customer_profile_delete

    def get_serializer_class(self):
        if self.action in ("retrieve", "update", "partial_update"):
            return CustomerProfileDetailSerializer
        return CustomerProfileSerializer


class RepresentativeViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """The organization's representatives, with their load (`active_chats`,
    `free_capacity`) and `rating`; `GET {id}/performance` their performance from their
    tickets."""

    queryset = Representative.objects.select_related("user")
    serializer_class = RepresentativeSerializer
    create_serializer_class = RepresentativeCreateSerializer
    update_serializer_class = RepresentativeUpdateSerializer
    filterset_class = RepresentativeFilter
    permission_area = "support"
    search_fields = ("user__email", "user__name")
    ordering_fields = (
        "created_at",
        "last_active_at",
        "active_chats",
        "max_chats",
        "role",
        "rating",
    )
    required_permissions = {"performance": "support.read"}
    create_service = services.representative_create
    update_service = services.representative_update
    destroy_service = services.representative_delete

    def scope_queryset(self, queryset):
        return queryset.annotate(rating=selectors.representative_rating())

    @extend_schema(
        parameters=[PerformanceQuerySerializer],
        responses={200: RepresentativePerformanceSerializer},
    )
    @action(detail=True, methods=["get"], url_path="performance")
    def performance(self, request, pk=None):
        """Tickets handled and resolved, resolution rate, average first response, CSAT, SLA
        kept and the daily trend, over the last `days` days (default 30, at most 365)."""
        representative = self.get_object()
        query = PerformanceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = selectors.representative_performance(
            representative=representative, days=query.validated_data["days"]
        )
        return Response(RepresentativePerformanceSerializer(report).data)


class SlaPolicyViewSet(TenantCrudViewSet):
    """SLA policies, one per ticket priority."""

    queryset = SlaPolicy.objects.all()
    serializer_class = SlaPolicySerializer
    permission_area = "support"
    ordering_fields = ("priority", "created_at", "first_response_minutes", "resolution_minutes")
    create_service = services.sla_policy_create
    update_service = services.sla_policy_update
    destroy_service = services.sla_policy_delete


class TicketViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """Tickets: filters `status`, `priority`, `category` (comma lists), `assignee`, `customer`,
    `unassigned`, `sla_status`, `created_after` / `created_before`; `search` (subject,
    description, customer); `ordering` (`priority` by rank). `POST {id}/assign` gives one to a
    representative within their capacity; `GET`/`POST {id}/comments` lists or adds comments;
    `POST {id}/attachments` uploads a file (then served by `support/attachments`)."""

    queryset = Ticket.objects.select_related("customer", "assignee__user", "created_by")
    serializer_class = TicketSerializer
    create_serializer_class = TicketCreateSerializer
    update_serializer_class = TicketUpdateSerializer
    filterset_class = TicketFilter
    permission_area = "support"
    required_permissions = {
        "assign": "support.write",
        "comments": "support.write",
        "list_comments": "support.read",
        "attachments": "support.write",
    }
    search_fields = ("subject", "description", "customer__name", "customer__email")
    ordering_fields = (
        "created_at",
        "updated_at",
        "priority",
        "status",
        "number",
        "resolution_due_at",
        "first_response_due_at",
    )
    ordering_aliases = {"priority": "priority_rank"}
    create_service = services.ticket_create
    update_service = services.ticket_update
    destroy_service = services.ticket_delete

    def scope_queryset(self, queryset):
        queryset = queryset.annotate(priority_rank=_priority_rank())
        if self.action in ("retrieve", "update", "partial_update"):
            queryset = queryset.prefetch_related(
                Prefetch("comments", TicketComment.objects.select_related("author")),
                Prefetch("attachments", TicketAttachment.objects.select_related("uploaded_by")),
                "sla_pauses",
                "rule_applications",
            )
        return queryset

    def get_serializer_class(self):
        if self.action in ("retrieve", "update", "partial_update"):
            return TicketDetailSerializer
        return super().get_serializer_class()

    @extend_schema(request=TicketAssignSerializer, responses={200: TicketSerializer})
    @action(detail=True, methods=["post"], url_path="assign")
    def assign(self, request, pk=None):
        """Assign to a representative, to "auto", or unassign (null)."""
        ticket = self.get_object()  # another organization's ticket is 404 whatever the body
        data = self.validated_input(TicketAssignSerializer)
        ticket = self.call_service(
            services.ticket_assign, ticket=ticket, representative=data["representative"]
        )
        return Response(TicketSerializer(self.refreshed(ticket)).data)

    @extend_schema(responses={200: TicketCommentSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="comments")
    def list_comments(self, request, pk=None):
        """The ticket's comments, oldest first (paginated)."""
        ticket = self.get_object()
        comments = TicketComment.objects.filter(ticket=ticket).select_related("author")
        page = self.paginate_queryset(comments)
        return self.get_paginated_response(TicketCommentSerializer(page, many=True).data)

    @extend_schema(request=TicketCommentCreateSerializer, responses={201: TicketCommentSerializer})
    @list_comments.mapping.post
    def comments(self, request, pk=None):
        """Reply (`is_internal` false) or add an internal note; a representative's first
        public reply stops the first-response clock."""
        ticket = self.get_object()
        data = self.validated_input(TicketCommentCreateSerializer)
        comment = self.call_service(services.ticket_comment_add, ticket=ticket, **data)
        return Response(TicketCommentSerializer(comment).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request={"multipart/form-data": TicketAttachmentUploadSerializer},
        responses={201: TicketAttachmentSerializer},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="attachments",
        parser_classes=(MultiPartParser,),
    )
    @accepts_uploads("SUPPORT_ATTACHMENT_MAX_BYTES")
    def attachments(self, request, pk=None):
        """Upload a file (multipart field `file`): its type is recognised from its content
        and must be allowed; counted against the storage quota."""
        ticket = self.get_object()
        declared = request.META.get("CONTENT_LENGTH") or "0"
        limit = settings.SUPPORT_ATTACHMENT_MAX_BYTES
        if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
            # Refused before the body is read and spooled to disk.
            raise PayloadTooLarge(
                f"Attachments are at most {limit} bytes.",
                details={"file": [f"At most {limit} bytes."], "limit_bytes": limit},
            )
        data = self.validated_input(TicketAttachmentUploadSerializer)
        attachment = self.call_service(
            services.ticket_attachment_add, ticket=ticket, file=data["file"]
        )
        return Response(TicketAttachmentSerializer(attachment).data, status=status.HTTP_201_CREATED)


class AttachmentViewSet(
    ServiceWriteMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet
):
    """Tickets' attachments (uploaded with `POST support/tickets/{id}/attachments`): list
    (filter `ticket`), retrieve, `GET {id}/download`, delete (frees the storage quota)."""

    queryset = TicketAttachment.objects.select_related("uploaded_by")
    serializer_class = TicketAttachmentSerializer
    filterset_class = AttachmentFilter
    permission_area = "support"
    required_permissions = {"download": "support.read", "destroy": "support.write"}
    ordering_fields = ("created_at", "size_bytes", "name")

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                description="The file, as an attachment."
            )
        }
    )
    @action(detail=True, methods=["get"], url_path="download")
    def download(self, request, pk=None):
        """The file: always `Content-Disposition: attachment`, with
        `X-Content-Type-Options: nosniff` and a sandboxing Content-Security-Policy, so a browser
        never renders it in the page."""
        attachment = self.get_object()
        response = FileResponse(
            attachment.file.open("rb"),
            content_type=attachment.content_type,
            as_attachment=True,
            filename=attachment.name,
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cache-Control"] = "private, no-store"
        return response

    def destroy(self, request, *args, **kwargs):
        self.call_service(services.ticket_attachment_delete, attachment=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class EscalationViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """Escalations: filters `status`, `priority`, `reason` (comma lists), `assignee`,
    `customer`, `ticket`, `created_after` / `created_before`; `search` (description, AI
    summary); `ordering` (`priority` by rank, `created_at`)."""

    queryset = Escalation.objects.select_related(
        "customer", "ticket", "assignee__user", "created_by"
    )
    serializer_class = EscalationSerializer
    create_serializer_class = EscalationCreateSerializer
    update_serializer_class = EscalationUpdateSerializer
    filterset_class = EscalationFilter
    permission_area = "support"
    search_fields = ("issue_description", "ai_summary")
    ordering_fields = ("created_at", "updated_at", "priority", "status", "assigned_at")
    ordering_aliases = {"priority": "priority_rank"}
    create_service = services.escalation_create
    update_service = services.escalation_update
    destroy_service = services.escalation_delete

    def scope_queryset(self, queryset):
        return queryset.annotate(priority_rank=_priority_rank())


class AiAgentViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """AI agents: filters `type`, `status`, `enabled`; `search` (name, description).
    `POST {id}/assertions` records an outcome (its record follows)."""

    queryset = AiAgent.objects.select_related("created_by")
    serializer_class = AiAgentSerializer
    create_serializer_class = AiAgentInputSerializer
    update_serializer_class = AiAgentUpdateSerializer
    filterset_class = AiAgentFilter
    permission_area = "support"
    required_permissions = {"assertions": "support.write"}
    search_fields = ("name", "description")
    ordering_fields = ("name", "created_at", "assertions_count")
    create_service = services.ai_agent_create
    update_service = services.ai_agent_update
    destroy_service = services.ai_agent_delete

    @extend_schema(request=AgentAssertionInputSerializer, responses={201: AgentAssertionSerializer})
    @action(detail=True, methods=["post"], url_path="assertions")
    def assertions(self, request, pk=None):
        """Record one outcome: `correct` and `latency_ms` (optionally the `ticket_id`)."""
        agent = self.get_object()
        data = self.validated_input(AgentAssertionInputSerializer)
        assertion = self.call_service(services.agent_assertion_record, ai_agent=agent, **data)
        return Response(AgentAssertionSerializer(assertion).data, status=status.HTTP_201_CREATED)


class DecisionRuleViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """Decision rules, in the order they are tried (priority, then creation): filters
    `enabled`, `action`; `search` (name, description). `POST evaluate` tries them on a payload
    or a ticket and says which holds and why, changing nothing."""

    queryset = DecisionRule.objects.select_related("created_by")
    serializer_class = DecisionRuleSerializer
    create_serializer_class = DecisionRuleInputSerializer
    update_serializer_class = DecisionRuleUpdateSerializer
    filterset_class = DecisionRuleFilter
    permission_area = "support"
    required_permissions = {"evaluate": "support.read"}
    search_fields = ("name", "description")
    ordering_fields = ("priority", "created_at", "name")
    create_service = services.decision_rule_create
    update_service = services.decision_rule_update
    destroy_service = services.decision_rule_delete

    @extend_schema(request=RuleEvaluateSerializer, responses={200: RuleEvaluationSerializer})
    @action(detail=False, methods=["post"], url_path="evaluate")
    def evaluate(self, request):
        """The first enabled rule (or any, with `include_disabled`) whose conditions hold for
        `payload` or for the ticket `ticket_id`, its action, and the trace of the rules
        tried."""
        data = self.validated_input(RuleEvaluateSerializer)
        if "ticket_id" in data:
            ticket = Ticket.objects.filter(tenant=request.tenant, pk=data["ticket_id"]).first()
            if ticket is None:
                raise ApplicationError(
                    "Invalid ticket.",
                    details={"ticket_id": ["No ticket of the organization has this id."]},
                )
            facts = selectors.ticket_facts(ticket=ticket)
        else:
            facts = data["payload"]
        result = selectors.rules_evaluate(
            tenant=request.tenant,
            facts=facts,
            include_disabled=data["include_disabled"],
            rule_ids=data.get("rule_ids"),
        )
        return Response(RuleEvaluationSerializer(result).data)


class BudgetViewSet(AcceptsShownDocumentMixin, TenantCrudViewSet):
    """Budgets, one per type and currency, in their current period: filters `type`, `period`
    (comma lists), `currency`. The detail adds the period's usage records. `POST
    {id}/usage-records` draws a compensation, discount or credit given (a refund budget is
    drawn by approving refunds). The support team reads them; billing sets them."""

    queryset = Budget.objects.select_related("created_by")
    serializer_class = BudgetSerializer
    create_serializer_class = BudgetInputSerializer
    update_serializer_class = BudgetUpdateSerializer
    filterset_class = BudgetFilter
    permission_area = "billing"
    required_permissions = {
        "list": AnyOf("billing.read", "support.read"),
        "retrieve": AnyOf("billing.read", "support.read"),
        "usage_records": "billing.write",
    }
    ordering_fields = ("created_at", "type", "limit_cents", "spent_cents", "period_end")
    create_service = services.budget_create
    update_service = services.budget_update
    destroy_service = services.budget_delete

    def get_serializer_class(self):
        if self.action in ("retrieve", "create", "update", "partial_update"):
            return BudgetDetailSerializer
        return super().get_serializer_class()

    @extend_schema(request=BudgetUsageInputSerializer, responses={201: BudgetUsageRecordSerializer})
    @action(detail=True, methods=["post"], url_path="usage-records")
    @idempotent
    def usage_records(self, request, pk=None):
        """Draw `amount_cents` (for `customer_id`, within the per-customer limit): 409 with
        what remains when it does not fit."""
        budget = self.get_object()
        data = self.validated_input(BudgetUsageInputSerializer)
        usage = self.call_service(services.budget_usage_add, budget=budget, **data)
        return Response(BudgetUsageRecordSerializer(usage).data, status=status.HTTP_201_CREATED)


class RefundViewSet(
    AcceptsShownDocumentMixin,
    ServiceCreateMixin,
    ServiceUpdateMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    """Refunds to the organization's customers (never deleted: a record of money): filters
    `status`, `reason` (comma lists), `customer`, `ticket`, `order_id`, `currency`,
    `created_after` / `created_before`; `search` (order, notes, customer). `POST
    {id}/approve` draws the amount from the refund budget; `POST {id}/reject` says why. Both
    need billing.write or a representative's refund authority covering the amount.
    Creation and approval honour `Idempotency-Key`."""

    queryset = Refund.objects.select_related("customer", "ticket", "approved_by", "created_by")
    serializer_class = RefundSerializer
    create_serializer_class = RefundCreateSerializer
    update_serializer_class = RefundUpdateSerializer
    filterset_class = RefundFilter
    permission_area = "support"
    required_permissions = {
        "list": AnyOf("support.read", "billing.read"),
        "retrieve": AnyOf("support.read", "billing.read"),
        "update": AnyOf("support.write", "billing.write"),
        "partial_update": AnyOf("support.write", "billing.write"),
        "approve": AnyOf("support.write", "billing.write"),
        "reject": AnyOf("support.write", "billing.write"),
    }
    search_fields = ("order_id", "notes", "customer__name", "customer__email")
    ordering_fields = ("created_at", "updated_at", "amount_cents", "status", "processed_at")
    create_service = services.refund_create
    update_service = services.refund_update

    def scope_queryset(self, queryset):
        if self.action in ("retrieve", "update", "partial_update", "approve", "reject"):
            queryset = queryset.prefetch_related("rule_applications")
        return queryset

    def get_serializer_class(self):
        if self.action in ("retrieve", "create", "update", "partial_update"):
            return RefundDetailSerializer
        return super().get_serializer_class()

    @extend_schema(request=RefundCreateSerializer, responses={201: RefundDetailSerializer})
    @idempotent
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)

    @extend_schema(request=None, responses={200: RefundDetailSerializer})
    @action(detail=True, methods=["post"], url_path="approve")
    @idempotent
    def approve(self, request, pk=None):
        """Approve a PENDING refund, drawing it from the refund budget: 409 with the budget's
        (or the customer's) remaining amount when it does not fit, 403 beyond the caller's
        authority."""
        refund = self.call_service(services.refund_approve, refund=self.get_object())
        return Response(RefundDetailSerializer(self.refreshed(refund)).data)

    @extend_schema(request=RefundRejectSerializer, responses={200: RefundDetailSerializer})
    @action(detail=True, methods=["post"], url_path="reject")
    def reject(self, request, pk=None):
        """Reject a PENDING refund with a `rejection_reason`."""
        refund = self.get_object()
        data = self.validated_input(RefundRejectSerializer)
        refund = self.call_service(
            services.refund_reject, refund=refund, reason=data["rejection_reason"]
        )
        return Response(RefundDetailSerializer(self.refreshed(refund)).data)
