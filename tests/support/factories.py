"""Factories of the support app's models (registered with tests.factories.factory_for)."""

import factory
import pycountry
from django.utils import timezone

from support.models import (
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
)
from support.services.budgets import add_months, calendar_period_start


class CustomerProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CustomerProfile

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.Sequence(lambda n: f"customer{n}@example.org")
    tier = "PRO"
    token_balance = 8_400
    token_limit = 10_000
    active_sites = 3
    sites_limit = 10
    context = factory.LazyFunction(lambda: {"browser": "Chrome 122", "os": "macOS 14.3"})


def _member_user(tenant):
    from tests.factories import MembershipFactory

    return MembershipFactory(tenant=tenant, role="member").user


class RepresentativeFactory(factory.django.DjangoModelFactory):
    """A representative who is an active member of their tenant."""

    class Meta:
        model = Representative

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    user = factory.LazyAttribute(
        lambda representative: (
            __import__("tests.factories", fromlist=["MembershipFactory"])
            .MembershipFactory(tenant=representative.tenant, role="member")
            .user
        )
    )
    role = "SENIOR_SUPPORT"
    status = "ONLINE"
    max_chats = 10


class SlaPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SlaPolicy
        django_get_or_create = ("tenant", "priority")

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.LazyAttribute(lambda policy: f"{policy.priority.title()} tickets")
    priority = factory.Iterator(["LOW", "NORMAL", "HIGH", "URGENT"])
    first_response_minutes = 60
    resolution_minutes = 480


class TicketFactory(factory.django.DjangoModelFactory):
    """An open, unassigned ticket of a customer of the same tenant, numbered from a counter of
    the tests' own (the services number real ones)."""

    class Meta:
        model = Ticket

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    number = factory.Sequence(lambda n: 900_000 + n)
    subject = factory.Sequence(lambda n: f"Ticket {n}")
    description = "The SSO login loops back to the sign-in page."
    priority = "NORMAL"
    category = "TECHNICAL_ISSUE"
    customer = factory.SubFactory(CustomerProfileFactory, tenant=factory.SelfAttribute("..tenant"))


class EscalationFactory(factory.django.DjangoModelFactory):
    """A pending escalation of a customer of the same tenant."""

    class Meta:
        model = Escalation

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    reason = "CUSTOMER_REQUEST"
    issue_description = factory.Sequence(lambda n: f"The customer asked for a person ({n}).")
    priority = "HIGH"
    customer = factory.SubFactory(CustomerProfileFactory, tenant=factory.SelfAttribute("..tenant"))


class TicketAttachmentFactory(factory.django.DjangoModelFactory):
    """A small text file on a ticket of the same tenant (stored, not counted in the quota: the
    service counts real uploads)."""

    class Meta:
        model = TicketAttachment

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    ticket = factory.SubFactory(TicketFactory, tenant=factory.SelfAttribute("..tenant"))
    name = "notes.txt"
    content_type = "text/plain"
    size_bytes = 12
    sha256 = "0" * 64
    file = factory.django.FileField(filename="upload", data=b"hello, desk\n")


class AiAgentFactory(factory.django.DjangoModelFactory):
    """An agent on a model of the gateway catalogue (one of its own: a transactional test's
    flush empties the seeded catalogue)."""

    class Meta:
        model = AiAgent

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Agent {n}")
    type = "RESPONSE_RECOMMENDATION"
    model = factory.LazyFunction(
        lambda: (
            __import__("tests.playground.factories", fromlist=["LanguageModelFactory"])
            .LanguageModelFactory()
            .name
        )
    )
    data_sources = factory.LazyFunction(lambda: ["Conversation History", "Customer Profile"])
    thresholds = factory.LazyFunction(lambda: {"confidence": 0.85, "max_tokens": 500})


class DecisionRuleFactory(factory.django.DjangoModelFactory):
    """A disabled rule (its priority unique anyway) escalating confident-but-unhappy cases."""

    class Meta:
        model = DecisionRule

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    name = factory.Sequence(lambda n: f"Rule {n}")
    priority = factory.Sequence(lambda n: 100 + n)
    conditions = factory.LazyFunction(
        lambda: [{"field": "sentiment", "operator": "lt", "value": -0.5}]
    )
    action = "ESCALATE_TO_HUMAN"
    action_params = factory.LazyFunction(lambda: {"priority": "HIGH"})


def _this_month():
    return calendar_period_start("MONTHLY", timezone.now())


# One budget per type and currency in a tenant: each factory budget gets another currency.
_CURRENCIES = sorted(currency.alpha_3 for currency in pycountry.currencies)


class BudgetFactory(factory.django.DjangoModelFactory):
    """A refund budget covering the current calendar month, in a currency of its own (pass
    `currency="USD"` for the one a USD refund draws from)."""

    class Meta:
        model = Budget

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    type = "REFUND"
    period = "MONTHLY"
    limit_cents = 100_000
    currency = factory.Sequence(lambda n: _CURRENCIES[n % len(_CURRENCIES)])
    alert_thresholds = factory.LazyFunction(lambda: [{"percentage": 80, "enabled": True}])
    period_start = factory.LazyFunction(_this_month)
    period_end = factory.LazyAttribute(lambda budget: add_months(budget.period_start, 1))


class RefundFactory(factory.django.DjangoModelFactory):
    """A pending refund of one of its tenant's customers."""

    class Meta:
        model = Refund

    tenant = factory.SubFactory("tests.tenants.factories.TenantFactory")
    customer = factory.LazyAttribute(lambda refund: CustomerProfileFactory(tenant=refund.tenant))
    order_id = factory.Sequence(lambda n: f"ORD-{n}")
    amount_cents = 2_500
    currency = "USD"
    reason = "AI_BUG"
    notes = "Charged twice."
