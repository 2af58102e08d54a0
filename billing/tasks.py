"""Celery tasks of the billing app: thin, each loads its objects by id and
calls a service, so the rules and the audit event are the service's.

A task is `@shared_task(name="billing.tasks.<name>")`, takes JSON
arguments (ids, never model instances), is safe to run twice (a broker may deliver it again)
and is queued with `transaction.on_commit`, so it never acts on a change that rolled back.
Periodic jobs are listed in `CELERY_BEAT_SCHEDULE` (config/settings/base.py).
"""

from celery import shared_task

from . import services


@shared_task(name="billing.tasks.generate_invoices")
def generate_invoices() -> int:
    """Beat job: open the next period of every subscription whose period ended, issuing its
    invoice. Safe to run twice at once (each subscription is claimed under its lock, and one
    invoice per period is a database constraint); returns how many invoices were issued."""
    return len(services.subscriptions_renew_due().invoices)


@shared_task(name="billing.tasks.run_dunning")
def run_dunning() -> dict:
    """Beat job: mark unpaid invoices overdue after their due date and suspend organizations
    overdue longer than BILLING_SUSPEND_AFTER_DAYS. Safe to run twice at once."""
    report = services.dunning_run()
    return {"overdue": report.overdue, "suspended": report.suspended}
