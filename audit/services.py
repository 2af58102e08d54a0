"""Recording audit events. Every state-changing service calls `record()` inside its transaction,
so an event exists exactly when its change committed."""

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import rfc8785
from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from config import request_context
from config.db import bulk_insert
from config.prepared import insert_row
from tenants.models import Tenant

from . import signing
from .canonical import (
    GENESIS_PREV_HASH,
    canonical_bytes,
    chain_hash,
    checkpoint_message,
    event_document,
    format_timestamp,
)
from .models import PLATFORM_CHAIN, ActorType, AuditCheckpoint, AuditEvent
from .verification import ChainVerifier, Checkpoint, VerificationResult

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
# A key is secret when any of its parts names a secret, or its last part is a credential noun:
# "password_hash", "private_key", "access_token", "X-Webhook-Signature" are; "tokens_used",
# "key_prefix" are not.
_SECRET_PARTS = frozenset(
    {"password", "passwd", "passphrase", "secret", "authorization", "credential", "credentials"}
)
_SECRET_LAST_PARTS = frozenset({"key", "apikey", "token", "signature", "pwd"})
_WORD_BOUNDARY = re.compile(r"[^a-zA-Z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_key(key: str) -> bool:
    parts = [part.lower() for part in _WORD_BOUNDARY.split(str(key)) if part]
    if not parts:
        return False
    return bool(_SECRET_PARTS.intersection(parts)) or parts[-1] in _SECRET_LAST_PARTS


class AuditOutsideTransaction(RuntimeError):
    """record() was called outside a transaction: the event could outlive a rolled-back change."""


def redact(value: Any) -> Any:
    """A copy of a payload with secret-looking keys' values replaced."""
    if isinstance(value, Mapping):
        return {
            str(key): REDACTED if is_secret_key(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def record(
    *,
    tenant: Tenant | None,
    event_type: str,
    actor=None,
    actor_type: str | None = None,
    actor_label: str = "",
    payload: Mapping | None = None,
) -> AuditEvent:
    """Append an event to the tenant's chain (or the platform chain when tenant is None)."""
    if not transaction.get_connection().in_atomic_block:
        raise AuditOutsideTransaction(
            f"record({event_type!r}) must run inside the service's transaction"
        )
    event = _event(
        tenant=tenant,
        event_type=event_type,
        actor=actor,
        actor_type=actor_type,
        actor_label=actor_label,
        payload=payload,
        context=request_context.current(),
        created_at=timezone.now(),
    )
    # The ORM's INSERT, compiled once (no receiver listens to AuditEvent's save signals).
    insert_row(event)
    _seal_after_commit()
    for hook in _RECORDED_HOOKS:
        hook(event)
    return event


def _event(
    *,
    tenant,
    event_type: str,
    actor,
    payload,
    context,
    created_at,
    actor_type: str | None = None,
    actor_label: str = "",
) -> AuditEvent:
    """An unsaved event, as record() and record_many() write it: the actor (a user, else the
    system), the redacted payload as plain JSON, the request's context."""
    if actor is not None and getattr(actor, "is_authenticated", False):
        actor_type = actor_type or ActorType.USER
        actor_label = actor_label or actor.email
    else:
        actor = None
        actor_type = actor_type or ActorType.SYSTEM
    return AuditEvent(
        tenant=tenant,
        event_type=event_type,
        actor=actor,
        actor_type=actor_type,
        actor_label=actor_label[:254],
        payload=_json_payload(redact(payload or {})),
        request_id=context.request_id,
        ip_address=context.ip_address,
        user_agent=context.user_agent,
        created_at=created_at,
    )


@dataclass(frozen=True)
class Entry:
    """One event of a record_many: record()'s arguments."""

    tenant: Tenant | None
    event_type: str
    payload: Mapping | None = None
    actor: object = None


def record_many(entries: list[Entry]) -> list[AuditEvent]:
    """record() for many events at once (a batch job's: billing's invoice run), in one INSERT,
    and the hooks' batch forms: what one record() call per event would write, in a constant
    number of queries. Each entry is one state change of the batch; the caller's transaction
    holds them all."""
    if not transaction.get_connection().in_atomic_block:
        raise AuditOutsideTransaction("record_many() must run inside the service's transaction")
    if not entries:
        return []
    context = request_context.current()
    now = timezone.now()
    events = [
        _event(
            tenant=entry.tenant,
            event_type=entry.event_type,
            actor=entry.actor,
            payload=entry.payload,
            context=context,
            # A microsecond apart: sealing chains events by (created_at, id), and a tenant's
            # events must keep the order they were recorded in.
            created_at=now + timedelta(microseconds=index),
        )
        for index, entry in enumerate(entries)
    ]
    bulk_insert(AuditEvent, events)
    _seal_after_commit()
    for hook in _RECORDED_HOOKS:
        many = _RECORDED_MANY_HOOKS.get(hook)
        if many is not None:
            many(events)
        else:
            for event in events:
                hook(event)
    return events


# Called with each recorded event, inside its transaction. The public event catalogue
# (notifications) registers here: the webhook deliveries and notifications of a change are
# written with it, and a state change stays one call, record(). audit knows no app above it.
_RECORDED_HOOKS: list[Callable[[AuditEvent], None]] = []
# A hook's batch form, for record_many: called once with all its events.
_RECORDED_MANY_HOOKS: dict[Callable, Callable[[list[AuditEvent]], None]] = {}


def on_record(
    hook: Callable[[AuditEvent], None], *, many: Callable[[list[AuditEvent]], None] | None = None
) -> None:
    """Call `hook(event)` for every event recorded from now on, inside its transaction (an
    exception rolls the change back with it); `many(events)` instead, when given, for the
    events of one record_many."""
    if hook not in _RECORDED_HOOKS:
        _RECORDED_HOOKS.append(hook)
    if many is not None:
        _RECORDED_MANY_HOOKS[hook] = many


def _json_payload(payload: Mapping) -> dict:
    """Plain JSON (UUIDs, datetimes, decimals as strings) that RFC 8785 can canonicalise, so a
    bad payload fails here, in its service, and never blocks sealing later."""
    plain = json.loads(json.dumps(payload, cls=DjangoJSONEncoder, allow_nan=False))
    rfc8785.dumps(plain)
    return plain


# Set while a seal task is queued; the task clears it before it looks for unsealed events, so
# an event committed before the clearing is sealed by that task and one committed after it
# queues the next. At most one seal task is in flight however many events are recorded.
SEAL_REQUESTED_KEY = "audit:seal-requested"


def _seal_after_commit() -> None:
    """Once per transaction: after it commits, make sure a seal task is queued."""
    # Callbacks of a rolled-back savepoint leave this list, so one found here will run.
    if any(
        callback is _request_seal for _, callback, _ in transaction.get_connection().run_on_commit
    ):
        return
    transaction.on_commit(_request_seal, robust=True)


def _request_seal() -> None:
    """Queue a seal unless one is queued: due AUDIT_SEAL_DELAY_SECONDS later, so a stream of
    commits is sealed in batches, a task per delay at most, not a task per commit."""
    from .tasks import seal_audit_chains

    if cache.add(SEAL_REQUESTED_KEY, 1, timeout=60 + settings.AUDIT_SEAL_DELAY_SECONDS):
        seal_audit_chains.apply_async(countdown=settings.AUDIT_SEAL_DELAY_SECONDS)


# Sealing ---------------------------------------------------------------------------------------

_HASHED_FIELDS = (
    "id",
    "tenant_id",
    "seq",
    "event_type",
    "actor_type",
    "actor_id",
    "actor_label",
    "payload",
    "request_id",
    "ip_address",
    "user_agent",
    "created_at",
)
_LOCK_NAMESPACE = 0x41554454  # "AUDT": the advisory-lock class of chain heads


def chain_events(tenant_id):
    """All events of one chain: a tenant's, or the platform's when tenant_id is None."""
    return AuditEvent.objects.filter(tenant_id=tenant_id)  # None filters IS NULL


def _lock_chain_head(tenant_id) -> None:
    """Serialise sealers of one chain until the transaction ends (SQLite serialises writes)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                [_LOCK_NAMESPACE, str(tenant_id or PLATFORM_CHAIN)],
            )


def _chain_head(tenant_id) -> tuple[int, str]:
    head = (
        chain_events(tenant_id)
        .filter(seq__isnull=False)
        .order_by("-seq")
        .values_list("seq", "hash")
        .first()
    )
    return head or (0, GENESIS_PREV_HASH)


@transaction.atomic
def chain_seal_batch(*, tenant_id, batch_size: int | None = None) -> int:
    """Seal up to `batch_size` unsealed events of one chain, oldest first; returns how many."""
    _lock_chain_head(tenant_id)
    seq, prev_hash = _chain_head(tenant_id)
    rows = list(
        chain_events(tenant_id)
        .filter(seq__isnull=True)
        .order_by("created_at", "id")
        .values_list(*_HASHED_FIELDS)[: batch_size or settings.AUDIT_SEAL_BATCH_SIZE]
    )
    sealed = []
    for row in rows:
        seq += 1
        fields = dict(zip(_HASHED_FIELDS, row, strict=True))
        fields["seq"] = seq
        event_hash = chain_hash(prev_hash, canonical_bytes(event_document(**fields)))
        sealed.append((fields["id"], seq, prev_hash, event_hash))
        prev_hash = event_hash
    _write_seals(sealed)
    return len(sealed)


def _write_seals(sealed: list[tuple]) -> None:
    """Store (id, seq, prev_hash, hash) rows: one UPDATE ... FROM (VALUES ...) on PostgreSQL
    (linear, where bulk_update's CASE expressions grow with the batch), bulk_update elsewhere."""
    if not sealed:
        return
    if connection.vendor != "postgresql":
        events = [AuditEvent(id=i, seq=s, prev_hash=p, hash=h) for i, s, p, h in sealed]
        AuditEvent.objects.bulk_update(events, ["seq", "prev_hash", "hash"], batch_size=500)
        return
    # Only placeholders are joined into the statement; every value is a parameter.
    values = ", ".join(["(%s::uuid, %s::bigint, %s, %s)"] * len(sealed))
    statement = (
        "UPDATE audit_auditevent AS e SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "  # noqa: S608
        "FROM (VALUES " + values + ") AS v(id, seq, prev_hash, hash) "
        "WHERE e.id = v.id AND e.seq IS NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, [value for row in sealed for value in row])
        if cursor.rowcount != len(sealed):
            # Another writer sealed some of these rows: roll back rather than fork the chain.
            raise RuntimeError(f"sealed {cursor.rowcount} of {len(sealed)} events; retry")


def chain_seal(*, tenant_id) -> int:
    """Seal every unsealed event of one chain, batch by batch; safe to run concurrently."""
    total = 0
    batch_size = settings.AUDIT_SEAL_BATCH_SIZE
    while True:
        sealed = chain_seal_batch(tenant_id=tenant_id, batch_size=batch_size)
        total += sealed
        if sealed < batch_size:
            return total


def chains_with_unsealed_events() -> list:
    return list(
        AuditEvent.objects.filter(seq__isnull=True)
        .order_by()
        .values_list("tenant_id", flat=True)
        .distinct()
    )


def chains_seal_all() -> int:
    """Seal every chain that has unsealed events (queued on commit, and the beat job)."""
    cache.delete(SEAL_REQUESTED_KEY)
    return sum(chain_seal(tenant_id=tenant_id) for tenant_id in chains_with_unsealed_events())


# Checkpoints -----------------------------------------------------------------------------------


@transaction.atomic
def checkpoint_issue(*, tenant_id) -> AuditCheckpoint | None:
    """Sign the chain's current head, unless the last checkpoint already covers it."""
    seq, head_hash = _chain_head(tenant_id)
    if seq == 0:
        return None
    last = (
        AuditCheckpoint.objects.filter(tenant_id=tenant_id)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    if last is not None and last >= seq:
        return None
    created_at = timezone.now()
    chain = str(tenant_id) if tenant_id else PLATFORM_CHAIN
    message = checkpoint_message(
        chain=chain, seq=seq, head_hash=head_hash, created_at=format_timestamp(created_at)
    )
    return AuditCheckpoint.objects.create(
        tenant_id=tenant_id,
        seq=seq,
        head_hash=head_hash,
        created_at=created_at,
        signature=signing.sign(message),
        key_id=signing.key_id(),
    )


def _sealed_chains() -> Iterator:
    """The chains with sealed events: the platform's (None) if it has any, then each
    organization's, found by one descent of the unique index on (tenant, seq) apiece. A
    DISTINCT over the events read that whole index, each run: a cost growing with every event
    ever recorded (the log is append-only), for a list that grows with the organizations."""
    sealed = AuditEvent.objects.filter(seq__isnull=False)
    if sealed.filter(tenant__isnull=True).exists():
        yield None
    organizations = sealed.filter(tenant__isnull=False).order_by("tenant_id")
    tenant_id = organizations.values_list("tenant_id", flat=True).first()
    while tenant_id is not None:
        yield tenant_id
        tenant_id = (
            organizations.filter(tenant_id__gt=tenant_id)
            .values_list("tenant_id", flat=True)
            .first()
        )


def checkpoints_issue_all() -> int:
    """Checkpoint every chain whose head moved since its last checkpoint (the beat job)."""
    return sum(checkpoint_issue(tenant_id=tenant_id) is not None for tenant_id in _sealed_chains())


def chain_checkpoints(tenant_id) -> list[Checkpoint]:
    queryset = AuditCheckpoint.objects.filter(tenant_id=tenant_id)
    return [
        Checkpoint(
            chain=checkpoint.chain,
            seq=checkpoint.seq,
            head_hash=checkpoint.head_hash,
            created_at=format_timestamp(checkpoint.created_at),
            signature=checkpoint.signature,
        )
        for checkpoint in queryset.order_by("seq")
    ]


# Verification ----------------------------------------------------------------------------------


def sealed_documents(
    tenant_id, *, from_seq: int = 1, to_seq: int | None = None, chunk_size: int = 2000
) -> Iterator[tuple[dict, str, str]]:
    """(hashed document, prev_hash, hash) of a chain's sealed events in seq order, streamed
    with a server-side cursor: constant memory whatever the chain's length."""
    events = chain_events(tenant_id).filter(seq__gte=from_seq)
    if to_seq is not None:
        events = events.filter(seq__lte=to_seq)
    rows = (
        events.order_by("seq")
        .values_list(*_HASHED_FIELDS, "prev_hash", "hash")
        .iterator(chunk_size=chunk_size)
    )
    width = len(_HASHED_FIELDS)
    for row in rows:
        yield (
            event_document(**dict(zip(_HASHED_FIELDS, row[:width], strict=True))),
            row[-2],
            row[-1],
        )


def chain_verify(*, tenant_id) -> VerificationResult:
    """Recompute a chain from its first event, checked against its signed checkpoints."""
    verifier = ChainVerifier(
        checkpoints=chain_checkpoints(tenant_id), public_key=signing.public_key()
    )
    for document, prev_hash, stored_hash in sealed_documents(tenant_id):
        verifier.add(document, prev_hash=prev_hash, stored_hash=stored_hash)
    return verifier.finish()


def chain_status(*, tenant_id) -> dict:
    """Counts for the verify endpoint and the admin: total, unsealed, head."""
    events = chain_events(tenant_id)
    return {
        "total_events": events.count(),
        "unsealed_count": events.filter(seq__isnull=True).count(),
    }


# Purging ---------------------------------------------------------------------------------------


def _purge_door(tenant_id) -> None:
    """Let the triggers allow DELETE of this tenant's audit rows (PostgreSQL), until closed with
    None or the transaction ends; no other chain is ever deletable."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('audit.allow_purge', %s, true)", [str(tenant_id or "")]
            )


@transaction.atomic
def chain_purge(*, tenant: Tenant, actor) -> int:
    """Delete a tenant's whole chain (for the tenant's deletion), leaving a platform event that
    records its final head: the only way audit events are ever deleted."""
    seq, head_hash = _chain_head(tenant.pk)
    _purge_door(tenant.pk)
    try:
        deleted, _ = chain_events(tenant.pk).delete()
        AuditCheckpoint.objects.filter(tenant=tenant).delete()
    finally:
        _purge_door(None)
    record(
        tenant=None,
        event_type="audit.chain.purged",
        actor=actor,
        payload={
            "tenant_id": str(tenant.pk),
            "tenant_slug": tenant.slug,
            "events_deleted": deleted,
            "last_seq": seq,
            "head_hash": head_hash,
        },
    )
    return deleted
