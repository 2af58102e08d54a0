"""Artifacts: files jobs write to the tenant's file storage, counted against its `storage`
quota while they exist.

`artifact_write` counts the bytes (one conditional UPDATE: a full quota refuses with 429 and
writes nothing), stores the file and records the row in one transaction; a failure after the
file was stored removes it. `artifact_delete` and `artifacts_delete` give the bytes back and
remove the files once the deletion commits. A run's or a job's artifacts go with it: the
services deleting a project or a job call `artifacts_delete` first, so no cascade ever leaves
a file behind or the quota counting it.
"""

import hashlib

from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import Sum

from audit.services import record
from config.files import Spool, remove_files_on_commit
from tenants.models import QuotaResource, Tenant
from tenants.services.quotas import quota_consume, quota_release, quota_room

from ..models import Artifact


def _storage():
    return storages["artifacts"]


@transaction.atomic
def artifact_write(
    *,
    tenant: Tenant,
    name: str,
    content: bytes | Spool,
    content_type: str,
    created_by=None,
    run=None,
    workflow_job=None,
) -> Artifact:
    """Store `content` (bytes, or a Spool a job wrote its artifact to: see `artifact_spool`)
    as `name`; raises QuotaExceeded (nothing stored) when the tenant's storage quota cannot
    take it."""
    if isinstance(content, Spool):
        size, digest, file = content.size, content.sha256, content.file()
    else:
        size, digest = len(content), hashlib.sha256(content).hexdigest()
        file = ContentFile(content)
    quota_consume(tenant=tenant, resource=QuotaResource.STORAGE, amount=size)
    artifact = Artifact(
        tenant=tenant,
        name=name,
        content_type=content_type,
        size_bytes=size,
        sha256=digest,
        run=run,
        workflow_job=workflow_job,
        created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
    )
    artifact.file.save(name, file, save=False)
    try:
        artifact.save()
    except BaseException:
        _storage().delete(artifact.file.name)
        raise
    return artifact


def artifact_spool(*, tenant: Tenant) -> Spool:
    """Where a job writes an artifact as it makes it (a report, an export): a temporary file,
    never the whole artifact in the worker's memory, refused (QuotaExceeded) as soon as it
    outgrows the room left in the tenant's storage quota rather than once it is all written.
    `artifact_write` stores it; the caller closes it."""
    room, refusal = quota_room(tenant=tenant, resource=QuotaResource.STORAGE)
    return Spool(limit=room, refuse=refusal)


@transaction.atomic
def artifacts_delete(*, tenant: Tenant, artifacts) -> int:
    """Delete the artifacts of queryset `artifacts` (the tenant's), giving their bytes back;
    returns how many. Their files are removed once the transaction commits."""
    rows = list(artifacts.filter(tenant=tenant).select_for_update().values_list("pk", "file"))
    if not rows:
        return 0
    freed = Artifact.objects.filter(pk__in=[pk for pk, _ in rows]).aggregate(
        total=Sum("size_bytes")
    )["total"]
    Artifact.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
    quota_release(tenant=tenant, resource=QuotaResource.STORAGE, amount=freed or 0)
    remove_files_on_commit("artifacts", [name for _, name in rows])
    return len(rows)


@transaction.atomic
def artifact_delete(*, artifact: Artifact, actor) -> None:
    """Delete one artifact (a member freeing storage), audited."""
    deleted = artifacts_delete(
        tenant=artifact.tenant, artifacts=Artifact.objects.filter(pk=artifact.pk)
    )
    if deleted:
        record(
            tenant=artifact.tenant,
            event_type="artifact.deleted",
            actor=actor,
            payload={
                "artifact_id": str(artifact.pk),
                "name": artifact.name,
                "size_bytes": artifact.size_bytes,
            },
        )
