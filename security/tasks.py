"""Celery tasks of the security app: thin, each loads its objects by id and
calls a service, so the rules and the audit event are the service's.

A task is `@shared_task(name="security.tasks.<name>")`, takes JSON
arguments (ids, never model instances), is safe to run twice (a broker may deliver it again)
and is queued with `transaction.on_commit`, so it never acts on a change that rolled back.
Periodic jobs are listed in `CELERY_BEAT_SCHEDULE` (config/settings/base.py).
"""

from celery import shared_task

from tenants.models import Tenant

from . import services


@shared_task(name="security.tasks.remind_breach_deadlines")
def remind_breach_deadlines() -> int:
    """Beat job: the 72-hour deadline's reminders of personal data breaches (each sent once)."""
    return services.breach_notifications_remind()


@shared_task(name="security.tasks.detect_lockout_bursts")
def detect_lockout_bursts() -> int:
    """Beat job: an incident in each organization whose members meet the lockout threshold."""
    return len(services.login_lockout_bursts_check())


@shared_task(name="security.tasks.detect_broken_chains")
def detect_broken_chains() -> int:
    """Daily beat job: one verification task per organization, so a long chain holds one
    worker for its own verification only. Returns how many were queued."""
    tenant_ids = list(Tenant.objects.values_list("pk", flat=True))
    for tenant_id in tenant_ids:
        detect_broken_chain.delay(str(tenant_id))
    return len(tenant_ids)


@shared_task(name="security.tasks.detect_broken_chain")
def detect_broken_chain(tenant_id: str) -> list[str]:
    """Verify one organization's audit chain; the incidents opened for new breaks."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return []
    opened = services.audit_chain_check(tenant=tenant)
    return [str(incident.pk) for incident in opened]
