"""Analytics: the raw facts the app keeps itself, and the roll-ups every endpoint reads.

Four fact streams feed the roll-ups (docs/analytics.md gives each schema):

- `requests`: API requests, captured off the request path into config.metering's buffered
  counts and flushed by Celery into `RequestFact` rows, one per minute and (route, method,
  status, credential, principal), each carrying its latency histogram;
- `gateway`: the gateway's own `playground.GatewayCall` rows;
- `queries`: `QueryEvent`, the product's end-user queries, ingested by `POST analytics/events`;
- `support`: the support desk's tickets and escalations (their creation, first response,
  resolution, satisfaction score and escalation times).

`Rollup` rows hold, per tenant, stream, hour or UTC day, and dimension (the total, a route, a
model, a category, a query, a representative), the counts and sums, a latency histogram and a
distinct-users sketch (analytics.sketches): everything an endpoint shows is a merge of them.
"""

from django.db import models

from config.models import TimestampedModel
from tenants.models import Tenant, TenantOwned


class Stream(models.TextChoices):
    REQUESTS = "requests", "API requests"
    GATEWAY = "gateway", "Gateway calls"
    QUERIES = "queries", "Product queries"
    SUPPORT = "support", "Support desk"


class Granularity(models.TextChoices):
    HOUR = "hour", "Hour"
    DAY = "day", "Day (UTC)"
    MONTH = "month", "Month (UTC)"


class CredentialType(models.TextChoices):
    TOKEN = "token", "Token"
    JWT = "jwt", "JWT"
    API_KEY = "api_key", "API key"
    SESSION = "session", "Session"
    NONE = "none", "None"


class RequestFact(TenantOwned):
    """The API requests of one minute that share a route, method, status and credential: a
    pre-aggregated fact (capture buffers counts, not rows; docs/analytics.md)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    minute = models.DateTimeField(editable=False)
    route = models.CharField(max_length=255, editable=False)
    method = models.CharField(max_length=8, editable=False)
    status_code = models.PositiveSmallIntegerField(editable=False)
    credential_type = models.CharField(max_length=8, choices=CredentialType.choices, editable=False)
    # "key:<uuid>" or "user:<uuid>": who made the requests, for distinct counts.
    principal = models.CharField(max_length=64, blank=True, editable=False)
    count = models.PositiveIntegerField(editable=False)
    latency_us_total = models.PositiveBigIntegerField(editable=False)
    latency_histogram = models.JSONField(default=dict, editable=False)

    class Meta:
        ordering = ["-minute", "id"]
        indexes = [
            models.Index(fields=["tenant", "minute"], name="request_fact_minute"),
            models.Index(fields=["created_at"], name="request_fact_created"),
        ]

    def __str__(self):
        return f"{self.method} {self.route} {self.status_code} x{self.count} @ {self.minute}"


class QueryEvent(TenantOwned):
    """One end-user query of the tenant's product, as ingested (idempotent by `event_id`)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    event_id = models.CharField(max_length=128, editable=False)
    occurred_at = models.DateTimeField(editable=False)
    query_text = models.TextField(max_length=2000, blank=True, editable=False)
    # Lower-cased, whitespace collapsed, cut at 200 characters: what "the same query" means.
    normalized_text = models.CharField(max_length=200, blank=True, editable=False)
    query_category = models.CharField(max_length=64, blank=True, editable=False)
    response_time_us = models.PositiveBigIntegerField(null=True, blank=True, editable=False)
    success = models.BooleanField(default=True, editable=False)
    error_category = models.CharField(max_length=64, blank=True, editable=False)
    satisfaction = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    tokens = models.PositiveIntegerField(default=0, editable=False)
    cost_micros = models.PositiveBigIntegerField(default=0, editable=False)
    user_ref = models.CharField(max_length=128, blank=True, editable=False)
    relevance_score = models.FloatField(null=True, blank=True, editable=False)
    confidence_score = models.FloatField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-occurred_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "event_id"], name="query_event_id"),
            models.CheckConstraint(
                condition=models.Q(satisfaction__isnull=True)
                | models.Q(satisfaction__gte=1, satisfaction__lte=5),
                name="query_event_satisfaction",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "occurred_at"], name="query_event_occurred"),
            models.Index(fields=["created_at"], name="query_event_created"),
        ]

    def __str__(self):
        return f"{self.event_id} ({self.query_category or 'uncategorised'})"


class Rollup(TenantOwned):
    """The aggregate of one stream's facts over one hour (or UTC day) for one dimension."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", editable=False)
    stream = models.CharField(max_length=16, choices=Stream.choices, editable=False)
    granularity = models.CharField(max_length=8, choices=Granularity.choices, editable=False)
    bucket_start = models.DateTimeField(editable=False)
    # "" for the stream's total, else "<kind>:<value>" (route:GET /api/v1/..., model:gpt-4,
    # category:finance, query:<normalized text>, representative:<uuid>, ...).
    dimension = models.CharField(max_length=255, blank=True, editable=False)
    count = models.PositiveBigIntegerField(default=0, editable=False)
    # Integer sums; a name starting with "max_" keeps the largest value instead.
    measures = models.JSONField(default=dict, editable=False)
    latency_histogram = models.JSONField(default=dict, editable=False)
    users = models.JSONField(default=dict, editable=False)

    class Meta:
        ordering = ["-bucket_start", "stream", "dimension"]
        constraints = [
            # Also the index of one value's rows over a range (a stream's total, the top
            # ten's measures).
            models.UniqueConstraint(
                fields=["tenant", "stream", "dimension", "granularity", "bucket_start"],
                name="rollup_bucket",
            )
        ]
        indexes = [
            # A range's rows with their dimension and count in the key: ranking the values of
            # a kind over a range (top queries, busiest routes) is an index-only scan on
            # PostgreSQL, which never reads the wide rows.
            models.Index(
                fields=["tenant", "stream", "granularity", "bucket_start", "dimension", "count"],
                name="rollup_range_counts",
            )
        ]

    def __str__(self):
        start = f"{self.bucket_start:%Y-%m-%d %H:00}"
        return f"{self.stream} {self.granularity} {start} {self.dimension or 'total'}"


class RollupState(TenantOwned):
    """How far a tenant's roll-ups are built: for the admin's lag column and the rebuild
    action, and the row a build locks so two builds of one tenant never interleave."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="analytics_state", editable=False
    )
    last_built_hour = models.DateTimeField(null=True, blank=True, editable=False)
    last_built_at = models.DateTimeField(null=True, blank=True, editable=False)
    hours_built = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["tenant_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="rollup_state_tenant"),
        ]

    def __str__(self):
        return f"Roll-ups of {self.tenant}"


class StreamCursor(TimestampedModel):
    """Up to when the roll-up job has looked for new facts of a stream (all tenants), and the
    first hour it saw facts of that had not ended yet (built once it has)."""

    stream = models.CharField(max_length=16, choices=Stream.choices, unique=True)
    position = models.DateTimeField()
    open_hour = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["stream"]

    def __str__(self):
        return f"{self.stream} @ {self.position}"
