"""The chain format: canonical bytes of an event and the hash that links it to its predecessor.

Pure Python (no Django), so an export can be verified anywhere with this file alone:

    canonical = RFC 8785 JSON of {
        "id": "<uuid>", "tenant": "<uuid>" | null, "seq": <int>, "event_type": "<str>",
        "actor": {"type": "user|api_key|system", "id": "<uuid>" | null, "label": "<str>"},
        "payload": {...}, "request_id": "<str>", "ip_address": "<str>" | null,
        "user_agent": "<str>", "created_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC)
    }
    hash = hex(SHA-256(ascii(prev_hash) || canonical)),  prev_hash = "" for seq 1
"""

import hashlib
from datetime import UTC, datetime

import rfc8785

GENESIS_PREV_HASH = ""
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def event_document(
    *,
    id,
    tenant_id,
    seq: int,
    event_type: str,
    actor_type: str,
    actor_id,
    actor_label: str,
    payload,
    request_id: str,
    ip_address,
    user_agent: str,
    created_at,
) -> dict:
    """The hashed fields of an event, as plain JSON values."""
    return {
        "id": str(id),
        "tenant": str(tenant_id) if tenant_id is not None else None,
        "seq": seq,
        "event_type": event_type,
        "actor": {
            "type": actor_type,
            "id": str(actor_id) if actor_id is not None else None,
            "label": actor_label,
        },
        "payload": payload,
        "request_id": request_id,
        "ip_address": str(ip_address) if ip_address is not None else None,
        "user_agent": user_agent,
        "created_at": created_at if isinstance(created_at, str) else format_timestamp(created_at),
    }


def canonical_bytes(document: dict) -> bytes:
    return rfc8785.dumps(document)


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical)
    return digest.hexdigest()


def checkpoint_message(*, chain: str, seq: int, head_hash: str, created_at: str) -> bytes:
    """The bytes a checkpoint signature covers; `chain` is a tenant id or "platform"."""
    return rfc8785.dumps(
        {"chain": chain, "seq": seq, "head_hash": head_hash, "created_at": created_at}
    )
