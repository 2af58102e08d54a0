"""Celery tasks of the analytics app: thin, each calls one service (beat schedules them)."""

from celery import shared_task

from . import capture, services


@shared_task(name="analytics.tasks.flush_request_facts")
def flush_request_facts() -> int:
    """Write the API requests counted since the last flush as facts."""
    return capture.flush_request_facts()


@shared_task(name="analytics.tasks.build_rollups")
def build_rollups() -> int:
    """Fold the facts recorded since the last run into the hourly and daily roll-ups."""
    capture.flush_request_facts()
    return services.rollups_build()


@shared_task(name="analytics.tasks.prune_raw_facts")
def prune_raw_facts() -> int:
    """Delete raw facts past ANALYTICS_RAW_RETENTION_DAYS (roll-ups stay)."""
    return services.raw_facts_prune()


@shared_task(name="analytics.tasks.rebuild_rollups")
def rebuild_rollups(tenant_id: str, since: str) -> int:
    """Rebuild one tenant's roll-ups from `since` (ISO date-time): the admin's action."""
    from datetime import datetime

    from tenants.models import Tenant

    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return 0
    return services.rollups_rebuild(tenant=tenant, since=datetime.fromisoformat(since))
