"""The public event catalogue's own rules: every entry is produced by a real service, its event
validates against the envelope and the entry's schema and carries no secret, examples validate,
and events reach exactly the endpoints subscribed to them."""

import json
from datetime import datetime

import jsonschema
import pytest
from django.db import transaction
from django.utils import timezone

from accounts.services import api_key_create, api_key_revoke
from audit.models import AuditEvent
from audit.services import is_secret_key, record
from config.exceptions import Conflict
from notifications import catalog
from notifications.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from notifications.services import webhook_endpoint_disable, webhook_endpoint_test
from tenants.models import Membership, Role, Tenant, TenantStatus
from tenants.permissions import ALL_PERMISSIONS
from tenants.services import (
    invitation_accept,
    member_invite,
    member_remove,
    member_update,
    membership_add,
    theme_update,
)
from tenants.services.lifecycle import (
    tenant_activate,
    tenant_cancel,
    tenant_restore,
    tenant_suspend,
)
from tenants.services.quotas import quota_consume
from tests.factories import (
    TEST_PASSWORD,
    InvitationFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
)

from .factories import WebhookEndpointFactory

# Also on SQLite (the smoke run), where events and deliveries are written through the ORM
# rather than the one prepared statement PostgreSQL uses.
pytestmark = [pytest.mark.django_db, pytest.mark.smoke]

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value) -> bool:
    # jsonschema checks date-time only with an optional package: an ISO 8601 time with a
    # time zone, here.
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


def validate(instance, schema) -> None:
    jsonschema.validate(instance, schema, format_checker=FORMATS)


# Producers: each makes its audit event happen in `tenant` through the real service -------------


def _owner(tenant):
    membership = Membership.objects.filter(tenant=tenant, role=Role.OWNER).first()
    return (membership or MembershipFactory(tenant=tenant, role=Role.OWNER)).user


def _invite(tenant):
    member_invite(tenant=tenant, actor=_owner(tenant), email="ada@example.com", send_email=False)


def _accept_invitation(tenant):
    invitation = InvitationFactory(tenant=tenant)
    invitation_accept(token=invitation.token, name="Ada", password=TEST_PASSWORD)


def _add_member(tenant):
    membership_add(tenant=tenant, user=UserFactory(), role=Role.VIEWER, actor=None)


def _change_role(tenant):
    membership = MembershipFactory(tenant=tenant, role=Role.VIEWER)
    member_update(membership=membership, actor=_owner(tenant), role=Role.MEMBER)


def _remove_member(tenant):
    membership = MembershipFactory(tenant=tenant, role=Role.VIEWER)
    member_remove(membership=membership, actor=_owner(tenant))


def _activate(tenant):
    Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.TRIAL)
    tenant_activate(tenant=tenant, actor=None)


def _suspend(tenant):
    tenant_suspend(tenant=tenant, actor=None, reason="Unpaid invoice")


def _restore(tenant):
    Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.SUSPENDED)
    tenant_restore(tenant=tenant, actor=None)


def _cancel(tenant):
    tenant_cancel(tenant=tenant, actor=None)


def _warn_about_quota(tenant):
    Tenant.objects.filter(pk=tenant.pk).update(settings={"maxDocuments": 1})
    tenant.refresh_from_db()
    quota_consume(tenant=tenant, resource="documents")


def _create_api_key(tenant):
    return api_key_create(tenant=tenant, actor=_owner(tenant), name="CI", scopes=["read"])[0]


def _revoke_api_key(tenant):
    api_key_revoke(api_key=_create_api_key(tenant), actor=None)


def _disable_endpoint(tenant):
    endpoint = WebhookEndpointFactory(tenant=tenant)
    webhook_endpoint_disable(
        webhook_endpoint=endpoint, reason="Failing since 2026-11-25 10:00 UTC with no success."
    )


def _test_endpoint(tenant):
    endpoint = WebhookEndpointFactory(tenant=tenant, events=["organization.member.joined"])
    webhook_endpoint_test(webhook_endpoint=endpoint, actor=_owner(tenant))


def _create_template(tenant):
    from playground.services import prompt_template_create

    return prompt_template_create(
        tenant=tenant,
        actor=_owner(tenant),
        name="FAQ answer",
        category="faq",
        user_prompt_template="Q: {question}",
        variables=[{"name": "question", "type": "string", "required": True}],
    )


def _version_template(tenant):
    from playground.services import prompt_template_update

    prompt_template_update(
        template=_create_template(tenant),
        actor=None,
        create_new_version=True,
        user_prompt_template="Question: {question}",
    )


def _publish_template(tenant):
    from playground.services import prompt_template_publish

    prompt_template_publish(template=_create_template(tenant), actor=None, version=1)


def _paid_subscription(tenant, code="team"):
    from billing.models import Plan
    from billing.services import subscription_ensure

    plan = Plan.objects.get(code=code)
    subscription = subscription_ensure(tenant=tenant)
    subscription.plan = plan
    subscription.save(update_fields=["plan"])
    return subscription


def _upgrade(tenant):
    from billing.models import Plan
    from billing.services import subscription_change_plan

    _paid_subscription(tenant)
    subscription_change_plan(
        tenant=tenant, actor=_owner(tenant), plan=Plan.objects.get(code="business")
    )


def _cancel_subscription(tenant):
    from billing.services import subscription_cancel

    subscription_cancel(subscription=_paid_subscription(tenant), actor=_owner(tenant))


def _resume_subscription(tenant):
    from billing.services import subscription_resume

    _cancel_subscription(tenant)
    subscription_resume(subscription=_paid_subscription(tenant), actor=None)


def _invoice(tenant, **fields):
    from tests.billing.factories import InvoiceFactory

    return InvoiceFactory(tenant=tenant, subscription=_paid_subscription(tenant), **fields)


def _pay(tenant):
    from billing.services import invoice_pay

    invoice_pay(invoice=_invoice(tenant), actor=_owner(tenant), payment_method="pm_card_visa")


def _decline(tenant):
    from billing.services import invoice_pay

    invoice_pay(invoice=_invoice(tenant), actor=None, payment_method="pm_card_chargeDeclined")


def _overdue(tenant):
    from billing.services import invoice_mark_overdue

    invoice_mark_overdue(invoice=_invoice(tenant, due_date=datetime(2026, 1, 1).date()))


def _resend(tenant):
    from billing.services import invoice_resend

    invoice_resend(invoice=_invoice(tenant), actor=None)


def _credit(tenant):
    from billing.services import credit_note_issue, invoice_pay

    invoice = _invoice(tenant)
    invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")
    credit_note_issue(invoice=invoice, actor=None, amount_cents=500, kind="credit", reason="x")


def _start_run(tenant):
    from playground.services import orchestration_start
    from tests.playground.factories import ProjectFactory

    return orchestration_start(
        tenant=tenant, actor=_owner(tenant), project_id=ProjectFactory(tenant=tenant).pk
    )


def _complete_run(tenant):
    from playground.services import orchestration_run_execute

    orchestration_run_execute(run_id=_start_run(tenant).pk)


def _cancel_run(tenant):
    from playground.services import orchestration_run_cancel

    orchestration_run_cancel(run=_start_run(tenant), actor=_owner(tenant))


def _fail_run(tenant):
    from playground.models import OrchestrationRun
    from playground.services import orchestration_run_fail

    run = _start_run(tenant)
    OrchestrationRun.objects.filter(pk=run.pk).update(attempts=3)
    orchestration_run_fail(job=run, reason="The worker running it stopped 3 times; gave up.")


def _queue_workflow(tenant, input_data=None):
    from playground.services import workflow_execute
    from tenants.permissions import ALL_PERMISSIONS

    return workflow_execute(
        tenant=tenant,
        actor=_owner(tenant),
        actor_permissions=ALL_PERMISSIONS,
        workflow_type="usage_report",
        input_data=input_data or {"start": "2026-01-01", "end": "2026-01-31"},
    )


def _complete_workflow(tenant):
    from playground.services import workflow_job_execute

    workflow_job_execute(job_id=_queue_workflow(tenant).pk)


def _fail_workflow(tenant):
    from playground.services import workflow_job_fail

    workflow_job_fail(job=_queue_workflow(tenant), reason="The worker stopped 3 times.")


def _open_incident(tenant, **fields):
    from security.services import incident_create

    fields = {"severity": "high", "category": "unauthorized_access", **fields}
    return incident_create(
        tenant=tenant, actor=_owner(tenant), title="Unauthorized access attempt detected", **fields
    )


def _resolve_incident(tenant):
    from security.services import incident_update

    incident_update(
        incident=_open_incident(tenant),
        actor=_owner(tenant),
        status="resolved",
        resolution_notes="Addresses blocked, passwords reset.",
    )


def _breach_notification_due(tenant):
    from datetime import timedelta

    from security.services import breach_notifications_remind

    _open_incident(
        tenant,
        category="data_breach",
        personal_data_breach=True,
        detected_at=timezone.now() - timedelta(hours=49),
    )
    breach_notifications_remind()


def _complete_audit(tenant):
    from security.services import compliance_audit_create, compliance_audit_update

    audit = compliance_audit_create(
        tenant=tenant, actor=_owner(tenant), audit_type="internal", framework="gdpr", title="Q1"
    )
    compliance_audit_update(
        compliance_audit=audit, actor=_owner(tenant), status="completed", score=85
    )


def _open_ticket(tenant):
    from support.services import ticket_create

    return ticket_create(tenant=tenant, actor=_owner(tenant), subject="SSO integration failure")


def _assign_ticket(tenant):
    from support.services import ticket_assign
    from tests.support.factories import RepresentativeFactory

    ticket_assign(
        ticket=_open_ticket(tenant),
        actor=_owner(tenant),
        representative=RepresentativeFactory(tenant=tenant),
    )


def _resolve_ticket(tenant):
    from support.services import ticket_update

    ticket_update(ticket=_open_ticket(tenant), actor=_owner(tenant), status="RESOLVED")


def _breach_sla(tenant):
    from datetime import timedelta

    from django.utils import timezone

    from support.services import sla_breaches_mark
    from tests.support.factories import SlaPolicyFactory

    SlaPolicyFactory(tenant=tenant, priority="URGENT", first_response_minutes=15)
    from support.services import ticket_create

    ticket_create(
        tenant=tenant, actor=_owner(tenant), subject="Checkout is down", priority="URGENT"
    )
    sla_breaches_mark(now=timezone.now() + timedelta(minutes=16))


def _escalate(tenant):
    from support.services import escalation_create

    escalation_create(
        tenant=tenant,
        actor=_owner(tenant),
        reason="CUSTOMER_REQUEST",
        issue_description="The customer asked for a person.",
        priority="HIGH",
    )


def _apply_rule(tenant):
    from support.services import decision_rule_create, ticket_create

    tenant.settings = {**(tenant.settings or {}), "support_apply_rules": True}
    tenant.save(update_fields=["settings"])
    decision_rule_create(
        tenant=tenant,
        actor=_owner(tenant),
        name="Tell the admins",
        priority=1,
        enabled=True,
        action="NOTIFY",
        action_params={"message": "A new ticket."},
    )
    ticket_create(tenant=tenant, actor=_owner(tenant), subject="Anything")


def _request_refund(tenant):
    from support.services import refund_create
    from tests.support.factories import CustomerProfileFactory

    return refund_create(
        tenant=tenant,
        actor=_owner(tenant),
        order_id="48292",
        customer=CustomerProfileFactory(tenant=tenant),
        amount_cents=5_000,
        reason="AI_BUG",
    )


def _approve_refund(tenant):
    from support.services import budget_create, refund_approve

    budget_create(
        tenant=tenant,
        actor=_owner(tenant),
        type="REFUND",
        period="MONTHLY",
        limit_cents=6_000,
        alert_thresholds=[{"percentage": 80, "enabled": True}],
    )
    refund_approve(
        refund=_request_refund(tenant), actor=_owner(tenant), actor_permissions={"billing.write"}
    )


def _reject_refund(tenant):
    from support.services import refund_reject

    refund_reject(
        refund=_request_refund(tenant),
        actor=_owner(tenant),
        actor_permissions={"billing.write"},
        reason="Already credited.",
    )


# Catalogue type -> a producer of it. A new catalogue entry fails test_every_type_has_a_producer
# until it is added here.
PRODUCERS = {
    "playground.template.created": _create_template,
    "playground.template.versioned": _version_template,
    "playground.template.published": _publish_template,
    "organization.member.invited": _invite,
    "organization.member.joined": _accept_invitation,
    "organization.member.role_changed": _change_role,
    "organization.member.removed": _remove_member,
    "organization.status_changed": _suspend,
    "organization.quota.warning": _warn_about_quota,
    "organization.api_key.created": _create_api_key,
    "organization.api_key.revoked": _revoke_api_key,
    "webhook.endpoint.disabled": _disable_endpoint,
    "webhook.test": _test_endpoint,
    "billing.subscription.changed": _upgrade,
    "billing.invoice.created": _upgrade,
    "billing.payment.succeeded": _pay,
    "billing.payment.failed": _decline,
    "billing.invoice.overdue": _overdue,
    "billing.invoice.sent": _resend,
    "billing.credit_note.created": _credit,
    "orchestration.started": _start_run,
    "orchestration.completed": _complete_run,
    "orchestration.cancelled": _cancel_run,
    "orchestration.failed": _fail_run,
    "workflow.completed": _complete_workflow,
    "workflow.failed": _fail_workflow,
    "security.incident.created": _open_incident,
    "security.incident.resolved": _resolve_incident,
    "security.breach.notification_due": _breach_notification_due,
    "compliance.audit.completed": _complete_audit,
    "support.ticket.created": _open_ticket,
    "support.ticket.assigned": _assign_ticket,
    "support.ticket.resolved": _resolve_ticket,
    "support.sla.breached": _breach_sla,
    "support.escalation.created": _escalate,
    "decision_rule.applied": _apply_rule,
    "refund.requested": _request_refund,
    "refund.approved": _approve_refund,
    "refund.rejected": _reject_refund,
    "budget.threshold_reached": _approve_refund,
}

# Audit event type -> a producer of it: every source of every entry, the ones PRODUCERS does
# not already take included.
SOURCE_PRODUCERS = {
    "prompt_template.created": _create_template,
    "prompt_template.versioned": _version_template,
    "prompt_template.published": _publish_template,
    "member.invited": _invite,
    "member.joined": _accept_invitation,
    "member.added": _add_member,
    "member.role_changed": _change_role,
    "member.removed": _remove_member,
    "tenant.activated": _activate,
    "tenant.suspended": _suspend,
    "tenant.restored": _restore,
    "tenant.cancelled": _cancel,
    "quota.warning": _warn_about_quota,
    "api_key.created": _create_api_key,
    "api_key.revoked": _revoke_api_key,
    "webhook.endpoint.disabled": _disable_endpoint,
    "webhook.endpoint.tested": _test_endpoint,
    "billing.subscription.changed": _upgrade,
    "billing.subscription.canceled": _cancel_subscription,
    "billing.subscription.resumed": _resume_subscription,
    "billing.invoice.created": _upgrade,
    "billing.payment.succeeded": _pay,
    "billing.payment.failed": _decline,
    "billing.invoice.overdue": _overdue,
    "billing.invoice.resent": _resend,
    "billing.credit_note.created": _credit,
    "orchestration.started": _start_run,
    "orchestration.completed": _complete_run,
    "orchestration.cancelled": _cancel_run,
    "orchestration.failed": _fail_run,
    "workflow.completed": _complete_workflow,
    "workflow.failed": _fail_workflow,
    "security.incident.created": _open_incident,
    "security.incident.resolved": _resolve_incident,
    "security.breach.notification_due": _breach_notification_due,
    "compliance.audit.completed": _complete_audit,
    "support.ticket.created": _open_ticket,
    "support.ticket.assigned": _assign_ticket,
    "support.ticket.resolved": _resolve_ticket,
    "support.sla.breached": _breach_sla,
    "support.escalation.created": _escalate,
    "decision_rule.applied": _apply_rule,
    "refund.requested": _request_refund,
    "refund.approved": _approve_refund,
    "refund.rejected": _reject_refund,
    "budget.threshold_reached": _approve_refund,
}


def _secret_keys(value, path="data") -> list[str]:
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if is_secret_key(key):
                found.append(f"{path}.{key}")
            found += _secret_keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _secret_keys(item, f"{path}[{index}]")
    return found


def assert_valid_public_event(event: WebhookEvent) -> dict:
    entry = catalog.EVENT_TYPES[event.event_type]
    body = json.loads(event.body)
    validate(body, catalog.ENVELOPE_SCHEMA)
    validate(body["data"], entry.schema)
    assert body["id"] == str(event.pk)
    assert body["type"] == entry.type
    assert body["organization_id"] == str(event.tenant_id)
    assert not _secret_keys(body["data"]), _secret_keys(body["data"])
    assert "whsec_" not in event.body
    return body


def test_every_type_has_a_producer():
    assert set(PRODUCERS) == {entry.type for entry in catalog.CATALOG}


def test_every_source_has_a_producer():
    assert set(SOURCE_PRODUCERS) == set(catalog.BY_SOURCE)


@pytest.mark.parametrize("event_type", sorted(PRODUCERS))
def test_each_type_is_produced_by_its_service_and_validates(event_type):
    tenant = TenantFactory(settings={"maxUsers": 10})

    PRODUCERS[event_type](tenant)

    events = WebhookEvent.objects.filter(tenant=tenant, event_type=event_type)
    assert events.exists(), f"{PRODUCERS[event_type].__name__} produced no {event_type}"
    for event in events:
        assert_valid_public_event(event)


@pytest.mark.parametrize("source", sorted(SOURCE_PRODUCERS))
def test_each_source_audit_event_becomes_its_public_event(source):
    tenant = TenantFactory(settings={"maxUsers": 10})

    SOURCE_PRODUCERS[source](tenant)

    audited = AuditEvent.objects.filter(tenant=tenant, event_type=source)
    assert audited.exists(), f"{SOURCE_PRODUCERS[source].__name__} recorded no {source}"
    for audit_event in audited:
        event = WebhookEvent.objects.get(pk=audit_event.pk)
        assert event.tenant_id == tenant.pk
        assert event.event_type == catalog.BY_SOURCE[source].type
        assert_valid_public_event(event)


def test_the_status_change_data_names_the_transition():
    tenant = TenantFactory(status=TenantStatus.ACTIVE, activated_at=timezone.now())

    _suspend(tenant)
    _restore(tenant)

    bodies = [
        json.loads(event.body)["data"]
        for event in WebhookEvent.objects.filter(
            tenant=tenant, event_type="organization.status_changed"
        ).order_by("created_at")
    ]
    assert bodies == [
        {"previous_status": "active", "status": "suspended", "reason": "Unpaid invoice"},
        {"previous_status": "suspended", "status": "active", "reason": ""},
    ]


def test_the_api_key_event_never_carries_the_key():
    tenant = TenantFactory()
    _, raw = api_key_create(tenant=tenant, actor=_owner(tenant), name="CI", scopes=["read"])

    event = WebhookEvent.objects.get(tenant=tenant, event_type="organization.api_key.created")

    assert raw not in event.body
    assert set(json.loads(event.body)["data"]) == {"api_key_id", "name", "key_prefix"}


# The entries themselves -------------------------------------------------------------------------


@pytest.mark.parametrize("entry", catalog.CATALOG, ids=lambda entry: entry.type)
def test_each_entry_is_consistent(entry):
    jsonschema.Draft202012Validator.check_schema(entry.schema)
    validate(entry.example, entry.schema)
    assert entry.permission in ALL_PERMISSIONS
    assert entry.sources and len(set(entry.sources)) == len(entry.sources)
    assert entry.description
    assert set(entry.notify_roles) <= {role.value for role in Role}
    assert bool(entry.notify_roles or entry.notify_user_field) == (entry.notice is not None)
    if entry.notify_user_field:
        assert entry.notify_user_field in entry.schema["properties"]
    if entry.notice is not None:
        # The notice formats over `data`: every field it names is in the schema.
        entry.notice.title.format(**entry.example)
        entry.notice.message.format(**entry.example)


def test_no_audit_type_is_the_source_of_two_entries_nor_a_public_type_twice():
    sources = [source for entry in catalog.CATALOG for source in entry.sources]
    types = [entry.type for entry in catalog.CATALOG]

    assert len(sources) == len(set(sources))
    assert len(types) == len(set(types))


def test_the_envelope_schema_is_valid_and_takes_no_other_property():
    jsonschema.Draft202012Validator.check_schema(catalog.ENVELOPE_SCHEMA)
    envelope = {
        "id": "5b0e7a36-3c1e-4a4f-9f5e-2d8a43c8e0f1",
        "type": "organization.member.joined",
        "created_at": "2026-12-01T10:30:00.000000Z",
        "organization_id": "0d6c2f8e-7b1a-4c55-8a3e-61b2f4d9a7c2",
        "data": {},
    }
    validate(envelope, catalog.ENVELOPE_SCHEMA)
    for broken in ({**envelope, "extra": 1}, {**envelope, "id": "not-a-uuid"}):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken, catalog.ENVELOPE_SCHEMA)


# What is published, and to whom -----------------------------------------------------------------


def test_an_audit_event_outside_the_catalogue_publishes_nothing():
    tenant = TenantFactory()
    WebhookEndpointFactory(tenant=tenant, events=["*"])
    member = MembershipFactory(tenant=tenant, role=Role.ADMIN)

    theme_update(tenant=tenant, actor=member.user, data={"primary_color": "#123456"})

    assert AuditEvent.objects.filter(tenant=tenant, event_type="theme.updated").exists()
    assert not WebhookEvent.objects.filter(tenant=tenant).exists()
    assert not WebhookDelivery.objects.filter(tenant=tenant).exists()


def test_a_platform_event_publishes_nothing():
    before = WebhookEvent.objects.count()
    with transaction.atomic():
        record(tenant=None, event_type="quota.warning", payload={"resource": "documents"})

    assert WebhookEvent.objects.count() == before


def test_an_event_goes_to_the_active_subscribed_endpoints_of_its_tenant_only():
    tenant = TenantFactory()
    subscribed = WebhookEndpointFactory(tenant=tenant, events=["organization.api_key.created"])
    everything = WebhookEndpointFactory(tenant=tenant, events=["*"])
    WebhookEndpointFactory(tenant=tenant, events=["organization.member.joined"])
    WebhookEndpointFactory(tenant=tenant, events=["*"], is_active=False)
    WebhookEndpointFactory(tenant=TenantFactory(), events=["*"])

    _create_api_key(tenant)

    event = WebhookEvent.objects.get(tenant=tenant, event_type="organization.api_key.created")
    deliveries = WebhookDelivery.objects.filter(event=event)
    assert {d.endpoint_id for d in deliveries} == {subscribed.pk, everything.pk}
    assert WebhookDelivery.objects.count() == 2
    assert all(d.status == "pending" and d.tenant_id == tenant.pk for d in deliveries)


def test_the_test_event_goes_to_its_endpoint_only_even_one_not_subscribed_to_it():
    tenant = TenantFactory()
    target = WebhookEndpointFactory(tenant=tenant, events=["organization.member.joined"])
    WebhookEndpointFactory(tenant=tenant, events=["*"])

    webhook_endpoint_test(webhook_endpoint=target, actor=None)

    (delivery,) = WebhookDelivery.objects.all()
    assert (delivery.endpoint_id, delivery.event_type) == (target.pk, "webhook.test")


def test_a_disabled_endpoint_is_not_sent_its_test_event():
    endpoint = WebhookEndpointFactory(is_active=False)

    with pytest.raises(Conflict):
        webhook_endpoint_test(webhook_endpoint=endpoint, actor=None)

    assert not WebhookEvent.objects.filter(tenant=endpoint.tenant).exists()


def test_disabling_an_endpoint_publishes_once():
    endpoint = WebhookEndpointFactory()

    for _ in range(2):
        webhook_endpoint_disable(webhook_endpoint=endpoint, reason="Failing for days.")

    assert not WebhookEndpoint.objects.get(pk=endpoint.pk).is_active
    event = WebhookEvent.objects.get(tenant=endpoint.tenant)
    assert json.loads(event.body)["data"] == {
        "endpoint_id": str(endpoint.pk),
        "name": endpoint.name,
        "url": endpoint.url,
        "disabled_reason": "Failing for days.",
    }
