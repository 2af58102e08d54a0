"""Serializers of the analytics app: the ingestion batch, the reports' query parameters, and
each report's response shape (what the OpenAPI schema documents and Schemathesis checks)."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from analytics.selectors import PERIODS
from analytics.streams import FUTURE_TOLERANCE, retained_from
from config.serializers import (
    CharField,
    ChoiceField,
    QuerySerializer,
    ResponseSerializer,
    Serializer,
    plain_text,
)

MAX_BIGINT = 2**53 - 1
MAX_INT = 2**31 - 1
_SPACES = re.compile(r"\s+")


def normalized_query(text: str) -> str:
    """What makes two queries "the same": case and runs of whitespace ignored, at most 200
    characters."""
    return _SPACES.sub(" ", text).strip().lower()[:200]


class QueryEventSerializer(Serializer):
    """One query event of the batch."""

    id = CharField(
        max_length=128, help_text="The event's id in your system: a resent id is ignored."
    )
    type = ChoiceField(choices=["query"])
    timestamp = serializers.DateTimeField()
    query_text = CharField(max_length=2000, required=False, allow_blank=True, default="")
    query_category = CharField(max_length=64, required=False, allow_blank=True, default="")
    response_time = serializers.FloatField(
        min_value=0,
        max_value=3600,
        required=False,
        allow_null=True,
        default=None,
        help_text="Seconds.",
    )
    success = serializers.BooleanField(required=False, default=True)
    error_category = CharField(max_length=64, required=False, allow_blank=True, default="")
    satisfaction = serializers.IntegerField(
        min_value=1, max_value=5, required=False, allow_null=True, default=None
    )
    tokens = serializers.IntegerField(min_value=0, max_value=MAX_INT, required=False, default=0)
    cost_micros = serializers.IntegerField(
        min_value=0, max_value=MAX_BIGINT, required=False, default=0
    )
    user_ref = CharField(max_length=128, required=False, allow_blank=True, default="")
    relevance_score = serializers.FloatField(
        min_value=0, max_value=1, required=False, allow_null=True, default=None
    )
    confidence_score = serializers.FloatField(
        min_value=0, max_value=1, required=False, allow_null=True, default=None
    )

    def validate_timestamp(self, value):
        now = timezone.now()
        if value > now + FUTURE_TOLERANCE:
            raise serializers.ValidationError("Is in the future.")
        if value < retained_from(now):
            raise serializers.ValidationError(
                f"Is older than the retention of {settings.ANALYTICS_RAW_RETENTION_DAYS} days."
            )
        return value

    def validate(self, attrs):
        if attrs["success"] and attrs["error_category"]:
            raise serializers.ValidationError(
                {"error_category": "Only a failed query (success: false) has one."}
            )
        return attrs

    @staticmethod
    def event_fields(data) -> dict:
        """The QueryEvent fields of a validated event."""
        seconds = data["response_time"]
        return {
            "event_id": data["id"],
            "occurred_at": data["timestamp"],
            "query_text": data["query_text"],
            "normalized_text": normalized_query(data["query_text"]),
            "query_category": data["query_category"],
            "response_time_us": None if seconds is None else round(seconds * 1_000_000),
            "success": data["success"],
            "error_category": data["error_category"],
            "satisfaction": data["satisfaction"],
            "tokens": data["tokens"],
            "cost_micros": data["cost_micros"],
            "user_ref": data["user_ref"],
            "relevance_score": data["relevance_score"],
            "confidence_score": data["confidence_score"],
        }


# The fast path of batch validation ----------------------------------------------------------------
# A batch of 1,000 events through the serializer above costs about as much as storing it (DRF
# runs some fifty field steps per event). Most events are plainly valid: every value already
# of its JSON type, in range, printable text. `_plain_event_fields` accepts exactly those, with
# the values the serializer would give them, and answers None for anything else, which then
# goes through the serializer for its verdict and its error messages. So the fast path can
# only be conservative: it never accepts what the serializer refuses (a property test checks
# it against the serializer on generated events).

_TEXT_FIELDS = {  # name: (max length, may be blank)
    "id": (128, False),
    "query_text": (2000, True),
    "query_category": (64, True),
    "error_category": (64, True),
    "user_ref": (128, True),
}
_INT_FIELDS = {  # name: (min, max, may be null)
    "satisfaction": (1, 5, True),
    "tokens": (0, MAX_INT, False),
    "cost_micros": (0, MAX_BIGINT, False),
}
_FLOAT_FIELDS = {  # name: (min, max); all may be null
    "response_time": (0, 3600),
    "relevance_score": (0, 1),
    "confidence_score": (0, 1),
}
_EVENT_KEYS = frozenset(
    {"type", "timestamp", "success", *_TEXT_FIELDS, *_INT_FIELDS, *_FLOAT_FIELDS}
)
_DEFAULTS = {
    "query_text": "",
    "query_category": "",
    "error_category": "",
    "user_ref": "",
    "success": True,
    "tokens": 0,
    "cost_micros": 0,
    "response_time": None,
    "satisfaction": None,
    "relevance_score": None,
    "confidence_score": None,
}


def _plain_event_fields(raw: dict, timestamp_field, earliest, latest) -> dict | None:
    if raw.get("type") != "query" or not _EVENT_KEYS.issuperset(raw):
        return None
    data = {**_DEFAULTS}
    for name, (max_length, blank) in _TEXT_FIELDS.items():
        if name in raw:
            value = plain_text(raw[name], max_length, blank)
            if value is None:
                return None
            data[name] = value
    if "id" not in raw:
        return None
    for name, (low, high, nullable) in _INT_FIELDS.items():
        if name in raw:
            value = raw[name]
            if not (value is None and nullable) and not (
                type(value) is int and low <= value <= high
            ):
                return None
            data[name] = value
    for name, (low, high) in _FLOAT_FIELDS.items():
        if name in raw:
            value = raw[name]
            if value is not None:
                if type(value) not in (int, float) or not low <= value <= high:
                    return None  # NaN fails the comparison too
                value = float(value)
            data[name] = value
    if "success" in raw:
        if type(raw["success"]) is not bool:
            return None
        data["success"] = raw["success"]
    if data["success"] and data["error_category"]:
        return None
    stamp = raw.get("timestamp")
    if type(stamp) is not str:
        return None
    try:
        moment = timestamp_field.to_internal_value(stamp)
    except serializers.ValidationError:
        return None
    if not earliest <= moment <= latest:
        return None
    data["timestamp"] = moment
    return QueryEventSerializer.event_fields(data)


def validated_events(raw_events: list) -> tuple[list[dict], list[dict], int]:
    """(the QueryEvent fields of each valid event, one error per invalid event with its
    index and id, how many events repeated an id earlier in the batch)."""
    validator = QueryEventSerializer()
    timestamp_field = validator.fields["timestamp"]
    now = timezone.now()
    earliest, latest = retained_from(now), now + FUTURE_TOLERANCE
    events, errors, seen, repeated = [], [], set(), 0
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            errors.append({"index": index, "id": None, "errors": {"event": ["Must be an object."]}})
            continue
        fields = _plain_event_fields(raw, timestamp_field, earliest, latest)
        if fields is None:
            try:
                fields = validator.event_fields(validator.run_validation(raw))
            except serializers.ValidationError as error:
                identifier = raw.get("id")
                errors.append(
                    {
                        "index": index,
                        "id": identifier if isinstance(identifier, str) else None,
                        "errors": error.detail,
                    }
                )
                continue
        if fields["event_id"] in seen:
            repeated += 1
            continue
        seen.add(fields["event_id"])
        events.append(fields)
    return events, errors, repeated


class EventBatchSerializer(Serializer):
    events = serializers.ListField(
        child=serializers.JSONField(allow_null=True),
        min_length=1,
        max_length=settings.ANALYTICS_EVENTS_PER_BATCH,
        help_text=(
            "Up to 1,000 query events, each validated on its own: the valid ones are stored, "
            "the others listed in `errors`."
        ),
    )


class EventErrorSerializer(ResponseSerializer):
    index = serializers.IntegerField()
    id = serializers.CharField(allow_null=True)
    errors = serializers.DictField()


class EventBatchResultSerializer(ResponseSerializer):
    received = serializers.IntegerField()
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    errors = EventErrorSerializer(many=True)


# Query parameters ------------------------------------------------------------------------------


class TimeZoneQuerySerializer(QuerySerializer):
    tz = CharField(
        required=False,
        default="UTC",
        max_length=64,
        help_text="IANA time zone where days begin (default UTC); its offset must be whole hours.",
    )

    def validate_tz(self, value):
        try:
            zone = ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise serializers.ValidationError("Not a known time zone.") from None
        now = timezone.now()
        for moment in (now, now - timedelta(days=182)):
            offset = zone.utcoffset(moment.replace(tzinfo=None))
            if offset.total_seconds() % 3600:
                raise serializers.ValidationError(
                    "Roll-ups are hourly: a zone whose offset is not whole hours is not supported."
                )
        return zone


PERIOD_DAYS = {"7d": 7, "30d": 30, "90d": 90, "1y": 365}


class DashboardQuerySerializer(TimeZoneQuerySerializer):
    period = ChoiceField(choices=list(PERIOD_DAYS), default="30d", required=False)


class UsageQuerySerializer(TimeZoneQuerySerializer):
    days = serializers.IntegerField(min_value=1, max_value=365, default=30, required=False)
    granularity = ChoiceField(
        choices=["hourly", "daily", "weekly", "monthly"], default="daily", required=False
    )

    def validate(self, attrs):
        if attrs["granularity"] == "hourly" and attrs["days"] > 31:
            raise serializers.ValidationError({"days": "Hourly data covers at most 31 days."})
        return attrs


class QueriesQuerySerializer(TimeZoneQuerySerializer):
    days = serializers.IntegerField(min_value=1, max_value=365, default=30, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=100, default=50, required=False)
    include_failed = serializers.BooleanField(default=False, required=False)


class PerformanceQuerySerializer(TimeZoneQuerySerializer):
    days = serializers.IntegerField(min_value=1, max_value=365, default=7, required=False)


SUPPORT_PERIODS = list(PERIODS)


class PerformanceMetricsQuerySerializer(TimeZoneQuerySerializer):
    period = ChoiceField(choices=SUPPORT_PERIODS, default="DAY", required=False)
    limit = serializers.IntegerField(min_value=1, max_value=100, default=10, required=False)
    offset = serializers.IntegerField(min_value=0, max_value=1000, default=0, required=False)


class TeamPerformanceQuerySerializer(TimeZoneQuerySerializer):
    period = ChoiceField(choices=SUPPORT_PERIODS, default="WEEK", required=False)


class GatewayMetricsQuerySerializer(QuerySerializer):
    days = serializers.IntegerField(
        required=False,
        default=7,
        min_value=1,
        max_value=90,
        help_text="Days of `daily_series`, today (UTC) included.",
    )


# Responses -------------------------------------------------------------------------------------


def _float(**kwargs):
    return serializers.FloatField(allow_null=True, **kwargs)


class ReportRangeSerializer(ResponseSerializer):
    start = serializers.DateField()
    end = serializers.DateField()
    days = serializers.IntegerField()


class UsagePointSerializer(ResponseSerializer):
    total_queries = serializers.IntegerField()
    unique_users = serializers.IntegerField()
    avg_response_time = _float(help_text="Seconds.")
    successful_queries = serializers.IntegerField()
    failed_queries = serializers.IntegerField()
    avg_satisfaction = _float()


class DayCostsSerializer(ResponseSerializer):
    total_cost_cents = serializers.IntegerField()
    gateway_cost_cents = serializers.IntegerField()
    query_cost_cents = serializers.IntegerField()


class DayQualitySerializer(ResponseSerializer):
    avg_relevance_score = _float()
    avg_confidence_score = _float()


class DailyDataSerializer(ResponseSerializer):
    date = serializers.DateField()
    usage = UsagePointSerializer()
    costs = DayCostsSerializer()
    quality = DayQualitySerializer()


class TopQuerySerializer(ResponseSerializer):
    query_text = serializers.CharField()
    query_category = serializers.CharField()
    execution_count = serializers.IntegerField()
    avg_response_time = _float()
    avg_satisfaction = _float()
    last_executed = serializers.DateTimeField(allow_null=True)


class DashboardSummarySerializer(ResponseSerializer):
    total_queries = serializers.IntegerField()
    unique_users = serializers.IntegerField()
    avg_response_time = _float()
    total_cost_cents = serializers.IntegerField()
    gateway_calls = serializers.IntegerField()
    gateway_tokens = serializers.IntegerField()


class SatisfactionSerializer(ResponseSerializer):
    average_rating = _float()
    previous_rating = _float()
    trend = serializers.ChoiceField(
        choices=["improving", "stable", "declining", "insufficient_data"]
    )


class CostBreakdownSerializer(ResponseSerializer):
    total_cents = serializers.IntegerField()
    breakdown = serializers.DictField(child=serializers.IntegerField())
    by_model = serializers.DictField(child=serializers.IntegerField())


class DashboardSerializer(ResponseSerializer):
    organization_id = serializers.UUIDField()
    period = serializers.CharField()
    time_zone = serializers.CharField()
    summary = DashboardSummarySerializer()
    daily_data = DailyDataSerializer(many=True)
    top_queries = TopQuerySerializer(many=True)
    user_satisfaction = SatisfactionSerializer()
    cost_breakdown = CostBreakdownSerializer()
    generated_at = serializers.DateTimeField()


class UsageSeriesPointSerializer(ResponseSerializer):
    date = serializers.CharField(help_text="The bucket's start: a date, or a date-time (hourly).")
    total_queries = serializers.IntegerField()
    unique_users = serializers.IntegerField()
    avg_response_time = _float(help_text="Seconds, over the product's queries.")
    requests = serializers.IntegerField()
    avg_request_time_ms = _float()
    gateway_calls = serializers.IntegerField()
    tokens = serializers.IntegerField()
    cost_cents = serializers.IntegerField()


class UsageTrendsSerializer(ResponseSerializer):
    queries = _float()
    users = _float()
    response_time = _float()
    requests = _float()
    tokens = _float()


class RunsSummarySerializer(ResponseSerializer):
    total_runs = serializers.IntegerField()
    completed_runs = serializers.IntegerField()
    failed_runs = serializers.IntegerField()
    avg_execution_time = serializers.IntegerField(allow_null=True)
    success_rate = _float()


class TopProjectSerializer(ResponseSerializer):
    project_id = serializers.UUIDField()
    project_name = serializers.CharField()
    run_count = serializers.IntegerField()
    success_rate = _float()


class UsageReportSerializer(ResponseSerializer):
    organization_id = serializers.UUIDField()
    period = ReportRangeSerializer()
    granularity = serializers.CharField()
    time_zone = serializers.CharField()
    data = UsageSeriesPointSerializer(many=True)
    trends = UsageTrendsSerializer()
    runs_summary = RunsSummarySerializer()
    top_projects = TopProjectSerializer(many=True)
    integration_usage = serializers.DictField(child=serializers.IntegerField())
    generated_at = serializers.DateTimeField()


class DailyTrendSerializer(ResponseSerializer):
    date = serializers.DateField()
    avg_response_time = _float()
    avg_rating = _float()
    query_count = serializers.IntegerField()


class PerformanceTrendsSerializer(ResponseSerializer):
    daily_trends = DailyTrendSerializer(many=True)


class RecentFailureSerializer(ResponseSerializer):
    id = serializers.CharField()
    query_text = serializers.CharField()
    query_category = serializers.CharField()
    error_category = serializers.CharField()
    timestamp = serializers.DateTimeField()


class FailureAnalysisSerializer(ResponseSerializer):
    total_failures = serializers.IntegerField(help_text="Every failed query in the range.")
    error_categories = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Failures per error category: the most frequent categories of each hour.",
    )
    recent_failures = RecentFailureSerializer(many=True)


class QueriesReportSerializer(ResponseSerializer):
    organization_id = serializers.UUIDField()
    period = ReportRangeSerializer()
    time_zone = serializers.CharField()
    top_queries = TopQuerySerializer(many=True)
    categories = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Queries per category (`uncategorised`: none given): the most frequent "
        "categories of each hour.",
    )
    performance_trends = PerformanceTrendsSerializer()
    failure_analysis = FailureAnalysisSerializer()
    generated_at = serializers.DateTimeField()


class PercentilesSerializer(ResponseSerializer):
    p50 = _float(help_text="Milliseconds.")
    p95 = _float(help_text="Milliseconds.")
    p99 = _float(help_text="Milliseconds.")


class ErrorRatesSerializer(ResponseSerializer):
    def get_fields(self):
        fields = super().get_fields()
        fields["4xx"] = serializers.FloatField(read_only=True)
        fields["5xx"] = serializers.FloatField(read_only=True)
        return fields


class ThroughputSerializer(ResponseSerializer):
    requests_per_second = serializers.FloatField()
    peak_rps = serializers.FloatField()


class GatewayPerformanceSerializer(ResponseSerializer):
    calls = serializers.IntegerField()
    response_times = PercentilesSerializer()
    error_rate = serializers.FloatField()
    avg_time_to_first_token_ms = _float()


class RoutePerformanceSerializer(ResponseSerializer):
    route = serializers.CharField(help_text="METHOD and route template.")
    requests = serializers.IntegerField()
    response_times = PercentilesSerializer()
    error_rate = serializers.FloatField(help_text="Percent of 4xx and 5xx answers.")


class ResourceUsageSerializer(ResponseSerializer):
    cpu_utilization = _float()
    memory_usage = _float()
    disk_usage = _float()


class PerformanceSerializer(ResponseSerializer):
    organization_id = serializers.UUIDField()
    period = ReportRangeSerializer()
    time_zone = serializers.CharField()
    requests = serializers.IntegerField()
    response_times = PercentilesSerializer()
    error_rates = ErrorRatesSerializer()
    throughput = ThroughputSerializer()
    gateway = GatewayPerformanceSerializer()
    routes = RoutePerformanceSerializer(many=True, help_text="The 10 busiest routes.")
    resource_usage = ResourceUsageSerializer(
        allow_null=True, help_text="This host's figures: for platform staff only, else null."
    )
    generated_at = serializers.DateTimeField()


class SupportPeriodSerializer(ResponseSerializer):
    id = serializers.UUIDField()
    period = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    total_chats = serializers.IntegerField()
    active_chats = serializers.IntegerField()
    escalations = serializers.IntegerField()
    escalation_rate = serializers.CharField(allow_null=True)
    avg_response_time = serializers.IntegerField(allow_null=True, help_text="Seconds.")
    first_contact_resolution = serializers.CharField(allow_null=True)
    customer_satisfaction = serializers.CharField(allow_null=True)
    ai_resolution_rate = serializers.CharField(allow_null=True)
    tickets_resolved = serializers.IntegerField()


class PerformanceMetricsSerializer(ResponseSerializer):
    period = serializers.CharField()
    time_zone = serializers.CharField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    data = SupportPeriodSerializer(many=True)


class RepresentativeUserSerializer(ResponseSerializer):
    name = serializers.CharField()
    email = serializers.EmailField()


class RepresentativeRefSerializer(ResponseSerializer):
    id = serializers.UUIDField()
    user = RepresentativeUserSerializer()


class TeamMemberPerformanceSerializer(ResponseSerializer):
    id = serializers.UUIDField()
    representative_id = serializers.UUIDField()
    period = serializers.CharField()
    period_start = serializers.DateTimeField()
    tickets_handled = serializers.IntegerField()
    avg_response_time = serializers.IntegerField(allow_null=True)
    resolution_rate = serializers.CharField(allow_null=True)
    customer_satisfaction = serializers.CharField(allow_null=True)
    trend = serializers.ChoiceField(choices=["UP", "DOWN", "STABLE"])
    representative = RepresentativeRefSerializer()


class TeamPerformanceSerializer(ResponseSerializer):
    period = serializers.CharField()
    time_zone = serializers.CharField()
    data = TeamMemberPerformanceSerializer(many=True)


class GatewayMetricsSerializer(ResponseSerializer):
    organization_id = serializers.UUIDField()
    date = serializers.DateField()
    daily = serializers.DictField(
        child=serializers.IntegerField(), help_text="Tokens per model today (UTC)."
    )
    monthly = serializers.DictField(
        help_text="This month (UTC): `total` tokens, `by_model`, `cost_micros`, `calls`."
    )
    daily_series = serializers.ListField(
        child=serializers.DictField(),
        help_text="Per day of the last `days` with calls: `date`, `tokens`, `calls`, `failed`, "
        "`cost_micros`.",
    )
    currency = serializers.CharField()
