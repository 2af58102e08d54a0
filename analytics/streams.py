"""The four fact streams: for each, which hours new facts touched, and one hour's aggregates.

`aggregate_hour(stream, tenant_id, hour)` reads the stream's raw facts of one hour and answers
{dimension: Aggregate} (the total under ""). It is the one definition of every figure: the
roll-up job stores it, and the endpoints call it for the hours it has not built yet (the
current, still partial hour, and one just ended until the job's next run).

`touched_hours(stream, since)` answers the (tenant, hour) pairs that facts recorded since a
moment belong to: the hours the roll-up job rebuilds. A fact arriving late (an event with an
old timestamp) touches its own hour, which is rebuilt from scratch: re-aggregation is
idempotent.

Measures (integer sums; "max_" keeps the largest) per stream, documented in docs/analytics.md:

- requests: count = requests; errors_4xx, errors_5xx, latency_us, max_minute_requests (the
  busiest minute, on the total); latency histogram; users =
  principals (API keys and users). Dimensions: route:<METHOD> <route>, credential:<type>.
- gateway: count = calls; failed, prompt_tokens, completion_tokens, total_tokens, cost_micros,
  latency_us, ttft_us, ttft_count; users = callers. Dimensions: model:<name>,
  source:<api|playground|orchestration|workflow>, template:<prompt template id>.
- queries: count = queries; succeeded, failed, response_us, response_count, satisfaction_sum,
  satisfaction_count, tokens, cost_micros, relevance_e6, relevance_count, confidence_e6,
  confidence_count, max_last_at (epoch seconds); users = user_ref. Dimensions:
  category:<category>, query:<category>\x1f<normalized text> (succeeded),
  query-failed:<category>\x1f<normalized text> and error:<error category> (failed).
- support: count = tickets created; tickets_created, first_responses, first_response_us,
  tickets_resolved, first_contact_resolved, ai_resolved, csat_sum, csat_count, escalations.
  Dimension: representative:<id> (the ticket's assignee).
"""

import heapq
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import TruncHour

from . import sketches
from .aggregates import Aggregate
from .models import QueryEvent, RequestFact, Stream

HOUR = timedelta(hours=1)
# An event may be this far ahead of the server's clock (clients' clocks drift); every other
# fact is recorded after its moment.
FUTURE_TOLERANCE = timedelta(minutes=5)
# Rows that carry a latency histogram: the totals (""), routes and models, what percentiles are
# shown for. Distinct users are kept on the totals only. The other dimensions (queries,
# categories, errors, representatives) hold counts and sums, which the database adds up.
LATENCY_KINDS = ("route:", "model:")
QUERY_SEPARATOR = "\x1f"
# Kinds whose values the tenant names in its events: query texts, categories and error
# categories. Each bucket (hour, day, month) keeps the ANALYTICS_VALUES_PER_KIND most frequent
# values of each: kept whole, every distinct text was a row in its hour, its day and its month
# for ever, and the job that rebuilds a day and a month every minute read all of them (one hour
# of 10,000 distinct texts took it 8.6 s, of 50,000 36 s; now 1.8 s and 2.7 s).
NAMED_KINDS = frozenset({"query:", "query-failed:", "category:", "error:"})


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def retained_from(now: datetime) -> datetime:
    """The first hour whose raw facts are all still kept (ANALYTICS_RAW_RETENTION_DAYS): older
    hours are served by their roll-ups alone, and facts for them are refused."""
    return hour_of(now - timedelta(days=settings.ANALYTICS_RAW_RETENTION_DAYS)) + HOUR


class _Hour:
    """Aggregates of one hour under construction: per dimension, plus the users seen."""

    def __init__(self):
        self.aggregates: dict[str, Aggregate] = defaultdict(Aggregate)
        self.users: dict[str, set] = defaultdict(set)

    def fact(self, dimensions, *, count=1, latency_ms=None, histogram=None, user="", **measures):
        for dimension in dimensions:
            # Cut to the column's length here, so two long names that share their first 255
            # characters merge into one row instead of colliding on the unique constraint.
            dimension = dimension[:255]
            aggregate = self.aggregates[dimension]
            aggregate.count += count
            aggregate.add(**measures)
            if dimension and not dimension.startswith(LATENCY_KINDS):
                continue
            if histogram:
                sketches.histogram_merge(aggregate.latency_histogram, histogram)
            elif latency_ms is not None:
                sketches.histogram_merge(
                    aggregate.latency_histogram, {sketches.bucket_of(latency_ms): count}
                )
            if user and dimension == "":
                self.users[dimension].add(user)

    def done(self) -> dict[str, Aggregate]:
        for dimension, users in self.users.items():
            self.aggregates[dimension].users = sketches.sketch_of(users)
        return dict(self.aggregates)


# requests ---------------------------------------------------------------------------------------


def _requests_hour(tenant_id, start, end) -> dict[str, Aggregate]:
    hour = _Hour()
    per_minute: dict = defaultdict(int)
    # Tuples, not model instances: this runs over every fact of an hour, on each build and
    # for the current hour of every report.
    facts = RequestFact.objects.filter(
        tenant_id=tenant_id, minute__gte=start, minute__lt=end
    ).values_list(
        "minute",
        "method",
        "route",
        "status_code",
        "credential_type",
        "principal",
        "count",
        "latency_us_total",
        "latency_histogram",
    )
    for (
        minute,
        method,
        route,
        status,
        credential,
        principal,
        count,
        total_us,
        histogram,
    ) in facts.iterator(chunk_size=2000):
        per_minute[minute] += count
        hour.fact(
            ("", f"route:{method} {route}", f"credential:{credential}"),
            count=count,
            histogram=histogram,
            user=principal,
            latency_us=total_us,
            errors_4xx=count if 400 <= status < 500 else 0,
            errors_5xx=count if status >= 500 else 0,
        )
    aggregates = hour.done()
    if per_minute:
        aggregates[""].add(max_minute_requests=max(per_minute.values()))
    return aggregates


def _requests_touched(since):
    return (
        RequestFact.objects.filter(created_at__gte=since)
        .values_list("tenant_id", "minute")
        .order_by()
    )


# gateway ----------------------------------------------------------------------------------------


def _gateway_calls():
    from playground.models import GatewayCall

    return GatewayCall.objects


def _gateway_hour(tenant_id, start, end) -> dict[str, Aggregate]:
    """The calls are added up per (model, source, template) first, in plain integers, and
    each of those few groups then makes one fact of its dimensions: the reports aggregate the
    current hour on every read, and one fact per call (an Aggregate update per dimension and
    measure) took 24 µs a call, 0.73 s for an hour of 30,000 calls; this takes 0.08 s."""
    from playground.models import CallStatus, PromptExecution

    calls = (
        _gateway_calls()
        .filter(tenant_id=tenant_id, created_at__gte=start, created_at__lt=end)
        .values_list(
            "pk",
            "api_key_id",
            "user_id",
            "model",
            "source",
            "status",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cost_micros",
            "latency_ms",
            "time_to_first_token_ms",
        )
        .order_by()
    )
    # The prompt template behind each call that executed one (one query for the hour).
    templates = dict(
        PromptExecution.objects.filter(
            tenant_id=tenant_id,
            gateway_call__created_at__gte=start,
            gateway_call__created_at__lt=end,
        )
        .order_by()  # not the executions' newest-first: a sort of the hour's for nothing
        .values_list("gateway_call_id", "template_id")
    )
    # (model, source, template) -> [calls, failed, prompt, completion, total, cost, latency_us,
    # ttft_us, ttft_count, latency histogram]
    groups: dict[tuple, list] = {}
    buckets: dict[int, str] = {}
    callers: set[str] = set()
    for (
        pk,
        api_key_id,
        user_id,
        model,
        source,
        status,
        prompt,
        completion,
        total,
        cost,
        latency_ms,
        ttft_ms,
    ) in calls.iterator(chunk_size=2000):
        key = (model, source, templates.get(pk))
        group = groups.get(key)
        if group is None:
            group = groups[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0, {}]
        group[0] += 1
        group[1] += status == CallStatus.FAILED
        group[2] += prompt
        group[3] += completion
        group[4] += total
        group[5] += cost
        group[6] += latency_ms * 1000
        if ttft_ms is not None:
            group[7] += ttft_ms * 1000
            group[8] += 1
        bucket = buckets.get(latency_ms)
        if bucket is None:
            bucket = buckets[latency_ms] = sketches.bucket_of(latency_ms)
        group[9][bucket] = group[9].get(bucket, 0) + 1
        if api_key_id:
            callers.add(f"key:{api_key_id}")
        elif user_id:
            callers.add(f"user:{user_id}")
    hour = _Hour()
    for (model, source, template), group in groups.items():
        count, failed, prompt, completion, total, cost, latency_us, ttft_us, ttfts, bins = group
        dimensions = ["", f"model:{model}", f"source:{source}"]
        if template:
            dimensions.append(f"template:{template}")
        hour.fact(
            dimensions,
            count=count,
            histogram=bins,
            failed=failed,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cost_micros=cost,
            latency_us=latency_us,
            ttft_us=ttft_us if ttfts else None,
            ttft_count=ttfts or None,
        )
    if callers:
        hour.users[""].update(callers)
    return hour.done()


def _gateway_touched(since):
    return (
        _gateway_calls()
        .filter(created_at__gte=since)
        .values_list("tenant_id", "created_at")
        .order_by()
    )


# queries ----------------------------------------------------------------------------------------


def _queries_hour(tenant_id, start, end) -> dict[str, Aggregate]:
    hour = _Hour()
    events = QueryEvent.objects.filter(
        tenant_id=tenant_id, occurred_at__gte=start, occurred_at__lt=end
    ).values_list(
        "occurred_at",
        "normalized_text",
        "query_category",
        "response_time_us",
        "success",
        "error_category",
        "satisfaction",
        "tokens",
        "cost_micros",
        "user_ref",
        "relevance_score",
        "confidence_score",
        named=True,  # cheaper than model instances, read the same way
    )
    for event in events.iterator(chunk_size=2000):
        dimensions = ["", f"category:{event.query_category}"]
        # The query's text with the category it was asked in, so the top queries name their
        # category without reading raw events (categories are cut to 48 characters here).
        asked = f"{event.query_category[:48]}{QUERY_SEPARATOR}{event.normalized_text}"
        if event.success:
            dimensions.append(f"query:{asked}")
        else:
            dimensions += [
                f"query-failed:{asked}",
                f"error:{event.error_category or 'other'}",
            ]
        has_time = event.response_time_us is not None
        hour.fact(
            dimensions,
            latency_ms=event.response_time_us / 1000 if has_time else None,
            user=event.user_ref,
            succeeded=int(event.success),
            failed=int(not event.success),
            response_us=event.response_time_us,
            response_count=int(has_time),
            satisfaction_sum=event.satisfaction,
            satisfaction_count=None if event.satisfaction is None else 1,
            tokens=event.tokens,
            cost_micros=event.cost_micros,
            relevance_e6=_e6(event.relevance_score),
            relevance_count=None if event.relevance_score is None else 1,
            confidence_e6=_e6(event.confidence_score),
            confidence_count=None if event.confidence_score is None else 1,
            max_last_at=int(event.occurred_at.timestamp()),
        )
    return hour.done()


def _e6(score):
    return None if score is None else round(score * 1_000_000)


def _queries_touched(since):
    return (
        QueryEvent.objects.filter(created_at__gte=since)
        .values_list("tenant_id", "occurred_at")
        .order_by()
    )


# support ----------------------------------------------------------------------------------------


def _support_hour(tenant_id, start, end) -> dict[str, Aggregate]:
    from support.models import Escalation, Ticket

    hour = _Hour()
    window = {"gte": start, "lt": end}

    def within(field):
        return Q(**{f"{field}__{op}": moment for op, moment in window.items()})

    tickets = Ticket.objects.filter(tenant_id=tenant_id).filter(
        within("created_at") | within("first_responded_at") | within("resolved_at")
    )
    for ticket in tickets.only(
        "created_at",
        "first_responded_at",
        "resolved_at",
        "assignee_id",
        "reopened_count",
        "ai_handled",
        "customer_satisfaction_score",
    ).iterator(chunk_size=2000):
        dimensions = ["", f"representative:{ticket.assignee_id}"] if ticket.assignee_id else [""]
        if start <= ticket.created_at < end:
            hour.fact([""], tickets_created=1)
        responded = ticket.first_responded_at
        if responded is not None and start <= responded < end:
            waited_us = max(int((responded - ticket.created_at).total_seconds() * 1e6), 0)
            hour.fact(
                dimensions,
                count=0,
                latency_ms=waited_us / 1000,
                first_responses=1,
                first_response_us=waited_us,
            )
        if ticket.resolved_at is not None and start <= ticket.resolved_at < end:
            score = ticket.customer_satisfaction_score
            hour.fact(
                dimensions,
                count=0,
                tickets_resolved=1,
                first_contact_resolved=int(ticket.reopened_count == 0),
                ai_resolved=int(ticket.ai_handled),
                csat_sum=score,
                csat_count=None if score is None else 1,
            )
    escalations = Escalation.objects.filter(tenant_id=tenant_id).filter(within("created_at"))
    escalated = escalations.count()
    if escalated:
        hour.fact([""], count=0, escalations=escalated)
    aggregates = hour.done()
    if "" in aggregates:
        aggregates[""].count = aggregates[""].m("tickets_created")
    return aggregates


def _support_touched(since):
    from support.models import Escalation, Ticket

    # Unordered (the models order by creation): the moments go into a set.
    for created, responded, resolved, tenant_id in (
        Ticket.objects.filter(updated_at__gte=since)
        .values_list("created_at", "first_responded_at", "resolved_at", "tenant_id")
        .order_by()
    ):
        for moment in (created, responded, resolved):
            if moment is not None:
                yield tenant_id, moment
    yield from (
        Escalation.objects.filter(updated_at__gte=since)
        .values_list("tenant_id", "created_at")
        .order_by()
    )


def _hours(queryset, field: str, since) -> set:
    """The distinct hours of `field` from `since`, computed by the database."""
    return set(
        queryset.filter(**{f"{field}__gte": since})
        .annotate(_hour=TruncHour(field, tzinfo=UTC))
        .values_list("_hour", flat=True)
        .distinct()
        .order_by()
    )


def occurrence_hours(stream: str, tenant_id, since: datetime) -> set[datetime]:
    """The hours from `since` that hold any of the stream's raw facts for a tenant."""
    if stream == Stream.REQUESTS:
        return _hours(RequestFact.objects.filter(tenant_id=tenant_id), "minute", since)
    if stream == Stream.QUERIES:
        return _hours(QueryEvent.objects.filter(tenant_id=tenant_id), "occurred_at", since)
    if stream == Stream.GATEWAY:
        return _hours(_gateway_calls().filter(tenant_id=tenant_id), "created_at", since)
    from support.models import Escalation, Ticket

    tickets = Ticket.objects.filter(tenant_id=tenant_id)
    return (
        _hours(tickets, "created_at", since)
        | _hours(tickets, "first_responded_at", since)
        | _hours(tickets, "resolved_at", since)
        | _hours(Escalation.objects.filter(tenant_id=tenant_id), "created_at", since)
    )


_BUILDERS = {
    Stream.REQUESTS: (_requests_hour, _requests_touched),
    Stream.GATEWAY: (_gateway_hour, _gateway_touched),
    Stream.QUERIES: (_queries_hour, _queries_touched),
    Stream.SUPPORT: (_support_hour, _support_touched),
}

# Streams whose raw facts this app prunes (the others are the gateway's and the desk's records).
PRUNED_STREAMS = (Stream.REQUESTS, Stream.QUERIES)


def aggregate_hour(stream: str, tenant_id, hour: datetime) -> dict[str, Aggregate]:
    build, _ = _BUILDERS[stream]
    return most_frequent(
        {
            dimension: aggregate
            for dimension, aggregate in build(tenant_id, hour, hour + HOUR).items()
            if aggregate.count or aggregate.measures
        }
    )


def most_frequent(aggregates: dict[str, Aggregate]) -> dict[str, Aggregate]:
    """`aggregates` with at most ANALYTICS_VALUES_PER_KIND values of each of the NAMED_KINDS:
    the most frequent, ties going to the first in sort order (so each rebuild keeps the same
    ones). The total ("") and the other kinds are kept whole; the total counts every fact."""
    keep = settings.ANALYTICS_VALUES_PER_KIND
    kept: dict[str, Aggregate] = {}
    named: dict[str, list] = defaultdict(list)
    for dimension, aggregate in aggregates.items():
        kind = dimension.partition(":")[0] + ":"
        if kind in NAMED_KINDS:
            named[kind].append((dimension, aggregate))
        else:
            kept[dimension] = aggregate
    for values in named.values():
        if len(values) > keep:
            values = heapq.nsmallest(keep, values, key=lambda item: (-item[1].count, item[0]))
        kept.update(values)
    return kept


def touched_hours(stream: str, since: datetime) -> set[tuple]:
    _, touched = _BUILDERS[stream]
    return {(str(tenant_id), hour_of(moment)) for tenant_id, moment in touched(since)}
