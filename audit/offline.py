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
    """The file is not an export this verifier understands (the message names the line)."""


# What each record must hold to be verified, and of which type (an event's `document` is
# checked by the chain itself: any change to it is a hash mismatch).
_EVENT_FIELDS = {"document": dict, "prev_hash": str, "hash": str}
_DOCUMENT_FIELDS = {"id": str, "event_type": str, "created_at": str, "seq": int}
_CHECKPOINT_FIELDS = {
    "chain": str,
    "seq": int,
    "head_hash": str,
    "created_at": str,
    "signature": str,
}


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _records(lines: Iterable[str]):
    """(line number, record) for each non-blank line; ExportError for a line that is not a
    JSON object (invalid, nested past the interpreter's limits, NaN or Infinity, a number
    too long to read)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_refuse_constant)
        except RecursionError:
            raise ExportError(f"line {number}: JSON nested too deep") from None
        except ValueError as error:
            raise ExportError(f"line {number}: not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise ExportError(f"line {number}: not a JSON object")
        yield number, record


def _check_fields(number: int, record: dict, fields: dict, what: str) -> None:
    for name, kind in fields.items():
        value = record.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ExportError(f"line {number}: {what} without a valid {name!r}")


def verify_export(lines: Iterable[str], *, public_key: str | None = None) -> VerificationResult:
    """The verification of an export's lines (any iterable of text lines: an open file, a
    list). ExportError, naming the line, for a file that is not a whole export: a record that
    is not JSON, or lacks what it must hold."""
    records = _records(lines)
    _, header = next(records, (0, None))
    if not header or header.get("type") != "header" or header.get("format") != EXPORT_FORMAT:
        raise ExportError("not an audit export: the first line must be its header")
    from_seq = header.get("from_seq") or 1
    if not isinstance(from_seq, int) or isinstance(from_seq, bool) or from_seq < 1:
        raise ExportError("line 1: the header's 'from_seq' is not a positive integer")
    key = public_key or header.get("public_key")
    if not isinstance(key, str):
        raise ExportError("line 1: the header has no 'public_key' (pass --public-key)")
    events, checkpoints = [], []
    for number, record in records:
        if record.get("type") == "event":
            _check_fields(number, record, _EVENT_FIELDS, "an event")
            _check_fields(number, record["document"], _DOCUMENT_FIELDS, "an event's document")
            events.append((number, record))
        elif record.get("type") == "checkpoint":
            _check_fields(number, record, _CHECKPOINT_FIELDS, "a checkpoint")
            checkpoints.append(Checkpoint(**{name: record[name] for name in _CHECKPOINT_FIELDS}))
    start_prev = events[0][1]["prev_hash"] if events and from_seq > 1 else GENESIS_PREV_HASH
    verifier = ChainVerifier(
        checkpoints=checkpoints, public_key=key, start_seq=from_seq, start_prev_hash=start_prev
    )
    for number, event in events:
        try:
            verifier.add(event["document"], prev_hash=event["prev_hash"], stored_hash=event["hash"])
        except (ValueError, TypeError) as error:
            # What no export holds (a lone surrogate, a float out of range): the document has
            # no canonical form to hash.
            raise ExportError(f"line {number}: the event cannot be hashed ({error})") from None
    return verifier.finish()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Verify an audit export offline.")
    parser.add_argument("file")
    parser.add_argument("--public-key", help="base64 Ed25519 public key of the checkpoints")
    args = parser.parse_args(argv)
    try:
        with open(args.file, encoding="utf-8") as export:
            result = verify_export(export, public_key=args.public_key)
    except (OSError, UnicodeDecodeError, ExportError) as error:
        print(f"Cannot verify {args.file}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.chain_valid else 1


if __name__ == "__main__":
    sys.exit(main())
