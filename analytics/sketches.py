"""The two mergeable summaries the roll-ups store: a latency histogram and a distinct-count
sketch. Both are plain JSON-able dicts, and merging two of them is exact: the summary of a range
is the merge of its hours' summaries, never a sum of their percentiles or of their distincts.

**Latency histogram** (log-scale fixed buckets, the DDSketch mapping). A value v > 0 (in
milliseconds) falls in bucket i = ceil(log(v) / log(GAMMA)), which covers (GAMMA^(i-1), GAMMA^i];
GAMMA = (1 + ALPHA) / (1 - ALPHA) with ALPHA = 0.02. A quantile answers its bucket's
representative value 2 * GAMMA^i / (GAMMA + 1), which is within ALPHA (2 %) of every value the
bucket can hold: so p50/p95/p99 are within 2 % of the exact nearest-rank percentile of the raw
values, whatever the range or grouping. Values at or below MIN_MS (1 microsecond, including 0)
share bucket ZERO and answer 0. The buckets are fixed, so merging is adding counts per bucket; a
histogram is `{"<bucket>": count}` with only the buckets used (some 60 for a day of requests).

**Distinct users** (a HyperLogLog sketch that is exact while small). A sketch holds the 64-bit
hashes of the distinct identifiers it has seen, exactly, up to EXACT_LIMIT of them; past that it
becomes a HyperLogLog of 2^PRECISION registers (standard error 1.04 / sqrt(4096) = 1.6 %), the
structure Redis' PFCOUNT uses. A union of two sketches is the sketch of the union, so the distinct
users of a range are counted once however many hours they were active in.
"""

import base64
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping

ALPHA = 0.02
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_LOG_GAMMA = math.log(GAMMA)
MIN_MS = 0.001
ZERO = "z"

# Histograms ------------------------------------------------------------------------------------


def bucket_of(value_ms: float) -> str:
    """The bucket a latency in milliseconds falls in (its key in a histogram)."""
    if value_ms <= MIN_MS:
        return ZERO
    return str(math.ceil(math.log(value_ms) / _LOG_GAMMA))


def bucket_value(bucket: str) -> float:
    """The value a bucket answers for: within ALPHA of anything it holds."""
    if bucket == ZERO:
        return 0.0
    return 2 * GAMMA ** int(bucket) / (GAMMA + 1)


def histogram_of(values_ms: Iterable[float]) -> dict[str, int]:
    histogram: dict[str, int] = {}
    for value in values_ms:
        key = bucket_of(value)
        histogram[key] = histogram.get(key, 0) + 1
    return histogram


def histogram_merge(target: dict[str, int], other: Mapping[str, int] | None) -> dict[str, int]:
    """Add `other` into `target` (in place) and return it."""
    for key, count in (other or {}).items():
        target[key] = target.get(key, 0) + int(count)
    return target


def _order(bucket: str) -> float:
    return -math.inf if bucket == ZERO else int(bucket)


def quantiles(histogram: Mapping[str, int], qs: Iterable[float]) -> dict[float, float | None]:
    """The nearest-rank quantiles of a histogram (None when it is empty): the q-quantile of n
    values is the value of rank ceil(q * n), as over the raw values."""
    total = sum(histogram.values())
    wanted = list(qs)
    if total == 0:
        return dict.fromkeys(wanted, None)
    ranked = sorted(histogram.items(), key=lambda item: _order(item[0]))
    answers: dict[float, float | None] = {}
    for q in wanted:
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, count in ranked:
            seen += count
            if seen >= rank:
                answers[q] = bucket_value(bucket)
                break
    return answers


def percentile_ms(histogram: Mapping[str, int], q: float) -> float | None:
    return quantiles(histogram, [q])[q]


# Distinct counts -------------------------------------------------------------------------------

PRECISION = 12
REGISTERS = 1 << PRECISION
EXACT_LIMIT = 256
_ALPHA_M = 0.7213 / (1 + 1.079 / REGISTERS)


def _hash64(identifier: str) -> int:
    return int.from_bytes(hashlib.blake2b(identifier.encode(), digest_size=8).digest(), "big")


def sketch_of(identifiers: Iterable[str]) -> dict:
    sketch: dict = {"exact": []}
    hashes = {_hash64(identifier) for identifier in identifiers if identifier}
    return _from_hashes(sketch, hashes)


def _from_hashes(sketch: dict, hashes: set[int]) -> dict:
    if len(hashes) <= EXACT_LIMIT:
        return {"exact": sorted(hashes)}
    registers = bytearray(REGISTERS)
    for value in hashes:
        _register_add(registers, value)
    return _counted({"hll": base64.b64encode(bytes(registers)).decode()})


def _counted(sketch: dict) -> dict:
    """A HyperLogLog with its estimate kept in it (`n`, a function of the registers alone):
    a stored row's distinct count is read, not recomputed from 4,096 registers by every
    report. (Sketches stored without one are counted when read.)"""
    sketch["n"] = sketch_count(sketch)
    return sketch


def _register_add(registers: bytearray, value: int) -> None:
    index = value >> (64 - PRECISION)
    rest = value & ((1 << (64 - PRECISION)) - 1)
    rank = (64 - PRECISION) - rest.bit_length() + 1
    if rank > registers[index]:
        registers[index] = rank


def _registers(sketch: Mapping) -> bytearray:
    if "hll" in sketch:
        return bytearray(base64.b64decode(sketch["hll"]))
    registers = bytearray(REGISTERS)
    for value in sketch.get("exact", ()):
        _register_add(registers, int(value))
    return registers


def sketch_merge(target: dict | None, other: Mapping | None) -> dict:
    """The sketch of the union of two sketches' identifiers (a new dict)."""
    return sketch_union([target, other])


def sketch_union(parts: Iterable[Mapping | None]) -> dict:
    """The sketch of the union of many sketches, in one pass: exact sets unite; once any part
    is a HyperLogLog, or the union passes EXACT_LIMIT, each register is the largest of the
    parts' (one C-level max per register over all parts)."""
    parts = [part for part in parts if part]
    exact: set[int] = set()
    logs = []
    for part in parts:
        if "hll" in part:
            logs.append(base64.b64decode(part["hll"]))
        else:
            exact.update(map(int, part.get("exact", ())))
    if not logs:
        return _from_hashes({}, exact)
    if exact:
        logs.append(bytes(_registers({"exact": list(exact)})))
    return _counted({"hll": base64.b64encode(_registers_max(logs)).decode()})


# Each byte's high bit, over a whole register array.
_HIGH_BITS = int.from_bytes(b"\x80" * REGISTERS, "big")
_ALL_BITS = (1 << (8 * REGISTERS)) - 1


def _registers_max(logs: list[bytes]) -> bytes:
    """The register-wise maximum of register arrays, each taken as one integer: a rank is at
    most 64 - PRECISION + 1 < 128, so (a | 0x80) - b never borrows from the next byte and
    keeps each byte's high bit exactly where a >= b. A handful of big-integer operations per
    array instead of a Python call per register (a 90-day range unites 90 days' sketches)."""
    best = int.from_bytes(logs[0], "big")
    for log in logs[1:]:
        other = int.from_bytes(log, "big")
        at_least = (((best | _HIGH_BITS) - other) & _HIGH_BITS) >> 7
        keep = at_least * 0xFF  # 0xFF in each byte where best >= other
        best = (best & keep) | (other & (keep ^ _ALL_BITS))
    return best.to_bytes(REGISTERS, "big")


def sketch_count(sketch: Mapping | None) -> int:
    """The number of distinct identifiers: exact up to EXACT_LIMIT, else the HyperLogLog
    estimate (with the small-range correction)."""
    if not sketch:
        return 0
    if "hll" not in sketch:
        return len(sketch.get("exact", ()))
    if "n" in sketch:
        return sketch["n"]
    registers = _registers(sketch)
    # Registers hold small ranks: summing 2^-rank per distinct rank (counted in C) is the
    # same harmonic sum as per register, some fifty terms instead of 4,096.
    ranks = Counter(registers)
    estimate = _ALPHA_M * REGISTERS * REGISTERS / sum(n * 2.0**-r for r, n in ranks.items())
    zeros = ranks[0]
    if estimate <= 2.5 * REGISTERS and zeros:
        estimate = REGISTERS * math.log(REGISTERS / zeros)
    return round(estimate)
