"""The outbox relay: claims due deliveries, sends them, records every attempt.

A run claims up to WEBHOOK_RELAY_BATCH_SIZE due rows at a time (`SELECT ... FOR UPDATE SKIP
LOCKED`), shared between the organizations with deliveries due (each gets an equal share of the
claim, its oldest rows first), and leases them: `next_attempt_at` moves past the time
the batch can take and `claim` names the run. Two relays never take the same row, and a relay
that dies mid-batch only delays its rows until the lease ends (then they are sent again:
delivery is at least once, and receivers de-duplicate on `webhook-id`). The requests go out
`concurrency` at a time on asyncio (notifications.sender; HTTP only: signing happens before,
recording after, in the run's own thread). A batch that answers promptly is recorded in one
transaction; when some of its requests are slow, what has answered is recorded without them,
the slow organization takes no share of the next claims while they are out, and at the end of
the run's time budget its requests that have not started are given back to the queue.

After a failed attempt the delivery waits WEBHOOK_RETRY_SCHEDULE_SECONDS[n] (with jitter; a
longer Retry-After is honoured up to WEBHOOK_RETRY_AFTER_MAX_SECONDS), when the failure is one
that may pass (timeout, connection error, 429, 5xx); any other answer, and the last scheduled
attempt, fail it for good (`failed`, which `retry` and `replay` can re-queue). An endpoint
whose attempts have failed for WEBHOOK_DISABLE_AFTER_DAYS with no success is disabled.
"""

import concurrent.futures
import math
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Min, Q, Window
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from audit.services import record
from config.db import write_connection

from .. import sender, signing
from ..models import (
    DUE_STATUSES,
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from ..sender import AttemptResult
from .endpoints import webhook_endpoint_disable

_ENDPOINT_DISABLED = "Not sent: the endpoint is disabled."


# A request not answered this long after the relay began waiting for it is slow: what else
# has answered is recorded without it, and while its organization has requests waiting for a
# sender behind it, it takes no share of a claim (so an endpoint that never answers cannot
# keep a run claiming its rows).
SLOW_AFTER_SECONDS = 1.0


@dataclass
class RelayReport:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    # Claimed but not sent: still waiting for a sender when the run's time was up.
    given_back: int = 0
    disabled_endpoints: list[str] = field(default_factory=list)


def webhook_deliveries_send(
    *,
    concurrency: int | None = None,
    batch_size: int | None = None,
    max_deliveries: int | None = None,
    time_budget_seconds: float | None = None,
) -> RelayReport:
    """Send due deliveries until none is due (or `max_deliveries` / the time budget is
    reached); safe to run in several processes at once.

    When the time budget is up the run claims no more, and if some of its requests are slow
    (an endpoint that takes the whole timeout), it gives back those that have not started
    instead of waiting for them: a run then ends within about the budget plus one timeout,
    however many rows of a silent endpoint it holds."""
    concurrency = max(1, concurrency or settings.WEBHOOK_RELAY_CONCURRENCY)
    per_claim = max(1, batch_size or settings.WEBHOOK_RELAY_BATCH_SIZE)
    started = time.monotonic()
    report = RelayReport()
    with sender.Sender(concurrency=concurrency) as http:
        # Usually one batch in flight while the previous one is recorded and the next one
        # claimed; a slow request stays out while what answered around it is recorded.
        on_the_way: list[_Sending] = []
        while True:
            left = None if max_deliveries is None else max_deliveries - report.claimed
            out_of_time = (
                time_budget_seconds is not None and time.monotonic() - started > time_budget_seconds
            )
            if out_of_time and any(sending.slow for sending in on_the_way):
                http.withdraw()
            new = []
            if (left is None or left > 0) and not out_of_time:
                claim, batch = _claim(
                    limit=min(per_claim, left or per_claim),
                    concurrency=concurrency,
                    skipping=_held_up(on_the_way, http),
                )
                report.claimed += len(batch)
                new = _dispatch(claim, batch, http)
            if on_the_way:
                answered, on_the_way = _answered(on_the_way, more_coming=bool(new))
                if answered:
                    _record(answered, whole=_claims_done(answered, on_the_way), report=report)
            elif not new:
                break
            on_the_way += new
    return report


def webhook_delivery_send_now(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send one due delivery in this thread (the test event); the delivery as it is after,
    with `last_attempt` set when this call made the attempt (a relay may have been first)."""
    claim = _new_claim()
    now = timezone.now()
    taken = WebhookDelivery.objects.filter(
        pk=delivery.pk, claim="", status__in=DUE_STATUSES
    ).update(claim=claim, next_attempt_at=now + _lease(1, 1), updated_at=now)
    if taken:
        with sender.Sender(concurrency=1) as http:
            sending = _dispatch(claim, _claimed_rows(claim), http)
            concurrent.futures.wait([one.outcome for one in sending])
        _record(sending, whole=True, report=RelayReport())
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery.pk)
    delivery.last_attempt = delivery.attempts.order_by("-number").first() if taken else None
    return delivery


def _new_claim() -> str:
    return secrets.token_hex(16)


def _lease(count: int, concurrency: int) -> timedelta:
    """Long enough for `count` deliveries of one organization to time out one after another
    on each sender it may hold: all but one (sender.FairSlots). A claimed batch waits behind
    the one in flight, so a run leases for both (see _claim)."""
    rounds = math.ceil(count / sender.FairSlots.most_held(concurrency))
    return timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS * rounds + 60)


def _claim(
    *, limit: int, concurrency: int, skipping: set = frozenset()
) -> tuple[str, list["Claimed"]]:
    """Lease up to `limit` due deliveries to a new claim, shared fairly between the
    organizations that have some due (less those `skipping`): each gets at most
    ceil(limit / organizations) of the claim, its oldest, and when more organizations wait
    than the claim holds, those waiting longest go first. A claim that took everything due by
    age would let one organization's backlog (a replay of thousands of events, or an endpoint
    that takes the whole timeout to fail) hold back every other organization's deliveries
    until it drains."""
    claim = _new_claim()
    now = timezone.now()
    db = write_connection(WebhookDelivery)
    waiting = _organizations_waiting(db, now=now, limit=limit, skipping=skipping)
    if not waiting:
        return claim, []  # idle: no write transaction (SQLite would take its write lock)
    take_shares = _claim_shares_locked if db.vendor == "postgresql" else _claim_shares
    with transaction.atomic():
        claimed = take_shares(
            db,
            waiting,
            share=math.ceil(limit / len(waiting)),
            limit=limit,
            now=now,
            claim=claim,
            lease_ends=now + _lease(2 * limit, concurrency),
        )
    if not claimed:
        return claim, []
    return claim, _claimed_rows(claim)


def _due_sql(alias: str) -> str:
    """The due statuses as SQL literals (constants, not input): a bound parameter would hide
    them from the planner, which then could not use the partial index on due rows."""
    statuses = ", ".join(f"'{status}'" for status in DUE_STATUSES)
    return f"{alias}.status IN ({statuses})"


def _organizations_waiting(db, *, now, limit: int, skipping=frozenset()) -> list:
    """The organizations with a delivery due now, longest waiting first (at most `limit`),
    less those `skipping`."""
    if db.vendor != "postgresql":
        return list(
            WebhookDelivery.objects.filter(status__in=DUE_STATUSES, next_attempt_at__lte=now)
            .exclude(tenant_id__in=skipping)
            .values("tenant_id")
            .annotate(oldest=Min("next_attempt_at"))
            .order_by("oldest", "tenant_id")
            .values_list("tenant_id", flat=True)[:limit]
        )
    # PostgreSQL: a skip scan of the partial index on due rows, (tenant, next_attempt_at): one
    # descent per organization with deliveries pending, then one for its oldest due one.
    # Reading every due row instead would cost the claim the size of the backlog.
    table = db.ops.quote_name(WebhookDelivery._meta.db_table)
    sql = f"""
        WITH RECURSIVE pending(tenant_id) AS (
            (SELECT d.tenant_id FROM {table} d WHERE {_due_sql("d")}
             ORDER BY d.tenant_id LIMIT 1)
            UNION ALL
            SELECT (SELECT d.tenant_id FROM {table} d
                    WHERE {_due_sql("d")} AND d.tenant_id > p.tenant_id
                    ORDER BY d.tenant_id LIMIT 1)
            FROM pending p WHERE p.tenant_id IS NOT NULL
        )
        SELECT p.tenant_id FROM pending p
        CROSS JOIN LATERAL (
            SELECT d.next_attempt_at FROM {table} d
            WHERE {_due_sql("d")} AND d.tenant_id = p.tenant_id AND d.next_attempt_at <= %s
            ORDER BY d.next_attempt_at LIMIT 1
        ) oldest
        WHERE p.tenant_id <> ALL(%s::uuid[])
        ORDER BY oldest.next_attempt_at, p.tenant_id
        LIMIT %s
    """  # noqa: S608 (names from the model, values bound)
    with db.cursor() as cursor:
        cursor.execute(sql, [now, list(skipping), limit])
        return [row[0] for row in cursor.fetchall()]


def _claim_shares_locked(db, waiting, *, share, limit, now, claim, lease_ends) -> int:
    """PostgreSQL: one UPDATE whose subquery takes each organization's oldest `share` due rows
    with FOR UPDATE SKIP LOCKED (rows another relay is claiming are skipped, not waited for)."""
    table = db.ops.quote_name(WebhookDelivery._meta.db_table)
    sql = f"""
        UPDATE {table} SET claim = %s, next_attempt_at = %s, updated_at = %s
        WHERE id IN (
            SELECT taken.id FROM unnest(%s::uuid[]) AS waiting(tenant_id)
            CROSS JOIN LATERAL (
                SELECT d.id, d.next_attempt_at FROM {table} d
                WHERE d.tenant_id = waiting.tenant_id AND {_due_sql("d")}
                    AND d.next_attempt_at <= %s
                ORDER BY d.next_attempt_at LIMIT %s
                FOR UPDATE SKIP LOCKED
            ) taken
            ORDER BY taken.next_attempt_at LIMIT %s
        )
    """  # noqa: S608 (names from the model, values bound)
    with db.cursor() as cursor:
        cursor.execute(sql, [claim, lease_ends, now, list(waiting), now, share, limit])
        return cursor.rowcount


def _claim_shares(db, waiting, *, share, limit, now, claim, lease_ends) -> int:
    """Other databases (SQLite: one writer at a time, no row locks): each organization's
    oldest `share` due rows by rank; the UPDATE checks again that each row is still due and
    unclaimed, so a relay that read the same rows first keeps them."""
    due = WebhookDelivery.objects.using(db.alias).filter(
        status__in=DUE_STATUSES, next_attempt_at__lte=now
    )
    ranked = (
        due.filter(tenant_id__in=waiting)
        .annotate(
            rank=Window(
                RowNumber(), partition_by=[F("tenant_id")], order_by=F("next_attempt_at").asc()
            )
        )
        .filter(rank__lte=share)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    return due.filter(pk__in=list(ranked)).update(
        claim=claim, next_attempt_at=lease_ends, updated_at=now
    )


@dataclass(frozen=True)
class Claimed:
    """A claimed delivery: what sending and recording it need (plain values, not model
    instances: the relay handles thousands a second)."""

    pk: object
    tenant_id: object
    event_id: object
    attempt_count: int
    body: bytes
    endpoint: WebhookEndpoint


def _claimed_rows(claim: str) -> list[Claimed]:
    rows = list(
        WebhookDelivery.objects.filter(claim=claim)
        .order_by("created_at", "id")
        .values_list("pk", "tenant_id", "event_id", "attempt_count", "event__body", "endpoint_id")
    )
    endpoints = WebhookEndpoint.objects.in_bulk({row[5] for row in rows})
    return [
        Claimed(pk, tenant_id, event_id, attempts, body.encode(), endpoints[endpoint_id])
        for pk, tenant_id, event_id, attempts, body, endpoint_id in _taking_turns(rows)
    ]


def _taking_turns(rows: list[tuple]) -> list[tuple]:
    """The batch in the order its requests start: each organization's oldest delivery, then
    each one's second, and so on. In the order of creation, the requests of one organization
    whose endpoint takes the whole timeout to fail would take every sender before the others'
    started."""
    turn_of = {}
    turns = []
    for position, row in enumerate(rows):
        tenant_id = row[1]
        turn = turn_of.get(tenant_id, 0)
        turn_of[tenant_id] = turn + 1
        turns.append((turn, position))
    return [rows[position] for _, position in sorted(turns)]


# Sending -------------------------------------------------------------------------------------


def _signing_keys(endpoint: WebhookEndpoint, now) -> list[bytes]:
    keys = [signing.secret_key_bytes(signing.decrypt(endpoint.secret_encrypted))]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires and expires > now:
        keys.append(signing.secret_key_bytes(signing.decrypt(endpoint.previous_secret_encrypted)))
    return keys


def _requests(batch: list[Claimed]) -> list[sender.Request | AttemptResult]:
    """What to POST for each delivery (url, body, headers), or why it is not sent."""
    now = timezone.now()
    timestamp = int(time.time())
    keys_by_endpoint: dict = {}
    requests = []
    for delivery in batch:
        endpoint = delivery.endpoint
        if not endpoint.is_active:
            requests.append(
                AttemptResult(succeeded=False, retryable=False, error=_ENDPOINT_DISABLED)
            )
            continue
        if endpoint.pk not in keys_by_endpoint:
            try:
                keys_by_endpoint[endpoint.pk] = _signing_keys(endpoint, now)
            except signing.InvalidSecret as error:
                keys_by_endpoint[endpoint.pk] = AttemptResult(
                    succeeded=False, retryable=False, error=f"Not sent: {error}"
                )
        keys = keys_by_endpoint[endpoint.pk]
        if isinstance(keys, AttemptResult):
            requests.append(keys)
            continue
        headers = signing.signature_headers(
            keys, msg_id=str(delivery.event_id), timestamp=timestamp, body=delivery.body
        )
        requests.append((endpoint.url, delivery.body, headers))
    return requests


@dataclass(eq=False)
class _Sending:
    """A claimed delivery on its way: its outcome is a future until it answers (None: given
    back unsent)."""

    claim: str
    delivery: Claimed
    outcome: concurrent.futures.Future
    slow: bool = False

    @property
    def tenant_id(self):
        return self.delivery.tenant_id


def _dispatch(claim: str, batch: list[Claimed], http: sender.Sender) -> list[_Sending]:
    """Start sending the batch."""
    requests = _requests(batch)
    to_send = [
        (request, delivery.tenant_id)
        for request, delivery in zip(requests, batch, strict=True)
        if not isinstance(request, AttemptResult)
    ]
    sent = iter(http.submit([request for request, _ in to_send], owners=[o for _, o in to_send]))
    sending = []
    for request, delivery in zip(requests, batch, strict=True):
        if isinstance(request, AttemptResult):  # not sent: its outcome is known now
            outcome = concurrent.futures.Future()
            outcome.set_result(request)
        else:
            outcome = next(sent)
        sending.append(_Sending(claim, delivery, outcome))
    return sending


def _answered(
    on_the_way: list[_Sending], *, more_coming: bool
) -> tuple[list[_Sending], list[_Sending]]:
    """Wait until the requests on the way that are not yet slow have all answered, or for
    SLOW_AFTER_SECONDS; those that have not are slow from then on. Only slow ones on the way
    and nothing new sent: wait for the first of them (at most as long), not in a busy loop.
    Returns (answered, still on the way)."""
    not_slow = [sending.outcome for sending in on_the_way if not sending.slow]
    if not_slow:
        concurrent.futures.wait(not_slow, timeout=SLOW_AFTER_SECONDS)
    elif not more_coming:
        concurrent.futures.wait(
            [sending.outcome for sending in on_the_way],
            timeout=SLOW_AFTER_SECONDS,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
    answered, still = [], []
    for sending in on_the_way:
        if sending.outcome.done():
            answered.append(sending)
        else:
            sending.slow = True
            still.append(sending)
    return answered, still


def _held_up(on_the_way: list[_Sending], http: sender.Sender) -> set:
    """The organizations that take no share of the next claim: those with slow requests and
    others waiting for a sender behind them. More of their rows would only wait in this run
    (an endpoint that takes the whole timeout to fail drains 3 requests in 15 s). One whose
    requests have all started may take a share: it waits only for those in flight."""
    slow = {sending.tenant_id for sending in on_the_way if sending.slow}
    return slow & http.owners_waiting() if slow else set()


def _claims_done(answered: list[_Sending], still: list[_Sending]) -> bool:
    """Whether none of the claims answered has a delivery still on the way."""
    if not still:
        return True
    out = {sending.claim for sending in still}
    return not any(sending.claim in out for sending in answered)


# Recording -----------------------------------------------------------------------------------


def retry_delay(attempt_number: int, result: AttemptResult) -> timedelta | None:
    """How long to wait after failed attempt `attempt_number` (1-based); None: no more."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE_SECONDS
    if not result.retryable or attempt_number > len(schedule):
        return None
    jitter = settings.WEBHOOK_RETRY_JITTER
    # Jitter spreads retries of one outage; it needs no cryptographic randomness.
    seconds = schedule[attempt_number - 1] * random.uniform(1 - jitter, 1 + jitter)  # noqa: S311
    if result.retry_after:
        seconds = max(seconds, min(result.retry_after, settings.WEBHOOK_RETRY_AFTER_MAX_SECONDS))
    return timedelta(seconds=seconds)


@transaction.atomic
def _record(answered: list[_Sending], *, whole: bool, report: RelayReport) -> None:
    """Each attempt, and each delivery's new state; the deliveries given back unsent are due
    again at once. `whole`: no other delivery of these claims is still on the way. The
    updates name the claims: a delivery whose lease ran out and that another relay claimed
    since is left to that relay."""
    now = timezone.now()
    ours = WebhookDelivery.objects.filter(claim__in=sorted({one.claim for one in answered}))
    attempts, succeeded, changed, given_back = [], [], [], []
    outcomes: dict = {}  # endpoint id -> [succeeded?, ...] in order
    for sending in answered:
        delivery, result = sending.delivery, sending.outcome.result()
        if result is None:
            given_back.append(delivery.pk)
            continue
        number = delivery.attempt_count + 1
        attempts.append(
            (
                uuid.uuid4(),
                now,
                now,
                delivery.tenant_id,
                delivery.pk,
                number,
                result.succeeded,
                result.status_code,
                result.duration_ms,
                result.response_excerpt,
                result.error[:500],
            )
        )
        if result.error != _ENDPOINT_DISABLED:
            outcomes.setdefault(delivery.endpoint.pk, []).append(result.succeeded)
        if result.succeeded:
            succeeded.append(delivery.pk)
            report.succeeded += 1
            continue
        report.failed += 1
        delay = retry_delay(number, result)
        changed.append(
            WebhookDelivery(
                pk=delivery.pk,
                status=DeliveryStatus.FAILED if delay is None else DeliveryStatus.RETRYING,
                next_attempt_at=None if delay is None else now + delay,
                attempt_count=number,
                claim="",
                last_attempt_at=now,
                updated_at=now,
            )
        )
    if given_back:
        ours.filter(pk__in=given_back).update(claim="", next_attempt_at=now, updated_at=now)
        report.given_back += len(given_back)
    _insert_attempts(attempts)
    if succeeded:
        # Usually every delivery of the claim answered, most of them successes: its rows by
        # the claim, less the few that failed (those given back no longer name it), with no
        # list of ids to send and parse.
        succeeded_rows = (
            ours.exclude(pk__in=[delivery.pk for delivery in changed])
            if whole
            else ours.filter(pk__in=succeeded)
        )
        succeeded_rows.update(
            status=DeliveryStatus.SUCCEEDED,
            attempt_count=F("attempt_count") + 1,
            next_attempt_at=None,
            claim="",
            last_attempt_at=now,
            succeeded_at=now,
            updated_at=now,
        )
    if changed:
        ours.bulk_update(
            changed,
            [
                "status",
                "next_attempt_at",
                "attempt_count",
                "claim",
                "last_attempt_at",
                "updated_at",
            ],
        )
    failing = _update_endpoints(outcomes, now)
    _disable_failing(failing, now, report)


_ATTEMPT_FIELDS = (
    "id",
    "created_at",
    "updated_at",
    "tenant",
    "delivery",
    "number",
    "succeeded",
    "status_code",
    "duration_ms",
    "response_excerpt",
    "error",
)


def _insert_attempts(rows: list[tuple]) -> None:
    """The batch's attempts in one INSERT: the ORM's bulk_create spent more building model
    instances and compiling SQL than the relay spends on anything but HTTP
    (bench/webhook_relay.py). A relay that lost its lease may number an attempt the next relay
    numbers too: the first one recorded stands."""
    if not rows:
        return
    db = write_connection(WebhookAttempt)
    fields = [WebhookAttempt._meta.get_field(name) for name in _ATTEMPT_FIELDS]
    table = db.ops.quote_name(WebhookAttempt._meta.db_table)
    columns = ", ".join(db.ops.quote_name(field.column) for field in fields)
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            # One array per column: the same short statement whatever the batch's size, so
            # psycopg reuses its parsed form. A VALUES row per attempt gave it 1,100
            # placeholders to find again on each batch: 2.5-2.8 ms of CPU per 100 attempts,
            # against 0.8.
            arrays = ", ".join(f"%s::{field.db_type(db)}[]" for field in fields)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) "  # noqa: S608 (names from the model, values bound)
                "ON CONFLICT DO NOTHING",
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
        row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
        per_statement = max(1, db.ops.bulk_batch_size(fields, rows))
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            values = ", ".join([row_sql] * len(chunk))
            params = [
                field.get_db_prep_save(value, connection=db)
                for row in chunk
                for field, value in zip(fields, row, strict=True)
            ]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT DO NOTHING",  # noqa: S608 (names from the model, values bound)
                params,
            )


def _update_endpoints(outcomes: dict, now) -> list:
    """Each endpoint's last trigger, last success and run of failures; returns the ids of
    those whose latest attempt failed. One UPDATE per distinct change, not per endpoint: a
    batch shared between many organizations touches as many endpoints, and usually every
    attempt succeeded, which is one change for all of them."""
    failing = []
    changes: dict[tuple[bool, int], list] = {}  # (any success?, count) -> endpoint ids
    for endpoint_id, results in outcomes.items():
        if True in results:
            failures_after = results[::-1].index(True)  # failed attempts after the last success
            changes.setdefault((True, failures_after), []).append(endpoint_id)
            if failures_after:
                failing.append(endpoint_id)
        else:
            changes.setdefault((False, len(results)), []).append(endpoint_id)
            failing.append(endpoint_id)
    for (succeeded, count), endpoint_ids in changes.items():
        endpoints = WebhookEndpoint.objects.filter(pk__in=sorted(endpoint_ids))
        if succeeded:
            endpoints.update(
                last_triggered_at=now,
                last_success_at=now,
                failure_count=count,
                failing_since=now if count else None,
            )
        else:
            endpoints.update(
                last_triggered_at=now,
                failure_count=F("failure_count") + count,
                failing_since=Coalesce(F("failing_since"), now),
            )
    return failing


def _disable_failing(endpoint_ids: list, now, report: RelayReport) -> None:
    if not endpoint_ids:
        return
    cutoff = now - timedelta(days=settings.WEBHOOK_DISABLE_AFTER_DAYS)
    for endpoint in WebhookEndpoint.objects.filter(
        pk__in=endpoint_ids, is_active=True, failing_since__lte=cutoff
    ):
        reason = (
            f"Failing since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC with no success "
            f"({endpoint.failure_count} failed attempts)."
        )
        webhook_endpoint_disable(webhook_endpoint=endpoint, reason=reason)
        report.disabled_endpoints.append(str(endpoint.pk))


# Retention -----------------------------------------------------------------------------------


def webhook_deliveries_prune(
    *, older_than_days: int | None = None, batch_size: int = 1000
) -> dict[str, int]:
    """Delete deliveries (with their attempts) and events older than the retention, in
    batches; returns how many of each went. A delivery the relay may still send (pending or
    retrying: a long retry schedule, a replay of old events) is kept until it ends, and so is
    its event, whatever the retention."""
    days = settings.WEBHOOK_DELIVERY_RETENTION_DAYS if older_than_days is None else older_than_days
    removed = {"deliveries": 0, "events": 0}
    try:
        cutoff = timezone.now() - timedelta(days=days)
    except OverflowError:
        return removed  # a retention longer than the calendar: nothing is that old
    prunable = {
        WebhookDelivery: ~Q(status__in=DUE_STATUSES),
        WebhookEvent: ~Q(deliveries__status__in=DUE_STATUSES),
    }
    for model, key in ((WebhookDelivery, "deliveries"), (WebhookEvent, "events")):
        old = model.objects.filter(prunable[model], created_at__lt=cutoff)
        while ids := list(old.values_list("pk", flat=True)[:batch_size]):
            with transaction.atomic():
                # The condition again in each statement: a replay may have sent one again.
                if model is WebhookEvent:
                    WebhookDelivery.objects.filter(
                        prunable[WebhookDelivery], event_id__in=ids
                    ).delete()
                else:
                    WebhookAttempt.objects.filter(
                        delivery__in=WebhookDelivery.objects.filter(
                            prunable[WebhookDelivery], pk__in=ids
                        )
                    ).delete()
                _, deleted = model.objects.filter(prunable[model], pk__in=ids).delete()
                removed[key] += deleted.get(model._meta.label, 0)
    if any(removed.values()):
        with transaction.atomic():
            record(
                tenant=None,
                event_type="webhook.deliveries.pruned",
                actor_label="webhook retention",
                payload={**removed, "older_than_days": days},
            )
    return removed
