"""Celery tasks of the audit log: thin, each calls a service."""

from celery import shared_task

from . import services


@shared_task(name="audit.tasks.seal_audit_chains")
def seal_audit_chains() -> int:
    """Seal every chain with unsealed events: queued on commit after events are recorded, and
    run by beat every minute to catch a request the broker lost."""
    return services.chains_seal_all()


@shared_task(name="audit.tasks.issue_audit_checkpoints")
def issue_audit_checkpoints() -> int:
    """Beat job: sign the head of every chain that moved since its last checkpoint."""
    return services.checkpoints_issue_all()
