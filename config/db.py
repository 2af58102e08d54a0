"""Database helpers shared by services."""

import functools
import hashlib
import time
import uuid

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    connection,
    connections,
    models,
    router,
    transaction,
)
from django.http import Http404

from .exceptions import Conflict
from .prepared import insert_values
from .services import model_update


def create_or_conflict(
    model, /, *, conflict_message: str, conflict_details: dict | None = None, **fields
):
    """Create a row; a unique-constraint violation (including a lost race) is 409 CONFLICT."""
    try:
        with transaction.atomic():
            return model.objects.create(**fields)
    except IntegrityError:
        raise Conflict(conflict_message, details=conflict_details) from None


# Raw SQL bypasses the fields' conversion; this does it as a UUIDField column's would.
_UUID_FIELD = models.UUIDField()


def raw_uuid(value: uuid.UUID | str):
    """A UUID (or its text, as a task's argument gives an id) as a parameter of raw SQL, as
    Django's UUIDField converts it: PostgreSQL takes the UUID, SQLite stores 32 hex
    characters. Text that is not a UUID raises ValidationError."""
    return _UUID_FIELD.get_db_prep_value(value, connection)


def write_connection(model):
    """The connection `model`'s writes go to (the database router's choice): for raw SQL, and
    for choosing a statement by `vendor`."""
    return connections[router.db_for_write(model)]


def advisory_xact_lock(name: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Hold PostgreSQL's transaction-scoped advisory lock named `name` until the transaction
    ends: serializes work on something that has no row to lock. Elsewhere nothing (SQLite has
    one writer anyway)."""
    conn = connections[using]
    if conn.vendor != "postgresql":
        return
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def transaction_id(using: str = DEFAULT_DB_ALIAS) -> int | None:
    """The id of the transaction running on `using` (PostgreSQL assigns one now if it has none
    yet), or None on other databases. Noted beside a write made in another store (Redis), it
    lets a later reader ask `transaction_committed` whether the database's part committed: how
    config.metering's flush writes each count once."""
    conn = connections[using]
    if conn.vendor != "postgresql":
        return None
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text::bigint")
        return cursor.fetchone()[0]


def transaction_committed(xid: int, using: str = DEFAULT_DB_ALIAS) -> bool | None:
    """Whether the PostgreSQL transaction `xid` (from `transaction_id`) committed: True; False
    when it rolled back, or when the database does not know it (a failover lost its commit:
    "in the future") or no longer remembers it (older than its commit log keeps); None while it
    is still running."""
    try:
        with transaction.atomic(using=using), connections[using].cursor() as cursor:
            cursor.execute("SELECT pg_xact_status(%s::text::xid8)", [str(xid)])
            status = cursor.fetchone()[0]
    except DatabaseError:
        return False
    if status == "in progress":
        return None
    return status == "committed"


def delete_in_batches(queryset, *, batch_size: int) -> int:
    """Delete `queryset`'s rows `batch_size` at a time (a retention's prune: short locks on a
    large table), each batch in its own transaction and by id with the queryset's condition
    checked again, so a row that stopped matching meanwhile stays. Returns how many rows of its
    model this call deleted: not a concurrent run's, nor rows deleted by cascade. Safe to run
    twice at once."""
    label = queryset.model._meta.label
    removed = 0
    while ids := list(queryset.order_by().values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic(using=queryset.db):
            _, deleted = queryset.filter(pk__in=ids).delete()
        removed += deleted.get(label, 0)
    return removed


def bulk_insert(model, objs: list) -> list:
    """Insert `objs` (unsaved instances of `model`, their primary keys set in Python, as UUID
    keys are) like `bulk_create`; on PostgreSQL with COPY, several times faster for the
    thousands of rows of a batch job (billing's invoice run, bench/invoice_run.py): no SQL to
    compile, no parameters to bind, values streamed by psycopg. Fields take their values as
    bulk_create gives them (`pre_save`: auto_now and auto_now_add included). Elsewhere it is
    bulk_create."""
    if not objs:
        return objs
    connection = write_connection(model)
    if connection.vendor != "postgresql":
        return model.objects.bulk_create(objs)
    fields = model._meta.local_concrete_fields  # insert_values' order
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    sql = f"COPY {table} ({columns}) FROM STDIN"
    started = time.monotonic()
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for obj in objs:
            copy.write_row(insert_values(obj, connection.alias))
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
    if connection.queries_logged:
        connection.queries_log.append(
            {"sql": f"{sql} ({len(objs)} rows)", "time": f"{time.monotonic() - started:.3f}"}
        )
    return objs


def update_or_conflict(
    instance, data, *, conflict_message: str, conflict_details: dict | None = None
) -> dict:
    """config.services.model_update; a unique-constraint violation (including a lost race) is
    409 CONFLICT."""
    try:
        with transaction.atomic():
            return model_update(instance=instance, data=data)
    except IntegrityError:
        raise Conflict(conflict_message, details=conflict_details) from None


def locked_or_404(queryset, *, no_key: bool = False, of=("self",), **lookup):
    """The row of `queryset` matching `lookup`, locked FOR UPDATE (FOR NO KEY UPDATE with
    `no_key`) until the transaction ends; `of=()` locks the rows of its select_related joins
    too. When it is gone (a deletion that committed between the view's read and this lock:
    two clients writing one object at once), DeletedMeanwhile: a 404 in a view, and still the
    model's DoesNotExist for code that catches that."""
    try:
        return queryset.select_for_update(of=of, no_key=no_key).get(**lookup)
    except queryset.model.DoesNotExist:
        raise deleted_meanwhile(queryset.model) from None


class DeletedMeanwhile(Http404):
    """A row deleted between a read of it and the lock taken to change it."""


@functools.cache
def _deleted_meanwhile_class(model) -> type[DeletedMeanwhile]:
    return type(
        f"{model.__name__}DeletedMeanwhile",
        (DeletedMeanwhile, model.DoesNotExist),
        {"__module__": __name__},
    )


def deleted_meanwhile(model) -> DeletedMeanwhile:
    """The error for `model`'s row gone under a lock: both Http404 (views answer 404
    RESOURCE_NOT_FOUND, as for an id that never existed) and `model.DoesNotExist`."""
    return _deleted_meanwhile_class(model)(
        f"No {model._meta.verbose_name} matches the given query."
    )
