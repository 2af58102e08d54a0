"""Serializers of the security app: the request bodies the API accepts and the shapes it
answers with.

Each derives from `config.serializers` (`ModelSerializer`, `Serializer`, `ResponseSerializer`
for a shape only ever answered), so text is strict and an unwritable key is a 400;
tests/api/test_serializer_rules.py walks them all. No serializer writes `tenant` (the view
sets it), and a reference to another tenant-owned object is a
`tenants.serializers.fields.TenantScopedPrimaryKeyRelatedField`, so another tenant's id is
refused like a random one. Serializers check shapes; rules are the services'.

A resource answers one shape (`IncidentSerializer`, ...) and parses its create and update
bodies with narrower serializers: an incident's status moves by update only, its detection
time is given at creation only. An update body may carry back what a GET showed (its
read-only keys unchanged): the view hands the shown representation to the serializer.
"""

from rest_framework import serializers

from config.serializers import (
    CharField,
    ChoiceField,
    CountryField,
    DescriptionField,
    DistinctListField,
    ModelSerializer,
    NameField,
    PersonSerializer,
    QuerySerializer,
    ResponseSerializer,
    Serializer,
    WholeItemsField,
)
from tenants.serializers.fields import StrictBooleanField

from .models import (
    ActivityStatus,
    AuditStatus,
    ComplianceAudit,
    FindingStatus,
    Incident,
    IncidentStatus,
    IncidentTimelineEntry,
    LegalBasis,
    ProcessingActivity,
    Severity,
    SpecialCategory,
    TransferSafeguard,
)

# Lists of short labels (data types, categories, subjects, recipients).
LABELS_MAX = 50
FINDINGS_MAX = 200


def _labels(help_text: str, *, max_length: int = 100, distinct: bool = True):
    field = DistinctListField if distinct else serializers.ListField
    return field(
        child=NameField(max_length=max_length),
        max_length=LABELS_MAX,
        required=False,
        help_text=f"{help_text} At most {LABELS_MAX}.",
    )


# Incidents --------------------------------------------------------------------------------------


class TimelineEntrySerializer(ModelSerializer):
    actor = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = IncidentTimelineEntry
        fields = ["id", "kind", "from_status", "to_status", "note", "actor", "created_at"]
        read_only_fields = fields


INCIDENT_FIELDS = [
    "id",
    "title",
    "description",
    "severity",
    "category",
    "status",
    "affected_users",
    "affected_documents",
    "data_types_affected",
    "assigned_to",
    "assignee",
    "resolution_notes",
    "detected_at",
    "resolved_at",
    "closed_at",
    "personal_data_breach",
    "authority_notification_due_at",
    "authority_notified_at",
    "authority_reference",
    "subjects_notified_at",
    "notification_overdue",
    "raised_by",
    "reported_by",
    "created_at",
    "updated_at",
]


class IncidentSerializer(ModelSerializer):
    """An incident as every answer shows it."""

    assigned_to = serializers.UUIDField(
        source="assigned_to_id", read_only=True, allow_null=True, help_text="A member's user id."
    )
    assignee = PersonSerializer(source="assigned_to", read_only=True, allow_null=True)
    reported_by = PersonSerializer(read_only=True, allow_null=True)
    notification_overdue = serializers.BooleanField(
        read_only=True,
        help_text="A personal data breach past its 72-hour deadline with no authority "
        "notification.",
    )

    class Meta:
        model = Incident
        fields = INCIDENT_FIELDS
        read_only_fields = fields


class IncidentDetailSerializer(IncidentSerializer):
    """An incident with its timeline (oldest first)."""

    timeline = TimelineEntrySerializer(many=True, read_only=True)

    class Meta(IncidentSerializer.Meta):
        fields = [*INCIDENT_FIELDS, "timeline"]
        read_only_fields = fields


class _IncidentInput(ModelSerializer):
    """What create and update share."""

    data_types_affected = _labels('Kinds of data affected ("email", "payment_data").')
    assigned_to = serializers.UUIDField(
        required=False, allow_null=True, help_text="The user id of an active member, or null."
    )
    personal_data_breach = StrictBooleanField(required=False)
    affected_users = serializers.IntegerField(min_value=0, max_value=2_000_000_000, required=False)
    affected_documents = serializers.IntegerField(
        min_value=0, max_value=2_000_000_000, required=False
    )

    class Meta:
        model = Incident
        fields = [
            "title",
            "description",
            "severity",
            "category",
            "affected_users",
            "affected_documents",
            "data_types_affected",
            "assigned_to",
            "resolution_notes",
            "personal_data_breach",
            "authority_notified_at",
            "authority_reference",
            "subjects_notified_at",
        ]
        extra_kwargs = {
            "authority_notified_at": {"allow_null": True},
            "subjects_notified_at": {"allow_null": True},
        }


class IncidentCreateSerializer(_IncidentInput):
    detected_at = serializers.DateTimeField(
        required=False,
        help_text="When the organization became aware of it (default: now); a personal data "
        "breach must be notified within 72 hours of it.",
    )

    class Meta(_IncidentInput.Meta):
        fields = [*_IncidentInput.Meta.fields, "detected_at"]


class IncidentUpdateSerializer(_IncidentInput):
    """PUT and PATCH change the fields given: the status moves only along the legal
    transitions (open <-> investigating -> resolved -> closed; resolved may reopen)."""

    status = ChoiceField(choices=IncidentStatus.choices, required=False)
    # Moved by others and by the clock (the deadline passing, the beat's reminders): sent back
    # from a GET, they are ignored whatever their value.
    live_fields = ("updated_at", "notification_overdue", "timeline")

    class Meta(_IncidentInput.Meta):
        fields = [*_IncidentInput.Meta.fields, "status"]
        extra_kwargs = {
            **_IncidentInput.Meta.extra_kwargs,
            **{
                name: {"required": False}
                for name in ("title", "severity", "category", "description")
            },
        }


class StatsQuerySerializer(QuerySerializer):
    days = serializers.IntegerField(min_value=1, max_value=365, default=30, required=False)


class ReportPeriodSerializer(ResponseSerializer):
    days = serializers.IntegerField()
    start_date = serializers.DateField()
    end_date = serializers.DateField()


class IncidentSummarySerializer(ResponseSerializer):
    total_incidents = serializers.IntegerField()
    critical_incidents = serializers.IntegerField()
    open_incidents = serializers.IntegerField(help_text="Incidents with status open.")
    avg_resolution_hours = serializers.FloatField(
        allow_null=True, help_text="Detection to resolution, over the incidents resolved."
    )


def _counts(name: str, keys) -> type:
    return type(name, (ResponseSerializer,), {key: serializers.IntegerField() for key in keys})


SeverityCountsSerializer = _counts("SeverityCountsSerializer", reversed(Severity.values))
StatusCountsSerializer = _counts("IncidentStatusCountsSerializer", IncidentStatus.values)


class IncidentTrendSerializer(ResponseSerializer):
    date = serializers.DateField()
    count = serializers.IntegerField()


class IncidentStatsSerializer(ResponseSerializer):
    organization_id = serializers.UUIDField()
    period = ReportPeriodSerializer()
    summary = IncidentSummarySerializer()
    by_severity = SeverityCountsSerializer()
    by_status = StatusCountsSerializer()
    trends = IncidentTrendSerializer(many=True, help_text="One entry per day of the period.")
    generated_at = serializers.DateTimeField()


# Compliance audits ------------------------------------------------------------------------------


class AuditFindingSerializer(Serializer):
    category = NameField(max_length=64, help_text='What it is about ("data_retention").')
    severity = ChoiceField(choices=Severity.choices)
    description = DescriptionField(max_length=2000)
    recommendation = DescriptionField(max_length=2000, required=False, default="", allow_blank=True)
    status = ChoiceField(choices=FindingStatus.choices, default=FindingStatus.OPEN)


AUDIT_FIELDS = [
    "id",
    "audit_type",
    "framework",
    "title",
    "description",
    "scope",
    "planned_date",
    "auditor_name",
    "status",
    "score",
    "findings",
    "recommendations",
    "started_at",
    "completed_at",
    "created_by",
    "created_at",
    "updated_at",
]


class ComplianceAuditSerializer(ModelSerializer):
    findings = AuditFindingSerializer(many=True, read_only=True)
    created_by = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = ComplianceAudit
        fields = AUDIT_FIELDS
        read_only_fields = fields


class _AuditInput(ModelSerializer):
    findings = WholeItemsField(
        child=AuditFindingSerializer(),
        max_length=FINDINGS_MAX,
        required=False,
        help_text=f"At most {FINDINGS_MAX}; a finding's status is open unless remediated.",
    )

    class Meta:
        model = ComplianceAudit
        fields = [
            "audit_type",
            "framework",
            "title",
            "description",
            "scope",
            "planned_date",
            "auditor_name",
            "findings",
            "recommendations",
        ]
        extra_kwargs = {"planned_date": {"allow_null": True}}


class ComplianceAuditCreateSerializer(_AuditInput):
    pass


class ComplianceAuditUpdateSerializer(_AuditInput):
    """The status moves planned -> in_progress -> completed or failed (planned may conclude
    at once); completing needs a score. A concluded audit takes only findings and
    recommendations."""

    status = ChoiceField(choices=AuditStatus.choices, required=False)
    score = serializers.IntegerField(min_value=0, max_value=100, required=False, allow_null=True)
    completed_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When it concluded (default: when the status is set); null until then.",
    )
    live_fields = ("updated_at",)

    class Meta(_AuditInput.Meta):
        fields = [*_AuditInput.Meta.fields, "status", "score", "completed_at"]
        extra_kwargs = {
            **_AuditInput.Meta.extra_kwargs,
            **{name: {"required": False} for name in ("audit_type", "framework", "title")},
        }


# The register of processing activities -------------------------------------------------------


class InternationalTransferSerializer(Serializer):
    country = CountryField(help_text="ISO 3166-1 alpha-2 code of the destination.")
    safeguard = ChoiceField(choices=TransferSafeguard.choices)


ACTIVITY_FIELDS = [
    "id",
    "name",
    "description",
    "purpose",
    "legal_basis",
    "data_categories",
    "data_subjects",
    "special_categories",
    "recipients",
    "international_transfers",
    "automated_processing",
    "profiling_involved",
    "retention_period_months",
    "third_parties_involved",
    "privacy_impact_score",
    "risk_mitigation_measures",
    "dpia_required",
    "dpia_reasons",
    "dpia_completed_on",
    "status",
    "approved_at",
    "approved_by",
    "created_by",
    "created_at",
    "updated_at",
]


class ProcessingActivitySerializer(ModelSerializer):
    international_transfers = InternationalTransferSerializer(many=True, read_only=True)
    dpia_reasons = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="Why a DPIA is required."
    )
    approved_by = PersonSerializer(read_only=True, allow_null=True)
    created_by = PersonSerializer(read_only=True, allow_null=True)

    class Meta:
        model = ProcessingActivity
        fields = ACTIVITY_FIELDS
        read_only_fields = fields


class ProcessingActivityInputSerializer(ModelSerializer):
    """Create (as a draft) and change an activity; `status` moves draft -> approved ->
    deprecated (approved may go back to draft for a revision; deprecated is final)."""

    data_categories = _labels('Categories of personal data ("contact_data").')
    data_subjects = _labels('Categories of data subjects ("customers").')
    recipients = _labels("Recipients or categories of recipients.", max_length=200, distinct=False)
    special_categories = DistinctListField(
        child=ChoiceField(choices=SpecialCategory.choices),
        required=False,
        help_text="Special categories of data (GDPR Art. 9).",
    )
    international_transfers = WholeItemsField(
        child=InternationalTransferSerializer(), max_length=LABELS_MAX, required=False
    )
    legal_basis = ChoiceField(choices=LegalBasis.choices, help_text="GDPR Art. 6(1).")
    automated_processing = StrictBooleanField(required=False)
    profiling_involved = StrictBooleanField(required=False)
    third_parties_involved = StrictBooleanField(required=False)
    retention_period_months = serializers.IntegerField(min_value=1, max_value=1200)
    privacy_impact_score = serializers.IntegerField(min_value=1, max_value=10)
    status = ChoiceField(choices=ActivityStatus.choices, required=False)
    live_fields = ("updated_at",)

    class Meta:
        model = ProcessingActivity
        fields = [
            "name",
            "description",
            "purpose",
            "legal_basis",
            "data_categories",
            "data_subjects",
            "special_categories",
            "recipients",
            "international_transfers",
            "automated_processing",
            "profiling_involved",
            "retention_period_months",
            "third_parties_involved",
            "privacy_impact_score",
            "risk_mitigation_measures",
            "dpia_completed_on",
            "status",
        ]
        extra_kwargs = {"name": {"validators": []}, "dpia_completed_on": {"allow_null": True}}

    def validate(self, attrs):
        if self.instance is None and attrs.pop("status", ActivityStatus.DRAFT) != "draft":
            raise serializers.ValidationError(
                {"status": ["An activity starts as a draft; approve it with an update."]}
            )
        return attrs


# Reports ----------------------------------------------------------------------------------------


class ReportQuerySerializer(StatsQuerySerializer):
    pass


class RegisterQuerySerializer(QuerySerializer):
    status = CharField(
        required=False,
        default="draft,approved",
        help_text="Statuses to list, comma-separated (default: draft,approved).",
    )

    def validate_status(self, value):
        statuses = [part.strip() for part in value.split(",") if part.strip()]
        unknown = sorted(set(statuses) - set(ActivityStatus.values))
        if unknown or not statuses:
            raise serializers.ValidationError(
                f"Statuses among {', '.join(ActivityStatus.values)}, comma-separated."
            )
        return statuses


class RegisterSummarySerializer(ResponseSerializer):
    total_activities = serializers.IntegerField()
    high_risk_activities = serializers.IntegerField(help_text="Activities that need a DPIA.")
    automated_processing_count = serializers.IntegerField()
    third_party_processing_count = serializers.IntegerField()
    special_category_count = serializers.IntegerField()
    international_transfer_count = serializers.IntegerField()
    missing_dpia_count = serializers.IntegerField(
        help_text="High-risk activities with no DPIA recorded."
    )


class ProcessingActivityRefSerializer(ResponseSerializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class HighRiskProcessingSerializer(ProcessingActivityRefSerializer):
    privacy_impact_score = serializers.IntegerField()
    dpia_completed_on = serializers.DateField(allow_null=True)
    reasons = serializers.ListField(child=serializers.CharField())


ByLegalBasisSerializer = type(
    "ByLegalBasisSerializer",
    (ResponseSerializer,),
    {basis: ProcessingActivityRefSerializer(many=True) for basis in LegalBasis.values},
)


class GdprRegisterSerializer(ResponseSerializer):
    organization_id = serializers.UUIDField()
    organization_name = serializers.CharField()
    generated_at = serializers.DateTimeField()
    summary = RegisterSummarySerializer()
    activities = ProcessingActivitySerializer(many=True)
    by_legal_basis = ByLegalBasisSerializer()
    high_risk_activities = HighRiskProcessingSerializer(many=True)


class ComplianceAuditSummarySerializer(ResponseSerializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    framework = serializers.CharField()
    audit_type = serializers.CharField()
    status = serializers.CharField()
    score = serializers.IntegerField(allow_null=True)
    planned_date = serializers.DateField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)


class DashboardIncidentsSerializer(IncidentSummarySerializer):
    unresolved_incidents = serializers.IntegerField(help_text="Open or investigating, today.")
    unresolved_by_severity = SeverityCountsSerializer()


class BreachNotificationCountsSerializer(ResponseSerializer):
    overdue = serializers.IntegerField()
    due_within_24h = serializers.IntegerField()


class SecurityPostureSerializer(ResponseSerializer):
    risk_level = ChoiceField(choices=Severity.choices)
    incidents_summary = DashboardIncidentsSerializer()
    breach_notifications = BreachNotificationCountsSerializer()
    compliance_score = serializers.FloatField(
        allow_null=True, help_text="Mean score of each framework's latest completed audit."
    )
    compliance_by_framework = serializers.DictField(child=serializers.IntegerField())
    pii_incidents = serializers.IntegerField()


class SecurityRecommendationSerializer(ResponseSerializer):
    rule = serializers.CharField(help_text="The rule's id (docs/security.md lists them).")
    priority = serializers.ChoiceField(choices=["critical", "high", "medium", "low"])
    category = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()


class SecurityDashboardSerializer(ResponseSerializer):
    organization_id = serializers.UUIDField()
    period = ReportPeriodSerializer()
    security_posture = SecurityPostureSerializer()
    recent_audits = ComplianceAuditSummarySerializer(many=True)
    recommendations = SecurityRecommendationSerializer(many=True)
    generated_at = serializers.DateTimeField()
