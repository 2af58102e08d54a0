"""JSON Lines export of a chain, verifiable offline with `manage.py verify_audit_export`.

Line 1 is a header (format, chain, public key, the hash recipe); then one line per sealed event
(its hashed document plus prev_hash and hash); then one line per signed checkpoint.
"""

import json
from collections.abc import Iterator

from . import signing
from .canonical import GENESIS_PREV_HASH
from .models import PLATFORM_CHAIN
from .offline import EXPORT_FORMAT
from .services import chain_checkpoints, sealed_documents

EXPORT_VERSION = 1
HASH_RECIPE = (
    "hash = hex(SHA-256(ascii(prev_hash) || RFC8785(document))); prev_hash of seq 1 is empty"
)


def export_lines(tenant_id, *, from_seq: int = 1, to_seq: int | None = None) -> Iterator[str]:
    chain = str(tenant_id) if tenant_id else PLATFORM_CHAIN
    yield _line(
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "chain": chain,
            "from_seq": from_seq,
            "to_seq": to_seq,
            "genesis_prev_hash": GENESIS_PREV_HASH,
            "hash_recipe": HASH_RECIPE,
            "public_key": signing.public_key(),
            "signature_algorithm": "Ed25519",
        }
    )
    for document, prev_hash, stored_hash in sealed_documents(
        tenant_id, from_seq=from_seq, to_seq=to_seq
    ):
        yield _line({"type": "event", "document": document, "prev_hash": prev_hash,
                     "hash": stored_hash})  # fmt: skip
    for checkpoint in chain_checkpoints(tenant_id):
        if checkpoint.seq >= from_seq and (to_seq is None or checkpoint.seq <= to_seq):
            yield _line({"type": "checkpoint", **checkpoint.__dict__})


def _line(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n"
