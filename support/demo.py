"""The quick start's support desk setup (called by `manage.py load_demo_data` after the
tenants), in the `acme` organization, through the real services: five customers across the
tiers and standings, three representatives (the admin online as team lead, the owner away, the
viewer offline as a junior), an SLA policy for each ticket priority (the urgent one around the
clock, the others in business hours, Monday to Friday, 09:00-18:00 Europe/Paris), tickets in
every status with replies, an internal note and an attachment, one urgent ticket opened two
hours ago that breached its first-response target (and was escalated by the breach sweep),
an escalation handed over by the AI assistant, two AI agents with their record, five decision
rules (two drafts), refund authority per representative role, refund, compensation and
discount budgets (the refund budget past its 50 % alert), and refunds in every status.

Runs once: an organization that already has customers keeps them.
"""

from datetime import timedelta

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from tenants.models import Membership, Role, Tenant
from tenants.services.lifecycle import organization_update

from .models import CustomerProfile, Ticket
from .services import (
    AUTO,
    agent_assertion_record,
    ai_agent_create,
    budget_create,
    budget_usage_add,
    customer_profile_create,
    decision_rule_create,
    escalation_create,
    refund_approve,
    refund_complete,
    refund_create,
    refund_reject,
    representative_create,
    sla_breaches_mark,
    sla_policy_create,
    ticket_attachment_add,
    ticket_comment_add,
    ticket_create,
    ticket_update,
)
from .services.refunds import REFUND_AUTHORITY_SETTING
from .services.sla_clock import due_fields

DEMO_SLUG = "acme"
CUSTOMERS = (
    ("Initech", "it@initech.example", "ENTERPRISE", "GOOD", 1_250_000, 182_000, 250_000, 14, 20),
    ("Hooli", "support@hooli.example", "PRO", "GOOD", 480_000, 8_400, 10_000, 3, 10),
    ("Pied Piper", "richard@piedpiper.example", "STARTER", "WARNING", 36_000, 950, 1_000, 1, 1),
    ("Vandelay Industries", "art@vandelay.example", "FREE", "GOOD", 0, 120, 500, 1, 1),
    ("Soylent Corp", "billing@soylent.example", "PRO", "SUSPENDED", 215_000, 0, 10_000, 0, 10),
)
BUSINESS_HOURS = {
    "weekdays": [0, 1, 2, 3, 4],
    "start": "09:00",
    "end": "18:00",
    "time_zone": "Europe/Paris",
}
POLICIES = (
    ("Urgent: around the clock", "URGENT", 15, 240, None),
    ("High", "HIGH", 60, 480, BUSINESS_HOURS),
    ("Normal", "NORMAL", 240, 1_440, BUSINESS_HOURS),
    ("Low", "LOW", 480, 4_320, BUSINESS_HOURS),
)


def load(*, stdout, staff) -> None:
    tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
    if tenant is None or CustomerProfile.objects.filter(tenant=tenant).exists():
        return
    owner = Membership.objects.filter(tenant=tenant, role=Role.OWNER).first().user
    for name, email, tier, standing, value, balance, limit, sites, sites_limit in CUSTOMERS:
        customer_profile_create(
            tenant=tenant,
            actor=owner,
            name=name,
            email=email,
            tier=tier,
            standing=standing,
            lifetime_value_cents=value,
            token_balance=balance,
            token_limit=limit,
            active_sites=sites,
            sites_limit=sites_limit,
            billing_cycle="YEARLY" if tier == "ENTERPRISE" else "MONTHLY",
            context={"browser": "Chrome 122", "os": "macOS 14.3"},
            external_id=f"crm-{name.lower().replace(' ', '-')}",
        )
    for role, support_role, status, max_chats in (
        (Role.ADMIN, "TEAM_LEAD", "ONLINE", 8),
        (Role.OWNER, "SENIOR_SUPPORT", "AWAY", 5),
        (Role.VIEWER, "JUNIOR_SUPPORT", "OFFLINE", 3),
    ):
        member = Membership.objects.filter(tenant=tenant, role=role).first()
        if member is not None:
            representative_create(
                tenant=tenant,
                actor=owner,
                user=member.user,
                role=support_role,
                status=status,
                max_chats=max_chats,
            )
    for name, priority, first_response, resolution, hours in POLICIES:
        sla_policy_create(
            tenant=tenant,
            actor=owner,
            name=name,
            priority=priority,
            first_response_minutes=first_response,
            resolution_minutes=resolution,
            business_hours=hours,
        )
    _tickets(tenant, owner)
    _history(tenant, owner)
    _automation(tenant, owner)
    _money(tenant, owner)
    stdout.write(
        "Support: customers, representatives, SLA policies, tickets, escalations, automation, "
        "budgets and refunds in acme."
    )


TICKETS = (
    # subject, customer, priority, category, assigned automatically, moves, satisfaction
    (
        "SSO integration failure",
        "Initech",
        "URGENT",
        "TECHNICAL_ISSUE",
        True,
        ["IN_PROGRESS"],
        None,
    ),
    ("Invoice shows the wrong VAT number", "Hooli", "NORMAL", "BILLING_PAYMENT", True, [], None),
    ("Cannot add a fourth site", "Pied Piper", "HIGH", "ACCOUNT", True, ["WAITING"], None),
    (
        "Dark mode for the dashboard",
        "Vandelay Industries",
        "LOW",
        "FEATURE_REQUEST",
        False,
        [],
        None,
    ),
    ("Password reset email never arrives", "Hooli", "HIGH", "ACCOUNT", True, ["RESOLVED"], 5),
    (
        "Refund for a double charge",
        "Initech",
        "NORMAL",
        "BILLING_PAYMENT",
        True,
        ["RESOLVED", "CLOSED"],
        4,
    ),
)


def _tickets(tenant, owner) -> None:
    """Tickets in every status, assigned within the representatives' capacity; the lead
    replies to those that moved (their first response), and notes and attaches on some."""
    customers = {c.name: c for c in CustomerProfile.objects.filter(tenant=tenant)}
    lead = Membership.objects.filter(tenant=tenant, role=Role.ADMIN).first()
    lead = lead.user if lead is not None else owner
    for subject, customer, priority, category, assign, moves, score in TICKETS:
        ticket = ticket_create(
            tenant=tenant,
            actor=owner,
            subject=subject,
            description=f"{customer} wrote in: {subject.lower()}.",
            priority=priority,
            category=category,
            customer=customers[customer],
            assignee=AUTO if assign else None,
        )
        if moves:
            ticket_comment_add(
                ticket=ticket,
                actor=lead,
                comment="Thanks for reaching out about this. We're looking into it now.",
            )
        if "WAITING" in moves:
            ticket_comment_add(
                ticket=ticket,
                actor=lead,
                comment="Asked the customer which plan they are on; waiting for their answer.",
                is_internal=True,
            )
        if category == "BILLING_PAYMENT" and not moves:
            ticket_attachment_add(
                ticket=ticket,
                actor=owner,
                file=SimpleUploadedFile(
                    "invoice-2026-03.txt",
                    b"Invoice INV-2026-0042\nVAT number shown: FR00000000000\n"
                    b"VAT number expected: FR40303265045\n",
                ),
            )
        for status in moves:
            ticket = ticket_update(ticket=ticket, actor=owner, status=status)
        if score is not None:
            ticket_update(ticket=ticket, actor=owner, customer_satisfaction_score=score)


def _history(tenant, owner) -> None:
    """An urgent ticket opened two hours ago that nobody answered (so its SLA is breached and
    the sweep escalates it), and an escalation the AI assistant handed over."""
    customers = {c.name: c for c in CustomerProfile.objects.filter(tenant=tenant)}
    ticket = ticket_create(
        tenant=tenant,
        actor=owner,
        subject="Checkout returns 502 for every customer",
        description="Soylent Corp reports that the checkout page fails since this morning.",
        priority="URGENT",
        category="TECHNICAL_ISSUE",
        customer=customers["Soylent Corp"],
    )
    # Opened two hours ago: its due times are those it had then.
    ticket.created_at = timezone.now() - timedelta(hours=2)
    Ticket.objects.filter(pk=ticket.pk).update(created_at=ticket.created_at, **due_fields(ticket))
    sla_breaches_mark()
    escalation_create(
        tenant=tenant,
        actor=owner,
        reason="AI_UNABLE_TO_RESOLVE",
        priority="HIGH",
        customer=customers["Hooli"],
        issue_description="The customer asks why their token balance dropped by half overnight.",
        ai_summary="Usage spike on 2 sites; the assistant could not match it to a deploy.",
    )


AGENTS = (
    # name, type, model, thresholds, outcomes (correct, latency ms)
    (
        "Response recommendation",
        "RESPONSE_RECOMMENDATION",
        "gpt-4",
        {"confidence": 0.85, "max_tokens": 500},
        [(True, 1100), (True, 1300), (False, 1500), (True, 900)],
    ),
    (
        "Sentiment analysis",
        "SENTIMENT_ANALYSIS",
        "claude-3-haiku",
        {"confidence": 0.7},
        [(True, 300), (True, 250)],
    ),
)
RULES = (
    (
        "Auto-resolve confident answers",
        1,
        True,
        [
            {"field": "confidence", "operator": "gt", "value": 0.95},
            {"field": "category", "operator": "in", "value": ["ACCOUNT", "OTHER"]},
        ],
        "AUTO_RESOLVE",
        {"comment": "Answered by our assistant."},
    ),
    (
        "Unhappy enterprise customers to a lead",
        2,
        True,
        [
            {"field": "customer_tier", "operator": "eq", "value": "ENTERPRISE"},
            {"field": "sentiment", "operator": "lt", "value": -0.3},
        ],
        "ASSIGN_TO_TEAM",
        {"role": "TEAM_LEAD"},
    ),
    (
        "Billing tickets to a lead (draft)",
        3,
        False,
        [{"field": "category", "operator": "eq", "value": "BILLING_PAYMENT"}],
        "ESCALATE_TO_HUMAN",
        {"priority": "HIGH", "reason": "OTHER"},
    ),
    (
        "Small refunds for customers in good standing",
        4,
        True,
        [
            {"field": "refund_amount_cents", "operator": "lte", "value": 2_000},
            {"field": "customer_standing", "operator": "eq", "value": "GOOD"},
        ],
        "APPROVE_REFUND",
        {},
    ),
    (
        "No refunds to suspended accounts (draft)",
        5,
        False,
        [{"field": "customer_standing", "operator": "eq", "value": "SUSPENDED"}],
        "REJECT_REFUND",
        {"reason": "The account is suspended: billing reviews it first."},
    ),
)

# The most one refund a representative of each role may approve (billing approves any).
REFUND_AUTHORITY = {"JUNIOR_SUPPORT": 0, "SENIOR_SUPPORT": 5_000, "TEAM_LEAD": 50_000}
BUDGETS = (
    # type, period, currency, limit, thresholds, per-customer limit
    ("REFUND", "MONTHLY", "USD", 55_000, (50, 80, 95), 30_000),
    ("COMPENSATION", "QUARTERLY", "USD", 200_000, (80,), None),
    ("DISCOUNT", "YEARLY", "EUR", 500_000, (75, 90), 100_000),
)
REFUNDS = (
    # customer, order, amount, reason, ticket subject, moves, notes
    (
        "Initech",
        "INV-2026-0412",
        25_000,
        "BILLING_ERROR",
        "Refund for a double charge",
        ["APPROVED", "COMPLETED"],
        "Charged twice for the annual plan.",
    ),
    (
        "Hooli",
        "INV-2026-0388",
        4_900,
        "AI_BUG",
        None,
        ["APPROVED"],
        "The assistant answered in the wrong language for a week.",
    ),
    (
        "Pied Piper",
        "INV-2026-0455",
        12_000,
        "SERVICE_DOWNTIME",
        None,
        [],
        "Four hours of downtime during their launch.",
    ),
    ("Soylent Corp", "INV-2026-0301", 8_000, "UX_ISSUE", None, ["REJECTED"], ""),
    ("Vandelay Industries", "INV-2026-0467", 1_500, "OTHER", None, [], "Goodwill gesture."),
)


def _automation(tenant, owner) -> None:
    """Two AI agents with a few recorded outcomes, and three decision rules (one a draft);
    the organization does not apply them to tickets until it turns support_apply_rules on."""
    for name, kind, model, thresholds, outcomes in AGENTS:
        agent = ai_agent_create(
            tenant=tenant,
            actor=owner,
            name=name,
            type=kind,
            model=model,
            data_sources=["Conversation History", "Customer Profile"],
            thresholds=thresholds,
        )
        for correct, latency in outcomes:
            agent_assertion_record(ai_agent=agent, actor=owner, correct=correct, latency_ms=latency)
    for name, priority, enabled, conditions, action, params in RULES:
        decision_rule_create(
            tenant=tenant,
            actor=owner,
            name=name,
            priority=priority,
            enabled=enabled,
            conditions=conditions,
            action=action,
            action_params=params,
        )


def _money(tenant, owner) -> None:
    """Refund authority per role, three budgets and five refunds, through the services (the
    rules are not applied: the organization has not turned support_apply_rules on)."""
    tenant = organization_update(
        tenant=tenant,
        actor=owner,
        data={"settings": {**tenant.settings, REFUND_AUTHORITY_SETTING: REFUND_AUTHORITY}},
    )
    for kind, period, currency, limit, thresholds, per_customer in BUDGETS:
        budget = budget_create(
            tenant=tenant,
            actor=owner,
            type=kind,
            period=period,
            currency=currency,
            limit_cents=limit,
            alert_thresholds=[{"percentage": p, "enabled": True} for p in thresholds],
            refund_limit_per_customer_cents=per_customer,
        )
        if kind == "COMPENSATION":
            budget_usage_add(
                budget=budget,
                actor=owner,
                amount_cents=5_000,
                customer=CustomerProfile.objects.get(tenant=tenant, name="Pied Piper"),
                description="Service credit for the launch-day outage.",
            )
    billing = frozenset({"billing.write"})
    for name, order, amount, reason, subject, moves, notes in REFUNDS:
        customer = CustomerProfile.objects.get(tenant=tenant, name=name)
        ticket = Ticket.objects.filter(tenant=tenant, subject=subject).first() if subject else None
        refund = refund_create(
            tenant=tenant,
            actor=owner,
            order_id=order,
            customer=customer,
            amount_cents=amount,
            reason=reason,
            notes=notes,
            ticket=ticket,
        )
        for move in moves:
            if move == "APPROVED":
                refund_approve(refund=refund, actor=owner, actor_permissions=billing)
            elif move == "REJECTED":
                refund_reject(
                    refund=refund,
                    actor=owner,
                    actor_permissions=billing,
                    reason="The account is suspended: billing reviews it first.",
                )
            else:
                refund_complete(refund=refund, actor=owner)
