"""A ticket's conversation: comments (public replies and internal notes) and attachments.

A representative's first public comment stops the ticket's first-response clock
(support.services.sla_clock). Attachments follow the policy of support.attachments: the type
is recognised from the content and must be allowed, the size is at most
SUPPORT_ATTACHMENT_MAX_BYTES, and the bytes count against the organization's `storage` quota
while the file exists (a full quota refuses with 429 and stores nothing). The file is stored
under ids only (never the uploaded name) in STORAGES["attachments"]; deleting an attachment,
or the ticket it belongs to, gives the bytes back and removes the file once that commits.
A CLOSED ticket takes no more comments or attachments (409).
"""

import hashlib

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from audit.services import record
from config.exceptions import ApplicationError, Conflict, PayloadTooLarge
from config.files import remove_files_on_commit
from config.services import person
from tenants.models import QuotaResource, Tenant
from tenants.services.quotas import quota_consume, quota_release

from ..attachments import ALLOWED, HEAD_BYTES, clean_name, content_type_of
from ..models import Representative, Ticket, TicketAttachment, TicketComment, TicketStatus
from .common import locked_ticket
from .sla_clock import sla_first_response


def _open_for_replies(ticket: Ticket) -> None:
    if ticket.status == TicketStatus.CLOSED:
        raise Conflict("A CLOSED ticket takes no more.", details={"status": ticket.status})


def _representative_of_actor(tenant: Tenant, actor) -> Representative | None:
    user = person(actor)
    if user is None:
        return None
    return Representative.objects.filter(tenant=tenant, user=user).first()


@transaction.atomic
def ticket_comment_add(
    *, ticket: Ticket, actor, comment: str, is_internal: bool = False
) -> TicketComment:
    """Add a comment; a representative's first public one stops the first-response clock."""
    ticket = locked_ticket(ticket)
    _open_for_replies(ticket)
    representative = _representative_of_actor(ticket.tenant, actor)
    created = TicketComment.objects.create(
        tenant=ticket.tenant,
        ticket=ticket,
        comment=comment,
        is_internal=is_internal,
        author=person(actor),
        representative=representative,
    )
    # A reply to a resolved ticket is not a first response: the ticket was settled without one.
    first_response = (
        representative is not None
        and not is_internal
        and ticket.is_open
        and ticket.first_responded_at is None
    )
    if first_response:
        sla_first_response(ticket, created.created_at)
    Ticket.objects.filter(pk=ticket.pk).update(updated_at=timezone.now())
    record(
        tenant=ticket.tenant,
        event_type="support.ticket.commented",
        actor=actor,
        payload={
            "ticket_id": str(ticket.pk),
            "ticket_number": ticket.ticket_number,
            "comment_id": str(created.pk),
            "is_internal": is_internal,
            "first_response": first_response,
        },
    )
    return created


def _size_of(upload) -> int:
    size = getattr(upload, "size", None)
    if size is None:
        upload.seek(0, 2)
        size = upload.tell()
    return size


@transaction.atomic
def ticket_attachment_add(*, ticket: Ticket, actor, file) -> TicketAttachment:
    """Attach an uploaded file (a Django UploadedFile or any file object with a `name`)."""
    ticket = locked_ticket(ticket)
    _open_for_replies(ticket)
    limit = settings.SUPPORT_ATTACHMENT_MAX_BYTES
    size = _size_of(file)
    if size > limit:
        raise PayloadTooLarge(
            f"The file is {size} bytes; attachments are at most {limit} bytes.",
            details={"file": [f"At most {limit} bytes."], "limit_bytes": limit},
        )
    if size == 0:
        raise ApplicationError("The file is empty.", details={"file": ["The file is empty."]})
    file.seek(0)
    head = file.read(HEAD_BYTES)

    def read_all() -> bytes:
        file.seek(0)
        return file.read()

    content_type = content_type_of(head, read_all)
    if content_type not in ALLOWED:
        raise ApplicationError(
            f"This type of file is not accepted ({content_type}).",
            details={
                "file": [f"Recognised as {content_type}. Accepted: {', '.join(ALLOWED.values())}."],
                "content_type": content_type,
            },
        )
    digest = hashlib.sha256()
    file.seek(0)
    for chunk in iter(lambda: file.read(65536), b""):
        digest.update(chunk)
    quota_consume(tenant=ticket.tenant, resource=QuotaResource.STORAGE, amount=size)
    attachment = TicketAttachment(
        tenant=ticket.tenant,
        ticket=ticket,
        name=clean_name(getattr(file, "name", "")),
        content_type=content_type,
        size_bytes=size,
        sha256=digest.hexdigest(),
        uploaded_by=person(actor),
    )
    file.seek(0)
    attachment.file.save("upload", file, save=False)
    try:
        attachment.save(force_insert=True)
        record(
            tenant=ticket.tenant,
            event_type="support.ticket.attachment_added",
            actor=actor,
            payload={
                "ticket_id": str(ticket.pk),
                "ticket_number": ticket.ticket_number,
                "attachment_id": str(attachment.pk),
                "content_type": content_type,
                "size_bytes": size,
            },
        )
    except BaseException:
        # The row and the quota roll back with the transaction; the file must go with them.
        attachment.file.storage.delete(attachment.file.name)
        raise
    return attachment


def attachments_release(*, tenant: Tenant, attachments) -> int:
    """Delete the attachments of queryset `attachments` (the tenant's), giving their bytes
    back; their files go once the transaction commits. Returns the bytes freed."""
    rows = list(attachments.filter(tenant=tenant).values_list("pk", "file"))
    if not rows:
        return 0
    selected = TicketAttachment.objects.filter(pk__in=[pk for pk, _ in rows])
    freed = selected.aggregate(total=Sum("size_bytes"))["total"] or 0
    selected.delete()
    quota_release(tenant=tenant, resource=QuotaResource.STORAGE, amount=freed)
    remove_files_on_commit("attachments", [name for _, name in rows])
    return freed


@transaction.atomic
def ticket_attachment_delete(*, attachment: TicketAttachment, actor) -> None:
    """Delete one attachment (audited), freeing its storage."""
    ticket = locked_ticket(Ticket(pk=attachment.ticket_id))
    freed = attachments_release(
        tenant=ticket.tenant, attachments=TicketAttachment.objects.filter(pk=attachment.pk)
    )
    if freed:
        record(
            tenant=ticket.tenant,
            event_type="support.ticket.attachment_deleted",
            actor=actor,
            payload={
                "ticket_id": str(ticket.pk),
                "ticket_number": ticket.ticket_number,
                "attachment_id": str(attachment.pk),
                "size_bytes": attachment.size_bytes,
            },
        )
