"""Verify an audit export with no database and no Django:

    python -m audit.offline export.jsonl [--public-key BASE64]

Pass the public key you obtained independently (GET /api/v1/audit/public-key, or from the
operator); without it the key written in the export's header is used, which proves integrity
against accidental damage but not against someone who rewrote the file and its key.
"""

import argparse
import json
import sys
from collections.abc import Iterable

from .canonical import GENESIS_PREV_HASH
from .verification import ChainVerifier, Checkpoint, VerificationResult

EXPORT_FORMAT = "control-plane-audit-export"


class ExportError(ValueError):
    """The file is not an export this verifier understands."""


def verify_export(lines: Iterable[str], *, public_key: str | None = None) -> VerificationResult:
    records = (json.loads(line) for line in lines if line.strip())
    header = next(records, None)
    if not header or header.get("type") != "header" or header.get("format") != EXPORT_FORMAT:
        raise ExportError("not an audit export: the first line must be its header")
    events, checkpoints = [], []
    for record in records:
        if record.get("type") == "event":
            events.append(record)
        elif record.get("type") == "checkpoint":
            checkpoints.append(Checkpoint(**{k: v for k, v in record.items() if k != "type"}))
    from_seq = int(header.get("from_seq") or 1)
    start_prev = events[0]["prev_hash"] if events and from_seq > 1 else GENESIS_PREV_HASH
    verifier = ChainVerifier(
        checkpoints=checkpoints,
        public_key=public_key or header["public_key"],
        start_seq=from_seq,
        start_prev_hash=start_prev,
    )
    for event in events:
        verifier.add(event["document"], prev_hash=event["prev_hash"], stored_hash=event["hash"])
    return verifier.finish()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Verify an audit export offline.")
    parser.add_argument("file")
    parser.add_argument("--public-key", help="base64 Ed25519 public key of the checkpoints")
    args = parser.parse_args(argv)
    with open(args.file, encoding="utf-8") as export:
        result = verify_export(export, public_key=args.public_key)
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.chain_valid else 1


if __name__ == "__main__":
    sys.exit(main())
