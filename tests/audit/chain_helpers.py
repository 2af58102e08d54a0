"""Building sealed audit chains and tampering with them, for the chain tests.

`recipe_hash` and `recipe_document` re-implement the hash recipe documented in audit.canonical
with hashlib and rfc8785 only, so the tests check the sealed hashes against the documentation,
not against the code that produced them.
"""

import base64
import hashlib
import json
from contextlib import contextmanager
from datetime import UTC, timedelta

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection
from django.utils import timezone

from audit.canonical import canonical_bytes, chain_hash, checkpoint_message, event_document
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import chain_seal, checkpoint_issue
from tests.factories import AuditEventFactory

EVENTS_TABLE = "audit_auditevent"
CHECKPOINTS_TABLE = "audit_auditcheckpoint"


# Building chains -------------------------------------------------------------------------------


def make_events(tenant, count: int, *, start=None, step=timedelta(seconds=1), **fields):
    """`count` unsealed events of `tenant` (None: the platform), oldest first, `step` apart."""
    start = start or timezone.now() - timedelta(hours=1)
    payload = fields.pop("payload", None)
    return [
        AuditEventFactory(
            tenant=tenant,
            created_at=start + i * step,
            payload=payload if payload is not None else {"n": i},
            **fields,
        )
        for i in range(count)
    ]


def chain_of(tenant) -> list[AuditEvent]:
    """The sealed events of a chain (tenant, tenant id or None for the platform), in seq order."""
    tenant_id = getattr(tenant, "pk", tenant)
    return list(AuditEvent.objects.filter(tenant_id=tenant_id, seq__isnull=False).order_by("seq"))


def sealed_chain(tenant, count: int, *, checkpoint: bool = False, **fields) -> list[AuditEvent]:
    """Append `count` events to a chain and seal it; optionally sign its new head.

    Returns the whole sealed chain in seq order.
    """
    tenant_id = getattr(tenant, "pk", None)
    existing = chain_of(tenant_id)
    start = (
        existing[-1].created_at + timedelta(seconds=1)
        if existing
        else timezone.now() - timedelta(hours=1)
    )
    make_events(tenant, count, start=start, **fields)
    chain_seal(tenant_id=tenant_id)
    if checkpoint:
        assert checkpoint_issue(tenant_id=tenant_id) is not None
    return chain_of(tenant_id)


# The documented recipe, re-implemented -----------------------------------------------------------


def recipe_document(event: AuditEvent, **overrides) -> dict:
    """The hashed fields of an event, built from the recipe in audit/canonical.py's docstring."""
    document = {
        "id": str(event.pk),
        "tenant": str(event.tenant_id) if event.tenant_id else None,
        "seq": event.seq,
        "event_type": event.event_type,
        "actor": {
            "type": event.actor_type,
            "id": str(event.actor_id) if event.actor_id else None,
            "label": event.actor_label,
        },
        "payload": event.payload,
        "request_id": event.request_id,
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "created_at": event.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    document.update(overrides)
    return document


def recipe_hash(prev_hash: str, document: dict) -> str:
    """hex(SHA-256(ascii(prev_hash) || RFC 8785 JSON of the document))."""
    return hashlib.sha256(prev_hash.encode("ascii") + rfc8785.dumps(document)).hexdigest()


def canonical_hash(event: AuditEvent, *, prev_hash: str) -> str:
    """The event's hash computed with audit.canonical (what a forger would use)."""
    document = event_document(**{name: getattr(event, name) for name in _DOCUMENT_FIELDS})
    return chain_hash(prev_hash, canonical_bytes(document))


_DOCUMENT_FIELDS = (
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


# Tampering -------------------------------------------------------------------------------------


def run_sql(query: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(query, params)


@contextmanager
def protections_off(*tables: str):
    """Switch the audit triggers off inside the test's transaction, as a database superuser
    could, and back on afterwards. A no-op on SQLite, which has no triggers."""
    tables = tables or (EVENTS_TABLE,)
    if connection.vendor != "postgresql":
        yield
        return
    # Django's foreign keys are deferred: pending checks would forbid the ALTER TABLE.
    run_sql("SET CONSTRAINTS ALL IMMEDIATE")
    for table in tables:
        run_sql(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
    try:
        yield
    finally:
        for table in tables:
            run_sql(f"ALTER TABLE {table} ENABLE TRIGGER ALL")
        run_sql("SET CONSTRAINTS ALL DEFERRED")


def edit_payload(event: AuditEvent, payload: dict) -> None:
    """Overwrite a stored event's payload behind the application's back."""
    with protections_off():
        AuditEvent.objects.filter(pk=event.pk).update(payload=payload)


# Checkpoints -----------------------------------------------------------------------------------


def foreign_key_pair() -> tuple[Ed25519PrivateKey, str]:
    """A signing key that is not the application's, and its base64 public key."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, base64.b64encode(raw).decode()


def forge_checkpoint(tenant, *, seq: int, head_hash: str, key=None) -> AuditCheckpoint:
    """A checkpoint row signed with a key other than the application's."""
    key = key or foreign_key_pair()[0]
    created_at = timezone.now()
    chain = str(tenant.pk) if tenant else "platform"
    message = checkpoint_message(
        chain=chain,
        seq=seq,
        head_hash=head_hash,
        created_at=created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    return AuditCheckpoint.objects.create(
        tenant=tenant,
        seq=seq,
        head_hash=head_hash,
        created_at=created_at,
        signature=base64.b64encode(key.sign(message)).decode(),
        key_id="forged",
    )


# Exports ---------------------------------------------------------------------------------------


def streamed_text(response) -> str:
    assert response.streaming, "the export must be streamed"
    return b"".join(response.streaming_content).decode()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
