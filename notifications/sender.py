"""Sending webhook requests: to the address the SSRF guard checked, never following a
redirect, within a hard time limit and with a bounded read of the answer.

The connection goes to `Target.address`; the URL's host is sent as the Host header and as the
TLS server name (SNI and certificate check), so no second DNS lookup happens. Requests go out
on asyncio (httpx's async client): `asyncio.timeout` bounds each whole attempt (resolution,
connection, headers and body) by WEBHOOK_TIMEOUT_SECONDS, which per-read socket timeouts
cannot do against a receiver that answers one byte at a time. One client per host: a pooled
connection is only reused for the host whose certificate it checked.
"""

import asyncio
import collections
import concurrent.futures
import email.utils
import functools
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from django.conf import settings

from .targets import ForbiddenTarget, Target, UnresolvableTarget
from .targets import check as check_target

USER_AGENT = "ControlPlane-Webhooks/1.0"
logger = logging.getLogger(__name__)


@dataclass
class AttemptResult:
    succeeded: bool
    # Whether a later attempt may succeed (timeout, connection error, 429, 5xx).
    retryable: bool
    status_code: int | None = None
    duration_ms: int = 0
    response_excerpt: str = ""
    error: str = ""
    # Seconds the receiver asked us to wait (Retry-After on 429 and 503).
    retry_after: int | None = None


# (url, body, headers)
Request = tuple[str, bytes, dict[str, str]]


class Sender:
    """Sends requests, at most `concurrency` at a time in all (shared between organizations:
    FairSlots), on one event loop in a thread of its own that lives as long as the sender (a
    relay run). The caller submits a batch and goes on (recording what has answered, claiming
    the next batch) while it is in flight; each request has its own future, so what answers
    can be recorded while a slow request of the same batch is still out. The HTTP clients,
    one per host, and their connections are reused from one batch to the next.

        with Sender(concurrency=4) as sender:
            futures = sender.submit(requests)
            ...
            results = [future.result() for future in futures]

    `withdraw()` takes back every request still waiting for a slot: its future's result is
    None (not sent).
    """

    def __init__(self, *, concurrency: int):
        self.concurrency = max(1, concurrency)
        self.clients: dict[tuple[str, str], httpx.AsyncClient] = {}
        self.loop = asyncio.new_event_loop()
        self.slots = FairSlots(self.concurrency)
        # DNS lookups, one per slot at most (`_one`): never queued behind another owner's.
        self.resolving = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="webhook-dns"
        )
        # The tasks of requests that have not taken a slot yet (withdraw() cancels these), and
        # how many each owner has (read from the caller's thread, hence the lock).
        self.waiting: set[asyncio.Task] = set()
        self._waiting_by_owner: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="webhook-sender", daemon=True
        )
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()
            # Not waiting for a lookup that hangs: its thread ends with the lookup.
            self.resolving.shutdown(wait=False, cancel_futures=True)

    async def _close(self):
        self._withdraw()
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    def submit(
        self, requests: list[Request], owners: list | None = None
    ) -> list[concurrent.futures.Future]:
        """Start sending; one future per request, in order, whose result is its outcome (None
        if withdrawn before it started). `owners` names whose each request is (the
        organization): the senders are shared fairly between owners (FairSlots)."""
        owners = owners if owners is not None else [None] * len(requests)
        futures = [concurrent.futures.Future() for _ in requests]
        if requests:
            self.loop.call_soon_threadsafe(self._start, requests, owners, futures)
        return futures

    def owners_waiting(self) -> set:
        """The owners with requests waiting for a slot."""
        with self._lock:
            return set(self._waiting_by_owner)

    def _stop_waiting(self, task: asyncio.Task, owner) -> None:
        """The request no longer waits for a slot: it took one, or it ended without."""
        if task not in self.waiting:
            return
        self.waiting.discard(task)
        with self._lock:
            self._waiting_by_owner[owner] -= 1
            if not self._waiting_by_owner[owner]:
                del self._waiting_by_owner[owner]

    def withdraw(self) -> None:
        """Take back the requests that have not started: their results become None."""
        self.loop.call_soon_threadsafe(self._withdraw)

    def _withdraw(self) -> None:
        for task in list(self.waiting):
            task.cancel()

    def _start(self, requests: list[Request], owners: list, futures: list) -> None:
        # Each URL is resolved and checked once per batch, at send time, by the first of the
        # batch's requests to it that takes a slot (`_one`): every request of the batch to it
        # connects to the address checked.
        checks: dict[str, asyncio.Future] = {}
        with self._lock:
            self._waiting_by_owner.update(owners)
        for request, owner, future in zip(requests, owners, futures, strict=True):
            task = self.loop.create_task(self._one(request, owner, checks))
            # Waiting from its creation: withdraw() may run before the task's first step.
            self.waiting.add(task)
            task.add_done_callback(functools.partial(self._settle, future, owner))

    async def _one(self, request: Request, owner, checks: dict) -> AttemptResult:
        await self.slots.acquire(owner)
        # No await between taking the slot and leaving `waiting`: a started request is never
        # withdrawn.
        self._stop_waiting(asyncio.current_task(), owner)
        url = request[0]
        check = checks.get(url)
        checking = check is None
        if checking:
            # On a thread of `resolving`: resolution may block on DNS, off the event loop.
            check = checks[url] = self.loop.run_in_executor(self.resolving, check_target, url)
            # Its failure is each request's answer; when every request to it timed out
            # first, nobody else reads it (and asyncio would log it).
            check.add_done_callback(_read_outcome)
        try:
            return await _post(request, check, self.clients)
        finally:
            if checking and not check.done():
                # Timed out while its DNS lookup goes on: a thread cannot be stopped, so the
                # slot stays taken until the lookup ends. A lookup then always has a thread
                # (one per slot), and the owner's fair share of the slots bounds its slow
                # lookups as it bounds its slow endpoints: a DNS server that never answers,
                # which anyone can set up for their own domain, delays nobody else.
                check.add_done_callback(lambda _: self.slots.release(owner))
            else:
                self.slots.release(owner)

    def _settle(self, future: concurrent.futures.Future, owner, task: asyncio.Task) -> None:
        self._stop_waiting(task, owner)  # when it ended before taking a slot
        if task.cancelled():  # withdrawn before it started: not sent
            future.set_result(None)
        elif task.exception() is not None:
            future.set_exception(task.exception())
        else:
            future.set_result(task.result())


class FairSlots:
    """The sender's `concurrency` slots, shared between owners (organizations). A slot that
    frees goes to the waiting owner with the fewest requests in flight (owners take turns on
    a tie), and with two slots or more no owner holds them all. So an organization whose
    endpoint never answers holds at most all slots but one, each for up to the timeout, while
    the others' requests go through the slot left; alone, it still gets all but one.

    Used only from the sender's event loop (no locks needed)."""

    def __init__(self, concurrency: int):
        self.free = concurrency
        self.cap = self.most_held(concurrency)
        self.in_flight: collections.Counter = collections.Counter()
        # owner -> its requests waiting, in order; the owners in turn order.
        self.waiting: dict[object, collections.deque[asyncio.Future]] = {}

    @staticmethod
    def most_held(concurrency: int) -> int:
        """The most slots one owner holds at once."""
        return max(1, concurrency - 1)

    async def acquire(self, owner) -> None:
        if not self.waiting and self.free and self.in_flight[owner] < self.cap:
            self._take(owner)  # nobody waits, so nobody has a better claim
            return
        granted = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(owner, collections.deque()).append(granted)
        self._grant()  # at once when a slot is free and nobody with a better claim waits
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(owner)  # granted as it was cancelled: give the slot on
            else:
                queue = self.waiting.get(owner)
                if queue is not None and granted in queue:
                    queue.remove(granted)
                    if not queue:
                        del self.waiting[owner]
            raise

    def release(self, owner) -> None:
        self.in_flight[owner] -= 1
        if not self.in_flight[owner]:
            del self.in_flight[owner]
        self.free += 1
        self._grant()

    def _take(self, owner) -> None:
        self.free -= 1
        self.in_flight[owner] += 1

    def _grant(self) -> None:
        while self.free:
            eligible = [owner for owner in self.waiting if self.in_flight[owner] < self.cap]
            if not eligible:
                return
            owner = min(eligible, key=lambda candidate: self.in_flight[candidate])
            queue = self.waiting.pop(owner)
            granted = queue.popleft()
            if queue:
                self.waiting[owner] = queue  # to the back: owners take turns on a tie
            self._take(owner)
            granted.set_result(None)


def _read_outcome(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _client(clients: dict, target: Target) -> httpx.AsyncClient:
    key = (target.scheme, target.host)
    if key not in clients:
        clients[key] = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.WEBHOOK_TIMEOUT_SECONDS, connect=settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS
            ),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the checked address is the peer
            headers={"User-Agent": USER_AGENT},
        )
    return clients[key]


async def _post(request: Request, checked: asyncio.Future, clients: dict) -> AttemptResult:
    _, body, headers = request
    started = time.perf_counter()
    limit = settings.WEBHOOK_TIMEOUT_SECONDS
    try:
        async with asyncio.timeout(limit):
            # shield: one request's timeout must not cancel the check its batch shares.
            target = await asyncio.shield(checked)
            return await _send(clients, target, body=body, headers=headers, started=started)
    except UnresolvableTarget as error:
        return AttemptResult(succeeded=False, retryable=True, error=str(error))
    except ForbiddenTarget as error:
        return AttemptResult(succeeded=False, retryable=False, error=f"Not sent: {error}")
    except (TimeoutError, httpx.TimeoutException) as error:
        return _failure(
            started, f"Timed out (no complete answer within {limit:g} s: {type(error).__name__})."
        )
    except (httpx.HTTPError, OSError) as error:
        return _failure(started, f"Connection failed: {type(error).__name__}: {error}"[:500])
    except Exception as error:  # one delivery must never fail its whole batch (or the relay)
        logger.exception("webhook request failed unexpectedly")
        return AttemptResult(
            succeeded=False,
            retryable=False,
            duration_ms=_elapsed_ms(started),
            error=f"Not sent: unexpected {type(error).__name__}.",
        )


def _failure(started: float, error: str) -> AttemptResult:
    return AttemptResult(
        succeeded=False, retryable=True, duration_ms=_elapsed_ms(started), error=error
    )


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def _send(
    clients: dict, target: Target, *, body: bytes, headers: dict, started: float
) -> AttemptResult:
    cap = settings.WEBHOOK_RESPONSE_EXCERPT_BYTES
    request_headers = {
        **headers,
        "Host": target.host_header,
        "Content-Type": "application/json",
        # The excerpt is read raw: a compressed answer could expand without bound.
        "Accept-Encoding": "identity",
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    async with _client(clients, target).stream(
        "POST", target.connect_url, content=body, headers=request_headers, extensions=extensions
    ) as response:
        excerpt = bytearray()
        async for chunk in response.aiter_raw():
            excerpt += chunk
            if len(excerpt) >= cap:
                break
        status = response.status_code
        retry_after = _retry_after(response.headers.get("Retry-After"))
    ok = 200 <= status < 300
    error = ""
    if 300 <= status < 400:
        error = "Redirects are not followed: the endpoint's URL must answer 2xx itself."
    elif not ok:
        error = f"The receiver answered {status}."
    return AttemptResult(
        succeeded=ok,
        retryable=status == 429 or status >= 500,
        status_code=status,
        duration_ms=_elapsed_ms(started),
        response_excerpt=bytes(excerpt[:cap]).decode("utf-8", "replace").replace("\x00", ""),
        error=error,
        retry_after=retry_after if status in (429, 503) else None,
    )


def _retry_after(value: str | None) -> int | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - datetime.now(UTC)).total_seconds()))
