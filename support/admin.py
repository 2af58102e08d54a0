"""The support app's Django admin: what platform staff see and may do.

A model that services change is changed only through them: deletes through
`config.admin.ServiceDeleteAdmin.delete_through_service`, edits in a `save_model` that calls
the update service, actions looping with `config.admin.apply_each`; a record nobody edits by
hand is a `config.admin.ReadOnlyAdmin`. Each registered model is mapped to its service
modules in tests/test_admin_service_rules.py (`SERVICE_MODULES`), whose walk fails on any
delete or change path around them.
"""

from django import forms
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from config.admin import (
    JSONField,
    ReadOnlyAdmin,
    ServiceActionsMixin,
    ServiceDeleteAdmin,
    ShownInline,
)

from . import services
from .models import (
    AiAgent,
    Budget,
    BudgetUsageRecord,
    CustomerProfile,
    DecisionRule,
    Escalation,
    Refund,
    Representative,
    RuleApplication,
    SlaPolicy,
    SlaStatus,
    Ticket,
    TicketAttachment,
    TicketComment,
    TicketSlaPause,
)
from .selectors import rules_evaluate, sla_status_q


class CommentInline(ShownInline):
    model = TicketComment
    fields = ("created_at", "author", "is_internal", "comment")
    readonly_fields = fields


class AttachmentInline(ShownInline):
    model = TicketAttachment
    fields = ("created_at", "name", "content_type", "size_bytes", "uploaded_by")
    readonly_fields = fields


class SlaPauseInline(ShownInline):
    model = TicketSlaPause
    fields = ("reason", "started_at", "ended_at")
    readonly_fields = fields


class RuleApplicationInline(ShownInline):
    model = RuleApplication
    fields = ("created_at", "rule_name", "action", "outcome", "detail")
    readonly_fields = fields


class SlaStatusFilter(admin.SimpleListFilter):
    title = "SLA"
    parameter_name = "sla_status"

    def lookups(self, request, model_admin):
        return SlaStatus.choices

    def queryset(self, request, queryset):
        if self.value() in SlaStatus.values:
            return queryset.filter(sla_status_q(self.value(), timezone.now()))
        return queryset


@admin.register(CustomerProfile)
class CustomerProfileAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    """The organizations' own customers: shown, and deleted through the service (audited)."""

    list_display = ("name", "email", "tenant", "tier", "standing", "lifetime_value_cents")
    list_select_related = ("tenant",)
    list_filter = ("tier", "standing", "billing_cycle")
    search_fields = ("name", "email", "external_id", "tenant__slug")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("support.delete_customerprofile")

    def delete_through_service(self, request, obj) -> None:
        services.customer_profile_delete(customer_profile=obj, actor=request.user)


@admin.register(Representative)
class RepresentativeAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    """Representatives with their load (active_chats of max_chats)."""

    list_display = ("user", "tenant", "role", "status", "load", "last_active_at")
    list_select_related = ("tenant", "user")
    list_filter = ("role", "status")
    search_fields = ("user__email", "tenant__slug")

    @admin.display(description="load", ordering="active_chats")
    def load(self, representative) -> str:
        return f"{representative.active_chats} / {representative.max_chats}"

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("support.delete_representative")

    def delete_through_service(self, request, obj) -> None:
        services.representative_delete(representative=obj, actor=request.user)


@admin.register(SlaPolicy)
class SlaPolicyAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    list_display = (
        "name",
        "tenant",
        "priority",
        "first_response_minutes",
        "resolution_minutes",
        "business_hours",
    )
    list_select_related = ("tenant",)
    list_filter = ("priority",)
    search_fields = ("name", "tenant__slug")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("support.delete_slapolicy")

    def delete_through_service(self, request, obj) -> None:
        services.sla_policy_delete(sla_policy=obj, actor=request.user)


@admin.register(Ticket)
class TicketAdmin(ServiceDeleteAdmin, ServiceActionsMixin, ReadOnlyAdmin):
    """Tickets with their comments, attachments and SLA pauses: filters (the SLA state among
    them), deletion and automatic assignment through the services (audited)."""

    inlines = (CommentInline, AttachmentInline, SlaPauseInline, RuleApplicationInline)
    list_display = (
        "ticket_number",
        "subject",
        "tenant",
        "status",
        "priority",
        "category",
        "assignee",
        "sla",
        "resolution_due_at",
        "created_at",
    )
    list_select_related = ("tenant", "assignee__user")
    list_filter = ("status", "priority", SlaStatusFilter, "category", "ai_handled")
    search_fields = ("subject", "tenant__slug", "customer__email")
    actions = ("assign_automatically",)

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("support.delete_ticket")

    def has_assign_permission(self, request):
        return request.user.has_perm("support.change_ticket")

    @admin.display(description="SLA")
    def sla(self, ticket) -> str:
        status = ticket.sla_status_at(timezone.now())
        if status is None:
            return "-"
        colour = {"breached": "#ba2121", "at_risk": "#b8860b", "met": "#447e36"}.get(status)
        label = SlaStatus(status).label
        return format_html('<span style="color:{}">{}</span>', colour, label) if colour else label

    def delete_through_service(self, request, obj) -> None:
        services.ticket_delete(ticket=obj, actor=request.user)

    @admin.action(
        description="Assign to the online representative with the most free capacity",
        permissions=["assign"],
    )
    def assign_automatically(self, request, queryset):
        self.each(
            request,
            queryset,
            lambda ticket: services.ticket_assign(
                ticket=ticket, actor=request.user, representative=services.AUTO
            ),
            "assigned",
        )


@admin.register(Escalation)
class EscalationAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    """Escalations: shown, and deleted through the service (audited)."""

    list_display = ("reason", "priority", "status", "tenant", "ticket", "assignee", "created_at")
    list_select_related = ("tenant", "ticket", "assignee__user")
    list_filter = ("status", "priority", "reason")
    search_fields = ("issue_description", "tenant__slug")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("support.delete_escalation")

    def delete_through_service(self, request, obj) -> None:
        services.escalation_delete(escalation=obj, actor=request.user)


@admin.register(AiAgent)
class AiAgentAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    """AI agents with their record (counted from the recorded outcomes)."""

    list_display = ("name", "tenant", "type", "status", "enabled", "model", "accuracy_shown")
    list_select_related = ("tenant",)
    list_filter = ("type", "status", "enabled")
    search_fields = ("name", "tenant__slug")

    @admin.display(description="accuracy")
    def accuracy_shown(self, agent) -> str:
        if agent.accuracy is None:
            return "-"
        return f"{agent.accuracy}% of {agent.assertions_count}"

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("support.delete_aiagent")

    def delete_through_service(self, request, obj) -> None:
        services.ai_agent_delete(ai_agent=obj, actor=request.user)


class EvaluateForm(forms.Form):
    payload = JSONField(
        help_text='The facts to try, e.g. {"confidence": 0.97, "category": "ACCOUNT"}.'
    )

    def clean_payload(self):
        payload = self.cleaned_data["payload"]
        if not isinstance(payload, dict):
            raise forms.ValidationError("A JSON object.")
        return payload


@admin.register(DecisionRule)
class DecisionRuleAdmin(ServiceDeleteAdmin, ServiceActionsMixin, ReadOnlyAdmin):
    """Decision rules in the order they are tried; an "evaluate" action tries the selected
    ones on a payload (enabled or not, changing nothing); deleted through the service."""

    list_display = ("priority", "name", "tenant", "enabled", "action")
    list_select_related = ("tenant",)
    list_filter = ("enabled", "action")
    search_fields = ("name", "tenant__slug")
    actions = ("evaluate_payload",)

    @admin.action(description="Evaluate on a payload (a test: changes nothing)")
    def evaluate_payload(self, request, queryset):
        return self.each_with_form(
            request,
            queryset,
            EvaluateForm,
            action="evaluate_payload",
            title="Evaluate the selected rules on a payload",
            change=lambda rule, data: self._report(request, rule, data["payload"]),
            done="evaluated",
        )

    def _report(self, request, rule, payload) -> None:
        result = rules_evaluate(
            tenant=rule.tenant, facts=payload, include_disabled=True, rule_ids=[rule.pk]
        )
        if result["matched"]:
            message = f"{rule.name}: holds, so {rule.action} {rule.action_params or ''}"
            self.message_user(request, message, messages.SUCCESS)
            return
        failed = [
            f"{c['field']} {c['operator']} {c['value']!r} ({c['reason']})"
            for c in result["trace"][0].conditions
            if not c["holds"]
        ]
        self.message_user(
            request, f"{rule.name}: does not hold: {'; '.join(failed)}", messages.WARNING
        )

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("support.delete_decisionrule")

    def delete_through_service(self, request, obj) -> None:
        services.decision_rule_delete(decision_rule=obj, actor=request.user)


class UsageRecordInline(ShownInline):
    model = BudgetUsageRecord
    fk_name = "budget"
    fields = ("created_at", "period_start", "amount_cents", "customer", "refund", "description")
    readonly_fields = fields
    ordering = ("-created_at",)


@admin.register(Budget)
class BudgetAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    """Budgets in their current period, with every amount drawn from them (all periods);
    deleted through the service."""

    list_display = (
        "tenant",
        "type",
        "currency",
        "period",
        "limit_cents",
        "spent_cents",
        "remaining_shown",
        "period_end",
    )
    list_select_related = ("tenant",)
    list_filter = ("type", "period", "currency")
    search_fields = ("tenant__slug",)
    inlines = (UsageRecordInline,)

    @admin.display(description="remaining cents")
    def remaining_shown(self, budget) -> int:
        return budget.remaining_cents

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("support.delete_budget")

    def delete_through_service(self, request, obj) -> None:
        services.budget_delete(budget=obj, actor=request.user)


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=500, help_text="Why: the requester sees it.")


# Staff act as billing does: any amount, within the budget.
_STAFF_AUTHORITY = frozenset({"billing.write"})


@admin.register(Refund)
class RefundAdmin(ServiceActionsMixin, ReadOnlyAdmin):
    """Refunds (records of money: never deleted). Actions approve (drawn from the refund
    budget, refused beyond it), reject (with a reason) and complete, through the services."""

    list_display = (
        "order_id",
        "tenant",
        "customer",
        "amount_cents",
        "currency",
        "reason",
        "status",
        "created_at",
    )
    list_select_related = ("tenant", "customer")
    list_filter = ("status", "reason", "currency")
    search_fields = ("order_id", "customer__email", "tenant__slug")
    inlines = (RuleApplicationInline,)
    actions = ("approve", "reject", "complete")

    @admin.action(description="Approve (drawn from the refund budget)")
    def approve(self, request, queryset):
        self.each(
            request,
            queryset,
            lambda refund: services.refund_approve(
                refund=refund, actor=request.user, actor_permissions=_STAFF_AUTHORITY
            ),
            "approved",
        )

    @admin.action(description="Reject (asks for the reason)")
    def reject(self, request, queryset):
        return self.each_with_form(
            request,
            queryset,
            RejectForm,
            action="reject",
            title="Reject the selected refunds",
            change=lambda refund, data: services.refund_reject(
                refund=refund,
                actor=request.user,
                actor_permissions=_STAFF_AUTHORITY,
                reason=data["reason"],
            ),
            done="rejected",
        )

    @admin.action(description="Mark completed (paid out)")
    def complete(self, request, queryset):
        self.each(
            request,
            queryset,
            lambda refund: services.refund_complete(refund=refund, actor=request.user),
            "completed",
        )
