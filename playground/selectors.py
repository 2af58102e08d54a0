"""Reads of the playground app that more than one caller needs: the catalogue, templates with
the version to show, the gateway's usage for billing, and execution analytics (the gateway's
token metrics are the analytics app's, read from its roll-ups of the calls).

Analytics are computed in the database: counts, sums and averages by aggregate, and latency
percentiles with PostgreSQL's `percentile_cont` (the SQLite default computes them in Python
from the latency column alone).
"""

import datetime as dt
import math
from collections import defaultdict

from django.contrib.postgres.fields import ArrayField
from django.core.files.storage import storages
from django.db import connection
from django.db.models import Aggregate, Avg, Count, F, FloatField, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone
from rest_framework.exceptions import NotFound

from config.db import deleted_meanwhile
from config.exceptions import ApplicationError

from .models import (
    ExecutionStatus,
    GatewayCall,
    JobStatus,
    LanguageModel,
    OrchestrationPhase,
    OrchestrationRun,
    PhaseStatus,
    PromptExecution,
    PromptTemplate,
    PromptTemplateVersion,
    TemplateStatus,
    WorkflowJob,
)

PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


class PercentilesCont(Aggregate):
    """PostgreSQL's continuous percentiles of an ordered column, as an array in the order of
    `fractions`: one sort of the group's values for all of them (one aggregate per fraction
    sorted them once each: 0.68 s against 0.35 s for three over a million executions)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fractions)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = ArrayField(FloatField())

    def __init__(self, expression, fractions, **extra):
        listed = ", ".join(repr(float(fraction)) for fraction in fractions)
        super().__init__(expression, fractions=f"ARRAY[{listed}]::float8[]", **extra)


def callable_models():
    """The active catalogue, with providers, by name."""
    return LanguageModel.objects.filter(active=True).select_related("provider").order_by("name")


# Templates ------------------------------------------------------------------------------------


def template_version(
    template: PromptTemplate, *, version: int | None = None, label: str | None = None
) -> PromptTemplateVersion:
    """The version asked for by number or label; without either, the latest. A version or
    label the template does not have is a 400 naming it."""
    if label == "production":
        if template.production_version is None:
            raise ApplicationError(
                "No version of this template is published to production yet.",
                details={"label": ["POST .../publish sets the production version."]},
            )
        version = template.production_version
    elif label == "latest" or version is None:
        version = template.latest_version
    found = template.versions.filter(version=version).first()
    if found is None and version == template.latest_version:
        # A template's latest version exists as long as it does: this one was deleted since
        # the view read it.
        raise deleted_meanwhile(PromptTemplate)
    if found is None:
        raise ApplicationError(
            f"This template has no version {version}.",
            details={"version": [f"Versions run from 1 to {template.latest_version}."]},
        )
    return found


def attach_latest_versions(templates) -> list[PromptTemplate]:
    """Set `shown_version` of each template to its latest version: one query for a page."""
    templates = list(templates)
    if templates:
        condition = Q()
        for template in templates:
            condition |= Q(template_id=template.pk, version=template.latest_version)
        versions = {v.template_id: v for v in PromptTemplateVersion.objects.filter(condition)}
        for template in templates:
            template.shown_version = versions[template.pk]
    return templates


def template_categories(*, tenant) -> list[dict]:
    """Each category of the tenant's templates with its counts by status: one query."""
    rows = (
        PromptTemplate.objects.filter(tenant=tenant)
        .values("category")
        .annotate(
            total_templates=Count("id"),
            active_templates=Count("id", filter=Q(status=TemplateStatus.ACTIVE)),
            draft_templates=Count("id", filter=Q(status=TemplateStatus.DRAFT)),
            archived_templates=Count("id", filter=Q(status=TemplateStatus.ARCHIVED)),
        )
        .order_by("category")
    )
    return [{"name": row.pop("category"), **row} for row in rows]


# Execution statistics -------------------------------------------------------------------------


def _period(days: int) -> tuple[dt.datetime, dt.date, dt.date]:
    now = timezone.now()
    since = now - dt.timedelta(days=days)
    return since, since.date(), now.date()


def _nearest_rank(values: list[int], fraction: float) -> float | None:
    # The SQLite fallback; percentile_cont interpolates, which this matches.
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _aggregates() -> dict:
    return {
        "executions": Count("id"),
        "failed": Count("id", filter=Q(status=ExecutionStatus.FAILED)),
        "avg_response_time_ms": Avg("response_time_ms"),
        "total_tokens": Sum("tokens_used"),
        "total_cost_micros": Sum("cost_micros"),
        "avg_rating": Avg("rating"),
        "rated_executions": Count("rating"),
    }


def _with_percentiles(queryset, group_field: str | None) -> list[dict]:
    """Rows of `_aggregates()` (by `group_field`, or one row) with p50/p95/p99 latency."""
    aggregates = _aggregates()
    postgres = connection.vendor == "postgresql"
    if postgres:
        fractions = [fraction for _, fraction in PERCENTILES]
        aggregates["percentiles"] = PercentilesCont("response_time_ms", fractions)
    if group_field is None:
        rows = [queryset.aggregate(**aggregates)]
    else:
        rows = list(queryset.values(group=F(group_field)).annotate(**aggregates).order_by("group"))
    if postgres:
        for row in rows:
            # NULL over no rows (an empty period's summary).
            values = row.pop("percentiles") or [None] * len(PERCENTILES)
            for (name, _), value in zip(PERCENTILES, values, strict=True):
                row[f"{name}_response_time_ms"] = value
    else:
        latencies = defaultdict(list)
        fields = ("response_time_ms",) if group_field is None else (group_field, "response_time_ms")
        for row in queryset.values_list(*fields):
            latencies[None if group_field is None else row[0]].append(row[-1])
        for row in rows:
            values = latencies[row.get("group")]
            for name, fraction in PERCENTILES:
                row[f"{name}_response_time_ms"] = _nearest_rank(values, fraction)
    return [_finished(row) for row in rows]


def _finished(row: dict) -> dict:
    executions = row["executions"] or 0
    total_tokens = row["total_tokens"] or 0
    total_cost = row["total_cost_micros"] or 0
    average = row["avg_response_time_ms"]
    result = {
        "executions": executions,
        "failed": row["failed"] or 0,
        "error_rate": round(row["failed"] / executions, 4) if executions else 0.0,
        "avg_response_time": round(average / 1000, 3) if average is not None else None,
        "total_tokens": total_tokens,
        "avg_tokens": round(total_tokens / executions, 1) if executions else 0.0,
        "total_cost_micros": total_cost,
        "avg_cost_micros": round(total_cost / executions, 1) if executions else 0.0,
        "avg_rating": round(row["avg_rating"], 2) if row["avg_rating"] is not None else None,
        "rated_executions": row["rated_executions"] or 0,
    }
    for name, _ in PERCENTILES:
        value = row.get(f"{name}_response_time_ms")
        result[f"{name}_response_time_ms"] = round(value, 1) if value is not None else None
    if "group" in row:
        result["group"] = row["group"]
    return result


def _daily(queryset) -> list[dict]:
    rows = (
        queryset.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            executions=Count("id"),
            errors=Count("id", filter=Q(status=ExecutionStatus.FAILED)),
            tokens=Sum("tokens_used"),
            cost_micros=Sum("cost_micros"),
            avg_response_time_ms=Avg("response_time_ms"),
        )
        .order_by("day")
    )
    return [
        {
            "date": row["day"].isoformat(),
            "executions": row["executions"],
            "errors": row["errors"],
            "tokens": row["tokens"] or 0,
            "cost_micros": row["cost_micros"] or 0,
            "avg_response_time_ms": round(row["avg_response_time_ms"] or 0, 1),
        }
        for row in rows
    ]


# Latency change between the period's halves that counts as a trend (10 %).
TREND_THRESHOLD = 0.10
TREND_MIN_CHANGE_MS = 50
MIN_EXECUTIONS_FOR_TREND = 10


def performance_trend(daily: list[dict]) -> str:
    """`improving`, `degrading` or `stable`: the mean latency of the second half of the days
    with executions against the first half's (a change of at least 10 % and 50 ms);
    `insufficient_data` under 10 executions or under two days."""
    if len(daily) < 2 or sum(day["executions"] for day in daily) < MIN_EXECUTIONS_FOR_TREND:
        return "insufficient_data"
    middle = len(daily) // 2

    def mean(days):
        count = sum(day["executions"] for day in days)
        return sum(day["avg_response_time_ms"] * day["executions"] for day in days) / count

    before, after = mean(daily[:middle]), mean(daily[middle:])
    # Both a relative and an absolute change: 1 ms to 4 ms is noise, not a trend.
    if before == 0 or abs(after - before) < TREND_MIN_CHANGE_MS:
        return "stable"
    change = (after - before) / before
    if change <= -TREND_THRESHOLD:
        return "improving"
    if change >= TREND_THRESHOLD:
        return "degrading"
    return "stable"


def recommendations(template: PromptTemplate, summary: dict, trend: str) -> list[dict]:
    """Rule-based advice from the figures (each rule documented in docs/gateway.md)."""
    advice = []

    def add(kind, priority, title, description):
        advice.append(
            {"type": kind, "priority": priority, "title": title, "description": description}
        )

    executions = summary["executions"]
    if executions < MIN_EXECUTIONS_FOR_TREND:
        add(
            "usage",
            "low",
            "Not enough executions yet",
            f"{executions} executions in the period; figures settle after "
            f"{MIN_EXECUTIONS_FOR_TREND}.",
        )
    if executions and summary["error_rate"] > 0.05:
        add(
            "reliability",
            "high",
            "Executions are failing",
            f"{summary['error_rate']:.0%} of executions failed; configure fallbacks for the "
            "model or check its provider.",
        )
    p95 = summary["p95_response_time_ms"]
    if p95 is not None and p95 > 10_000:
        add(
            "performance",
            "medium",
            "Slow responses",
            f"p95 latency is {p95 / 1000:.1f} s; lower max_tokens or try a faster model.",
        )
    if trend == "degrading":
        add(
            "performance",
            "medium",
            "Latency is rising",
            "The second half of the period is at least 10 % slower than the first.",
        )
    rating = summary["avg_rating"]
    if rating is not None and summary["rated_executions"] >= 5 and rating < 3:
        add(
            "quality",
            "high",
            "Low ratings",
            f"Average rating {rating:.1f}/5; revise the prompt in a new version and compare.",
        )
    if template.status == TemplateStatus.ACTIVE and template.production_version is None:
        add(
            "process",
            "low",
            "No production version",
            "The template is active but no version is published; publish one so callers get "
            "a fixed version.",
        )
    if not advice:
        add(
            "performance",
            "low",
            "Template performing well",
            "No failures, latency or rating concerns in the period.",
        )
    return advice


def template_analytics(*, template: PromptTemplate, days: int) -> dict:
    """Per template and per version: executions, latency percentiles, tokens, cost, error
    rate, rating; the daily series, the trend and recommendations."""
    since, start, end = _period(days)
    executions = PromptExecution.objects.filter(
        tenant_id=template.tenant_id, template=template, created_at__gte=since
    )
    summary = _with_percentiles(executions, None)[0]
    versions = _with_percentiles(executions, "version__version")
    daily = _daily(executions)
    trend = performance_trend(daily)
    return {
        "template_id": template.pk,
        "template_name": template.name,
        "period": {"days": days, "start_date": start, "end_date": end},
        "summary": summary,
        "versions": [{"version": row.pop("group"), **row} for row in versions],
        "trends": {"daily_usage": daily, "performance_trend": trend},
        "recommendations": recommendations(template, summary, trend),
        "generated_at": timezone.now(),
    }


def _winner(stats: dict, templates: dict, key: str, *, highest: bool = False) -> dict | None:
    # Only templates with the figure; ties go to more executions, then the smaller id.
    candidates = [(tid, row) for tid, row in stats.items() if row[key] is not None]
    if not candidates:
        return None
    sign = -1 if highest else 1
    tid, row = min(
        candidates, key=lambda item: (sign * item[1][key], -item[1]["executions"], str(item[0]))
    )
    return {"id": tid, "name": templates[tid].name, "value": row[key]}


def templates_compare(*, tenant, template_ids: list, days: int) -> dict:
    """The figures of each template over the period, and the winners: fastest by p50
    latency, cheapest by average cost, highest rated. A template the tenant does not have is
    a 404, like a random id."""
    templates = PromptTemplate.objects.filter(tenant=tenant, pk__in=template_ids).in_bulk()
    missing = [str(tid) for tid in template_ids if tid not in templates]
    if missing:
        raise NotFound(f"No template {missing[0]}.")
    since, start, end = _period(days)
    executions = PromptExecution.objects.filter(
        tenant=tenant, template_id__in=template_ids, created_at__gte=since
    )
    by_template = {row.pop("group"): row for row in _with_percentiles(executions, "template_id")}
    stats = {}
    for tid, template in templates.items():
        row = by_template.get(tid)
        stats[tid] = {
            "name": template.name,
            "category": template.category,
            "executions": row["executions"] if row else 0,
            "avg_response_time": row["avg_response_time"] if row else None,
            "p50_response_time_ms": row["p50_response_time_ms"] if row else None,
            "avg_cost_micros": row["avg_cost_micros"] if row else None,
            "avg_rating": row["avg_rating"] if row else None,
            "error_rate": row["error_rate"] if row else None,
        }
    fastest = _winner(stats, templates, "p50_response_time_ms")
    cheapest = _winner(stats, templates, "avg_cost_micros")
    rated = _winner(stats, templates, "avg_rating", highest=True)
    return {
        "period": {"days": days, "start_date": start, "end_date": end},
        "templates": {str(tid): row for tid, row in stats.items()},
        "winners": {
            "fastest": fastest and {**_named(fastest), "time_ms": fastest["value"]},
            "cheapest": cheapest and {**_named(cheapest), "cost_micros": cheapest["value"]},
            "highest_rated": rated and {**_named(rated), "rating": rated["value"]},
        },
        "generated_at": timezone.now(),
    }


def _named(winner: dict) -> dict:
    return {"id": str(winner["id"]), "name": winner["name"]}


def gateway_usage(*, tenant_ids, start: dt.datetime, end: dt.datetime) -> dict:
    """Tokens and cost (micro-units of GATEWAY_CURRENCY) of the tenants' gateway calls made in
    [start, end), every status: what was metered. {tenant_id: (tokens, cost_micros)}, tenants
    without calls left out; one query, whatever the number of tenants (billing's invoices)."""
    rows = (
        GatewayCall.objects.filter(
            tenant_id__in=tenant_ids, created_at__gte=start, created_at__lt=end
        )
        .order_by()
        .values("tenant_id")
        .annotate(tokens=Sum("total_tokens"), cost=Sum("cost_micros"))
    )
    return {row["tenant_id"]: (row["tokens"] or 0, row["cost"] or 0) for row in rows}


def gateway_usage_in_periods(*, tenant, periods: list[tuple]) -> list[tuple[int, int]]:
    """(tokens, cost_micros) of the tenant's gateway calls in each [start, end) of `periods`,
    in one query whatever their number, reading the calls from the first start to the last end
    only (the sums' own filters alone made it read every call the tenant ever made)."""
    if not periods:
        return []
    sums = {}
    for index, (start, end) in enumerate(periods):
        window = Q(created_at__gte=start, created_at__lt=end)
        sums[f"tokens_{index}"] = Sum("total_tokens", filter=window)
        sums[f"cost_{index}"] = Sum("cost_micros", filter=window)
    row = GatewayCall.objects.filter(
        tenant=tenant,
        created_at__gte=min(start for start, _ in periods),
        created_at__lt=max(end for _, end in periods),
    ).aggregate(**sums)
    return [
        (row[f"tokens_{index}"] or 0, row[f"cost_{index}"] or 0) for index in range(len(periods))
    ]


# Runs and workflows ---------------------------------------------------------------------------

# A phase's duration before the tenant has any: what the estimate falls back on.
DEFAULT_PHASE_SECONDS = 30
RECENT_PHASES_FOR_ESTIMATE = 50
RECENT_RUNS = 5


def phase_seconds_estimate(tenant, ai_model: str) -> float:
    """Seconds a phase of `ai_model` takes for this tenant: the mean of its last
    RECENT_PHASES_FOR_ESTIMATE completed phases, else DEFAULT_PHASE_SECONDS (one query)."""
    recent = (
        OrchestrationPhase.objects.filter(
            tenant=tenant, run__ai_model=ai_model, status=PhaseStatus.COMPLETED
        )
        .order_by("-completed_at")
        .values_list("execution_time_ms", flat=True)[:RECENT_PHASES_FOR_ESTIMATE]
    )
    durations = list(recent)
    return sum(durations) / len(durations) / 1000 if durations else DEFAULT_PHASE_SECONDS


def run_detail(run: OrchestrationRun) -> dict:
    """A run with its phases in order and its integration operations (three queries)."""
    return {
        "run": run,
        "phases": list(run.phases.order_by("position")),
        "integration_operations": list(run.operations.order_by("created_at")),
    }


def recent_runs(project) -> list[OrchestrationRun]:
    """The project's newest runs, read from the runs' index on (tenant, project, -created_at):
    by project alone it could not be used, and every run of the project was sorted."""
    return list(
        OrchestrationRun.objects.filter(tenant_id=project.tenant_id, project=project)
        .select_related("project")
        .order_by("-created_at")[:RECENT_RUNS]
    )


def workflow_metrics(tenant) -> dict:
    """Counts by status and mean execution time of finished jobs, overall and per type, in
    the database (two queries)."""
    by_status = {
        f"{status}_jobs": Count("id", filter=Q(status=status)) for status in JobStatus.values
    }
    finished = Q(status__in=[JobStatus.COMPLETED, JobStatus.FAILED])
    jobs = WorkflowJob.objects.filter(tenant=tenant).order_by()
    totals = jobs.aggregate(
        total_jobs=Count("id"),
        avg_ms=Avg("execution_time_ms", filter=finished),
        **by_status,
    )
    by_type = {
        row["workflow_type"]: {
            "total_jobs": row["total"],
            "completed_jobs": row["completed"],
            "failed_jobs": row["failed"],
            "avg_execution_time_seconds": _seconds(row["avg_ms"]),
        }
        for row in jobs.values("workflow_type")
        .annotate(
            total=Count("id"),
            completed=Count("id", filter=Q(status=JobStatus.COMPLETED)),
            failed=Count("id", filter=Q(status=JobStatus.FAILED)),
            avg_ms=Avg("execution_time_ms", filter=finished),
        )
        .order_by("workflow_type")
    }
    avg_ms = totals.pop("avg_ms")
    return {**totals, "avg_execution_time_seconds": _seconds(avg_ms), "by_type": by_type}


def _seconds(milliseconds) -> float | None:
    return round(milliseconds / 1000, 3) if milliseconds is not None else None


def artifact_file(artifact):
    """The artifact's file, opened for reading (a FileResponse closes it)."""
    return storages["artifacts"].open(artifact.file.name, "rb")
