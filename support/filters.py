"""FilterSets of the support app (django-filter), each named by a viewset's
`filterset_class`.

The queryset a FilterSet narrows is already the request tenant's, but a filter choosing among
other objects (`ModelChoiceFilter`) builds its own: it takes
`queryset=tenants.serializers.fields.tenant_queryset(Model)`, so no other tenant's row is
listed or matched. Timestamps use `config.filters.UTCDateTimeFilter`; text filters set a
`max_length`.
"""

import django_filters
from django.db.models import Q
from django.utils import timezone

from config.filters import ChoiceInFilter, UTCDateTimeFilter

from .models import (
    AgentStatus,
    AgentType,
    AiAgent,
    Budget,
    BudgetPeriod,
    BudgetType,
    CustomerProfile,
    CustomerStanding,
    CustomerTier,
    DecisionRule,
    Escalation,
    EscalationPriority,
    EscalationReason,
    EscalationStatus,
    Refund,
    RefundReason,
    RefundStatus,
    Representative,
    RepresentativeRole,
    RepresentativeStatus,
    SlaStatus,
    Ticket,
    TicketAttachment,
    TicketCategory,
    TicketPriority,
    TicketStatus,
)
from .rules import ACTIONS
from .selectors import sla_status_q


class CustomerProfileFilter(django_filters.FilterSet):
    tier = ChoiceInFilter(choices=CustomerTier.choices)
    standing = ChoiceInFilter(choices=CustomerStanding.choices)
    email = django_filters.CharFilter(lookup_expr="iexact", max_length=254)
    external_id = django_filters.CharFilter(max_length=200)

    class Meta:
        model = CustomerProfile
        fields = ["tier", "standing", "email", "external_id"]


class RepresentativeFilter(django_filters.FilterSet):
    role = ChoiceInFilter(choices=RepresentativeRole.choices)
    status = ChoiceInFilter(choices=RepresentativeStatus.choices)
    user_id = django_filters.UUIDFilter(field_name="user_id")

    class Meta:
        model = Representative
        fields = ["role", "status", "user_id"]


class TicketFilter(django_filters.FilterSet):
    """One value or several (`?status=OPEN,WAITING`), the assignee, the customer, and a creation
    range."""

    status = ChoiceInFilter(choices=TicketStatus.choices)
    priority = ChoiceInFilter(choices=TicketPriority.choices)
    category = ChoiceInFilter(choices=TicketCategory.choices)
    assignee = django_filters.UUIDFilter(field_name="assignee_id")
    customer = django_filters.UUIDFilter(field_name="customer_id")
    unassigned = django_filters.BooleanFilter(field_name="assignee", lookup_expr="isnull")
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")
    ticket_number = django_filters.CharFilter(method="filter_ticket_number", max_length=40)
    sla_status = ChoiceInFilter(choices=SlaStatus.choices, method="filter_sla_status")
    sla_breached = django_filters.BooleanFilter(
        field_name="sla_breached_at", lookup_expr="isnull", exclude=True
    )

    class Meta:
        model = Ticket
        fields = ["status", "priority", "category", "assignee", "customer"]

    def filter_sla_status(self, queryset, name, values):
        """The tickets whose `sla_status` is one of `values` now (the rule of
        Ticket.sla_status_at, in SQL)."""
        values = [value for value in values if value]
        if not values:
            return queryset
        matched = Q()
        for value in values:
            matched |= sla_status_q(value, timezone.now())
        return queryset.filter(matched)

    def filter_ticket_number(self, queryset, name, value):
        """`TICKET-1001` (or `1001`): that ticket, or none."""
        digits = value.strip().upper().removeprefix("TICKET-")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
            return queryset.none()
        return queryset.filter(number=int(digits))


class EscalationFilter(django_filters.FilterSet):
    status = ChoiceInFilter(choices=EscalationStatus.choices)
    priority = ChoiceInFilter(choices=EscalationPriority.choices)
    reason = ChoiceInFilter(choices=EscalationReason.choices)
    assignee = django_filters.UUIDFilter(field_name="assignee_id")
    customer = django_filters.UUIDFilter(field_name="customer_id")
    ticket = django_filters.UUIDFilter(field_name="ticket_id")
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Escalation
        fields = ["status", "priority", "reason", "assignee", "customer", "ticket"]


class AttachmentFilter(django_filters.FilterSet):
    ticket = django_filters.UUIDFilter(field_name="ticket_id")

    class Meta:
        model = TicketAttachment
        fields = ["ticket"]


class AiAgentFilter(django_filters.FilterSet):
    type = ChoiceInFilter(choices=AgentType.choices)
    status = ChoiceInFilter(choices=AgentStatus.choices)
    enabled = django_filters.BooleanFilter()

    class Meta:
        model = AiAgent
        fields = ["type", "status", "enabled"]


class DecisionRuleFilter(django_filters.FilterSet):
    enabled = django_filters.BooleanFilter()
    action = ChoiceInFilter(choices=[(action, action) for action in ACTIONS])

    class Meta:
        model = DecisionRule
        fields = ["enabled", "action"]


class BudgetFilter(django_filters.FilterSet):
    type = ChoiceInFilter(choices=BudgetType.choices)
    period = ChoiceInFilter(choices=BudgetPeriod.choices)
    currency = django_filters.CharFilter(lookup_expr="iexact", max_length=3)

    class Meta:
        model = Budget
        fields = ["type", "period", "currency"]


class RefundFilter(django_filters.FilterSet):
    status = ChoiceInFilter(choices=RefundStatus.choices)
    reason = ChoiceInFilter(choices=RefundReason.choices)
    customer = django_filters.UUIDFilter(field_name="customer_id")
    ticket = django_filters.UUIDFilter(field_name="ticket_id")
    order_id = django_filters.CharFilter(max_length=100)
    currency = django_filters.CharFilter(lookup_expr="iexact", max_length=3)
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Refund
        fields = ["status", "reason", "customer", "ticket", "order_id", "currency"]
