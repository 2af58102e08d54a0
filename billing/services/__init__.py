"""Billing state changes, one module per area: the one place their rules live, for every
caller (API, admin, management commands, tasks).

    plans            the plan catalogue (platform staff)
    subscriptions    the tenant's subscription: plan changes with proration, cancel, resume
    invoices         invoices issued with their lines and gapless numbers; voiding
    checkout         signing up for a paid plan through the provider's hosted page
    payments         paying invoices through the provider (one charge each), or offline
    provider_events  the provider's signed events, verified and acted on once
    renewals         period boundaries: the next period and its invoice (beat)
    dunning          overdue invoices, past-due subscriptions, suspension and restoring
    credit_notes     money given back against a paid invoice: a refund, or credit

A service is named `<entity>_<action>` and takes keyword arguments only. It runs under
`@transaction.atomic`, locks the rows its checks read (the subscription, the invoice), refuses
with `config.exceptions` errors, and records its event with `audit.services.record` in the same
transaction; the public event catalogue turns the billing events into webhooks and
notifications to the `billing` role. docs/billing.md describes the model.
"""

from .checkout import (
    checkout_complete,
    checkout_create,
    checkout_is_open,
    invoice_issue_first_period,
)
from .credit_notes import credit_note_issue
from .dunning import (
    DunningReport,
    dunning_run,
    dunning_settle,
    dunning_suspend,
    invoice_mark_overdue,
)
from .invoices import LineSpec, invoice_issue, invoice_resend, invoice_void
from .payments import invoice_collect, invoice_mark_paid_offline, invoice_pay
from .plans import PLAN_FIELDS, plan_create, plan_delete, plan_update
from .provider_events import provider_event_receive
from .renewals import (
    RenewalReport,
    period_usage,
    subscription_renew,
    subscriptions_due,
    subscriptions_renew_due,
    usage_lines,
)
from .subscriptions import (
    PlanChange,
    PlanChangeResult,
    plan_change_quote,
    subscription_cancel,
    subscription_change_plan,
    subscription_ensure,
    subscription_resume,
)

__all__ = [
    "PLAN_FIELDS",
    "DunningReport",
    "LineSpec",
    "PlanChange",
    "PlanChangeResult",
    "RenewalReport",
    "checkout_complete",
    "checkout_create",
    "checkout_is_open",
    "credit_note_issue",
    "dunning_run",
    "dunning_settle",
    "dunning_suspend",
    "invoice_collect",
    "invoice_issue",
    "invoice_issue_first_period",
    "invoice_mark_overdue",
    "invoice_mark_paid_offline",
    "invoice_pay",
    "invoice_resend",
    "invoice_void",
    "period_usage",
    "plan_change_quote",
    "plan_create",
    "plan_delete",
    "plan_update",
    "provider_event_receive",
    "subscription_cancel",
    "subscription_change_plan",
    "subscription_ensure",
    "subscription_renew",
    "subscription_resume",
    "subscriptions_due",
    "subscriptions_renew_due",
    "usage_lines",
]
