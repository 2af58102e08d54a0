"""The public event catalogue: which audit events are also public events (webhooks and
notifications), what each one's `data` holds, who may subscribe and who is notified.

A state change is recorded once, with `audit.services.record()`. When its audit type is the
source of a catalogue entry, the entry builds the public event from the audit payload, in the
same transaction (notifications.services.events): the webhook deliveries of every subscribed
endpoint and the notifications of the entry's roles. An app that adds a public event adds an
entry here, nothing else.

`data` holds exactly the properties of the entry's JSON schema (the schema is the whitelist:
no internal field and no secret reaches a receiver), ids as strings. Every entry has an
example that validates against its schema, and a test produces every entry from a real
service (tests/notifications/test_catalog.py).

Every public event has the same envelope:

    {"id": "<uuid>", "type": "organization.member.joined", "created_at": "<ISO 8601>",
     "organization_id": "<uuid>", "data": {...}}
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tenants.models import Role
from tenants.permissions import ALL_PERMISSIONS, ROLE_PERMISSIONS

# The value of `events` that subscribes an endpoint to every public event type.
ALL_EVENTS = "*"

_UUID = {"type": "string", "format": "uuid"}
_NULLABLE_UUID = {"type": ["string", "null"], "format": "uuid"}
_EMAIL = {"type": ["string", "null"]}
_ROLE = {"type": "string", "enum": [role.value for role in Role]}
_TIME = {"type": "string", "format": "date-time"}
_TEXT = {"type": "string"}
_COUNT = {"type": "integer", "minimum": 0}


def _schema(**properties) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class Notice:
    """What the notified roles receive: `title` and `message` are format strings over `data`."""

    title: str
    message: str
    type: str = "info"


@dataclass(frozen=True)
class EventType:
    type: str
    description: str
    # The audit event types that produce it.
    sources: tuple[str, ...]
    # What a member needs to subscribe an endpoint to it (tenants.permissions).
    permission: str
    schema: dict
    example: dict
    # Roles whose active members are notified (in-app, email, SMS, per their preferences).
    notify_roles: tuple[str, ...] = ()
    # A field of the event's data naming a user notified too (the assignee of a ticket), when
    # they are an active member of the organization.
    notify_user_field: str = ""
    notice: Notice | None = None
    # audit payload -> data; default: the schema's properties, read off the payload.
    build: Callable[[Mapping], dict] | None = None
    # False: sent only to the endpoint the audit payload names (`endpoint_id`), never to
    # subscribers (the test event).
    broadcast: bool = True

    def data(self, payload: Mapping) -> dict:
        if self.build is not None:
            return self.build(payload)
        return {name: payload.get(name) for name in self.schema["properties"]}

    @property
    def notifies(self) -> bool:
        return bool(self.notify_roles or self.notify_user_field) and self.notice is not None

    @property
    def roles(self) -> list[str]:
        """The roles whose default permissions let them subscribe."""
        return [role.value for role in Role if self.permission in ROLE_PERMISSIONS[role]]


def _status_change(payload: Mapping) -> dict:
    return {
        "previous_status": payload.get("from"),
        "status": payload.get("to"),
        "reason": payload.get("reason", ""),
    }


_MEMBER = {"membership_id": _UUID, "user_id": _NULLABLE_UUID, "email": _EMAIL}
_MEMBER_EXAMPLE = {
    "membership_id": "5b0e7a36-3c1e-4a4f-9f5e-2d8a43c8e0f1",
    "user_id": "0d6c2f8e-7b1a-4c55-8a3e-61b2f4d9a7c2",
    "email": "ada@example.com",
}
_ENDPOINT_EXAMPLE = "9a3f1c2e-4b5d-4e6f-8a7b-1c2d3e4f5a6b"
# An API key's public fields: never the key or its hash.
_API_KEY = _schema(api_key_id=_UUID, name=_TEXT, key_prefix=_TEXT)
_API_KEY_EXAMPLE = {
    "api_key_id": "7e1d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b",
    "name": "CI",
    "key_prefix": "cp_1a2b...9f8e",
}

# A prompt template's public fields (playground): never its prompts or variables.
_TEMPLATE = {
    "template_id": _UUID,
    "name": _TEXT,
    "category": _TEXT,
    "status": {"type": "string", "enum": ["draft", "active", "archived"]},
    "latest_version": {"type": "integer", "minimum": 1},
    "production_version": {"type": ["integer", "null"], "minimum": 1},
}
_TEMPLATE_EXAMPLE = {
    "template_id": "3c4d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f",
    "name": "FAQ answer",
    "category": "faq",
    "status": "active",
    "latest_version": 2,
    "production_version": 1,
}

# Billing: a plan change, cancellation or resumption, and an issued invoice.
_CHANGES = [
    "subscribed", "trial_started", "upgrade", "downgrade", "interval_change", "same_price",
    "during_trial", "keep_current", "trial_ended", "renewed_on_new_plan", "canceled", "resumed",
    "ended",
]  # fmt: skip


def _subscription_change(payload: Mapping) -> dict:
    """One shape for the three audit events of a subscription's change."""
    if "change" in payload:
        change, old_plan, new_plan = payload["change"], payload["old_plan"], payload["new_plan"]
    else:
        change = "canceled" if "at_period_end" in payload else "resumed"
        old_plan = new_plan = payload.get("plan")
    return {
        "subscription_id": payload.get("subscription_id"),
        "change": change,
        "old_plan": old_plan,
        "new_plan": new_plan,
        "effective_at": payload.get("effective_at"),
        "proration_amount_cents": payload.get("proration_amount_cents", 0),
        "invoice_id": payload.get("invoice_id"),
    }


_PAYMENT = _schema(
    payment_id=_UUID,
    invoice_id=_UUID,
    invoice_number=_TEXT,
    amount_cents=_COUNT,
    currency=_TEXT,
    provider=_TEXT,
    payment_method=_TEXT,
    failure_code=_TEXT,
    failure_message=_TEXT,
)
_PAYMENT_EXAMPLE = {
    "payment_id": "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e",
    "invoice_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
    "invoice_number": "INV-2026-0042",
    "amount_cents": 14900,
    "currency": "USD",
    "provider": "local",
    "payment_method": "visa ending 4242",
    "failure_code": "",
    "failure_message": "",
}

# Orchestration runs and workflow jobs (playground.services.runs / .workflows).
_RUN = dict(
    run_id=_UUID,
    project_id=_UUID,
    template_id=_NULLABLE_UUID,
    status={"type": "string", "enum": ["pending", "running", "completed", "failed", "cancelled"]},
    total_phases=_COUNT,
    completed_phases=_COUNT,
    failed_phases=_COUNT,
    success_rate={"type": "number", "minimum": 0, "maximum": 100},
    execution_time_ms=_COUNT,
)
_RUN_EXAMPLE = {
    "run_id": "3c1f0e2a-7b4d-4e8a-9c2f-5d6e7f8a9b0c",
    "project_id": "8d2e4f6a-1b3c-4d5e-8f9a-0b1c2d3e4f5a",
    "template_id": None,
    "status": "completed",
    "total_phases": 7,
    "completed_phases": 6,
    "failed_phases": 1,
    "success_rate": 85.7,
    "execution_time_ms": 45000,
}
_WORKFLOW = dict(
    job_id=_UUID,
    workflow_type=_TEXT,
    status={"type": "string", "enum": ["completed", "failed"]},
    execution_time_ms=_COUNT,
)
_WORKFLOW_EXAMPLE = {
    "job_id": "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b",
    "workflow_type": "usage_report",
    "execution_time_ms": 1200,
}


_RUN_DESCRIPTIONS = {
    "started": "An orchestration run was started; its phases are queued for a worker.",
    "completed": "A run ended with at least one phase completed (`success_rate` says how many).",
    "failed": "A run ended with no phase completed, an exhausted tokens quota, or a worker that "
    "stopped too often; `error` says which.",
    "cancelled": "A run was cancelled; its phase in progress keeps the tokens it used.",
}
_RUN_STARTED_EXAMPLE = {
    **_RUN_EXAMPLE,
    "status": "pending",
    "completed_phases": 0,
    "failed_phases": 0,
    "success_rate": 0.0,
    "execution_time_ms": 0,
}
_RUN_FAILED_EXAMPLE = {
    **_RUN_STARTED_EXAMPLE,
    "status": "failed",
    "failed_phases": 7,
    "execution_time_ms": 52000,
    "error": "No phase completed.",
}
_RUN_CANCELLED_EXAMPLE = {
    **_RUN_EXAMPLE,
    "status": "cancelled",
    "completed_phases": 3,
    "failed_phases": 0,
    "success_rate": 42.9,
}


def _run_event(status: str, example: dict, **extra) -> EventType:
    return EventType(
        type=f"orchestration.{status}",
        description=_RUN_DESCRIPTIONS[status],
        sources=(f"orchestration.{status}",),
        permission="playground.read",
        schema=_schema(**_RUN, **extra),
        example=example,
    )


# Security (security.services): incidents, breach deadlines, audits. Never a member's email.
_SEVERITY = {"type": "string", "enum": ["low", "medium", "high", "critical"]}
_INCIDENT = dict(
    incident_id=_UUID,
    title=_TEXT,
    severity=_SEVERITY,
    category={
        "type": "string",
        "enum": [
            "data_breach",
            "unauthorized_access",
            "pii_exposure",
            "system_compromise",
            "other",
        ],
    },
    status={"type": "string", "enum": ["open", "investigating", "resolved", "closed"]},
    personal_data_breach={"type": "boolean"},
    raised_by={"type": "string", "enum": ["member", "audit_chain", "login_lockouts"]},
    detected_at=_TIME,
)
_INCIDENT_EXAMPLE = {
    "incident_id": "4e5f6a7b-8c9d-4e0f-9a1b-2c3d4e5f6a7b",
    "title": "Unauthorized access attempt detected",
    "severity": "high",
    "category": "unauthorized_access",
    "status": "open",
    "personal_data_breach": False,
    "raised_by": "member",
    "detected_at": "2026-01-12T10:30:00+00:00",
}
_SECURITY_ROLES = (Role.OWNER, Role.ADMIN, Role.DPO)


# Support desk tickets (support.services.tickets): never the customer's email.
_TICKET = dict(
    ticket_id=_UUID,
    ticket_number=_TEXT,
    subject=_TEXT,
    status={
        "type": "string",
        "enum": ["OPEN", "IN_PROGRESS", "WAITING", "RESOLVED", "CLOSED"],
    },
    priority={"type": "string", "enum": ["LOW", "NORMAL", "HIGH", "URGENT"]},
    category={
        "type": "string",
        "enum": ["TECHNICAL_ISSUE", "BILLING_PAYMENT", "ACCOUNT", "FEATURE_REQUEST", "OTHER"],
    },
    customer_id=_NULLABLE_UUID,
    assignee_id=_NULLABLE_UUID,
)
_PRIORITIES = ["LOW", "NORMAL", "HIGH", "URGENT"]
_ESCALATION = _schema(
    escalation_id=_UUID,
    reason={
        "type": "string",
        "enum": [
            "AI_UNABLE_TO_RESOLVE",
            "CUSTOMER_REQUEST",
            "SLA_BREACH",
            "NEGATIVE_SENTIMENT",
            "OTHER",
        ],
    },
    priority={"type": "string", "enum": [*_PRIORITIES, "CRITICAL"]},
    status={"type": "string", "enum": ["PENDING", "ASSIGNED", "IN_PROGRESS", "RESOLVED"]},
    ticket_id=_NULLABLE_UUID,
    customer_id=_NULLABLE_UUID,
    conversation_id=_NULLABLE_UUID,
    assignee_id=_NULLABLE_UUID,
    assignee_user_id=_NULLABLE_UUID,
    created_at=_TIME,
)
_TICKET_EXAMPLE = {
    "ticket_id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
    "ticket_number": "TICKET-1001",
    "subject": "SSO integration failure",
    "status": "OPEN",
    "priority": "HIGH",
    "category": "TECHNICAL_ISSUE",
    "customer_id": "3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f",
    "assignee_id": None,
}


# Budgets and refunds (support): the organization's money towards its own customers.
_AMOUNT = {"type": "integer", "minimum": 0}
_BUDGET = {
    "budget_id": _UUID,
    "type": {"type": "string", "enum": ["REFUND", "COMPENSATION", "DISCOUNT", "CREDIT"]},
    "period": {"type": "string", "enum": ["MONTHLY", "QUARTERLY", "YEARLY"]},
    "currency": _TEXT,
    "limit_cents": _AMOUNT,
    "spent_cents": _AMOUNT,
    "remaining_cents": _AMOUNT,
    "period_start": _TIME,
    "period_end": _TIME,
}
_BUDGET_EXAMPLE = {
    "budget_id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
    "type": "REFUND",
    "period": "MONTHLY",
    "currency": "USD",
    "limit_cents": 1_000_000,
    "spent_cents": 812_500,
    "remaining_cents": 187_500,
    "period_start": "2026-03-01T00:00:00+00:00",
    "period_end": "2026-04-01T00:00:00+00:00",
}
_REFUND = {
    "refund_id": _UUID,
    "order_id": _TEXT,
    "customer_id": _UUID,
    "amount_cents": _AMOUNT,
    "currency": _TEXT,
    "reason": {
        "type": "string",
        "enum": ["AI_BUG", "SERVICE_DOWNTIME", "UX_ISSUE", "BILLING_ERROR", "OTHER"],
    },
    "status": {"type": "string", "enum": ["PENDING", "APPROVED", "REJECTED", "COMPLETED"]},
    "ticket_id": _NULLABLE_UUID,
    "requested_by_id": _NULLABLE_UUID,
}
_REFUND_EXAMPLE = {
    "refund_id": "3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f",
    "order_id": "48292",
    "customer_id": "8c9d0e1f-2a3b-4c4d-9e5f-6a7b8c9d0e1f",
    "amount_cents": 5_000,
    "currency": "USD",
    "reason": "AI_BUG",
    "status": "PENDING",
    "ticket_id": None,
    "requested_by_id": "0d6c2f8e-7b1a-4c55-8a3e-61b2f4d9a7c2",
}
_REFUND_EVENTS = (
    EventType(
        type="refund.requested",
        description="A refund was requested for a customer (PENDING). Billing and admins, who "
        "may approve it, are notified.",
        sources=("refund.requested",),
        permission="support.read",
        schema=_schema(**_REFUND),
        example=_REFUND_EXAMPLE,
        notify_roles=(Role.BILLING, Role.ADMIN),
        notice=Notice(
            title="Refund requested: order {order_id}",
            message="{amount_cents} cents ({currency}) for {reason}, awaiting approval.",
        ),
    ),
    EventType(
        type="refund.approved",
        description="A refund was approved and drawn from the refund budget `budget_id` (null "
        "when none covers its currency); `decision_rule_id` when a rule approved it. Its "
        "requester is notified.",
        sources=("refund.approved",),
        permission="support.read",
        schema=_schema(**_REFUND, budget_id=_NULLABLE_UUID, decision_rule_id=_NULLABLE_UUID),
        example={
            **_REFUND_EXAMPLE,
            "status": "APPROVED",
            "budget_id": _BUDGET_EXAMPLE["budget_id"],
            "decision_rule_id": None,
        },
        notify_user_field="requested_by_id",
        notice=Notice(
            title="Refund approved: order {order_id}",
            message="{amount_cents} cents ({currency}) approved.",
        ),
    ),
    EventType(
        type="refund.rejected",
        description="A refund was rejected (`rejection_reason`); `decision_rule_id` when a "
        "rule rejected it. Its requester is notified.",
        sources=("refund.rejected",),
        permission="support.read",
        schema=_schema(**_REFUND, rejection_reason=_TEXT, decision_rule_id=_NULLABLE_UUID),
        example={
            **_REFUND_EXAMPLE,
            "status": "REJECTED",
            "rejection_reason": "The order was already credited.",
            "decision_rule_id": None,
        },
        notify_user_field="requested_by_id",
        notice=Notice(
            title="Refund rejected: order {order_id}",
            message="{rejection_reason}",
        ),
    ),
)

CATALOG: tuple[EventType, ...] = (
    EventType(
        type="organization.member.invited",
        description="A person was invited to join the organization.",
        sources=("member.invited",),
        permission="members.read",
        schema=_schema(**_MEMBER, role=_ROLE, invitation_id=_UUID, expires_at=_TIME),
        example={
            **_MEMBER_EXAMPLE,
            "user_id": None,
            "role": "member",
            "invitation_id": "c1f4e2d3-9b8a-4c7d-8e6f-5a4b3c2d1e0f",
            "expires_at": "2026-12-08T10:30:00+00:00",
        },
    ),
    EventType(
        type="organization.member.joined",
        description="A person became an active member (accepted an invitation, or was added).",
        sources=("member.joined", "member.added"),
        permission="members.read",
        schema=_schema(**_MEMBER, role=_ROLE),
        example={**_MEMBER_EXAMPLE, "role": "member"},
        notify_roles=(Role.ADMIN,),
        notice=Notice(
            title="New member: {email}",
            message="{email} joined the organization as {role}.",
        ),
    ),
    EventType(
        type="organization.member.role_changed",
        description="A member's role changed.",
        sources=("member.role_changed",),
        permission="members.read",
        schema=_schema(**_MEMBER, old_role=_ROLE, new_role=_ROLE),
        example={**_MEMBER_EXAMPLE, "old_role": "member", "new_role": "admin"},
    ),
    EventType(
        type="organization.member.removed",
        description="A member was removed from the organization.",
        sources=("member.removed",),
        permission="members.read",
        schema=_schema(**_MEMBER, role=_ROLE),
        example={**_MEMBER_EXAMPLE, "role": "viewer"},
    ),
    EventType(
        type="organization.status_changed",
        description=(
            "The organization was activated, suspended, restored or cancelled. A suspended "
            "organization's API answers 403 TENANT_SUSPENDED until it is restored."
        ),
        sources=("tenant.activated", "tenant.suspended", "tenant.restored", "tenant.cancelled"),
        permission="settings.read",
        schema=_schema(
            previous_status=_TEXT,
            status=_TEXT,
            reason=_TEXT,
        ),
        example={"previous_status": "active", "status": "suspended", "reason": "Unpaid invoice"},
        build=_status_change,
    ),
    EventType(
        type="organization.quota.warning",
        description=(
            "A quota passed its warning threshold (percent of the limit) in the current "
            "period; sent once per resource and period."
        ),
        sources=("quota.warning",),
        permission="settings.read",
        schema=_schema(
            resource={
                "type": "string",
                "enum": ["documents", "users", "tokens", "storage", "api_calls"],
            },
            used=_COUNT,
            limit=_COUNT,
            warning_threshold={"type": "number"},
        ),
        example={"resource": "tokens", "used": 82000, "limit": 100000, "warning_threshold": 80.0},
        notify_roles=(Role.OWNER, Role.ADMIN),
        notice=Notice(
            title="Quota warning: {resource}",
            message="{resource} is at {used} of {limit} this period.",
            type="warning",
        ),
    ),
    EventType(
        type="organization.api_key.created",
        description="An API key was created (its secret is never part of an event).",
        sources=("api_key.created",),
        permission="keys.read",
        schema=_API_KEY,
        example=_API_KEY_EXAMPLE,
    ),
    EventType(
        type="organization.api_key.revoked",
        description="An API key was revoked; requests with it are refused from now on.",
        sources=("api_key.revoked",),
        permission="keys.read",
        schema=_API_KEY,
        example=_API_KEY_EXAMPLE,
    ),
    EventType(
        type="webhook.endpoint.disabled",
        description=(
            "A webhook endpoint was disabled after failing with no success for "
            "WEBHOOK_DISABLE_AFTER_DAYS days. Re-enable it, then replay what it missed."
        ),
        sources=("webhook.endpoint.disabled",),
        permission="settings.read",
        schema=_schema(endpoint_id=_UUID, name=_TEXT, url=_TEXT, disabled_reason=_TEXT),
        example={
            "endpoint_id": _ENDPOINT_EXAMPLE,
            "name": "Orders service",
            "url": "https://hooks.example.com/control-plane",
            "disabled_reason": "Failing since 2026-11-25T10:00:00+00:00 with no success.",
        },
        notify_roles=(Role.OWNER, Role.ADMIN),
        notice=Notice(
            title="Webhook endpoint disabled: {name}",
            message="{url} was disabled: {disabled_reason}",
            type="error",
        ),
    ),
    EventType(
        type="webhook.test",
        description=(
            "A test event, sent only to the endpoint named in `POST webhooks/{id}/test`; "
            "cannot be subscribed to."
        ),
        sources=("webhook.endpoint.tested",),
        permission="settings.read",
        schema=_schema(endpoint_id=_UUID, message=_TEXT),
        example={"endpoint_id": _ENDPOINT_EXAMPLE, "message": "This is a test event."},
        broadcast=False,
    ),
    EventType(
        type="playground.template.created",
        description="A prompt template was created (its version 1).",
        sources=("prompt_template.created",),
        permission="playground.read",
        schema=_schema(**_TEMPLATE),
        example=_TEMPLATE_EXAMPLE,
    ),
    EventType(
        type="playground.template.versioned",
        description="A prompt template's content was saved as a new version (now `latest`).",
        sources=("prompt_template.versioned",),
        permission="playground.read",
        schema=_schema(**_TEMPLATE, version={"type": "integer", "minimum": 1}),
        example={**_TEMPLATE_EXAMPLE, "version": 2},
    ),
    EventType(
        type="playground.template.published",
        description="A version of a prompt template was published: the `production` label moved.",
        sources=("prompt_template.published",),
        permission="playground.read",
        schema=_schema(
            **_TEMPLATE,
            version={"type": "integer", "minimum": 1},
            previous_version={"type": ["integer", "null"], "minimum": 1},
        ),
        example={**_TEMPLATE_EXAMPLE, "version": 1, "previous_version": None},
    ),
    EventType(
        type="billing.subscription.changed",
        description=(
            "The subscription changed: a plan change (an upgrade applies now and is charged pro "
            "rata on `invoice_id`; a downgrade or a change of interval applies at "
            "`effective_at`, the period end), a cancellation, or its undoing."
        ),
        sources=(
            "billing.subscription.changed",
            "billing.subscription.canceled",
            "billing.subscription.resumed",
        ),
        permission="billing.read",
        schema=_schema(
            subscription_id=_UUID,
            change={"type": "string", "enum": _CHANGES},
            old_plan=_TEXT,
            new_plan=_TEXT,
            effective_at=_TIME,
            proration_amount_cents=_COUNT,
            invoice_id=_NULLABLE_UUID,
        ),
        example={
            "subscription_id": "2f6e8a1c-5b3d-4c7e-9a2f-1d3c5e7a9b0d",
            "change": "upgrade",
            "old_plan": "team",
            "new_plan": "business",
            "effective_at": "2026-01-12T10:30:00+00:00",
            "proration_amount_cents": 15776,
            "invoice_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
        },
        notify_roles=(Role.OWNER, Role.BILLING),
        notice=Notice(
            title="Subscription {change}: {new_plan}",
            message="The subscription's {change} from {old_plan} to {new_plan} takes effect "
            "at {effective_at}.",
        ),
        build=_subscription_change,
    ),
    EventType(
        type="billing.invoice.created",
        description=(
            "An invoice was issued: a period's (the plan in advance, usage in arrears) or a plan "
            "change's proration. Amounts are integer cents of `currency`."
        ),
        sources=("billing.invoice.created",),
        permission="billing.read",
        schema=_schema(
            invoice_id=_UUID,
            number=_TEXT,
            reason={"type": "string", "enum": ["period", "plan_change"]},
            status={"type": "string", "enum": ["pending", "paid"]},
            total_cents={"type": "integer"},
            currency=_TEXT,
            due_date={"type": "string", "format": "date"},
            period_start=_TIME,
            period_end=_TIME,
        ),
        example={
            "invoice_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
            "number": "INV-2026-0042",
            "reason": "period",
            "status": "pending",
            "total_cents": 14900,
            "currency": "USD",
            "due_date": "2026-02-15",
            "period_start": "2026-02-01T00:00:00+00:00",
            "period_end": "2026-03-01T00:00:00+00:00",
        },
        notify_roles=(Role.OWNER, Role.BILLING),
        notice=Notice(
            title="Invoice {number}",
            message="Invoice {number} ({total_cents} cents {currency}) is due on {due_date}.",
        ),
    ),
    EventType(
        type="billing.payment.succeeded",
        description="An invoice was paid (through the payment provider, or offline).",
        sources=("billing.payment.succeeded",),
        permission="billing.read",
        schema=_PAYMENT,
        example=_PAYMENT_EXAMPLE,
        notify_roles=(Role.OWNER, Role.BILLING),
        notice=Notice(
            title="Payment received: {invoice_number}",
            message="{amount_cents} cents {currency} paid for invoice {invoice_number}.",
        ),
    ),
    EventType(
        type="billing.payment.failed",
        description=(
            "A payment was declined; the invoice stays unpaid. `failure_code` and "
            "`failure_message` are the provider's."
        ),
        sources=("billing.payment.failed",),
        permission="billing.read",
        schema=_PAYMENT,
        example={
            **_PAYMENT_EXAMPLE,
            "failure_code": "card_declined",
            "failure_message": "Your card was declined.",
        },
        notify_roles=(Role.OWNER, Role.BILLING),
        notice=Notice(
            title="Payment failed: {invoice_number}",
            message="Paying invoice {invoice_number} failed: {failure_message}",
            type="error",
        ),
    ),
    EventType(
        type="billing.invoice.overdue",
        description=(
            "An invoice is unpaid after its due date; the subscription is past due. Unpaid "
            "BILLING_SUSPEND_AFTER_DAYS days after the due date, the organization is suspended."
        ),
        sources=("billing.invoice.overdue",),
        permission="billing.read",
        schema=_schema(
            invoice_id=_UUID,
            number=_TEXT,
            amount_due_cents=_COUNT,
            currency=_TEXT,
            due_date={"type": "string", "format": "date"},
        ),
        example={
            "invoice_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
            "number": "INV-2026-0042",
            "amount_due_cents": 14900,
            "currency": "USD",
            "due_date": "2026-02-15",
        },
        notify_roles=(Role.OWNER, Role.BILLING),
        notice=Notice(
            title="Invoice overdue: {number}",
            message="Invoice {number} ({amount_due_cents} cents {currency}) was due on {due_date}.",
            type="warning",
        ),
    ),
    EventType(
        type="billing.credit_note.created",
        description=(
            "Money was given back against a paid invoice: a refund through the payment "
            "provider, or credit that the next invoices use up."
        ),
        sources=("billing.credit_note.created",),
        permission="billing.read",
        schema=_schema(
            credit_note_id=_UUID,
            number=_TEXT,
            invoice_id=_UUID,
            invoice_number=_TEXT,
            kind={"type": "string", "enum": ["refund", "credit"]},
            amount_cents=_COUNT,
            currency=_TEXT,
            reason=_TEXT,
        ),
        example={
            "credit_note_id": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
            "number": "CN-2026-0001",
            "invoice_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
            "invoice_number": "INV-2026-0042",
            "kind": "credit",
            "amount_cents": 2500,
            "currency": "USD",
            "reason": "Outage on 3 February",
        },
        notify_roles=(Role.OWNER, Role.BILLING),
        notice=Notice(
            title="Credit note {number}",
            message="{amount_cents} cents {currency} ({kind}) against invoice {invoice_number}.",
        ),
    ),
    EventType(
        type="billing.invoice.sent",
        description="An issued invoice was sent again to the billing contacts (by staff).",
        sources=("billing.invoice.resent",),
        permission="billing.read",
        schema=_schema(
            invoice_id=_UUID,
            number=_TEXT,
            status={"type": "string", "enum": ["pending", "paid", "overdue", "void"]},
            amount_due_cents=_COUNT,
            currency=_TEXT,
            due_date={"type": ["string", "null"], "format": "date"},
        ),
        example={
            "invoice_id": "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
            "number": "INV-2026-0042",
            "status": "overdue",
            "amount_due_cents": 14900,
            "currency": "USD",
            "due_date": "2026-02-15",
        },
        notify_roles=(Role.OWNER, Role.BILLING),
        notice=Notice(
            title="Invoice {number}",
            message="Invoice {number} ({status}): {amount_due_cents} cents {currency} due.",
        ),
    ),
    EventType(
        type="security.incident.created",
        description=(
            "A security incident was logged by a member, or raised by the platform itself "
            "(`raised_by`: a broken audit chain, a burst of locked-out logins)."
        ),
        sources=("security.incident.created",),
        permission="security.read",
        schema=_schema(**_INCIDENT),
        example=_INCIDENT_EXAMPLE,
        notify_roles=_SECURITY_ROLES,
        notice=Notice(
            title="Security incident: {title}",
            message="A {severity} {category} incident was opened.",
            type="warning",
        ),
    ),
    EventType(
        type="security.incident.resolved",
        description="A security incident was resolved (`resolved_at`).",
        sources=("security.incident.resolved",),
        permission="security.read",
        schema=_schema(**_INCIDENT, resolved_at=_TIME),
        example={
            **_INCIDENT_EXAMPLE,
            "status": "resolved",
            "resolved_at": "2026-01-12T18:45:00+00:00",
        },
        notify_roles=_SECURITY_ROLES,
        notice=Notice(
            title="Incident resolved: {title}",
            message="The {severity} {category} incident was resolved.",
            type="success",
        ),
    ),
    EventType(
        type="security.breach.notification_due",
        description=(
            "A personal data breach must be notified to the supervisory authority within 72 "
            "hours of its detection (GDPR Art. 33): sent once 24 hours before the deadline "
            "(`stage` due_soon) and once when it passed with no notification (`overdue`)."
        ),
        sources=("security.breach.notification_due",),
        permission="security.read",
        schema=_schema(
            **_INCIDENT,
            stage={"type": "string", "enum": ["due_soon", "overdue"]},
            authority_notification_due_at=_TIME,
            hours_remaining={"type": "number"},
        ),
        example={
            **_INCIDENT_EXAMPLE,
            "category": "data_breach",
            "personal_data_breach": True,
            "stage": "due_soon",
            "authority_notification_due_at": "2026-01-15T10:30:00+00:00",
            "hours_remaining": 23.9,
        },
        notify_roles=_SECURITY_ROLES,
        notice=Notice(
            title="Breach notification deadline: {title}",
            message=(
                "Notify the supervisory authority by {authority_notification_due_at} ({stage})."
            ),
            type="error",
        ),
    ),
    EventType(
        type="compliance.audit.completed",
        description="A compliance audit was completed with its score (0-100) and findings.",
        sources=("compliance.audit.completed",),
        permission="security.read",
        schema=_schema(
            audit_id=_UUID,
            title=_TEXT,
            framework={
                "type": "string",
                "enum": ["gdpr", "hds", "iso27001", "soc2", "custom"],
            },
            audit_type={
                "type": "string",
                "enum": ["internal", "external", "regulatory", "certification"],
            },
            score={"type": "integer", "minimum": 0, "maximum": 100},
            findings_count=_COUNT,
            open_findings=_COUNT,
            completed_at=_TIME,
        ),
        example={
            "audit_id": "5f6a7b8c-9d0e-4f1a-8b2c-3d4e5f6a7b8c",
            "title": "Q1 2026 GDPR Compliance Review",
            "framework": "gdpr",
            "audit_type": "internal",
            "score": 85,
            "findings_count": 1,
            "open_findings": 1,
            "completed_at": "2026-02-01T16:00:00+00:00",
        },
        notify_roles=_SECURITY_ROLES,
        notice=Notice(
            title="Audit completed: {title}",
            message="The {framework} audit scored {score} with {open_findings} open finding(s).",
            type="success",
        ),
    ),
    EventType(
        type="support.ticket.created",
        description="A support ticket was opened, with its number (TICKET-1001, ...).",
        sources=("support.ticket.created",),
        permission="support.read",
        schema=_schema(**_TICKET, created_at=_TIME),
        example={**_TICKET_EXAMPLE, "created_at": "2026-03-02T09:00:00+00:00"},
    ),
    EventType(
        type="support.ticket.assigned",
        description="A ticket was given to a representative (`assignee_id`, whose user "
        "`assignee_user_id` is notified).",
        sources=("support.ticket.assigned",),
        permission="support.read",
        schema=_schema(
            **_TICKET, assignee_user_id=_NULLABLE_UUID, previous_assignee_id=_NULLABLE_UUID
        ),
        example={
            **_TICKET_EXAMPLE,
            "assignee_id": "4d5e6f7a-8b9c-4d0e-9f1a-3b4c5d6e7f8a",
            "assignee_user_id": "0d6c2f8e-7b1a-4c55-8a3e-61b2f4d9a7c2",
            "previous_assignee_id": None,
        },
        notify_user_field="assignee_user_id",
        notice=Notice(
            title="Ticket assigned: {ticket_number}",
            message="{ticket_number} ({priority}) is yours: {subject}",
        ),
    ),
    EventType(
        type="support.ticket.resolved",
        description="A ticket was resolved (`resolved_at`).",
        sources=("support.ticket.resolved",),
        permission="support.read",
        schema=_schema(**_TICKET, resolved_at=_TIME),
        example={
            **_TICKET_EXAMPLE,
            "status": "RESOLVED",
            "resolved_at": "2026-03-02T11:30:00+00:00",
        },
    ),
    EventType(
        type="support.sla.breached",
        description="A ticket missed an SLA target (`target`: first_response or resolution, "
        "due at `due_at`); recorded once per ticket. Its assignee is notified.",
        sources=("support.sla.breached",),
        permission="support.read",
        schema=_schema(
            ticket_id=_UUID,
            ticket_number=_TEXT,
            subject=_TEXT,
            priority={"type": "string", "enum": _PRIORITIES},
            status=_TICKET["status"],
            target={"type": "string", "enum": ["first_response", "resolution"]},
            due_at=_TIME,
            assignee_id=_NULLABLE_UUID,
            assignee_user_id=_NULLABLE_UUID,
        ),
        example={
            "ticket_id": _TICKET_EXAMPLE["ticket_id"],
            "ticket_number": "TICKET-1001",
            "subject": "SSO integration failure",
            "priority": "URGENT",
            "status": "OPEN",
            "target": "first_response",
            "due_at": "2026-03-02T09:15:00+00:00",
            "assignee_id": "4d5e6f7a-8b9c-4d0e-9f1a-3b4c5d6e7f8a",
            "assignee_user_id": "0d6c2f8e-7b1a-4c55-8a3e-61b2f4d9a7c2",
        },
        notify_user_field="assignee_user_id",
        notice=Notice(
            title="SLA breached: {ticket_number}",
            message="{ticket_number} ({priority}) missed its {target} target, due {due_at}.",
            type="warning",
        ),
    ),
    EventType(
        type="support.escalation.created",
        description="A conversation or ticket was escalated to a person (by a member, or by "
        "the desk for a breached URGENT or HIGH ticket). Admins and the assignee are notified.",
        sources=("support.escalation.created",),
        permission="support.read",
        schema=_ESCALATION,
        example={
            "escalation_id": "5e6f7a8b-9c0d-4e1f-8a2b-4c5d6e7f8a9b",
            "reason": "SLA_BREACH",
            "priority": "CRITICAL",
            "status": "PENDING",
            "ticket_id": _TICKET_EXAMPLE["ticket_id"],
            "customer_id": _TICKET_EXAMPLE["customer_id"],
            "conversation_id": None,
            "assignee_id": None,
            "assignee_user_id": None,
            "created_at": "2026-03-02T09:16:00+00:00",
        },
        notify_roles=(Role.ADMIN,),
        notify_user_field="assignee_user_id",
        notice=Notice(
            title="Escalation: {reason} ({priority})",
            message="A {priority} escalation is waiting for a person ({reason}).",
            type="warning",
        ),
    ),
    EventType(
        type="decision_rule.applied",
        description="An enabled decision rule was applied automatically (the organization's "
        "support_apply_rules setting) to a ticket or a refund (`subject`): its action and the "
        "outcome. Admins are notified.",
        sources=("decision_rule.applied",),
        permission="support.read",
        schema=_schema(
            decision_rule_id=_UUID,
            rule_name=_TEXT,
            action={
                "type": "string",
                "enum": [
                    "AUTO_RESOLVE",
                    "ESCALATE_TO_HUMAN",
                    "ASSIGN_TO_TEAM",
                    "SET_PRIORITY",
                    "APPROVE_REFUND",
                    "REJECT_REFUND",
                    "NOTIFY",
                ],
            },
            outcome={"type": "string", "enum": ["applied", "skipped"]},
            detail=_TEXT,
            ticket_id=_NULLABLE_UUID,
            ticket_number={"type": ["string", "null"]},
            refund_id=_NULLABLE_UUID,
            subject={"type": "string", "description": "What it was applied to."},
            message=_TEXT,
        ),
        example={
            "decision_rule_id": "6f7a8b9c-0d1e-4f2a-9b3c-5d6e7f8a9b0c",
            "rule_name": "Urgent billing to a lead",
            "action": "NOTIFY",
            "outcome": "applied",
            "detail": "The organization's admins were notified.",
            "ticket_id": _TICKET_EXAMPLE["ticket_id"],
            "ticket_number": "TICKET-1001",
            "refund_id": None,
            "subject": "TICKET-1001",
            "message": "An enterprise customer has a billing problem.",
        },
        notify_roles=(Role.ADMIN,),
        notice=Notice(
            title="Rule applied: {rule_name}",
            message="{rule_name} took {action} on {subject} ({outcome}). {message}",
        ),
    ),
    *_REFUND_EVENTS,
    EventType(
        type="budget.threshold_reached",
        description="A budget's spending reached one of its alert thresholds (`percentage` "
        "of `limit_cents`); sent once per threshold and period. Billing and admins are "
        "notified.",
        sources=("budget.threshold_reached",),
        permission="billing.read",
        schema=_schema(
            **_BUDGET,
            percentage={"type": "integer", "minimum": 1, "maximum": 100},
        ),
        example={**_BUDGET_EXAMPLE, "percentage": 80},
        notify_roles=(Role.BILLING, Role.ADMIN),
        notice=Notice(
            title="{type} budget at {percentage}%",
            message="{spent_cents} of {limit_cents} cents ({currency}) spent this period; "
            "{remaining_cents} left until {period_end}.",
        ),
    ),
    _run_event("started", _RUN_STARTED_EXAMPLE),
    _run_event("completed", _RUN_EXAMPLE),
    _run_event("failed", _RUN_FAILED_EXAMPLE, error=_TEXT),
    _run_event("cancelled", _RUN_CANCELLED_EXAMPLE),
    EventType(
        type="workflow.completed",
        description="A workflow job completed; its result is the artifact `artifact_id`.",
        sources=("workflow.completed",),
        permission="playground.read",
        schema=_schema(**_WORKFLOW, artifact_id=_UUID),
        example={
            **_WORKFLOW_EXAMPLE,
            "status": "completed",
            "artifact_id": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
        },
    ),
    EventType(
        type="workflow.failed",
        description="A workflow job failed; `error` says why.",
        sources=("workflow.failed",),
        permission="playground.read",
        schema=_schema(**_WORKFLOW, error=_TEXT),
        example={**_WORKFLOW_EXAMPLE, "status": "failed", "error": "The quota is exhausted."},
    ),
)

EVENT_TYPES: Mapping[str, EventType] = {entry.type: entry for entry in CATALOG}
# Audit event type -> the public event it produces.
BY_SOURCE: Mapping[str, EventType] = {
    source: entry for entry in CATALOG for source in entry.sources
}
# What an endpoint may name in `events` (besides "*").
SUBSCRIBABLE: frozenset[str] = frozenset(entry.type for entry in CATALOG if entry.broadcast)
# Subscribing to "*" needs every permission the subscribable types need.
ALL_EVENTS_PERMISSIONS: frozenset[str] = frozenset(
    EVENT_TYPES[name].permission for name in SUBSCRIBABLE
)

ENVELOPE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": _UUID,
        "type": _TEXT,
        "created_at": _TIME,
        "organization_id": _UUID,
        "data": {"type": "object"},
    },
    "required": ["id", "type", "created_at", "organization_id", "data"],
    "additionalProperties": False,
}


def _check_catalog() -> None:
    for entry in CATALOG:
        if entry.permission not in ALL_PERMISSIONS:
            raise ValueError(f"{entry.type}: unknown permission {entry.permission!r}")
    sources = [source for entry in CATALOG for source in entry.sources]
    if len(sources) != len(set(sources)):
        raise ValueError("an audit event type is the source of two catalogue entries")


_check_catalog()


@dataclass(frozen=True)
class EventTypeView:
    """One catalogue entry as `GET webhooks/event-types` shows it."""

    type: str
    description: str
    permission: str
    roles: list[str]
    notify_roles: list[str]
    subscribable: bool
    schema: dict
    example: dict = field(default_factory=dict)


def listing() -> list[EventTypeView]:
    return [
        EventTypeView(
            type=entry.type,
            description=entry.description,
            permission=entry.permission,
            roles=entry.roles,
            notify_roles=[str(role) for role in entry.notify_roles],
            subscribable=entry.broadcast,
            schema=entry.schema,
            example=entry.example,
        )
        for entry in CATALOG
    ]
