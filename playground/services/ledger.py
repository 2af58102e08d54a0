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

Elsewhere (SQLite) the same services run in a transaction, as they always did.
"""

from django.db import DEFAULT_DB_ALIAS, connection, transaction
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
from config.prepared import Rider, fetch_prepared, insert_statement, insert_values, one_row_from
from tenants.models import QuotaCounter, QuotaResource, Tenant
from tenants.plans import tenant_limits
from tenants.services.quotas import (
    quota_adjust,
    quota_consume,
    quota_exceeded_error,
    quota_warn_if_due,
)

from ..models import GatewayCall

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
# Parameters: the _LOCKED ones; delta, month; delta, now; then the call's INSERT.
_SETTLE_WITH_KEY_CTES = (
    f"{_LOCKED}, "  # noqa: S608
    f"key_update AS (UPDATE {_KEYS} SET budget_tokens_used = GREATEST(locked.key_used + %s, 0), "
    f"budget_period = %s FROM locked WHERE {_KEYS}.id = locked.key_id RETURNING 1), "
    f"quota_update AS (UPDATE {_QUOTAS} SET used = GREATEST(locked.quota_used + %s, 0), "
    f"updated_at = %s FROM locked WHERE {_QUOTAS}.id = locked.quota_id "
    f"RETURNING {_QUOTAS}.used, {_QUOTAS}.warned_at), "
    "call AS ({insert})"
)
# Parameters: delta, now, tenant id, resource; then the call's INSERT.
_SETTLE_CTES = (
    f"quota_update AS (UPDATE {_QUOTAS} SET used = GREATEST(used + %s, 0), "  # noqa: S608
    "updated_at = %s WHERE tenant_id = %s AND resource = %s RETURNING used, warned_at), "
    "call AS ({insert})"
)
_SETTLE_COLUMNS = "quota_update.used, quota_update.warned_at"
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
    quota_adjust(tenant=tenant, resource=TOKENS, delta=-amount)
    if api_key is not None:
        api_key_tokens_adjust(api_key=api_key, delta=-amount)


def gateway_tokens_lock(*, tenant_id) -> None:
    """Lock the organization's tokens counter until the transaction ends. The first lock of a
    change that goes on to lock a job whose worker may still be reserving or settling a call
    (a cancel or the reaper's failure, which give back the reservation a dead call left):
    those statements lock the counter first and the job second (the job's own write rides on
    them, config.prepared.Rider), and a change taking the two the other way round would
    deadlock with a worker that outlived its lease."""
    counters = QuotaCounter.objects.select_for_update(no_key=True)
    list(counters.filter(tenant_id=tenant_id, resource=TOKENS).values_list("pk", flat=True))


def gateway_tokens_release_unsettled(*, tenant: Tenant, request_id: str, amount: int) -> bool:
    """Give back a reservation a worker noted before its call (an orchestration phase's, a
    batch row's) unless the call was settled, that is, a call is recorded under its
    `request_id`: the worker died or failed between the two. Returns whether it gave back."""
    if not amount or GatewayCall.objects.filter(tenant=tenant, request_id=request_id).exists():
        return False
    gateway_tokens_release(tenant=tenant, api_key=None, amount=amount)
    return True


def gateway_tokens_settle(
    *,
    tenant: Tenant,
    api_key: APIKey | None,
    delta: int,
    call: GatewayCall,
    rider: Rider | None = None,
) -> GatewayCall:
    """Move the quota and the key's budget by `delta` (the usage minus the reservation) and
    insert `call`, an unsaved GatewayCall, all or nothing. Returns the call, saved. `rider`:
    the caller's write, in the same statement on PostgreSQL (else the same transaction)."""
    if not _one_statement():
        with transaction.atomic():
            quota_adjust(tenant=tenant, resource=TOKENS, delta=delta)
            if api_key is not None:
                api_key_tokens_adjust(api_key=api_key, delta=delta)
            call.save(force_insert=True)
            if rider is not None:
                rider.made_apart()
        return call
    insert_sql, insert_params = _insert(call)
    now = timezone.now()
    if api_key is not None:
        month = budget_month()
        ctes = _SETTLE_WITH_KEY_CTES.format(insert=insert_sql)
        params = [month, raw_uuid(api_key.pk), raw_uuid(tenant.pk), TOKENS]
        params += [delta, month, delta, now]
    else:
        ctes = _SETTLE_CTES.format(insert=insert_sql)
        params = [delta, now, raw_uuid(tenant.pk), TOKENS]
    params += insert_params
    if rider is None:
        row = _fetch(f"WITH {ctes} SELECT {_SETTLE_COLUMNS} {_SETTLE_TAIL}", params)
    else:
        host = {"ctes": ctes, "columns": _SETTLE_COLUMNS, "tail": _SETTLE_RIDDEN_TAIL}
        row = _fetch(*rider.carried_by(**host, params=params))
        rider.answered = row[2:]
        row = row[:2] if row[0] is not None else None
    call._state.adding = False
    call._state.db = DEFAULT_DB_ALIAS
    if row is not None and delta > 0:
        used, warned_at = row
        quota_warn_if_due(tenant=tenant, resource=TOKENS, used=used, warned_at=warned_at)
    return call


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
