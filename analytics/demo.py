"""The quick start's analytics: a month of the product's query events and a week of API
traffic per demo tenant, folded into roll-ups with the other apps' demo facts (the gateway's
calls, spread over two weeks), so every analytics screen and the gateway's metrics have
something to show.

Deterministic (seeded by the tenant's slug) and idempotent: a tenant that already has query
events is left as it is.
"""

import random
from datetime import timedelta

from django.utils import timezone

from tenants.models import Tenant

from . import sketches
from .models import QueryEvent, RequestFact
from .serializers import normalized_query
from .services import query_events_ingest, request_facts_write, rollups_build, rollups_rebuild

# Back to the oldest demo fact: the job alone looks a day back, and the other apps' demo data
# is recorded now with earlier times.
DEMO_DAYS = 31

QUERIES = {
    "finance": ["How do I calculate ROI?", "What is our refund policy?", "Export last invoice"],
    "technical": ["Reset my API key", "Why is the webhook failing?", "Rate limit for the gateway"],
    "hr": ["How many vacation days do I have?", "Update my bank details"],
    "legal": ["Where is the data processing agreement?", "GDPR deletion request"],
}
ERRORS = ["timeout", "rate_limit", "auth_error", "other"]
ROUTES = [
    ("GET", "/api/v1/organizations/current/"),
    ("GET", "/api/v1/tickets/"),
    ("POST", "/api/v1/chat/completions/"),
    ("GET", "/api/v1/audit/events/"),
]


def _query_events(rng, now):
    events = []
    for index in range(700):
        category = rng.choice(list(QUERIES))
        text = rng.choice(QUERIES[category])
        success = rng.random() > 0.06
        events.append(
            {
                "event_id": f"demo-{index}",
                "occurred_at": now - timedelta(minutes=rng.randrange(30 * 24 * 60)),
                "query_text": text,
                "normalized_text": normalized_query(text),
                "query_category": category,
                "response_time_us": int(rng.lognormvariate(0.2, 0.5) * 1_000_000),
                "success": success,
                "error_category": "" if success else rng.choice(ERRORS),
                "satisfaction": rng.choice([3, 4, 4, 5, 5]) if rng.random() < 0.4 else None,
                "tokens": rng.randrange(200, 2000),
                "cost_micros": rng.randrange(500, 20_000),
                "user_ref": f"user-{rng.randrange(60)}",
                "relevance_score": round(rng.uniform(0.6, 1.0), 3),
                "confidence_score": round(rng.uniform(0.7, 1.0), 3),
            }
        )
    return events


def _request_facts(rng, tenant, now):
    facts = []
    for hours_ago in range(7 * 24):
        minute = (now - timedelta(hours=hours_ago)).replace(second=0, microsecond=0)
        for method, route in ROUTES:
            count = rng.randrange(1, 40)
            latencies = [rng.lognormvariate(3, 0.6) for _ in range(count)]
            status = 200 if rng.random() > 0.05 else rng.choice([400, 404, 429, 500])
            facts.append(
                {
                    "tenant_id": tenant.pk,
                    "minute": minute,
                    "route": route,
                    "method": method,
                    "status_code": status,
                    "credential_type": rng.choice(["token", "api_key", "jwt"]),
                    "principal": f"user:demo-{rng.randrange(5)}",
                    "count": count,
                    "latency_us_total": int(sum(latencies) * 1000),
                    "latency_histogram": sketches.histogram_of(latencies),
                }
            )
    return facts


def load(*, stdout, staff) -> None:
    now = timezone.now()
    loaded = 0
    for tenant in Tenant.objects.order_by("slug"):
        if QueryEvent.objects.filter(tenant=tenant).exists():
            continue
        rng = random.Random(tenant.slug)  # noqa: S311 (demo data, not secrets)
        query_events_ingest(tenant=tenant, events=_query_events(rng, now))
        if not RequestFact.objects.filter(tenant=tenant).exists():
            request_facts_write(facts=_request_facts(rng, tenant, now))
        loaded += 1
    hours = rollups_rebuild(since=now - timedelta(days=DEMO_DAYS), now=now)
    rollups_build(now=now)  # the job's cursors: the next run starts from here
    stdout.write(
        f"Analytics: query events and API traffic for {loaded} tenant(s), "
        f"{hours} hour(s) rolled up."
    )
