"""Metering: every count the platform keeps on the request path, in one module.

Three shapes of count, each one atomic step (a Lua script) on Redis, with the fallback the
embedded default (the local-memory cache, no Redis) uses:

- **Windows** (`Window`, `admit`): fixed-window rate limits, for fairness. `admit` counts a
  request in every window that concerns it in one round trip, only when every window has
  room, so a refused request uses up nothing. Without Redis: the local cache, not atomic
  across windows (one development process).
- **Meters** (`Meter`, `MeterStore`): exact counters with a hard limit (quotas), one per owner
  and period, checked and advanced by `admit` in the same step as the windows. The database
  row stays the record: the store marks what it counted dirty, `claim_dirty` hands it to a
  sync that copies it there, and a counter missing from Redis is `seed`ed from it. Without
  Redis there is no store: the owner counts with a conditional UPDATE instead.
- **Buffered counts** (`BufferedCounts`): statistics many requests add to and nobody reads at
  once (API-key usage; later gateway, billing and analytics facts). Each process adds to its
  own buffer under a lock (no round trip); a thread pushes the buffer to Redis hashes every
  `push_seconds`, all owners in one script; a flush `claim`s everything counted so far as a
  batch (one script renames each dirty hash, so counts arriving meanwhile start fresh hashes
  and every count lands in exactly one batch), writes it to the database and `release`s it
  (`flush_batches`). A batch a crashed flusher left behind is re-claimed once stale, and written
  only if its writer's transaction did not commit, so each count is written once. Without Redis
  the buffer is the store (one process).

Each count field is summed, except the fields named in `max_fields`, which keep the largest
value (a "last used" time).
"""

import asyncio
import atexit
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from django import db
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, transaction
from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError

from . import epoch as principals_epoch
from .db import transaction_committed, transaction_id
from .epoch import EPOCH_LUA
from .exceptions import unavailable_dependency
from .rates import parse_rate
from .redis import per_cache, redis_cache, redis_client

logger = logging.getLogger(__name__)

# Windows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_at: int  # epoch seconds at which the window ends


@dataclass(frozen=True)
class Window:
    """`limit` requests per `seconds` for the caller or tenant named by `key`; a request
    counts `cost` (1, or a weight such as a gateway call's tokens)."""

    key: str
    limit: int
    seconds: int
    cost: int = 1

    @classmethod
    def from_rate(cls, key: str, rate: str) -> "Window":
        try:
            return cls(key, *parse_rate(rate))
        except ValueError:
            raise ImproperlyConfigured(f"Invalid rate {rate!r} for {key}") from None

    @property
    def per_hour(self) -> int:
        return self.limit * 3600 // self.seconds


@dataclass(frozen=True)
class Meter:
    """A counter with a hard limit, checked and advanced in the same atomic step as the
    windows. `key` must exist: a missing counter is reported, not created, so its owner can
    seed it from the database. Redis only (see MeterStore)."""

    key: str  # full cache key
    amount: int
    limit: int
    mark_set: str  # full cache key of a set that collects `mark` when the meter counts
    mark: str


METER_COUNTED, METER_OVER_LIMIT, METER_MISSING = 0, 1, 2


@dataclass(frozen=True)
class Admission:
    refused_window: int | None  # index of the first window without room
    states: list  # a RateLimitState per window
    meter_status: int | None = None  # METER_*, None without a meter or when a window refused
    meter_value: int = 0  # the meter's total after counting, or its current value
    # The principals' epoch had moved past the one the caller gave: nothing was counted, and
    # the caller's kept lookup must be read again (config.epoch).
    stale: bool = False

    @property
    def admitted(self) -> bool:
        return (
            not self.stale
            and self.refused_window is None
            and self.meter_status in (None, METER_COUNTED)
        )


# KEYS: window buckets, then [meter, meter mark set], then the principals' epoch (config.epoch).
# ARGV: window count n, then limit_i, ttl_i and cost_i per window, then [amount, meter limit,
# mark], then the epoch the caller's kept lookup was read at, or "". Returns {refused window
# index, 0, or -1 when the epoch has moved past the caller's; meter status or -1; meter value;
# the epoch; count_1, ..., count_n}. Counts in nothing unless the epoch is the caller's (if
# given), every window has room, and the meter (if any) too.
_ADMIT_LUA = (
    EPOCH_LUA
    + """
local n = tonumber(ARGV[1])
local epoch = current_epoch(KEYS[#KEYS])
local result = {0, -1, 0, epoch}
local expected = ARGV[#ARGV]
if expected ~= '' and expected ~= epoch then
  result[1] = -1
  return result
end
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  result[i + 4] = count
  if count + tonumber(ARGV[3 * i + 1]) > tonumber(ARGV[3 * i - 1]) and result[1] == 0 then
    result[1] = i
  end
end
if result[1] ~= 0 then return result end
if #KEYS > n + 1 then
  local current = redis.call('GET', KEYS[n + 1])
  if not current then result[2] = 2 return result end
  current = tonumber(current)
  local amount = tonumber(ARGV[3 * n + 2])
  if current + amount > tonumber(ARGV[3 * n + 3]) then
    result[2] = 1
    result[3] = current
    return result
  end
  result[2] = 0
  result[3] = redis.call('INCRBY', KEYS[n + 1], amount)
  redis.call('SADD', KEYS[n + 2], ARGV[3 * n + 4])
end
for i = 1, n do
  result[i + 4] = redis.call('INCRBY', KEYS[i], ARGV[3 * i + 1])
  if result[i + 4] == tonumber(ARGV[3 * i + 1]) then redis.call('EXPIRE', KEYS[i], ARGV[3 * i]) end
end
return result
"""
)
_admit_script = Script(None, _ADMIT_LUA.encode())


def run_script(script: Script, *, keys, args=(), client):
    """Run one of this module's scripts: what `script(keys=, args=, client=)` does, without
    redis-py's wrapper around `evalsha`, which inspects its arguments for deprecated ones on
    every call (a tenth of the throttle's CPU on the request path). EVALSHA; on NOSCRIPT (a
    restarted or flushed Redis) the script is loaded, then run again."""
    try:
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        client.script_load(script.script)
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


def _bucket(window: Window, now: float) -> tuple[str, int]:
    index = int(now // window.seconds)
    return f"rl:{window.key}:{window.seconds}:{index}", (index + 1) * window.seconds


def admit(
    windows: Sequence[Window],
    meter: Meter | None = None,
    now: float | None = None,
    *,
    epoch: int | None = None,
) -> Admission:
    """Count one request in every window, and `meter.amount` in the meter, if all have room:
    one round trip on Redis. With `epoch` (the one a kept lookup of the caller was read at;
    config.epoch), nothing is counted if the principals' epoch has moved since: the admission
    is then `stale`."""
    now = time.time() if now is None else now
    buckets = [_bucket(window, now) for window in windows]
    cache = redis_cache()
    meter_status, meter_value = None, 0
    if cache is not None:
        # make_key: validation only warns of keys memcached would refuse; ours are built
        # from ids, scopes and addresses (4 us a key on the path of every request).
        keys = [cache.make_key(name) for name, _ in buckets]
        args = [len(windows)]
        args += [
            value for window in windows for value in (window.limit, window.seconds + 1, window.cost)
        ]
        if meter is not None:
            keys += [meter.key, meter.mark_set]
            args += [meter.amount, meter.limit, meter.mark]
        keys.append(principals_epoch.epoch_key(cache))
        args.append("" if epoch is None else str(epoch))
        refused, status, meter_value, current_epoch, *counts = run_script(
            _admit_script, keys=keys, args=args, client=redis_client(cache)
        )
        principals_epoch.observe(current_epoch)
        if refused == -1:
            return Admission(None, [], stale=True)
        meter_status = None if status == -1 else int(status)
    elif meter is not None:
        raise ImproperlyConfigured("A Meter needs the Redis cache.")
    else:
        refused, counts = _hit_local(caches["default"], windows, buckets)
    states = [
        RateLimitState(window.limit, max(window.limit - count, 0), reset_at)
        for window, count, (_, reset_at) in zip(windows, counts, buckets, strict=True)
    ]
    return Admission(refused - 1 if refused else None, states, meter_status, int(meter_value))


def _hit_local(cache, windows, buckets) -> tuple[int, list[int]]:
    # Other cache backends (the local-memory default): not atomic across windows, which is
    # acceptable for fairness limits in a single development process.
    counts = [cache.get(name, 0) for name, _ in buckets]
    for index, (window, count) in enumerate(zip(windows, counts, strict=True)):
        if count + window.cost > window.limit:
            return index + 1, counts
    for index, (window, (name, _)) in enumerate(zip(windows, buckets, strict=True)):
        cache.add(name, 0, window.seconds + 1)
        counts[index] = cache.incr(name, window.cost)
    return 0, counts


def most_restrictive(states: list[RateLimitState]) -> RateLimitState | None:
    return min(states, key=lambda s: (s.remaining, -s.reset_at), default=None)


def window_headers(states: list[RateLimitState], *, refused: bool, retry_after: str = "") -> dict:
    """X-RateLimit-* of the most restrictive window. A refusal (429: a window, a quota or a
    login lockout) says no request remains, until at least its Retry-After."""
    state = most_restrictive(states)
    if state is None:
        return {}
    remaining, reset_at = state.remaining, state.reset_at
    if refused:
        remaining = 0
        if retry_after.isdigit():
            reset_at = max(reset_at, math.ceil(time.time()) + int(retry_after))
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset_at),
    }


# Meters -----------------------------------------------------------------------------------------

# Takes the dirty set whole: members added after this start a new one.
_CLAIM_MARKS_LUA = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
"""
_claim_marks_script = Script(None, _CLAIM_MARKS_LUA.encode())


class MeterStore:
    """The live counters of one metered resource (`namespace`, e.g. "quota:api_calls"), one
    per owner and period, in Redis."""

    def __init__(self, cache, namespace: str):
        self._cache = cache
        self._namespace = namespace
        self._dirty = cache.make_and_validate_key(f"{namespace}:dirty")

    @property
    def client(self):
        return redis_client(self._cache)

    def key(self, owner, period: int) -> str:
        return self._cache.make_key(f"{self._namespace}:{owner}:{period}")

    def meter(self, owner, period: int, *, amount: int, limit: int) -> Meter:
        """The counter of `owner`'s `period`, for admit: checked and advanced atomically,
        marked dirty for the sync when it counts."""
        return Meter(
            key=self.key(owner, period),
            amount=amount,
            limit=limit,
            mark_set=self._dirty,
            mark=f"{owner}:{period}",
        )

    def seed(self, owner, period: int, value: int, *, ttl_seconds: int) -> None:
        """Start the period's counter at `value` (the database's), unless it exists."""
        self.client.set(self.key(owner, period), value, nx=True, ex=max(ttl_seconds, 1))

    def values(self, pairs: Iterable[tuple[object, int]]) -> list[int | None]:
        """The current value of each (owner, period) counter; None where Redis has none."""
        keys = [self.key(owner, period) for owner, period in pairs]
        if not keys:
            return []
        return [None if value is None else int(value) for value in self.client.mget(keys)]

    def claim_dirty(self) -> list[tuple[str, int, int]]:
        """(owner, period, value) of every counter changed since the last claim."""
        marks = run_script(_claim_marks_script, keys=[self._dirty], client=self.client)
        pairs = [mark.decode().rsplit(":", 1) for mark in marks]
        if not pairs:
            return []
        values = self.values((owner, int(period)) for owner, period in pairs)
        return [
            (owner, int(period), value)
            for (owner, period), value in zip(pairs, values, strict=True)
            if value is not None
        ]


def meter_store(namespace: str, store_class=MeterStore) -> MeterStore | None:
    """The namespace's store on the default cache (one per cache object), or None without
    Redis."""
    cache = redis_cache()
    if cache is None:
        return None
    return per_cache(cache, f"meter:{namespace}", lambda c: store_class(c, namespace))


# Buffered counts --------------------------------------------------------------------------------

STALE_BATCH_SECONDS = 600

# Buffers and stores of this process; a forked child starts with empty buffers and new locks.
_forkable: "weakref.WeakSet" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for owner in list(_forkable):
        owner.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def merge_counts(target: Counter, counts: Mapping[str, int], max_fields: frozenset) -> None:
    """Add `counts` to `target`: fields summed, `max_fields` keeping the larger value."""
    for name, value in counts.items():
        if name in max_fields:
            if value > target.get(name, 0):
                target[name] = value
        else:
            target[name] += value


class CountBuffer:
    """Counts of this process, per owner, under a lock: `add` per event, `take` swaps them
    out whole (an atomic read-and-reset)."""

    def __init__(self, max_fields: frozenset):
        self._max_fields = max_fields
        self._lock = threading.Lock()
        self._counts: dict[str, Counter] = {}
        _forkable.add(self)

    def add(self, owner: str, counts: Mapping[str, int]) -> None:
        with self._lock:
            counted = self._counts.get(owner)
            if counted is None:
                counted = self._counts[owner] = Counter()
            merge_counts(counted, counts, self._max_fields)

    def take(self) -> dict[str, Counter]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def put_back(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Return counts that could not be written, so nothing is lost."""
        with self._lock:
            for owner, counted in counts.items():
                merge_counts(self._counts.setdefault(owner, Counter()), counted, self._max_fields)

    def peek(self, owner: str) -> Counter:
        with self._lock:
            return Counter(self._counts.get(owner, {}))

    def after_fork(self) -> None:
        # The parent still holds (and writes) what it counted.
        self._lock = threading.Lock()
        self._counts = {}


@dataclass
class Batch:
    """Counts taken out of the store by one claim: per owner, and where they sit in Redis."""

    counts: dict[str, Counter]
    keys: dict[str, str] = field(default_factory=dict)  # owner -> Redis batch key


# KEYS: the dirty set, then one hash per owner. ARGV: the field names kept as maxima joined by
# '\n', then per owner: owner, the number of fields m, then m pairs (field, value).
_PUSH_LUA = """
local maxima = {}
for name in string.gmatch(ARGV[1], '[^\\n]+') do maxima[name] = true end
local a = 2
for i = 2, #KEYS do
  local h = KEYS[i]
  redis.call('SADD', KEYS[1], ARGV[a])
  local fields = tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, fields do
    local name, value = ARGV[a], ARGV[a + 1]
    if maxima[name] then
      local current = tonumber(redis.call('HGET', h, name) or '0')
      if tonumber(value) > current then redis.call('HSET', h, name, value) end
    else
      redis.call('HINCRBY', h, name, value)
    end
    a = a + 2
  end
end
return #KEYS - 1
"""

# Moves every dirty hash to a batch key, atomically; returns [owner, [field, value, ...], ...].
_CLAIM_LUA = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
local out = {}
for _, owner in ipairs(members) do
  local source = ARGV[1] .. owner
  if redis.call('EXISTS', source) == 1 then
    local target = ARGV[2] .. owner
    redis.call('RENAME', source, target)
    table.insert(out, owner)
    table.insert(out, redis.call('HGETALL', target))
  end
end
return out
"""
# KEYS: a flusher's batch keys. ARGV: its transaction's id ('' when the database has none), the
# field to note it in. Returns 0 once noted on every key, or the position of a key another
# flusher took over (then nothing is noted).
_WRITING_LUA = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then return i end
end
if ARGV[1] ~= '' then
  for _, key in ipairs(KEYS) do redis.call('HSET', key, ARGV[2], ARGV[1]) end
end
return 0
"""
_push_script = Script(None, _PUSH_LUA.encode())
_claim_script = Script(None, _CLAIM_LUA.encode())
_writing_script = Script(None, _WRITING_LUA.encode())

# The field of a batch hash naming the database transaction writing it (not a count).
_WRITER = "_writer"


def _hash_counts(flat: list) -> Counter:
    counts = Counter()
    for raw_name, raw_value in zip(flat[::2], flat[1::2], strict=True):
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        if name != _WRITER:
            counts[name] = int(raw_value)
    return counts


class BatchTakenOver(Exception):
    """Another flusher took over some of a flusher's batch keys (it held them longer than
    STALE_BATCH_SECONDS): the other one writes them."""


class RedisBufferedCounts:
    """Counts in Redis hashes, shared by every process, fed by each process's buffer (see the
    module docstring). `push_seconds()` is read at each use, so a settings change applies;
    0 writes every event through (one round trip each)."""

    def __init__(self, namespace: str, *, max_fields=(), push_seconds: Callable[[], float]):
        self._hash_prefix = f"{namespace}:k:"
        self._dirty = f"{namespace}:dirty"
        self._batch_prefix = f"{namespace}:batch:"
        self._max_fields = frozenset(max_fields)
        self._maxima_arg = "\n".join(sorted(self._max_fields))
        self._push_seconds = push_seconds
        self._buffer = CountBuffer(self._max_fields)
        self._push_lock = threading.Lock()
        self._pushed_at = time.monotonic()
        self._pusher_pid = None
        self._failed_pushes = 0  # in a row, for the log
        _forkable.add(self)

    @property
    def client(self):
        return redis_client(redis_cache())

    def record(self, owner: str, counts: Mapping[str, int]) -> None:
        if self._push_seconds() <= 0:
            self._write({owner: counts})
            return
        self._buffer.add(owner, counts)
        if self._pusher_pid != os.getpid():
            self._start_pusher()

    def push(self) -> int:
        """Write this process's buffered counts to Redis (one script call); returns how many
        owners were written. On failure they go back into the buffer."""
        with self._push_lock:
            self._pushed_at = time.monotonic()
            counts = self._buffer.take()
            if not counts:
                return 0
            try:
                return self._write(counts)
            except Exception:
                self._buffer.put_back(counts)
                raise

    def _write(self, counts: Mapping[str, Mapping[str, int]]) -> int:
        keys, args = [self._dirty], [self._maxima_arg]
        for owner, counted in counts.items():
            keys.append(self._hash_prefix + owner)
            args += [owner, len(counted)]
            for name, value in counted.items():
                args += [name, value]
        return run_script(_push_script, keys=keys, args=args, client=self.client)

    def _start_pusher(self) -> None:
        with _pusher_start_lock:
            if self._pusher_pid == os.getpid():
                return
            self._pusher_pid = os.getpid()
            thread = threading.Thread(
                target=self._push_periodically, name=f"push:{self._dirty}", daemon=True
            )
            thread.start()
            atexit.register(self.push_logged)

    def _push_periodically(self) -> None:
        # Wakes at least every second, so a changed interval applies within one.
        while True:
            time.sleep(min(max(self._push_seconds(), 0.01), 1.0))
            if time.monotonic() - self._pushed_at >= self._push_seconds():
                self.push_logged()

    def push_logged(self) -> None:
        """`push`, logging a failure instead of raising it (the pusher thread, at exit)."""
        try:
            self.push()
        except Exception as error:
            self._failed_pushes += 1
            if unavailable_dependency(error) is None:
                logger.warning(
                    "Buffered counts not pushed to Redis; kept for later.", exc_info=True
                )
            elif self._failed_pushes == 1:
                # Redis is down: the pusher tries every interval; one line for the outage.
                logger.warning(
                    "Buffered counts not pushed: Redis is unavailable (%s); kept, and pushed "
                    "once it answers.",
                    error,
                )
        else:
            if self._failed_pushes:
                logger.warning(
                    "Buffered counts pushed to Redis again, after %d failed %s.",
                    self._failed_pushes,
                    "attempt" if self._failed_pushes == 1 else "attempts",
                )
            self._failed_pushes = 0

    def after_fork(self) -> None:
        self._push_lock = threading.Lock()
        self._pusher_pid = None

    def claim(self) -> Batch:
        """Atomically take every count so far (this process's buffer included) into a new
        batch."""
        self.push()
        prefix = f"{self._batch_prefix}{int(time.time())}:{uuid.uuid4().hex}:"
        raw = run_script(
            _claim_script, keys=[self._dirty], args=[self._hash_prefix, prefix], client=self.client
        )
        batch = Batch(counts={})
        for index in range(0, len(raw), 2):
            owner = raw[index].decode()
            batch.counts[owner] = _hash_counts(raw[index + 1])
            batch.keys[owner] = prefix + owner
        return batch

    def claim_stale(self, using: str = DEFAULT_DB_ALIAS) -> list[Batch]:
        """Batches a crashed flusher left behind, each re-claimed under a new name first.

        One whose writer's transaction (noted by `writing`) committed was written, and its
        flusher died or lost Redis before releasing it: it is deleted, not claimed. One whose
        writer is still running is left for a later flush."""
        client = self.client
        cutoff = time.time() - STALE_BATCH_SECONDS
        batches = []
        for raw_name in client.scan_iter(match=f"{self._batch_prefix}*", count=500):
            name = raw_name.decode()
            stamp, _, rest = name.removeprefix(self._batch_prefix).partition(":")
            owner = rest.partition(":")[2]
            if not stamp.isdigit() or int(stamp) > cutoff or not owner:
                continue
            target = f"{self._batch_prefix}{int(time.time())}:{uuid.uuid4().hex}:{owner}"
            try:
                client.rename(name, target)
            except ResponseError:
                continue  # another flusher claimed it first
            fields = _flatten(client.hgetall(target))
            if not self._unwritten(target, fields, using):
                continue
            batches.append(Batch(counts={owner: _hash_counts(fields)}, keys={owner: target}))
        return batches

    def _unwritten(self, name: str, fields: list, using: str) -> bool:
        """Whether a stale batch key's counts still need writing; deletes it when they were."""
        noted = dict(zip(fields[::2], fields[1::2], strict=True))
        writer = noted.get(_WRITER.encode(), noted.get(_WRITER))
        if writer is None:
            return True
        committed = transaction_committed(int(writer), using)
        if committed:
            self.client.delete(name)
            logger.info("A batch written by transaction %s was left behind; dropped.", int(writer))
            return False
        return committed is False

    def writing(self, batch: Batch, owners: list[str], xid: int | None) -> None:
        """Note the transaction writing `owners`' counts of `batch` (before it commits), or raise
        BatchTakenOver, noting nothing, if another flusher took any of them over."""
        names = [batch.keys[owner] for owner in owners if owner in batch.keys]
        if not names:
            return
        taken = run_script(
            _writing_script,
            keys=names,
            args=["" if xid is None else str(xid), _WRITER],
            client=self.client,
        )
        if taken:
            raise BatchTakenOver(names[int(taken) - 1])

    def release(self, batch: Batch, owners: list[str]) -> None:
        names = [batch.keys[owner] for owner in owners if owner in batch.keys]
        if names:
            self.client.delete(*names)

    def restore(self, batch: Batch, owners: list[str]) -> None:
        """Nothing to do: an unapplied batch stays in Redis and is re-claimed once stale."""

    def buffered(self, owner: str) -> Counter:
        """What this process has counted for `owner` and not pushed yet."""
        return self._buffer.peek(owner)

    def pending(self, owner: str) -> Counter:
        """What is counted for `owner` and not yet claimed (Redis and this process).

        Read under the push lock: a push takes the buffer before writing it to Redis, so
        without the lock a push running in between the two reads hides its counts from both."""
        with self._push_lock:
            counted = _hash_counts(_flatten(self.client.hgetall(self._hash_prefix + owner)))
            merge_counts(counted, self._buffer.peek(owner), self._max_fields)
        return counted

    def reset(self) -> None:
        """Drop every count and batch (tests)."""
        with self._push_lock:
            self._buffer.take()
        client = self.client
        names = [*client.scan_iter(match=f"{self._hash_prefix}*")]
        names += [*client.scan_iter(match=f"{self._batch_prefix}*")]
        client.delete(self._dirty, *names)


def _flatten(mapping: Mapping) -> list:
    return [item for pair in mapping.items() for item in pair]


def flush_batches(
    counts,
    write: Callable[[dict[str, Counter]], int],
    *,
    chunk: int,
    using: str = DEFAULT_DB_ALIAS,
) -> int:
    """Claim every count so far, and the batches crashed flushers left behind, and write each
    count once with `write(counts by owner)` (which returns how many it wrote), `chunk` owners
    per transaction on `using`; returns how many were written. Safe to run concurrently.

    Each chunk's transaction notes its id on the chunk's batch keys in Redis before it commits
    (`writing`), and the keys are deleted after the commit (`release`). So a batch re-claimed
    once stale says whether it was written (its flusher died, or lost Redis, between the commit
    and the deletion: it is dropped), and a flusher so slow that another took its keys over
    notes nothing and rolls its chunk back. (Exact with PostgreSQL, which answers for its
    transactions; elsewhere, a flusher dying between its commit and the deletion leaves its
    batch to be written again.) A chunk that fails puts back what is left of its batch."""
    written = 0
    for batch in [*counts.claim_stale(using), counts.claim()]:
        owners = sorted(batch.counts)
        for start in range(0, len(owners), chunk):
            part = owners[start : start + chunk]
            try:
                with transaction.atomic(using=using):
                    wrote = write({owner: batch.counts[owner] for owner in part})
                    counts.writing(batch, part, transaction_id(using))
            except BatchTakenOver as taken:
                logger.warning("Batch key %s was taken over by another flush; not written.", taken)
                continue
            except Exception:
                counts.restore(batch, owners[start:])
                raise
            written += wrote
            counts.release(batch, part)
    return written


def flush_beside_request(flush: Callable[[], object]) -> threading.Thread | None:
    """Run a due flush of a process-local buffer (database writes) from the request that found
    it due, without failing that request: a failed flush is logged and its counts stay
    buffered for the next (each flush restores what it could not write).

    Called on a running event loop (the gateway counts its answers there), where Django refuses
    database access, the flush runs on a thread of its own, which closes its connections when
    done; that thread is returned."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _flush_logged(flush)
        return None
    thread = threading.Thread(
        target=_flush_and_close, args=(flush,), name="buffered-counts-flush", daemon=True
    )
    thread.start()
    return thread


def _flush_logged(flush: Callable[[], object]) -> None:
    try:
        flush()
    except Exception:
        logger.exception("flushing buffered counts failed; they stay buffered for the next")


def _flush_and_close(flush: Callable[[], object]) -> None:
    try:
        _flush_logged(flush)
    finally:
        db.connections.close_all()


class LocalBufferedCounts:
    """Counts inside this process, for the process-local cache (see the module docstring).
    `on_record` runs after each event (the owner may flush from the request itself, through
    `flush_beside_request`)."""

    def __init__(self, *, max_fields=(), on_record: Callable[[], None] | None = None):
        self._buffer = CountBuffer(frozenset(max_fields))
        self._on_record = on_record

    def record(self, owner: str, counts: Mapping[str, int]) -> None:
        self._buffer.add(owner, counts)
        if self._on_record is not None:
            self._on_record()

    def push(self) -> int:
        return 0

    def claim(self) -> Batch:
        return Batch(counts=self._buffer.take())

    def claim_stale(self, using: str = DEFAULT_DB_ALIAS) -> list[Batch]:
        return []

    def writing(self, batch: Batch, owners: list[str], xid: int | None) -> None:
        """Nothing to note: a batch lives only in this process, and a failed write puts it
        back (`restore`)."""

    def release(self, batch: Batch, owners: list[str]) -> None:
        pass

    def restore(self, batch: Batch, owners: list[str]) -> None:
        """Put back counts the database did not take, so nothing is lost."""
        self._buffer.put_back({owner: batch.counts[owner] for owner in owners})

    def pending(self, owner: str) -> Counter:
        return self._buffer.peek(owner)

    buffered = pending

    def reset(self) -> None:
        self._buffer.take()


_buffered: dict[tuple, object] = {}
_pusher_start_lock = threading.Lock()


def buffered_counts(
    namespace: str,
    *,
    max_fields=(),
    push_seconds: Callable[[], float],
    on_local_record: Callable[[], None] | None = None,
):
    """The buffered counts of `namespace` on the configured default cache: Redis-backed when
    the cache is Redis, else in this process. One per namespace and cache configuration."""
    from django.conf import settings

    config = settings.CACHES["default"]
    ident = (
        namespace,
        config["BACKEND"],
        str(config.get("LOCATION", "")),
        config.get("KEY_PREFIX", ""),
    )
    found = _buffered.get(ident)
    if found is None:
        cache = redis_cache()
        if cache is not None:
            found = RedisBufferedCounts(
                cache.make_key(namespace), max_fields=max_fields, push_seconds=push_seconds
            )
        else:
            found = LocalBufferedCounts(max_fields=max_fields, on_record=on_local_record)
        found = _buffered.setdefault(ident, found)
    return found
