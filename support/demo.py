"""The quick start's support desk setup (called by `manage.py load_demo_data` after the
tenants), in the `acme` organization, through the real services: five customers across the
tiers and standings, three representatives (the admin online as team lead, the owner away, the
viewer offline as a junior), and an SLA policy for each ticket priority, the urgent one around
the clock and the others in business hours (Monday to Friday, 09:00-18:00 Europe/Paris).

Runs once: an organization that already has customers keeps them.
"""

from tenants.models import Membership, Role, Tenant

from .models import CustomerProfile
from .services import (
    AUTO,
    customer_profile_create,
    representative_create,
    sla_policy_create,
    ticket_create,
    ticket_update,
)

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
    stdout.write("Support: customers, representatives, SLA policies and tickets in acme.")


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
    """Tickets in every status, assigned within the representatives' capacity."""
    customers = {c.name: c for c in CustomerProfile.objects.filter(tenant=tenant)}
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
        for status in moves:
            ticket = ticket_update(ticket=ticket, actor=owner, status=status)
        if score is not None:
            ticket_update(ticket=ticket, actor=owner, customer_satisfaction_score=score)
