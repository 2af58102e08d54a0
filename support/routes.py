"""The (prefix, viewset, basename) triples this app registers on the one API router.

config/urls.py, the composition root, registers them under /api/v1/: the prefix is the
resource's plural path (`invoices`), the basename its singular. Every routed action needs a
permission (tests/api walks them all), and each tenant-owned resource joins the battery in
tests/support/test_api.py.
"""

from .views import (
    AiAgentViewSet,
    AttachmentViewSet,
    BudgetViewSet,
    CustomerProfileViewSet,
    DecisionRuleViewSet,
    EscalationViewSet,
    RefundViewSet,
    RepresentativeViewSet,
    SlaPolicyViewSet,
    TicketViewSet,
)

routes: list = [
    ("support/customer-profiles", CustomerProfileViewSet, "customer-profile"),
    ("support/representatives", RepresentativeViewSet, "representative"),
    ("support/sla-policies", SlaPolicyViewSet, "sla-policy"),
    ("support/tickets", TicketViewSet, "ticket"),
    ("support/escalations", EscalationViewSet, "escalation"),
    ("support/attachments", AttachmentViewSet, "attachment"),
    ("support/agents", AiAgentViewSet, "ai-agent"),
    ("support/decision-rules", DecisionRuleViewSet, "decision-rule"),
    # The organization's money towards its customers: top-level paths.
    ("budgets", BudgetViewSet, "budget"),
    ("refunds", RefundViewSet, "refund"),
]
