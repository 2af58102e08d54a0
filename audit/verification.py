"""Verifying a hash chain: one verifier for the database, the API and offline exports.

Pure Python (no Django): feed it events in `seq` order and the chain's signed checkpoints.
It names every broken link; after a break it carries on from the stored values, so one edited
event is one broken link, not a cascade.
"""

import base64
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import GENESIS_PREV_HASH, canonical_bytes, chain_hash, checkpoint_message

HASH_MISMATCH = "Hash mismatch - potential tampering detected"


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that `chain` had `head_hash` at `seq`."""

    chain: str
    seq: int
    head_hash: str
    created_at: str
    signature: str  # base64 Ed25519 signature of canonical.checkpoint_message(...)

    def signature_is_valid(self, public_key: str) -> bool:
        message = checkpoint_message(
            chain=self.chain, seq=self.seq, head_hash=self.head_hash, created_at=self.created_at
        )
        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
            key.verify(base64.b64decode(self.signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass
class BrokenLink:
    event_id: str | None
    event_type: str | None
    timestamp: str | None
    seq: int | None
    reason: str
    computed_hash: str | None
    stored_hash: str | None


@dataclass
class VerificationResult:
    chain_valid: bool
    verified_count: int
    sealed_count: int
    chain_head: str | None
    last_seq: int
    checkpoints_checked: int
    broken_links: list[BrokenLink] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Seen:
    id: str
    event_type: str
    timestamp: str
    seq: int


class ChainVerifier:
    """Feed events in seq order with `add()`, then call `finish()`."""

    def __init__(
        self,
        *,
        checkpoints: Iterable[Checkpoint] = (),
        public_key: str | None = None,
        start_seq: int = 1,
        start_prev_hash: str = GENESIS_PREV_HASH,
    ):
        self.broken: list[BrokenLink] = []
        self.verified = 0
        self.sealed = 0
        self.expected_seq = start_seq
        self.expected_prev_hash = start_prev_hash
        self.head: str | None = None
        self.last_seq = start_seq - 1
        self.checkpoints: dict[int, list[Checkpoint]] = {}
        self.checkpoints_checked = 0
        for checkpoint in checkpoints:
            if public_key is None or checkpoint.signature_is_valid(public_key):
                self.checkpoints.setdefault(checkpoint.seq, []).append(checkpoint)
            else:
                self._break(
                    None,
                    f"Checkpoint signature invalid (seq {checkpoint.seq})",
                    None,
                    checkpoint.head_hash,
                    seq=checkpoint.seq,
                )
        # The first event not yet covered by a matching checkpoint: where a consistent
        # rewrite of the suffix can have started.
        self.anchor_seq = start_seq - 1
        self.first_unanchored: _Seen | None = None

    def _break(self, seen: _Seen | None, reason, computed, stored, seq=None) -> None:
        self.broken.append(
            BrokenLink(
                event_id=seen.id if seen else None,
                event_type=seen.event_type if seen else None,
                timestamp=seen.timestamp if seen else None,
                seq=seen.seq if seen else seq,
                reason=reason,
                computed_hash=computed,
                stored_hash=stored,
            )
        )

    def add(self, document: dict, *, prev_hash: str, stored_hash: str) -> None:
        """One sealed event: its hashed fields (canonical.event_document) and stored hashes."""
        seen = _Seen(document["id"], document["event_type"], document["created_at"],
                     document["seq"])  # fmt: skip
        self.sealed += 1
        if self.first_unanchored is None:
            self.first_unanchored = seen
        reasons = []
        if seen.seq != self.expected_seq:
            reasons.append(f"Sequence gap: expected seq {self.expected_seq}, found {seen.seq}")
        if prev_hash != self.expected_prev_hash:
            reasons.append("Link broken: prev_hash is not the previous event's hash")
        computed = chain_hash(prev_hash, canonical_bytes(document))
        if computed != stored_hash:
            reasons.append(HASH_MISMATCH)
        if reasons:
            self._break(seen, "; ".join(reasons), computed, stored_hash)
        else:
            self.verified += 1

        for checkpoint in self.checkpoints.get(seen.seq, ()):
            self.checkpoints_checked += 1
            if checkpoint.head_hash == stored_hash and not reasons:
                self.anchor_seq, self.first_unanchored = seen.seq, None
            elif checkpoint.head_hash != stored_hash:
                first = self.first_unanchored or seen
                self._break(
                    first,
                    f"Rewritten: the chain differs from the signed checkpoint at seq "
                    f"{checkpoint.seq} (last matching checkpoint at seq {self.anchor_seq})",
                    stored_hash,
                    checkpoint.head_hash,
                )
        self.expected_seq = seen.seq + 1
        self.expected_prev_hash = stored_hash
        self.head = stored_hash
        self.last_seq = seen.seq

    def finish(self) -> VerificationResult:
        beyond = sorted(seq for seq in self.checkpoints if seq > self.last_seq)
        if beyond:
            self._break(
                None,
                f"Truncated: a signed checkpoint covers seq {beyond[-1]} but the chain ends "
                f"at seq {self.last_seq}",
                self.head,
                self.checkpoints[beyond[-1]][0].head_hash,
                seq=self.last_seq + 1,
            )
        self.broken.sort(key=lambda link: (link.seq is None, link.seq or 0))
        return VerificationResult(
            chain_valid=not self.broken,
            verified_count=self.verified,
            sealed_count=self.sealed,
            chain_head=self.head,
            last_seq=self.last_seq,
            checkpoints_checked=self.checkpoints_checked,
            broken_links=self.broken,
        )
