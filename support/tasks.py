"""Celery tasks of the support app: thin, each loads its objects by id and
calls a service, so the rules and the audit event are the service's.

A task is `@shared_task(name="support.tasks.<name>")`, takes JSON
arguments (ids, never model instances), is safe to run twice (a broker may deliver it again)
and is queued with `transaction.on_commit`, so it never acts on a change that rolled back.
Periodic jobs are listed in `CELERY_BEAT_SCHEDULE` (config/settings/base.py).
"""

from celery import shared_task

from . import services


@shared_task(name="support.tasks.mark_sla_breaches")
def mark_sla_breaches() -> int:
    """Mark the tickets whose SLA target fell due (each once), escalating urgent ones."""
    return services.sla_breaches_mark()


@shared_task(name="support.tasks.roll_budgets")
def roll_budgets() -> int:
    """Move each budget whose period has ended into its next period (each once)."""
    return services.budgets_roll()
