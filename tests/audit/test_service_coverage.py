"""Every state-changing service records its audit event.

Each public function of every app's services module (or of each module of a services package)
is either exercised here (and must leave its
event) or exempt with a reason. A new service fails `test_every_service_is_classified` until
it is added to one of the two.
"""

import importlib
import inspect
import io
import pkgutil
import tempfile
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from PIL import Image

from accounts import services as accounts_services
from accounts.models import AuthToken
from audit import services as audit_services
from audit.models import AuditEvent
from billing import services as billing_services
from billing.models import Invoice, Plan
from notifications import services as notifications_services
from notifications.models import NotificationPreference, PhoneConfirmation
from notifications.services import phone_confirmations
from playground import services as playground_services
from playground.models import LanguageModel
from playground.services import catalogue as playground_catalogue
from security import services as security_services
from support import services as support_services
from tenants import services as tenants_services
from tenants.models import Role, TenantStatus
from tenants.permissions import ALL_PERMISSIONS
from tenants.services import lifecycle, quotas
from tests.factories import (
    TEST_PASSWORD,
    InvitationFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
)

_TICKET_STEP = (
    "a step of the ticket services (ticket_create, ticket_update, ticket_comment_add), inside "
    "their transaction, which record their events"
)
_ANALYTICS = (
    "records or derives usage facts (no change a person makes): analytics is not audited; "
    "tests/analytics"
)
EXEMPT = {
    "notifications.services.phone_confirmations.phone_confirmations_prune": (
        "housekeeping: deletes confirmation codes past their day, which count toward nothing; "
        "tests/notifications/test_phone_confirmation.py"
    ),
    "analytics.services.request_facts_write": _ANALYTICS,
    "analytics.services.query_events_ingest": _ANALYTICS,
    "analytics.services.rollup_hours_rebuild": _ANALYTICS,
    "analytics.services.rollups_build": _ANALYTICS,
    "analytics.services.rollups_rebuild": _ANALYTICS,
    "analytics.services.raw_facts_prune": _ANALYTICS,
    "support.services.sla_clock.terms_of": ("reads a policy's terms (no change)"),
    "support.services.sla_clock.due_fields": ("computes due times (no change)"),
    "support.services.sla_clock.late_target": ("computes which target is late (no change)"),
    "support.services.sla_clock.sla_start": (_TICKET_STEP),
    "support.services.sla_clock.sla_retarget": (_TICKET_STEP),
    "support.services.sla_clock.sla_status_move": (_TICKET_STEP),
    "support.services.sla_clock.sla_first_response": (_TICKET_STEP),
    "support.services.sla_clock.sla_mark_breach_if_late": (
        "a step of the ticket services and the breach sweep; records support.sla.breached "
        "itself (tests/support)"
    ),
    "support.services.common.customer_of": ("a lookup (no change)"),
    "support.services.budgets.add_months": ("date arithmetic (no change)"),
    "support.services.budgets.calendar_period_start": ("date arithmetic (no change)"),
    "support.services.budgets.customer_spent_cents": ("a sum (no change)"),
    "support.services.refunds.refund_authority_cents": ("a lookup (no change)"),
    "support.services.decision_rules.applies_rules": ("reads a setting (no change)"),
    "support.services.common.representative_of": ("a lookup (no change)"),
    "support.services.common.serving": ("a query expression (no change)"),
    "support.services.common.locked_ticket": ("a locked read (no change)"),
    "support.services.conversation.attachments_release": (
        "a step of ticket_delete and ticket_attachment_delete, which record their events"
    ),
    "playground.services.artifacts.artifact_write": (
        "a step of a run's phase or a workflow job, whose events name the artifact"
    ),
    "playground.services.artifacts.artifacts_delete": (
        "a step of project_delete and artifact_delete, which record their events"
    ),
    "playground.services.reaper.stalled_jobs_reap": (
        "sends lost jobs again (no fact changes); gives up through orchestration_run_fail and "
        "workflow_job_fail, which record their events"
    ),
    "tenants.services.lifecycle.tenant_plan_apply": (
        "a step of billing's plan changes, inside their transaction, which records "
        "billing.subscription.changed"
    ),
    "billing.services.subscriptions.plan_change_quote": "read-only: what a change would do",
    "billing.services.invoices.invoice_rows": "builds unsaved rows: the caller saves them",
    "billing.services.invoices.use_credit": "pure function over locked notes the caller saves",
    "billing.services.invoices.invoice_payload": "pure function",
    "billing.services.invoices.format_number": "pure function",
    "billing.services.payments.payment_attempt": "the provider's charge as an unsaved Payment",
    "billing.services.payments.payment_payload": "pure function",
    "billing.services.payments.collection_key": "pure function",
    "billing.services.payments.method_refused": "builds an unsaved failed Payment",
    "audit.services.record_many": "the recorder itself, for many events at once",
    "billing.services.checkout.checkout_is_open": "pure function",
    "billing.services.renewals.subscriptions_due": "read-only queryset",
    "billing.services.renewals.period_usage": "read-only: a period's usage",
    "billing.services.renewals.usage_lines": "pure function: the lines usage bills",
    "billing.services.renewals.token_usage_lines": "pure function",
    "billing.services.renewals.storage_usage_lines": "pure function",
    "audit.services.record": "the recorder itself",
    "audit.services.redact": "pure function",
    "audit.services.is_secret_key": "pure function",
    "audit.services.chain_events": "read-only queryset",
    "audit.services.chain_seal_batch": "sealing is the audit mechanism: it adds no facts",
    "audit.services.chain_seal": "sealing is the audit mechanism: it adds no facts",
    "audit.services.chains_seal_all": "sealing is the audit mechanism: it adds no facts",
    "audit.services.chains_with_unsealed_events": "read-only",
    "audit.services.checkpoint_issue": "a checkpoint is itself the signed audit record",
    "audit.services.checkpoints_issue_all": "a checkpoint is itself the signed audit record",
    "audit.services.chain_checkpoints": "read-only",
    "audit.services.sealed_documents": "read-only",
    "audit.services.chain_verify": "read-only",
    "audit.services.chain_status": "read-only",
    "tenants.services.lifecycle.unique_slug": "read-only helper",
    "tenants.services.lifecycle.slug_in_use": "read-only helper",
    "tenants.services.lifecycle.check_limit_settings": "validation: changes nothing",
    "tenants.services.lifecycle.settings_keeping_staff_limits": "pure function",
    "tenants.services.quotas.seats_taken": "read-only",
    "tenants.services.quotas.quota_release": (
        "gives usage back; the deletion that frees the resource records its own event"
    ),
    "tenants.services.quotas.quota_states": "read-only",
    "tenants.services.quotas.annotated_usage": "read-only",
    "tenants.services.quotas.annotated_quota_states": "read-only",
    "tenants.services.themes.delete_file_after_commit": (
        "removes a file the audited change has already dropped"
    ),
    "tenants.services.themes.delete_folder_after_commit": (
        "removes the files of an organization whose audited deletion dropped their rows"
    ),
    "tenants.services.quotas.quotas_due": "read-only",
    "tenants.services.quotas.with_live_api_calls": "read-only",
    "tenants.services.quotas.counted_reading": "read-only",
    "tenants.services.quotas.api_calls_sync": "copies counters already counted; adds no facts",
    "tenants.services.idempotency.idempotency_keys_prune": (
        "deletes expired Idempotency-Keys, which already count as never sent: no tenant state"
    ),
    "accounts.services.jwt_refresh": "session bookkeeping: its start and end are audited",
    "accounts.services.api_key_usage": "read-only",
    "accounts.services.api_key_usage_flush": "request counters, not facts (the requests are)",
    "audit.services.on_record": "registers a hook at start-up",
    "accounts.services.api_key_tokens_reserve": (
        "metering: the gateway's call record (playground.GatewayCall) is the fact"
    ),
    "accounts.services.api_key_tokens_adjust": "metering, as api_key_tokens_reserve",
    "tenants.services.quotas.quota_adjust": (
        "settles a gateway reservation (the call record is the fact); crossing the warning "
        "threshold records quota.warning as quota_consume does"
    ),
    "playground.services.catalogue.check_fallbacks": "validation: changes nothing",
    "playground.services.gateway.gateway_reserve": (
        "metering: every LLM call is a GatewayCall row, not an audit event (one event per "
        "call would flood the tenant's chain); refusals change nothing"
    ),
    "playground.services.gateway.gateway_run": "the upstream call: recorded as a GatewayCall",
    "playground.services.gateway.gateway_complete": "as gateway_run",
    "playground.services.gateway.gateway_settle": "writes the GatewayCall record itself",
    "playground.services.gateway.gateway_call": "as gateway_run",
    "playground.services.gateway.gateway_call_reserved": "as gateway_run",
    "playground.services.gateway.gateway_abandon": "settles through gateway_settle: a GatewayCall",
    "playground.services.gateway.gateway_clients_close": "closes HTTP clients: changes nothing",
    "playground.services.ledger.gateway_tokens_reserve": "metering, as gateway_reserve",
    "playground.services.ledger.gateway_tokens_settle": "writes the GatewayCall record itself",
    "playground.services.ledger.gateway_tokens_release": "metering, as gateway_reserve",
    "playground.services.ledger.gateway_tokens_release_unsettled": "metering, as gateway_reserve",
    "playground.services.ledger.gateway_tokens_lock": "takes a row lock: changes nothing",
    "playground.services.ledger.gateway_tokens_adjust": "metering, as gateway_reserve",
    "playground.services.ledger.reservation_note": "builds the reservation's rider",
    "playground.services.ledger.gateway_reservations_release_expired": (
        "metering: gives back a dead call's reservation, as the reaper does for a phase's; "
        "logged as a warning"
    ),
    "accounts.services.api_key_budget_exceeded_error": "builds an exception: changes nothing",
    "accounts.services.budget_month": "pure function",
    "tenants.services.quotas.quota_exceeded_error": "builds an exception: changes nothing",
    "tenants.services.quotas.quota_room": "reads the room left under a quota: changes nothing",
    "playground.services.artifacts.artifact_spool": (
        "makes a temporary file bounded by the storage room: changes nothing; the artifact it "
        "holds is stored (and audited with its job) by artifact_write"
    ),
    "tenants.services.quotas.quota_warn_if_due": (
        "records quota.warning itself when the threshold is crossed, as quota_consume does"
    ),
    "playground.services.templates.prompt_template_execute": (
        "an execution is its own record (PromptExecution with its GatewayCall)"
    ),
    "notifications.services.events.publish": (
        "the audit hook: runs inside record(), publishing the event being recorded"
    ),
    "notifications.services.events.publish_many": (
        "the audit hook's batch form: runs inside record_many(), publishing its events"
    ),
    "notifications.services.user_notifications.notify_roles_many": (
        "part of publishing audited events (the hook's batch form)"
    ),
    "notifications.services.events.relay_after_commit": "queues the relay after commit",
    "notifications.services.user_notifications.notify_roles": (
        "part of publishing an audited event (the hook)"
    ),
    "notifications.services.relay.retry_delay": "pure function",
    "notifications.services.relay.webhook_deliveries_send": (
        "delivery bookkeeping: each attempt is its own record (WebhookAttempt); disabling an "
        "endpoint is audited by webhook_endpoint_disable"
    ),
    "notifications.services.relay.webhook_delivery_send_now": (
        "delivery bookkeeping: the attempt is its own record; the test it sends is audited"
    ),
    "notifications.services.user_notifications.notifications_deliver": (
        "sends notifications already recorded; each keeps its own status"
    ),
    "notifications.services.user_notifications.notifications_deliver_overdue": (
        "beat's sweep: sends notifications already recorded, or gives them up; each keeps its "
        "own status and reason"
    ),
    "notifications.services.user_notifications.notification_mark_read": (
        "the reader's own bookkeeping"
    ),
    "notifications.services.user_notifications.notifications_mark_all_read": (
        "the reader's own bookkeeping"
    ),
}


def _expire_a_token():
    user = UserFactory()
    AuthToken.objects.create(digest="0" * 64, user=user, expires_at=timezone.now() - timedelta(1))


def _owner_key():
    membership = MembershipFactory(role=Role.OWNER)
    api_key, _ = accounts_services.api_key_create(
        tenant=membership.tenant, actor=membership.user, name="covered", scopes=["read"]
    )
    return api_key, membership.user


def _logout_with_a_token():
    user = UserFactory()
    accounts_services.auth_token_issue(user=user)
    token = AuthToken.objects.get(user=user)
    accounts_services.auth_logout(user=user, credential=token, refresh_token=None)


def _member():
    return MembershipFactory(role=Role.VIEWER, tenant=MembershipFactory(role=Role.OWNER).tenant)


def _purge_tenant_chain():
    tenant = TenantFactory()
    with transaction.atomic():
        audit_services.record(tenant=tenant, event_type="test.event")
    audit_services.chain_purge(tenant=tenant, actor=None)


def _phone_to_confirm(code=None):
    """A member with a phone number and, given `code`, that code pending for it."""
    member = _member()
    NotificationPreference.objects.create(
        tenant=member.tenant, user=member.user, sms_enabled=True, phone_number="+14155550100"
    )
    if code is not None:
        confirmation = PhoneConfirmation(
            tenant=member.tenant,
            user=member.user,
            phone_number="+14155550100",
            number_key="14155550100",
            expires_at=timezone.now() + timedelta(minutes=10),
        )
        confirmation.code_hash = phone_confirmations._code_hash(confirmation, code)
        confirmation.save()
    return member


def _upload_a_logo():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (37, 99, 235)).save(buffer, format="PNG")
    upload = SimpleUploadedFile("logo.png", buffer.getvalue(), content_type="image/png")
    with tempfile.TemporaryDirectory() as media_root, override_settings(MEDIA_ROOT=media_root):
        tenants_services.theme_logo_set(tenant=TenantFactory(), actor=None, uploaded_file=upload)


def _endpoint(**fields):
    from tests.notifications.factories import WebhookEndpointFactory

    return WebhookEndpointFactory(**fields)


def _old_delivery():
    """A delivery that ended long ago (one still being sent is kept whatever its age)."""
    from tests.notifications.factories import WebhookDeliveryFactory

    delivery = WebhookDeliveryFactory(status="succeeded", next_attempt_at=None)
    WebhookDeliveryFactory._meta.model.objects.filter(pk=delivery.pk).update(
        created_at=timezone.now() - timedelta(days=400)
    )


def _old_notification():
    """A notification delivered long ago (one still to be sent is kept whatever its age)."""
    from tests.notifications.factories import NotificationFactory

    notification = NotificationFactory(status="sent")
    NotificationFactory._meta.model.objects.filter(pk=notification.pk).update(
        created_at=timezone.now() - timedelta(days=400)
    )


def _failed_delivery():
    from tests.notifications.factories import WebhookDeliveryFactory

    return WebhookDeliveryFactory(status="failed", next_attempt_at=None)


def _provider():
    from tests.playground.factories import ProviderFactory

    return ProviderFactory()


def _project():
    from tests.playground.factories import ProjectFactory

    return ProjectFactory()


def _orchestration_template():
    from tests.playground.factories import OrchestrationTemplateFactory

    return OrchestrationTemplateFactory()


def _run(**fields):
    from tests.playground.factories import OrchestrationRunFactory

    return OrchestrationRunFactory(**fields)


def _stalled_run():
    return _run(status="running", attempts=3, lease_expires_at=timezone.now() - timedelta(1))


def _workflow_job(**fields):
    from tests.playground.factories import WorkflowJobFactory

    return WorkflowJobFactory(**fields)


def _artifact():
    from tests.playground.factories import ArtifactFactory

    return ArtifactFactory()


def _template():
    from tests.playground.factories import PromptTemplateFactory

    return PromptTemplateFactory()


def _execution():
    from tests.playground.factories import PromptExecutionFactory

    return PromptExecutionFactory()


# Billing -------------------------------------------------------------------------------------


def _paid_subscription(code="team"):
    from billing.periods import period_from
    from tests.billing.factories import SubscriptionFactory

    period = period_from(timezone.now(), "monthly")
    return SubscriptionFactory(
        plan=Plan.objects.get(code=code),
        default_payment_method="pm_card_visa",
        current_period_start=period.full_start,
        current_period_end=period.end,
    )


def _pending_invoice(**fields):
    from tests.billing.factories import InvoiceFactory

    return InvoiceFactory(**fields)


def _paid_invoice():
    invoice = _pending_invoice()
    billing_services.invoice_pay(invoice=invoice, actor=None, payment_method="pm_card_visa")
    return invoice


def _checkout_session():
    return billing_services.checkout_create(
        tenant=TenantFactory(),
        actor=None,
        plan=Plan.objects.get(code="starter"),
        success_url="https://app.example.com/done",
        cancel_url="https://app.example.com/",
    )


def _provider_event():
    from billing.providers.local import LocalProvider

    session = _checkout_session()
    body, headers = LocalProvider().signed_event(
        "checkout.session.completed",
        {"session_id": session.session_id, "payment_method": "pm_card_visa"},
    )
    billing_services.provider_event_receive(provider_name="local", body=body, headers=headers)


def _ended_subscription():
    from billing.models import Subscription

    subscription = _paid_subscription()
    end = timezone.now() - timedelta(minutes=1)
    Subscription.objects.filter(pk=subscription.pk).update(
        current_period_start=end - timedelta(days=31), current_period_end=end
    )
    return subscription


def _overdue_invoice():
    subscription = _paid_subscription()
    return _pending_invoice(
        tenant=subscription.tenant,
        subscription=subscription,
        status="overdue",
        due_date=(timezone.now() - timedelta(days=20)).date(),
    )


def _dunning_settled():
    invoice = _overdue_invoice()
    billing_services.dunning_suspend(tenant=invoice.tenant)
    Invoice.objects.filter(pk=invoice.pk).update(status="paid")
    billing_services.dunning_settle(tenant=invoice.tenant, actor=None)


# service -> (how to call it, the event type it must record)
def _support(factory_name: str):
    from tests.support import factories

    return getattr(factories, factory_name)()


def _support_in(factory_name: str, tenant):
    from tests.support import factories

    return getattr(factories, factory_name)(tenant=tenant)


def _support_budget(**fields):
    from tests.support.factories import BudgetFactory

    return BudgetFactory(**fields)


def _support_refund(**fields):
    from tests.support.factories import RefundFactory

    return RefundFactory(**fields)


def _apply_rule_to_refund():
    from tests.support.factories import DecisionRuleFactory

    refund = _support_refund()
    refund.tenant.settings = {"support_apply_rules": True}
    refund.tenant.save(update_fields=["settings"])
    DecisionRuleFactory(
        tenant=refund.tenant, enabled=True, priority=1, action="REJECT_REFUND", conditions=[]
    )
    return support_services.refund_rules_apply(refund=refund, actor=None)


def _model() -> str:
    from tests.playground.factories import LanguageModelFactory

    return LanguageModelFactory().name


def _apply_rule_to_ticket():
    from tests.support import factories

    ticket = factories.TicketFactory(priority="URGENT")
    ticket.tenant.settings = {"support_apply_rules": True}
    ticket.tenant.save(update_fields=["settings"])
    factories.DecisionRuleFactory(
        tenant=ticket.tenant,
        enabled=True,
        conditions=[{"field": "priority", "operator": "eq", "value": "URGENT"}],
        action="NOTIFY",
        action_params={"message": "Urgent."},
    )
    return support_services.rules_apply(ticket=ticket, actor=None)


def _text_upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("notes.txt", b"The customer's log excerpt.", "text/plain")


# Security ------------------------------------------------------------------------------------


def _incident(**fields):
    from tests.security.factories import IncidentFactory

    return IncidentFactory(**fields)


def _broken_chain_tenant():
    """A tenant whose sealed audit chain no longer holds (an event edited behind its back)."""
    from tests.audit.chain_helpers import edit_payload, sealed_chain

    tenant = TenantFactory()
    edit_payload(sealed_chain(tenant, 3)[1], {"edited": True})
    return tenant


def _lockouts(count=10):
    from django.db import transaction as db_transaction

    membership = MembershipFactory()
    with db_transaction.atomic():
        for _ in range(count):
            audit_services.record(
                tenant=None,
                event_type="auth.login.failed",
                actor_label=membership.user.email,
                payload={
                    "method": "token",
                    "identifier": membership.user.email,
                    "reason": "locked_out",
                },
            )
    return membership.tenant


def _audit(**fields):
    from tests.security.factories import ComplianceAuditFactory

    return ComplianceAuditFactory(**fields)


def _activity(**fields):
    from tests.security.factories import ProcessingActivityFactory

    return ProcessingActivityFactory(**fields)


INVOCATIONS = {
    "support.services.tickets.ticket_create": (
        lambda: support_services.ticket_create(tenant=TenantFactory(), actor=None, subject="SSO"),
        "support.ticket.created",
    ),
    "support.services.tickets.ticket_update": (
        lambda: support_services.ticket_update(
            ticket=_support("TicketFactory"), actor=None, status="RESOLVED"
        ),
        "support.ticket.resolved",
    ),
    "support.services.tickets.ticket_assign": (
        lambda: support_services.ticket_assign(
            ticket=(ticket := _support("TicketFactory")),
            actor=None,
            representative=_support_in("RepresentativeFactory", ticket.tenant),
        ),
        "support.ticket.assigned",
    ),
    "support.services.tickets.ticket_delete": (
        lambda: support_services.ticket_delete(ticket=_support("TicketFactory"), actor=None),
        "support.ticket.deleted",
    ),
    "support.services.customers.customer_profile_create": (
        lambda: support_services.customer_profile_create(
            tenant=TenantFactory(), actor=None, name="Ada", email="ada@example.org"
        ),
        "customer_profile.created",
    ),
    "support.services.customers.customer_profile_update": (
        lambda: support_services.customer_profile_update(
            customer_profile=_support("CustomerProfileFactory"), actor=None, tier="ENTERPRISE"
        ),
        "customer_profile.updated",
    ),
    "support.services.customers.customer_profile_delete": (
        lambda: support_services.customer_profile_delete(
            customer_profile=_support("CustomerProfileFactory"), actor=None
        ),
        "customer_profile.deleted",
    ),
    "support.services.representatives.representative_create": (
        lambda: support_services.representative_create(
            tenant=(membership := MembershipFactory()).tenant, actor=None, user=membership.user
        ),
        "representative.created",
    ),
    "support.services.representatives.representative_update": (
        lambda: support_services.representative_update(
            representative=_support("RepresentativeFactory"), actor=None, status="AWAY"
        ),
        "representative.updated",
    ),
    "support.services.representatives.representative_delete": (
        lambda: support_services.representative_delete(
            representative=_support("RepresentativeFactory"), actor=None
        ),
        "representative.deleted",
    ),
    "support.services.sla.sla_policy_create": (
        lambda: support_services.sla_policy_create(
            tenant=TenantFactory(),
            actor=None,
            name="Urgent",
            priority="URGENT",
            first_response_minutes=15,
            resolution_minutes=240,
        ),
        "sla_policy.created",
    ),
    "support.services.sla.sla_policy_update": (
        lambda: support_services.sla_policy_update(
            sla_policy=_support("SlaPolicyFactory"), actor=None, resolution_minutes=600
        ),
        "sla_policy.updated",
    ),
    "support.services.escalations.escalation_create": (
        lambda: support_services.escalation_create(
            tenant=TenantFactory(),
            actor=None,
            reason="CUSTOMER_REQUEST",
            issue_description="The customer asked for a person.",
        ),
        "support.escalation.created",
    ),
    "support.services.escalations.escalation_update": (
        lambda: support_services.escalation_update(
            escalation=_support("EscalationFactory"), actor=None, status="RESOLVED"
        ),
        "support.escalation.resolved",
    ),
    "support.services.escalations.escalation_delete": (
        lambda: support_services.escalation_delete(
            escalation=_support("EscalationFactory"), actor=None
        ),
        "support.escalation.deleted",
    ),
    "support.services.conversation.ticket_comment_add": (
        lambda: support_services.ticket_comment_add(
            ticket=_support("TicketFactory"), actor=None, comment="On it."
        ),
        "support.ticket.commented",
    ),
    "support.services.conversation.ticket_attachment_add": (
        lambda: support_services.ticket_attachment_add(
            ticket=_support("TicketFactory"), actor=None, file=_text_upload()
        ),
        "support.ticket.attachment_added",
    ),
    "support.services.conversation.ticket_attachment_delete": (
        lambda: support_services.ticket_attachment_delete(
            attachment=support_services.ticket_attachment_add(
                ticket=_support("TicketFactory"), actor=None, file=_text_upload()
            ),
            actor=None,
        ),
        "support.ticket.attachment_deleted",
    ),
    "support.services.sla_clock.sla_breaches_mark": (
        lambda: (
            _support_in("SlaPolicyFactory", tenant := TenantFactory()),
            support_services.ticket_create(
                tenant=tenant,
                actor=None,
                subject="Down",
                priority=(tenant.sla_policies.get().priority),
            ),
            support_services.sla_breaches_mark(now=timezone.now() + timedelta(days=30)),
        ),
        "support.sla.breached",
    ),
    "support.services.agents.ai_agent_create": (
        lambda: support_services.ai_agent_create(
            tenant=TenantFactory(), actor=None, name="Router", type="TICKET_ROUTING", model=_model()
        ),
        "ai_agent.created",
    ),
    "support.services.agents.ai_agent_update": (
        lambda: support_services.ai_agent_update(
            ai_agent=_support("AiAgentFactory"), actor=None, status="PAUSED"
        ),
        "ai_agent.updated",
    ),
    "support.services.agents.ai_agent_delete": (
        lambda: support_services.ai_agent_delete(ai_agent=_support("AiAgentFactory"), actor=None),
        "ai_agent.deleted",
    ),
    "support.services.agents.agent_assertion_record": (
        lambda: support_services.agent_assertion_record(
            ai_agent=_support("AiAgentFactory"), actor=None, correct=True, latency_ms=900
        ),
        "ai_agent.assertion_recorded",
    ),
    "support.services.decision_rules.decision_rule_create": (
        lambda: support_services.decision_rule_create(
            tenant=TenantFactory(), actor=None, name="Hot", priority=1, action="AUTO_RESOLVE"
        ),
        "decision_rule.created",
    ),
    "support.services.decision_rules.decision_rule_update": (
        lambda: support_services.decision_rule_update(
            decision_rule=_support("DecisionRuleFactory"), actor=None, enabled=True
        ),
        "decision_rule.updated",
    ),
    "support.services.decision_rules.decision_rule_delete": (
        lambda: support_services.decision_rule_delete(
            decision_rule=_support("DecisionRuleFactory"), actor=None
        ),
        "decision_rule.deleted",
    ),
    "support.services.tickets.rules_apply": (
        lambda: _apply_rule_to_ticket(),
        "decision_rule.applied",
    ),
    "support.services.budgets.budget_create": (
        lambda: support_services.budget_create(
            tenant=TenantFactory(), actor=None, type="REFUND", period="MONTHLY", limit_cents=100
        ),
        "budget.created",
    ),
    "support.services.budgets.budget_update": (
        lambda: support_services.budget_update(
            budget=_support("BudgetFactory"), actor=None, limit_cents=5
        ),
        "budget.updated",
    ),
    "support.services.budgets.budget_delete": (
        lambda: support_services.budget_delete(budget=_support("BudgetFactory"), actor=None),
        "budget.deleted",
    ),
    "support.services.budgets.budget_draw": (
        lambda: support_services.budget_draw(
            budget=_support("BudgetFactory"), actor=None, amount_cents=100
        ),
        "budget.usage_recorded",
    ),
    "support.services.budgets.budget_usage_add": (
        lambda: support_services.budget_usage_add(
            budget=_support_budget(type="COMPENSATION"), actor=None, amount_cents=100
        ),
        "budget.usage_recorded",
    ),
    "support.services.budgets.budgets_roll": (
        lambda: (
            _support_budget(
                period_start=timezone.now() - timedelta(days=90),
                period_end=timezone.now() - timedelta(days=60),
            ),
            support_services.budgets_roll(),
        ),
        "budget.period_rolled",
    ),
    "support.services.refunds.refund_create": (
        lambda: support_services.refund_create(
            tenant=(tenant := TenantFactory()),
            actor=None,
            order_id="1",
            customer=_support_in("CustomerProfileFactory", tenant),
            amount_cents=100,
            reason="OTHER",
        ),
        "refund.requested",
    ),
    "support.services.refunds.refund_update": (
        lambda: support_services.refund_update(
            refund=_support("RefundFactory"), actor=None, notes="Called back."
        ),
        "refund.updated",
    ),
    "support.services.refunds.refund_approve": (
        lambda: support_services.refund_approve(
            refund=_support("RefundFactory"), actor=None, actor_permissions={"billing.write"}
        ),
        "refund.approved",
    ),
    "support.services.refunds.refund_reject": (
        lambda: support_services.refund_reject(
            refund=_support("RefundFactory"),
            actor=None,
            actor_permissions={"billing.write"},
            reason="Duplicate.",
        ),
        "refund.rejected",
    ),
    "support.services.refunds.refund_complete": (
        lambda: support_services.refund_complete(
            refund=_support_refund(status="APPROVED"), actor=None
        ),
        "refund.completed",
    ),
    "support.services.refunds.refund_rules_apply": (
        lambda: _apply_rule_to_refund(),
        "decision_rule.applied",
    ),
    "support.services.decision_rules.rule_application_record": (
        lambda: _apply_rule_to_refund(),
        "decision_rule.applied",
    ),
    "support.services.sla.sla_policy_delete": (
        lambda: support_services.sla_policy_delete(
            sla_policy=_support("SlaPolicyFactory"), actor=None
        ),
        "sla_policy.deleted",
    ),
    "security.services.incidents.incident_create": (
        lambda: security_services.incident_create(
            tenant=TenantFactory(), actor=None, title="Leak", severity="high", category="other"
        ),
        "security.incident.created",
    ),
    "security.services.incidents.incident_update": (
        lambda: security_services.incident_update(
            incident=_incident(), actor=None, status="investigating"
        ),
        "security.incident.updated",
    ),
    "security.services.incidents.incident_raise": (
        lambda: security_services.incident_raise(
            tenant=TenantFactory(),
            raised_by="audit_chain",
            source_key="audit_chain:x",
            title="Broken",
            description="",
            severity="critical",
            category="system_compromise",
        ),
        "security.incident.created",
    ),
    "security.services.incidents.breach_notifications_remind": (
        lambda: (
            _incident(personal_data_breach=True, detected_at=timezone.now() - timedelta(hours=80)),
            security_services.breach_notifications_remind(),
        ),
        "security.breach.notification_due",
    ),
    "security.services.detection.audit_chain_check": (
        lambda: security_services.audit_chain_check(tenant=_broken_chain_tenant()),
        "security.incident.created",
    ),
    "security.services.detection.login_lockout_bursts_check": (
        lambda: (_lockouts(), security_services.login_lockout_bursts_check()),
        "security.incident.created",
    ),
    "security.services.audits.compliance_audit_create": (
        lambda: security_services.compliance_audit_create(
            tenant=TenantFactory(), actor=None, audit_type="internal", framework="gdpr", title="Q1"
        ),
        "compliance.audit.created",
    ),
    "security.services.audits.compliance_audit_update": (
        lambda: security_services.compliance_audit_update(
            compliance_audit=_audit(), actor=None, status="completed", score=90
        ),
        "compliance.audit.completed",
    ),
    "security.services.processing.processing_activity_create": (
        lambda: security_services.processing_activity_create(
            tenant=TenantFactory(),
            actor=None,
            name="Support chat",
            purpose="Support",
            legal_basis="contract",
            retention_period_months=24,
            privacy_impact_score=3,
        ),
        "processing_activity.created",
    ),
    "security.services.processing.processing_activity_update": (
        lambda: security_services.processing_activity_update(
            processing_activity=_activity(), actor=None, status="approved"
        ),
        "processing_activity.approved",
    ),
    "security.services.processing.processing_activity_delete": (
        lambda: security_services.processing_activity_delete(
            processing_activity=_activity(), actor=None
        ),
        "processing_activity.deleted",
    ),
    "playground.services.runs.orchestration_start": (
        lambda: playground_services.orchestration_start(
            tenant=(project := _project()).tenant, actor=None, project_id=project.pk
        ),
        "orchestration.started",
    ),
    "playground.services.runs.orchestration_run_execute": (
        lambda: playground_services.orchestration_run_execute(run_id=_run().pk),
        "orchestration.completed",
    ),
    "playground.services.runs.orchestration_run_cancel": (
        lambda: playground_services.orchestration_run_cancel(run=_run(), actor=None),
        "orchestration.cancelled",
    ),
    "playground.services.runs.orchestration_run_fail": (
        lambda: playground_services.orchestration_run_fail(job=_stalled_run(), reason="gone"),
        "orchestration.failed",
    ),
    "playground.services.workflows.workflow_execute": (
        lambda: playground_services.workflow_execute(
            tenant=TenantFactory(),
            actor=None,
            actor_permissions=ALL_PERMISSIONS,
            workflow_type="audit_export",
            input_data={},
        ),
        "workflow.queued",
    ),
    "playground.services.workflows.workflow_job_execute": (
        lambda: playground_services.workflow_job_execute(job_id=_workflow_job().pk),
        "workflow.completed",
    ),
    "playground.services.workflows.workflow_job_cancel": (
        lambda: playground_services.workflow_job_cancel(workflow_job=_workflow_job(), actor=None),
        "workflow.cancelled",
    ),
    "playground.services.workflows.workflow_job_fail": (
        lambda: playground_services.workflow_job_fail(
            job=_workflow_job(status="running", lease_expires_at=timezone.now() - timedelta(1)),
            reason="gone",
        ),
        "workflow.failed",
    ),
    "playground.services.artifacts.artifact_delete": (
        lambda: playground_services.artifact_delete(artifact=_artifact(), actor=None),
        "artifact.deleted",
    ),
    "playground.services.projects.project_create": (
        lambda: playground_services.project_create(
            tenant=TenantFactory(), actor=None, name="Shop", topic="A shop"
        ),
        "project.created",
    ),
    "playground.services.projects.project_update": (
        lambda: playground_services.project_update(
            project=_project(), actor=None, priority="urgent"
        ),
        "project.updated",
    ),
    "playground.services.projects.project_delete": (
        lambda: playground_services.project_delete(project=_project(), actor=None),
        "project.deleted",
    ),
    "playground.services.projects.orchestration_template_create": (
        lambda: playground_services.orchestration_template_create(
            tenant=TenantFactory(), actor=None, name="Web app", template_data={"phases": ["a"]}
        ),
        "orchestration_template.created",
    ),
    "playground.services.projects.orchestration_template_update": (
        lambda: playground_services.orchestration_template_update(
            orchestration_template=_orchestration_template(), actor=None, name="Renamed"
        ),
        "orchestration_template.updated",
    ),
    "playground.services.projects.orchestration_template_delete": (
        lambda: playground_services.orchestration_template_delete(
            orchestration_template=_orchestration_template(), actor=None
        ),
        "orchestration_template.deleted",
    ),
    "billing.services.plans.plan_create": (
        lambda: billing_services.plan_create(actor=None, code="scale", name="Scale", price_cents=1),
        "billing.plan.created",
    ),
    "billing.services.plans.plan_update": (
        lambda: billing_services.plan_update(
            plan=billing_services.plan_create(actor=None, code="tiny", name="Tiny"),
            actor=None,
            price_cents=2,
        ),
        "billing.plan.updated",
    ),
    "billing.services.plans.plan_delete": (
        lambda: billing_services.plan_delete(
            plan=billing_services.plan_create(actor=None, code="gone", name="Gone"), actor=None
        ),
        "billing.plan.deleted",
    ),
    "billing.services.subscriptions.subscription_ensure": (
        lambda: billing_services.subscription_ensure(tenant=TenantFactory()),
        "billing.subscription.created",
    ),
    "billing.services.subscriptions.subscription_change_plan": (
        lambda: billing_services.subscription_change_plan(
            tenant=_paid_subscription().tenant, actor=None, plan=Plan.objects.get(code="business")
        ),
        "billing.subscription.changed",
    ),
    "billing.services.subscriptions.subscription_cancel": (
        lambda: billing_services.subscription_cancel(subscription=_paid_subscription(), actor=None),
        "billing.subscription.canceled",
    ),
    "billing.services.subscriptions.subscription_resume": (
        lambda: billing_services.subscription_resume(
            subscription=billing_services.subscription_cancel(
                subscription=_paid_subscription(), actor=None
            ),
            actor=None,
        ),
        "billing.subscription.resumed",
    ),
    "billing.services.invoices.invoice_issue": (
        lambda: billing_services.invoice_issue(
            subscription=(subscription := _paid_subscription()),
            plan=subscription.plan,
            reason="plan_change",
            period_start=timezone.now(),
            period_end=timezone.now() + timedelta(days=1),
            lines=[billing_services.LineSpec(type="proration", description="x", amount_cents=1)],
            actor=None,
        ),
        "billing.invoice.created",
    ),
    "billing.services.invoices.invoice_void": (
        lambda: billing_services.invoice_void(invoice=_pending_invoice(), actor=None, reason="x"),
        "billing.invoice.voided",
    ),
    "billing.services.invoices.invoice_resend": (
        lambda: billing_services.invoice_resend(invoice=_pending_invoice(), actor=None),
        "billing.invoice.resent",
    ),
    "billing.services.checkout.checkout_create": (_checkout_session, "billing.checkout.created"),
    "billing.services.checkout.checkout_complete": (
        lambda: billing_services.checkout_complete(
            session=_checkout_session(), payment_method="pm_card_visa"
        ),
        "billing.subscription.changed",
    ),
    "billing.services.checkout.invoice_issue_first_period": (
        lambda: billing_services.invoice_issue_first_period(subscription=_paid_subscription()),
        "billing.invoice.created",
    ),
    "billing.services.payments.invoice_pay": (_paid_invoice, "billing.payment.succeeded"),
    "billing.services.payments.invoice_collect": (
        lambda: billing_services.invoice_collect(
            invoice=_pending_invoice(subscription=_paid_subscription())
        ),
        "billing.payment.succeeded",
    ),
    "billing.services.payments.invoice_mark_paid_offline": (
        lambda: billing_services.invoice_mark_paid_offline(
            invoice=_pending_invoice(), actor=None, note="bank transfer"
        ),
        "billing.payment.succeeded",
    ),
    "billing.services.provider_events.provider_event_receive": (
        _provider_event,
        "billing.subscription.changed",
    ),
    "billing.services.renewals.subscription_renew": (
        lambda: billing_services.subscription_renew(subscription=_ended_subscription()),
        "billing.subscription.renewed",
    ),
    "billing.services.renewals.subscriptions_renew_due": (
        lambda: billing_services.subscriptions_renew_due(tenant=_ended_subscription().tenant),
        "billing.subscription.renewed",
    ),
    "billing.services.dunning.invoice_mark_overdue": (
        lambda: billing_services.invoice_mark_overdue(
            invoice=_pending_invoice(due_date=(timezone.now() - timedelta(days=2)).date())
        ),
        "billing.invoice.overdue",
    ),
    "billing.services.dunning.dunning_run": (
        lambda: (
            _pending_invoice(due_date=(timezone.now() - timedelta(days=2)).date()),
            billing_services.dunning_run(),
        ),
        "billing.invoice.overdue",
    ),
    "billing.services.dunning.dunning_suspend": (
        lambda: billing_services.dunning_suspend(tenant=_overdue_invoice().tenant),
        "tenant.suspended",
    ),
    "billing.services.dunning.dunning_settle": (_dunning_settled, "tenant.restored"),
    "billing.services.credit_notes.credit_note_issue": (
        lambda: billing_services.credit_note_issue(
            invoice=_paid_invoice(), actor=None, amount_cents=100, kind="credit", reason="x"
        ),
        "billing.credit_note.created",
    ),
    "playground.services.catalogue.provider_create": (
        lambda: playground_catalogue.provider_create(
            actor=None, name="ollama", kind="openai", base_url="http://ollama:11434/v1"
        ),
        "gateway.provider.created",
    ),
    "playground.services.catalogue.provider_update": (
        lambda: playground_catalogue.provider_update(
            provider=_provider(), actor=None, timeout_seconds=30
        ),
        "gateway.provider.updated",
    ),
    "playground.services.catalogue.provider_delete": (
        lambda: playground_catalogue.provider_delete(provider=_provider(), actor=None),
        "gateway.provider.deleted",
    ),
    "playground.services.catalogue.language_model_create": (
        lambda: playground_catalogue.language_model_create(
            actor=None,
            name="llama-3",
            upstream_model="llama3",
            context_window=8192,
            max_output_tokens=2048,
            input_price_micros=0,
            output_price_micros=0,
        ),
        "gateway.model.created",
    ),
    "playground.services.catalogue.language_model_update": (
        lambda: playground_catalogue.language_model_update(
            model=LanguageModel.objects.get(name="gpt-4"), actor=None, input_price_micros=1
        ),
        "gateway.model.updated",
    ),
    "playground.services.catalogue.language_model_delete": (
        lambda: playground_catalogue.language_model_delete(
            model=LanguageModel.objects.get(name="o1-mini"), actor=None
        ),
        "gateway.model.deleted",
    ),
    "playground.services.templates.prompt_template_create": (
        lambda: playground_services.prompt_template_create(
            tenant=TenantFactory(),
            actor=None,
            name="FAQ",
            user_prompt_template="Q: {question}",
            variables=[{"name": "question", "type": "string", "required": True}],
        ),
        "prompt_template.created",
    ),
    "playground.services.templates.prompt_template_update": (
        lambda: playground_services.prompt_template_update(
            template=_template(), actor=None, category="summaries"
        ),
        "prompt_template.updated",
    ),
    "playground.services.templates.prompt_template_publish": (
        lambda: playground_services.prompt_template_publish(
            template=_template(), actor=None, version=1
        ),
        "prompt_template.published",
    ),
    "playground.services.templates.prompt_template_delete": (
        lambda: playground_services.prompt_template_delete(template=_template(), actor=None),
        "prompt_template.deleted",
    ),
    "playground.services.templates.prompt_templates_bulk": (
        lambda: (
            template := _template(),
            playground_services.prompt_templates_bulk(
                tenant=template.tenant,
                actor=None,
                operation="activate",
                template_ids=[template.pk],
            ),
        ),
        "prompt_template.updated",
    ),
    "playground.services.templates.prompt_execution_rate": (
        lambda: playground_services.prompt_execution_rate(
            execution=_execution(), actor=None, rating=4
        ),
        "prompt_execution.rated",
    ),
    "notifications.services.endpoints.webhook_endpoint_create": (
        lambda: notifications_services.webhook_endpoint_create(
            tenant=TenantFactory(),
            actor=None,
            name="Covered",
            url="https://hooks.example.com/in",
            events=["*"],
        ),
        "webhook.endpoint.created",
    ),
    "notifications.services.endpoints.webhook_endpoint_update": (
        lambda: notifications_services.webhook_endpoint_update(
            webhook_endpoint=_endpoint(), actor=None, name="Renamed"
        ),
        "webhook.endpoint.updated",
    ),
    "notifications.services.endpoints.webhook_endpoint_delete": (
        lambda: notifications_services.webhook_endpoint_delete(
            webhook_endpoint=_endpoint(), actor=None
        ),
        "webhook.endpoint.deleted",
    ),
    "notifications.services.endpoints.webhook_endpoint_rotate_secret": (
        lambda: notifications_services.webhook_endpoint_rotate_secret(
            webhook_endpoint=_endpoint(), actor=None
        ),
        "webhook.endpoint.secret_rotated",
    ),
    "notifications.services.endpoints.webhook_endpoint_disable": (
        lambda: notifications_services.webhook_endpoint_disable(
            webhook_endpoint=_endpoint(), reason="Failing"
        ),
        "webhook.endpoint.disabled",
    ),
    "notifications.services.endpoints.webhook_endpoint_test": (
        lambda: notifications_services.webhook_endpoint_test(
            webhook_endpoint=_endpoint(), actor=None
        ),
        "webhook.endpoint.tested",
    ),
    "notifications.services.endpoints.webhook_endpoint_replay": (
        lambda: notifications_services.webhook_endpoint_replay(
            webhook_endpoint=_endpoint(), actor=None, since=timezone.now() - timedelta(days=1)
        ),
        "webhook.endpoint.replayed",
    ),
    "notifications.services.endpoints.webhook_delivery_retry": (
        lambda: notifications_services.webhook_delivery_retry(
            delivery=_failed_delivery(), actor=None
        ),
        "webhook.delivery.retried",
    ),
    "notifications.services.relay.webhook_deliveries_prune": (
        lambda: (_old_delivery(), notifications_services.webhook_deliveries_prune()),
        "webhook.deliveries.pruned",
    ),
    "notifications.services.user_notifications.notifications_prune": (
        lambda: (_old_notification(), notifications_services.notifications_prune()),
        "notifications.pruned",
    ),
    "notifications.services.user_notifications.notification_send": (
        lambda: notifications_services.notification_send(
            tenant=(member := _member()).tenant,
            actor=None,
            recipient=member.user,
            title="Covered",
            message="A message.",
        ),
        "notification.sent",
    ),
    "notifications.services.user_notifications.notification_preferences_update": (
        lambda: notifications_services.notification_preferences_update(
            tenant=(member := _member()).tenant,
            user=member.user,
            actor=None,
            data={"email_enabled": False},
        ),
        "notification.preferences_updated",
    ),
    "notifications.services.phone_confirmations.phone_confirmation_send": (
        lambda: notifications_services.phone_confirmation_send(
            tenant=(member := _phone_to_confirm()).tenant, user=member.user, actor=member.user
        ),
        "notification.phone_confirmation_sent",
    ),
    "notifications.services.phone_confirmations.phone_confirmation_confirm": (
        lambda: notifications_services.phone_confirmation_confirm(
            tenant=(member := _phone_to_confirm("123456")).tenant,
            user=member.user,
            actor=member.user,
            code="123456",
        ),
        "notification.phone_confirmed",
    ),
    "accounts.services.user_create": (
        lambda: accounts_services.user_create(email="new@example.com", password=TEST_PASSWORD),
        "user.created",
    ),
    "tenants.services.members.user_delete": (
        lambda: tenants_services.members.user_delete(user=_member().user, actor=None),
        "user.deleted",
    ),
    "accounts.services.auth_token_issue": (
        lambda: accounts_services.auth_token_issue(user=UserFactory()),
        "auth.login.succeeded",
    ),
    "accounts.services.auth_login_failed": (
        lambda: accounts_services.auth_login_failed(identifier="who@example.com"),
        "auth.login.failed",
    ),
    "accounts.services.auth_tokens_purge_expired": (
        lambda: (_expire_a_token(), accounts_services.auth_tokens_purge_expired()),
        "auth.tokens.purged",
    ),
    "tenants.services.lifecycle.tenant_create": (
        lambda: tenants_services.tenant_create(actor=UserFactory(), name="Covered"),
        "tenant.created",
    ),
    "tenants.services.members.membership_add": (
        lambda: tenants_services.membership_add(
            tenant=TenantFactory(), user=UserFactory(), role=Role.VIEWER, actor=None
        ),
        "member.added",
    ),
    "tenants.services.members.member_invite": (
        lambda: tenants_services.member_invite(
            tenant=TenantFactory(), actor=None, email="invitee@example.com", send_email=False
        ),
        "member.invited",
    ),
    "tenants.services.members.invitation_resend": (
        lambda: tenants_services.invitation_resend(
            membership=InvitationFactory().membership, actor=None
        ),
        "invitation.resent",
    ),
    "tenants.services.members.invitation_link_issue": (
        lambda: tenants_services.members.invitation_link_issue(
            membership=InvitationFactory().membership, actor=None
        ),
        "invitation.link_issued",
    ),
    "tenants.services.members.invitation_accept": (
        lambda: tenants_services.invitation_accept(
            token=InvitationFactory().token, name="New Member", password=TEST_PASSWORD
        ),
        "member.joined",
    ),
    "tenants.services.members.invitation_revoke": (
        lambda: tenants_services.invitation_revoke(invitation=InvitationFactory(), actor=None),
        "invitation.revoked",
    ),
    "tenants.services.members.member_update": (
        lambda: tenants_services.member_update(membership=_member(), actor=None, role=Role.MEMBER),
        "member.role_changed",
    ),
    "tenants.services.members.member_remove": (
        lambda: tenants_services.member_remove(membership=_member(), actor=None),
        "member.removed",
    ),
    "tenants.services.themes.theme_update": (
        lambda: tenants_services.theme_update(
            tenant=TenantFactory(), actor=None, data={"primary_color": "#123456"}
        ),
        "theme.updated",
    ),
    "tenants.services.themes.theme_logo_set": (_upload_a_logo, "theme.logo_uploaded"),
    "audit.services.chain_purge": (_purge_tenant_chain, "audit.chain.purged"),
    "tenants.services.lifecycle.tenant_update": (
        lambda: lifecycle.tenant_update(tenant=TenantFactory(), actor=None, data={"name": "New"}),
        "tenant.updated",
    ),
    "tenants.services.lifecycle.organization_update": (
        lambda: lifecycle.organization_update(
            tenant=TenantFactory(), actor=None, data={}, branding={"primary_color": "#123456"}
        ),
        "theme.updated",
    ),
    "tenants.services.lifecycle.tenant_activate": (
        lambda: lifecycle.tenant_activate(
            tenant=TenantFactory(status=TenantStatus.TRIAL), actor=None
        ),
        "tenant.activated",
    ),
    "tenants.services.lifecycle.tenant_suspend": (
        lambda: lifecycle.tenant_suspend(tenant=TenantFactory(), actor=None, reason="Overdue"),
        "tenant.suspended",
    ),
    "tenants.services.lifecycle.tenant_restore": (
        lambda: lifecycle.tenant_restore(
            tenant=TenantFactory(status=TenantStatus.SUSPENDED), actor=None
        ),
        "tenant.restored",
    ),
    "tenants.services.lifecycle.tenant_cancel": (
        lambda: lifecycle.tenant_cancel(tenant=TenantFactory(), actor=None),
        "tenant.cancelled",
    ),
    "tenants.services.lifecycle.tenant_delete": (
        lambda: lifecycle.tenant_delete(tenant=TenantFactory(), actor=None),
        "tenant.deleted",
    ),
    "tenants.services.quotas.quota_consume": (
        lambda: quotas.quota_consume(
            tenant=TenantFactory(settings={"maxDocuments": 1}), resource="documents"
        ),
        "quota.warning",
    ),
    "tenants.services.quotas.api_calls_admit": (
        lambda: quotas.api_calls_admit(
            tenant=TenantFactory(settings={"maxApiCallsPerMonth": 1}), windows=()
        ),
        "quota.warning",
    ),
    "tenants.services.quotas.quota_reset": (
        lambda: quotas.quota_reset(tenant=TenantFactory(), actor=None),
        "quota.reset",
    ),
    "tenants.services.quotas.quotas_reset_due": (
        lambda: quotas.quotas_reset_due(
            tenant=TenantFactory(quota_reset_at=timezone.now() - timedelta(minutes=1))
        ),
        "quota.reset",
    ),
    "accounts.services.jwt_login": (
        lambda: accounts_services.jwt_login(user=UserFactory()),
        "auth.login.succeeded",
    ),
    "accounts.services.auth_logout": (_logout_with_a_token, "auth.logout"),
    "accounts.services.api_key_create": (_owner_key, "api_key.created"),
    "accounts.services.api_key_update": (
        lambda: accounts_services.api_key_update(
            api_key=_owner_key()[0], actor=None, actor_permissions=ALL_PERMISSIONS, name="renamed"
        ),
        "api_key.updated",
    ),
    "accounts.services.api_key_revoke": (
        lambda: accounts_services.api_key_revoke(api_key=_owner_key()[0], actor=None),
        "api_key.revoked",
    ),
}


def _service_modules():
    for config in apps.get_app_configs():
        try:
            module = importlib.import_module(f"{config.name}.services")
        except ModuleNotFoundError:
            continue
        yield module
        for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            yield importlib.import_module(f"{module.__name__}.{info.name}")


def service_functions() -> set[str]:
    names = set()
    for module in _service_modules():
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ == module.__name__ and not name.startswith("_"):
                names.add(f"{module.__name__}.{name}")
    return names


def test_every_service_is_classified():
    unclassified = service_functions() - set(INVOCATIONS) - set(EXEMPT)
    assert not unclassified, f"add to INVOCATIONS (with its event) or EXEMPT: {unclassified}"
    stale = (set(INVOCATIONS) | set(EXEMPT)) - service_functions()
    assert not stale, f"no longer services: {stale}"


# Without Redis, api_calls are counted by quota_consume's conditional UPDATE instead.
NEED_REDIS = {"tenants.services.quotas.api_calls_admit"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "service",
    [
        pytest.param(name, marks=pytest.mark.redis) if name in NEED_REDIS else name
        for name in sorted(INVOCATIONS)
    ],
)
def test_state_changing_service_records_its_event(service):
    call, event_type = INVOCATIONS[service]
    before = AuditEvent.objects.filter(event_type=event_type).count()

    call()

    assert AuditEvent.objects.filter(event_type=event_type).count() > before, service
