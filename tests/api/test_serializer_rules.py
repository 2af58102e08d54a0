"""Rules every serializer of the project follows, checked by walking them all.

- Each derives from the bases in config.serializers (strict types, unwritable keys refused).
- Each writable text or choice field is strict: a JSON string, never a number made into one.
- No writable field carries a name only platform staff should set (status, plan, limits,
  timestamps, ids, ...) unless it is listed below with the rule that guards it, and that rule
  has its own test. A new serializer exposing such a field fails here until someone decides.
"""

import pytest
from rest_framework import serializers

from config import serializers as base
from tests.project import import_project_modules, is_project_code, subclasses

# Field names that only platform staff (or the system) should be able to set.
STAFF_ONLY_NAMES = frozenset(
    {
        "id",
        "tenant",
        "tenant_id",
        "organization_id",
        "status",
        "plan",
        "subscription_tier",
        "is_staff",
        "is_superuser",
        "is_active",
        "created_at",
        "updated_at",
        "activated_at",
        "suspended_at",
        "suspension_reason",
        "cancelled_at",
        "trial_ends_at",
        "quota_reset_at",
        "last_reset_at",
        "revoked_at",
        "last_used_at",
        "usage_count",
        "created_by",
        "invited_by",
        "invited_at",
        "joined_at",
        "user_id",
        "key_prefix",
        "secret_hash",
        "token_digest",
        "seq",
        "hash",
        "prev_hash",
        "member_count",
        "user_count",
        "quota",
        "limit",
        "used",
    }
)

# (serializer, field) -> the rule that makes it safe, and the test that proves the rule.
REVIEWED = {
    ("analytics.serializers.QueryEventSerializer", "id"): (
        "the event's id in the product's own system, stored as event_id (unique per tenant, "
        "never a primary key): a resent id changes nothing (tests/analytics/test_api.py)"
    ),
    ("analytics.serializers.QueriesQuerySerializer", "limit"): (
        "how many top queries a report lists (1 to 100), not a quota"
    ),
    ("analytics.serializers.PerformanceMetricsQuerySerializer", "limit"): (
        "how many periods a report lists (1 to 100), not a quota"
    ),
    ("support.serializers.TicketUpdateSerializer", "status"): (
        "a ticket's lifecycle, set by holders of support.write along the legal moves only "
        "(ticket_update: 409 otherwise): tests/support/test_tickets.py"
    ),
    ("support.serializers.RefundUpdateSerializer", "status"): (
        "a refund's moves: approval and rejection need billing.write or a representative's "
        "refund authority covering the amount, then the budget (refund_approve: 403/409), "
        "completion only once approved: tests/support/test_refunds.py"
    ),
    ("support.serializers.EscalationUpdateSerializer", "status"): (
        "an escalation's progress, set by holders of support.write along the forward moves only "
        "(escalation_update: 409 otherwise): tests/support/test_escalations.py"
    ),
    ("support.serializers.AiAgentInputSerializer", "status"): (
        "an AI agent's operating state (ACTIVE, PAUSED, DISABLED), the organization's own "
        "configuration, set by holders of support.write: tests/support/test_automation.py"
    ),
    ("support.serializers.AiAgentUpdateSerializer", "status"): (
        "the same field on update: tests/support/test_automation.py"
    ),
    ("support.serializers.RepresentativeUpdateSerializer", "status"): (
        "a representative's presence (ONLINE, AWAY, OFFLINE), set by holders of support.write; "
        "it stamps last_active_at: tests/support/test_desk_setup.py"
    ),
    ("support.serializers.RepresentativeCreateSerializer", "status"): (
        "as RepresentativeUpdateSerializer.status"
    ),
    ("support.serializers.RepresentativeCreateSerializer", "user_id"): (
        "the member made a representative: representative_create refuses anyone but an active "
        "member of the organization: tests/support/test_desk_setup.py"
    ),
    ("security.serializers.IncidentUpdateSerializer", "status"): (
        "an incident's own lifecycle, set by holders of security.write along the legal moves "
        "only (incident_update: 409 otherwise): tests/security/test_incidents.py"
    ),
    ("security.serializers.ComplianceAuditUpdateSerializer", "status"): (
        "an audit's own lifecycle, set by holders of security.write along the legal moves "
        "(compliance_audit_update): tests/security/test_audits_register_reports.py"
    ),
    ("security.serializers.ProcessingActivityInputSerializer", "status"): (
        "a register entry's approval, by holders of security.write along the legal moves "
        "(processing_activity_update): tests/security/test_audits_register_reports.py"
    ),
    ("security.serializers.AuditFindingSerializer", "status"): (
        "a finding's remediation (open or remediated), recorded by holders of security.write: "
        "tests/security/test_audits_register_reports.py"
    ),
    ("security.serializers._AuditInput", "findings[].status"): ("as AuditFindingSerializer.status"),
    ("security.serializers.ComplianceAuditCreateSerializer", "findings[].status"): (
        "as AuditFindingSerializer.status"
    ),
    ("security.serializers.ComplianceAuditUpdateSerializer", "findings[].status"): (
        "as AuditFindingSerializer.status"
    ),
    ("security.serializers.RegisterQuerySerializer", "status"): (
        "a query parameter of the GDPR register report: which statuses it lists; changes nothing"
    ),
    ("playground.serializers.ProjectSerializer", "status"): (
        "a project's own progress (active, completed, archived, failed), set by holders of "
        "playground.write, as a project update does: tests/playground/test_projects.py"
    ),
    ("billing.serializers.CheckoutSerializer", "plan"): (
        "the paid plan the organization subscribes to, for holders of billing.write, through "
        "the provider's hosted page: the tier follows the plan paid for "
        "(tests/billing/test_checkout.py)"
    ),
    ("billing.serializers.ChangePlanSerializer", "plan"): (
        "the plan the organization buys, for holders of billing.write: an upgrade is charged pro "
        "rata on an invoice issued at once and the tier follows the plan bought, a downgrade "
        "waits for the period end: tests/billing/test_subscriptions.py"
    ),
    ("tenants.serializers.tenants.TenantSerializer", "subscription_tier"): (
        "tenant_create refuses a tier other than free unless the actor is staff: "
        "tests/tenants/test_tenants_api.py::test_an_ordinary_user_cannot_grant_themselves_a_plan"
    ),
    ("tenants.serializers.tenants.TenantUpdateSerializer", "subscription_tier"): (
        "tenant_update refuses a plan change unless the actor is staff: "
        "tests/tenants/test_lifecycle.py (plan changes need staff)"
    ),
    ("tenants.serializers.members.MemberUpdateSerializer", "status"): (
        "a member's own status (active or suspended), set by holders of members.write under the "
        "owner rules of member_update: tests/tenants/test_members.py"
    ),
    ("accounts.serializers.APIKeyUpdateSerializer", "is_active"): (
        "the key's own on/off switch, for holders of keys.write: tests/accounts/test_api_keys.py"
    ),
    ("tenants.serializers.themes.ThemeSerializer", "is_active"): (
        "the theme's own on/off switch, for holders of settings.write: tests/tenants/test_themes.py"
    ),
    ("notifications.serializers.WebhookEndpointCreateSerializer", "is_active"): (
        "the endpoint's own on/off switch, for holders of settings.write: "
        "tests/notifications/test_api.py"
    ),
    ("notifications.serializers.WebhookEndpointUpdateSerializer", "is_active"): (
        "as WebhookEndpointCreateSerializer: tests/notifications/test_api.py"
    ),
    ("notifications.serializers.NotificationSendSerializer", "user_id"): (
        "the recipient, which must be an active member of the request's tenant "
        "(validate_user_id): tests/notifications/test_notifications.py"
    ),
    ("audit.serializers.ChainQuerySerializer", "tenant_id"): (
        "a query parameter honoured for staff only; a member's request reads its own tenant's "
        "chain (audit.views.selected_chain): tests/audit/test_verify_api.py"
    ),
    ("playground.serializers.ChatCompletionSerializer", "tenant_id"): (
        "accepted for OpenAI-style clients that send it and dropped (validate): the tenant is "
        "the credential's: tests/playground/test_gateway.py (a tenant_id in the body is ignored)"
    ),
    ("playground.serializers.PromptTemplateWriteSerializer", "status"): (
        "a prompt template's own lifecycle (draft, active, archived), the tenant's to set, not "
        "a platform status: tests/playground/test_templates.py"
    ),
    ("audit.serializers.ExportQuerySerializer", "tenant_id"): (
        "as ChainQuerySerializer: tests/audit/test_export.py"
    ),
}


def project_serializers() -> list[type]:
    import_project_modules()
    found = {
        cls
        for cls in subclasses(serializers.BaseSerializer)
        if is_project_code(cls) and cls.__module__ != base.__name__
    }
    return sorted(found, key=_name)


def _name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


SERIALIZERS = project_serializers()


def _writable_fields(serializer, prefix=""):
    """(dotted name, field) for every writable field, nested serializers and children included."""
    for name, field in serializer.fields.items():
        if field.read_only:
            continue
        yield from _field_and_children(f"{prefix}{name}", field)


def _field_and_children(name, field):
    yield name, field
    if isinstance(field, serializers.ListSerializer):
        yield from _writable_fields(field.child, f"{name}.")
    elif isinstance(field, serializers.BaseSerializer):
        yield from _writable_fields(field, f"{name}.")
    elif isinstance(field, serializers.ListField | serializers.DictField):
        yield from _field_and_children(f"{name}[]", field.child)


def test_the_walk_finds_the_serializers():
    names = {_name(cls) for cls in SERIALIZERS}
    assert "tenants.serializers.tenants.TenantSerializer" in names
    assert "accounts.serializers.APIKeyCreateSerializer" in names
    assert len(names) > 30


@pytest.mark.parametrize("cls", SERIALIZERS, ids=_name)
def test_every_serializer_derives_from_the_project_bases(cls):
    assert issubclass(cls, base.Serializer | base.ModelSerializer | base.QuerySerializer), (
        f"{_name(cls)}: derive from config.serializers.Serializer or ModelSerializer "
        "(QuerySerializer for query parameters)"
    )


@pytest.mark.parametrize("cls", SERIALIZERS, ids=_name)
def test_every_writable_text_field_is_strict(cls):
    loose = [
        name
        for name, field in _writable_fields(cls())
        if isinstance(field, serializers.CharField | serializers.ChoiceField)
        and not isinstance(field, base.StrictTextMixin)
    ]
    assert not loose, (
        f"{_name(cls)}: {loose} accept numbers as text; use the fields of config.serializers"
    )


def test_no_writable_field_is_staff_only_unless_reviewed():
    exposed = {
        (_name(cls), name)
        for cls in SERIALIZERS
        for name, _ in _writable_fields(cls())
        if name.rsplit(".", 1)[-1].removesuffix("[]") in STAFF_ONLY_NAMES
    }
    unreviewed = sorted(exposed - set(REVIEWED))
    assert not unreviewed, (
        f"writable fields only staff should set: {unreviewed}. Make them read-only, or guard "
        "them in the service and add them to REVIEWED with the test that proves the guard."
    )
    stale = sorted(set(REVIEWED) - exposed)
    assert not stale, f"REVIEWED names fields that are no longer writable: {stale}"


def test_a_loose_text_field_would_be_found():
    class Loose(base.Serializer):
        name = serializers.CharField()

    assert [name for name, _ in _writable_fields(Loose())] == ["name"]
    assert not isinstance(Loose().fields["name"], base.StrictTextMixin)
