"""The gateway's tokens in the database: a call's reservation and its settlement, each one
statement on PostgreSQL.

Every call of an organization counts on the same rows: its `tokens` QuotaCounter and, for an
API key, the key's monthly budget. Made of the quota and key services in a transaction
(quota_consume + api_key_tokens_reserve; quota_adjust + api_key_tokens_adjust + the call's
INSERT), each call held those rows' locks from its first UPDATE until its COMMIT, across client
round trips and whatever the serving process did meanwhile, and the organization's calls queued
on the lock: bench/gateway.py found the gateway capped near 90 calls/s with PostgreSQL's
backends waiting on `Lock:transactionid`. As one statement each (data-modifying CTEs, run in
autocommit), the locks are held while PostgreSQL runs the statement, no longer.

The rules are the services' own:

- **reserve**: the quota (`used + amount <= limit`) and the key's budget (restarting with the
  month) must both fit, or nothing is counted and QuotaExceeded (429) names the one that did
  not. Both rows are locked first (FOR NO KEY UPDATE, the key then the counter, as every
  statement here takes them: a transaction taking them the other way round would deadlock
  with these), so both are decided on their current values, and both move or neither does.
- **settle**: both move by `delta` (never below zero, never refused: the tokens were consumed)
  and the call's row is inserted, in the same statement.
- **release**: what a refused reservation gives back (the tokens-per-minute window refused
  after the database counted).

Every call is noted by the gateway: its reservation's statement inserts a GatewayReservation
row (`reservation_note`, a rider) and its settlement's deletes it (`noted_as`). A row left past
its lease is a call whose process died before settling, and
`gateway_reservations_release_expired` gives its tokens back; a row of work taken over (an
orchestration phase, a batch row, whose worker died, failed or met an outage) is given back by
its successor (`gateway_tokens_release_unsettled`). Each locks the key, then the counter, then
the row, and the one that deletes the row is the one that gives the reservation back: a
settlement that finds it gone (its call outlived the lease, or its work was taken over) moves
the counters by the usage alone.

Elsewhere (SQLite) the same services run in a transaction, as they always did.
"""

import functools
import logging
import time

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed

from accounts.models import APIKey
from accounts.services import (
    BUDGET_USED_SQL,
    api_key_budget_exceeded_error,
    api_key_tokens_adjust,
    api_key_tokens_reserve,
    budget_month,
    key_counter_writes,
)
from config.db import raw_uuid
from config.exceptions import one_line, unavailable_dependency
from config.prepared import (
    Rider,
    fetch_prepared,
    insert_row,
    insert_statement,
    insert_values,
    one_row_from,
)
from tenants.models import QuotaCounter, QuotaResource, Tenant
from tenants.plans import tenant_limits
from tenants.services.quotas import (
    quota_adjust,
    quota_consume,
    quota_exceeded_error,
    quota_warn_if_due,
)

from ..models import GatewayCall, GatewayReservation

logger = logging.getLogger(__name__)

TOKENS = QuotaResource.TOKENS
_KEYS = APIKey._meta.db_table
_QUOTAS = QuotaCounter._meta.db_table

# Only the models' table names are interpolated; every value is a parameter.
# Parameters: month, key id, tenant id, resource.
_LOCKED = (
    f"locked AS MATERIALIZED (SELECT {_KEYS}.id AS key_id, {_QUOTAS}.id AS quota_id, "  # noqa: S608
    f"{_QUOTAS}.used AS quota_used, {_KEYS}.monthly_token_budget AS budget, "
    f"{BUDGET_USED_SQL} AS key_used FROM {_KEYS}, {_QUOTAS} WHERE {_KEYS}.id = %s "
    f"AND {_QUOTAS}.tenant_id = %s AND {_QUOTAS}.resource = %s FOR NO KEY UPDATE)"
)
# Parameters: the _LOCKED ones; amount, limit, amount; amount, month; amount, now.
_RESERVE = {
    "ctes": (
        f"{_LOCKED}, "  # noqa: S608
        "decision AS MATERIALIZED (SELECT *, quota_used + %s <= %s AS quota_fits, "
        "(budget IS NULL OR key_used + %s <= budget) AS key_fits FROM locked), "
        f"key_update AS (UPDATE {_KEYS} SET budget_tokens_used = decision.key_used + %s, "
        f"budget_period = %s FROM decision WHERE {_KEYS}.id = decision.key_id "
        "AND decision.quota_fits AND decision.key_fits RETURNING 1), "
        f"quota_update AS (UPDATE {_QUOTAS} SET used = decision.quota_used + %s, updated_at = %s "
        f"FROM decision WHERE {_QUOTAS}.id = decision.quota_id "
        f"AND decision.quota_fits AND decision.key_fits RETURNING {_QUOTAS}.used, "
        f"{_QUOTAS}.warned_at)"
    ),
    "columns": (
        "decision.quota_fits, decision.key_fits, decision.quota_used, decision.key_used, "
        "decision.budget, quota_update.used, quota_update.warned_at"
    ),
    "tail": "FROM decision LEFT JOIN quota_update ON true",
}
_RESERVE_SQL = f"WITH {_RESERVE['ctes']} SELECT {_RESERVE['columns']} {_RESERVE['tail']}"
# A call settles deleting the gateway's note of its reservation (GatewayReservation), once the
# counter (and the key) are locked. If the note is gone, a release or a takeover gave the
# reservation back meanwhile: the reservation is then not taken off a second time.
_RESERVATIONS = GatewayReservation._meta.db_table
_NOTE_CLEARED = (
    f"gateway_note_cleared AS (DELETE FROM {_RESERVATIONS} WHERE id = %s "  # noqa: S608
    "AND EXISTS (SELECT 1 FROM locked) RETURNING 1)"
)
_UNLESS_GIVEN_BACK = "CASE WHEN EXISTS (SELECT 1 FROM gateway_note_cleared) THEN 0 ELSE %s END"
# Parameters: the _LOCKED ones; note id; delta, reservation, month; delta, reservation, now;
# then the call's INSERT.
_SETTLE_WITH_KEY_CTES = (
    f"{_LOCKED}, {_NOTE_CLEARED}, "  # noqa: S608
    f"key_update AS (UPDATE {_KEYS} SET budget_tokens_used = GREATEST(locked.key_used + %s + "
    f"{_UNLESS_GIVEN_BACK}, 0), budget_period = %s FROM locked WHERE {_KEYS}.id = locked.key_id "
    "RETURNING 1), "
    f"quota_update AS (UPDATE {_QUOTAS} SET used = GREATEST(locked.quota_used + %s + "
    f"{_UNLESS_GIVEN_BACK}, 0), updated_at = %s FROM locked WHERE {_QUOTAS}.id = locked.quota_id "
    f"RETURNING {_QUOTAS}.used, {_QUOTAS}.warned_at), "
    "call AS ({insert})"
)
# Parameters: tenant id, resource; note id; delta, reservation, now; then the call's INSERT.
_SETTLE_CTES = (
    f"locked AS MATERIALIZED (SELECT id AS quota_id, used AS quota_used FROM {_QUOTAS} "  # noqa: S608
    f"WHERE tenant_id = %s AND resource = %s FOR NO KEY UPDATE), {_NOTE_CLEARED}, "
    f"quota_update AS (UPDATE {_QUOTAS} SET used = GREATEST(locked.quota_used + %s + "
    f"{_UNLESS_GIVEN_BACK}, 0), updated_at = %s FROM locked WHERE {_QUOTAS}.id = locked.quota_id "
    f"RETURNING {_QUOTAS}.used, {_QUOTAS}.warned_at), "
    "call AS ({insert})"
)
# The counter's new value and warning mark, and whether the note was still there to delete.
_SETTLE_COLUMNS = (
    "quota_update.used, quota_update.warned_at, (SELECT count(*) FROM gateway_note_cleared)"
)
# Without a rider (config.prepared.Rider) the statement answers quota_update's row; with one,
# one row whatever happened, the rider's answer after the counter's.
_SETTLE_TAIL = "FROM quota_update"
_SETTLE_RIDDEN_TAIL = one_row_from("quota_update")


def _one_statement() -> bool:
    return connection.vendor == "postgresql"


def gateway_tokens_reserve(
    *, tenant: Tenant, api_key: APIKey | None, amount: int, rider: Rider | None = None
) -> None:
    """Count `amount` tokens against the organization's quota and the key's budget, or refuse
    (QuotaExceeded, 429) counting nothing. `rider`: the caller's write, made only when the
    tokens were counted (its CTEs read `quota_update`), in the same statement on PostgreSQL."""
    if api_key is None:
        # One statement already.
        quota_consume(tenant=tenant, resource=TOKENS, amount=amount, rider=rider)
        return
    if not _one_statement():
        with transaction.atomic():
            quota_consume(tenant=tenant, resource=TOKENS, amount=amount)
            api_key_tokens_reserve(api_key=api_key, amount=amount)
            if rider is not None:
                rider.made_apart()
        return
    limit = tenant_limits(tenant)[TOKENS]
    month = budget_month()
    params = [month, raw_uuid(api_key.pk), raw_uuid(tenant.pk), TOKENS]
    params += [amount, limit, amount, amount, month, amount, timezone.now()]
    sql = _RESERVE_SQL
    if rider is not None:
        sql, params = rider.carried_by(**_RESERVE, params=params)
    row = _fetch(sql, params)
    if row is None:
        # No counter yet (an organization's first call): make it (or find the one a
        # concurrent call made) and decide again. Not through quota_consume in a transaction:
        # that would lock the counter before the key, the other way round.
        QuotaCounter.objects.get_or_create(tenant=tenant, resource=TOKENS)
        row = _fetch(sql, params)
        if row is None:
            raise AuthenticationFailed("This API key no longer exists.")
    quota_fits, key_fits, quota_used, key_used, budget, used, warned_at = row[:7]
    if rider is not None:
        rider.answered = row[7:]
    if not quota_fits:
        raise quota_exceeded_error(tenant, TOKENS, limit, amount, quota_used)
    if not key_fits:
        raise api_key_budget_exceeded_error(limit=budget, used=key_used, amount=amount)
    quota_warn_if_due(tenant=tenant, resource=TOKENS, used=used, warned_at=warned_at, limit=limit)


def gateway_tokens_release(*, tenant: Tenant, api_key: APIKey | None, amount: int) -> None:
    """Give back a whole reservation that was refused after it was counted."""
    gateway_tokens_adjust(tenant=tenant, api_key=api_key, delta=-amount)


def gateway_tokens_lock(*, tenant_id) -> None:
    """Lock the organization's tokens counter until the transaction ends. The first lock of a
    change that goes on to lock a job whose worker may still be reserving or settling a call
    (a cancel or the reaper's failure, which give back the reservation a dead call left):
    those statements lock the counter first and the job second (the job's own write rides on
    them, config.prepared.Rider), and a change taking the two the other way round would
    deadlock with a worker that outlived its lease."""
    counters = QuotaCounter.objects.select_for_update(no_key=True)
    list(counters.filter(tenant_id=tenant_id, resource=TOKENS).values_list("pk", flat=True))


def gateway_tokens_release_unsettled(*, tenant: Tenant, request_id: str) -> int:
    """Give back the reservation of call `request_id` (an orchestration phase's, a batch
    row's, named by the work's note) unless its call was settled: the worker died, failed or
    stopped between the two. The gateway's note of the reservation is the proof: whichever of
    this and the call's settlement deletes it gives the reservation back, so a settlement that
    lands later (a worker that outlived its lease, a statement the server ran after its
    client gave up) counts its usage alone. Returns the tokens given back."""
    given_back = 0
    for note in GatewayReservation.objects.filter(tenant=tenant, request_id=request_id[:128]):
        note.tenant = tenant
        given_back += note.tokens if _give_back_note(note) else 0
    return given_back


def _give_back_note(note: GatewayReservation) -> bool:
    """Give back the reservation `note` records if this deletes the note, in a transaction that
    locks the key, then the organization's counter, then the row, the order in which the
    settlement's statement takes them: a settlement running at the same moment waits, or is
    waited for, and exactly one of the two deletes the row. Whether this one did."""
    with transaction.atomic():
        if note.api_key_id is not None:
            keys = APIKey.objects.select_for_update(no_key=True).filter(pk=note.api_key_id)
            list(keys.values_list("pk", flat=True))
        gateway_tokens_lock(tenant_id=note.tenant_id)
        deleted, _ = GatewayReservation.objects.filter(pk=note.pk).delete()
        if deleted:
            gateway_tokens_adjust(tenant=note.tenant, api_key=note.api_key, delta=-note.tokens)
    return bool(deleted)


def gateway_tokens_settle(
    *,
    tenant: Tenant,
    api_key: APIKey | None,
    delta: int,
    call: GatewayCall,
    noted_as,
    reserved: int,
    rider: Rider | None = None,
) -> GatewayCall:
    """Move the quota and the key's budget by `delta` (the usage minus the `reserved` tokens)
    and insert `call`, an unsaved GatewayCall, all or nothing. Returns the call, saved.
    `rider`: the caller's write, in the same statement on PostgreSQL (else the same
    transaction).

    `noted_as`: the id of the gateway's note of the reservation, deleted in the same step. If
    it is gone, a release of expired reservations or a takeover of the call's work gave the
    reservation back while the call ran, and the counters move by the usage alone."""
    if not _one_statement():
        with transaction.atomic():
            if not _note_deleted(noted_as):
                delta += reserved
            quota_adjust(tenant=tenant, resource=TOKENS, delta=delta)
            if api_key is not None:
                api_key_tokens_adjust(api_key=api_key, delta=delta)
            call.save(force_insert=True)
            if rider is not None:
                rider.made_apart()
        return call
    settle = functools.partial(
        _settle_in_one_statement,
        tenant=tenant,
        api_key=api_key,
        delta=delta,
        call=call,
        rider=rider,
        noted_as=noted_as,
        reserved=reserved,
    )
    if connection.in_atomic_block:
        return settle()
    return _settle_through_outage(settle, call=call, with_rider=rider is not None)


def _settle_through_outage(settle, *, call: GatewayCall, with_rider: bool) -> GatewayCall:
    """The settlement's statement, tried again while the database is unavailable (a restart,
    a failover, a dropped connection), for up to GATEWAY_SETTLE_RETRY_SECONDS: the upstream has
    answered and its tokens are spent, so they are recorded once the database is back rather
    than given back when the reservation's lease ends. Applied once: the call's row is inserted
    by the same statement with its id fixed before the first try, so a try whose commit
    happened but whose answer was lost makes the next one fail on that id, and the call is
    then found saved."""
    deadline = time.monotonic() + settings.GATEWAY_SETTLE_RETRY_SECONDS
    pause, failures = 0.05, 0
    while True:
        try:
            return settle()
        except IntegrityError:
            if failures and not with_rider and _saved(call):
                logger.warning("Gateway call %s had been settled by an earlier try", call.pk)
                call._state.adding = False
                call._state.db = DEFAULT_DB_ALIAS
                return call
            raise
        except (OperationalError, InterfaceError) as error:
            if unavailable_dependency(error) != "database" or time.monotonic() > deadline:
                raise
            failures += 1
            if failures == 1:
                logger.warning(
                    "Settling gateway call %s: the database is unavailable (%s); trying again "
                    "for up to %s s",
                    call.pk,
                    one_line(error, 300),
                    settings.GATEWAY_SETTLE_RETRY_SECONDS,
                )
            # The broken connection is replaced on the next try.
            connection.close()
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def _saved(call: GatewayCall) -> bool:
    try:
        return GatewayCall.objects.filter(pk=call.pk).exists()
    except (OperationalError, InterfaceError):
        return False


def _settle_in_one_statement(
    *,
    tenant: Tenant,
    api_key: APIKey | None,
    delta: int,
    call: GatewayCall,
    rider: Rider | None,
    noted_as,
    reserved: int,
) -> GatewayCall:
    insert_sql, insert_params = _insert(call)
    now = timezone.now()
    if api_key is not None:
        month = budget_month()
        ctes = _SETTLE_WITH_KEY_CTES.format(insert=insert_sql)
        params = [month, raw_uuid(api_key.pk), raw_uuid(tenant.pk), TOKENS]
        params += [raw_uuid(noted_as), delta, reserved, month, delta, reserved, now]
    else:
        ctes = _SETTLE_CTES.format(insert=insert_sql)
        params = [raw_uuid(tenant.pk), TOKENS, raw_uuid(noted_as), delta, reserved, now]
    params += insert_params
    columns = _SETTLE_COLUMNS
    if rider is None:
        row = _fetch(f"WITH {ctes} SELECT {columns} {_SETTLE_TAIL}", params)
    else:
        host = {"ctes": ctes, "columns": columns, "tail": _SETTLE_RIDDEN_TAIL}
        row = _fetch(*rider.carried_by(**host, params=params))
        rider.answered = row[3:]
        row = row if row[0] is not None else None
    call._state.adding = False
    call._state.db = DEFAULT_DB_ALIAS
    if row is not None and not row[2]:
        delta += reserved  # the note was gone: the counters moved by the usage alone
    if row is not None and delta > 0:
        used, warned_at = row[:2]
        quota_warn_if_due(tenant=tenant, resource=TOKENS, used=used, warned_at=warned_at)
    return call


def _note_deleted(noted_as) -> bool:
    return bool(GatewayReservation.objects.filter(pk=noted_as).delete()[0])


def gateway_tokens_adjust(*, tenant: Tenant, api_key: APIKey | None, delta: int) -> None:
    """Move the quota and the key's budget by `delta`, never below zero, never refused."""
    quota_adjust(tenant=tenant, resource=TOKENS, delta=delta)
    if api_key is not None:
        api_key_tokens_adjust(api_key=api_key, delta=delta)


@functools.cache
def _note_insert_sql() -> str:
    # The ORM's INSERT of the row, made conditional on the tokens having been counted (the
    # reservation's `quota_update` CTE has its row then): INSERT ... SELECT ... WHERE EXISTS.
    head, values = insert_statement(GatewayReservation).split(" VALUES (")
    return (
        f"gateway_note AS ({head} SELECT {values.removesuffix(')')} "  # noqa: S608
        "WHERE EXISTS (SELECT 1 FROM quota_update) RETURNING 1)"
    )


def reservation_note(reservation: GatewayReservation) -> Rider:
    """The gateway's note of a call's reservation (`reservation`, an unsaved row), written by
    the reservation's statement when the tokens were counted; its answer counts the rows
    written (one)."""

    def apart() -> tuple:
        insert_row(reservation)
        return (1,)

    return Rider(
        ctes=_note_insert_sql(),
        answer="(SELECT count(*) FROM gateway_note)",
        params=insert_values(reservation),
        apart=apart,
        undo=lambda: GatewayReservation.objects.filter(pk=reservation.pk).delete(),
    )


def gateway_reservations_release_expired(*, now=None, limit: int = 1000) -> int:
    """Give back the tokens of reservations past their lease (calls whose process died before
    settling), oldest first, at most `limit`; returns how many were given back.

    Each in its own transaction (_give_back_note): a settlement running at the same moment
    waits, or is waited for, and exactly one of the two deletes the row."""
    now = now or timezone.now()
    expired = GatewayReservation.objects.filter(expires_at__lte=now).order_by("expires_at")
    released = 0
    for note in expired.select_related("tenant", "api_key")[:limit]:
        if _give_back_note(note):
            released += 1
            logger.warning(
                "Gave back %s tokens reserved by a gateway call never settled "
                "(organization %s, request %s, reserved at %s): its process died mid-call",
                note.tokens,
                note.tenant.slug,
                note.request_id or "-",
                note.created_at.isoformat(),
            )
    return released


def _insert(call: GatewayCall) -> tuple[str, list]:
    """The ORM's own INSERT of `call` (defaults, auto_now_add, conversions), as SQL: the text
    written once, the values converted per call as the ORM's compiler converts them
    (config.prepared.insert_statement and insert_values)."""
    return insert_statement(GatewayCall), insert_values(call)


def _fetch(sql: str, params: list):
    # The reservation's and the settlement's texts are fixed (the INSERT's too, above), so they
    # are prepared on the server once per connection: a call's two statements are then neither
    # quoted into SQL on the client nor parsed and planned by PostgreSQL every time.
    # They write the key's budget only, which moves no kept principal lookup.
    with key_counter_writes():
        rows = fetch_prepared(DEFAULT_DB_ALIAS, sql, params)
    return rows[0] if rows else None
