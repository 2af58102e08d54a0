"""Hot fixed queries: compiled by the ORM once (`CompiledQuery`) and prepared on the PostgreSQL
server (`fetch_prepared`).

Django compiles a queryset to SQL on every evaluation, and binds parameters on the client and
never prepares, so PostgreSQL parses and plans every query anew; for a join with subqueries run
on every request, each step costs more than running it.

What Django offers is used where it serves: the `prepare_threshold` database option (set in
the settings to a count no query reaches, so that psycopg prepares only when asked) enables
preparing, and the cursor is wrapped with Django's own `make_cursor` / `make_debug_cursor`, so
these queries are logged, timed and wrapped like any other. Django's `server_side_binding`
option is not used: it would move every query of the application to server-side binding,
when only these few gain from it. What remains outside Django's API is small and measured:

- a psycopg server-binding cursor that asks for `prepare=True` (psycopg's public API);
- setting psycopg's `_query` after a prepared run, which Django's query log reads;
- converting each statement's placeholders once (`_FixedStatementQuery`, psycopg's query class);
- one psycopg cursor kept on Django's connection object between statements (`_KEPT_CURSOR`);
- `CompiledQuery`, which keeps the ORM's compiled SQL and row builders (`get_related_populators`,
  the compiler's converters) to skip compiling.

Both were measured on the same machine, one run after the other (PostgreSQL + Redis):
- bench/auth_overhead.py, req/s: the API-key path 627 as built, 476 with
  DATABASE_PREPARED_STATEMENTS=false, 184 with neither compiling once nor preparing; the
  token path 346, 324 and 178.
- bench/request_overhead.py: the bare view reading the same organization 1,096 req/s as built
  and 315 without; the full stack 324 and 178.
"""

import copy
import datetime
import decimal
import functools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, router
from django.db.models import Field, Model, QuerySet
from django.db.models.base import ModelState
from django.db.models.query import get_related_populators
from django.db.models.sql import InsertQuery

# psycopg's conversion of a query's placeholders, and the class that applies it. Not public API;
# pinned with psycopg (requirements.txt) and checked against psycopg's own conversion
# (tests/test_prepared.py).
from psycopg._queries import PostgresQuery, _query2pg_nocache

# psycopg prepares a statement run this many times by itself; with a count no query reaches,
# only the statements run here with `prepare=True` are prepared. The settings pass it as the
# database's `prepare_threshold` option (None, Django's default, disables preparing).
EXPLICIT_ONLY = 2**31 - 1


# How many statement texts keep their conversion (`_FixedStatementQuery`): more than the fixed
# statements the platform runs here (a few dozen); past it the oldest is converted again.
CONVERSIONS_KEPT = 512

_placeholders_converted = functools.lru_cache(maxsize=CONVERSIONS_KEPT)(_query2pg_nocache)


class _FixedStatementQuery(PostgresQuery):
    """psycopg's query, its placeholders (`%s` -> `$1`) converted once per statement text.

    psycopg keeps the conversion only for statements under 4,096 bytes and 50 parameters, so
    that an ORM's bulk INSERTs of every size do not fill its cache; it converts the others on
    every run, a regular-expression pass over the whole text. The statements run here are a
    fixed set, built once per process, and some are past those bounds: the orchestration's
    settlement (the call, the quota, the phase, the run and the next phase in one statement,
    52 parameters) was converted again on every phase, 5 % of a worker's Python per phase."""

    def convert(self, query, vars):
        if vars is None or not isinstance(query, str | bytes):
            return super().convert(query, vars)
        query = self._ensure_bytes(query)
        self.query, self._want_formats, self._order, self._parts = _placeholders_converted(
            query, self._tx.encoding
        )
        self.dump(vars)
        return None


class _PreparingCursor(psycopg.Cursor):
    """Server-side binding; every statement it runs is prepared once per connection (psycopg
    keeps the prepared names), its placeholders converted once per process."""

    _query_cls = _FixedStatementQuery

    def execute(self, query, params=None, *, prepare=None, binary=None):
        super().execute(query, params, prepare=True, binary=binary)
        # Django's query log reads `cursor._query.query`, which psycopg leaves unset for a
        # prepared run.
        self._query = _Logged(query.encode() if isinstance(query, str) else query)
        return self


class _Logged(NamedTuple):
    query: bytes


# Where a connection keeps its preparing cursor (`_server_prepared_cursor`).
_KEPT_CURSOR = "_kept_preparing_cursor"


def _server_prepared_cursor(db):
    """A Django cursor (health check, error wrapping, logging, execute wrappers) over the
    connection's `_PreparingCursor`; None where preparing is unavailable or turned off.

    The psycopg cursor is made once per connection and kept on it, never closed by its users:
    a new one per statement (its adapters and their lookups made again) cost about 10 us of
    a one-row statement's 58 us in one process. A new connection, or another thread's, gets
    its own."""
    if db.vendor != "postgresql" or not settings.DATABASE_PREPARED_STATEMENTS:
        return None
    db.close_if_health_check_failed()
    db.ensure_connection()
    raw = db.connection
    if not isinstance(raw, psycopg.Connection) or raw.prepare_threshold is None:
        return None  # psycopg 2, or a database configured without the option
    cursor = getattr(db, _KEPT_CURSOR, None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        with db.wrap_database_errors:
            cursor = _PreparingCursor(raw)
        setattr(db, _KEPT_CURSOR, cursor)
    return db.make_debug_cursor(cursor) if db.queries_logged else db.make_cursor(cursor)


def fetch_prepared(alias: str, sql: str, params) -> list[tuple]:
    """The rows of one hot, fixed query. On PostgreSQL the statement is prepared on the server
    once per connection: parsing and planning a join can cost more than running it. Elsewhere,
    or with DATABASE_PREPARED_STATEMENTS off (a pooler that cannot keep prepared statements),
    it runs as any query does."""
    return _run(alias, sql, params, lambda cursor: cursor.fetchall())


def execute_prepared(alias: str, sql: str, params) -> int:
    """`fetch_prepared` for a statement that returns no rows (an INSERT): its row count."""
    return _run(alias, sql, params, lambda cursor: cursor.rowcount)


def _run(alias: str, sql: str, params, result: Callable):
    db = connections[alias]
    cursor = _server_prepared_cursor(db)
    if cursor is not None:  # the connection's own, kept open
        cursor.execute(sql, params)
        return result(cursor)
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return result(cursor)


@functools.cache
def insert_statement(model: type[Model], alias: str = DEFAULT_DB_ALIAS) -> str:
    """The text of `model`'s one-row INSERT as the ORM writes it, compiled once: one
    placeholder per local concrete field, in their order. A model whose INSERT is not that (a
    database default, a field with a placeholder of its own), whose key the database assigns
    (an auto field) or whose rows start in a parent's table is refused here, not written
    wrong."""
    if model._meta.parents or model._meta.auto_field is not None:
        raise ValueError(f"{model.__name__}'s rows are not one INSERT with its key set in Python")
    fields = model._meta.local_concrete_fields
    query = InsertQuery(model)
    query.insert_values(fields, [model()])
    [(sql, params)] = query.get_compiler(using=alias).as_sql()
    if len(params) != len(fields) or sql.count("%s") != len(fields):
        raise ValueError(f"{model.__name__}'s INSERT is not one plain placeholder per field")
    return sql


def insert_values(instance: Model, alias: str = DEFAULT_DB_ALIAS) -> list:
    """`instance`'s values for `insert_statement`, converted as the ORM's compiler converts
    them (`pre_save`, which sets auto_now_add, then `get_db_prep_save`)."""
    db = connections[alias]
    return [
        field.get_db_prep_save(field.pre_save(instance, True), db)
        for field in instance._meta.local_concrete_fields
    ]


def insert_row(instance: Model, *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Insert `instance` as `save(force_insert=True)` does, without compiling the INSERT each
    time (compiled once per model, prepared on PostgreSQL): about 100 µs less per row for an
    audit event. Sends no `pre_save` / `post_save` signal, so only for models no receiver
    listens to, with their primary key set in Python (UUID keys), and no parents."""
    execute_prepared(using, insert_statement(type(instance), using), insert_values(instance, using))
    instance._state.adding = False
    instance._state.db = using


class KeptRows(tuple):
    """Rows a process keeps for a lookup (config.epoch) and shares between its requests, with
    the model instances built from them the first time they were reused (`built`).

    Building instances from rows (converters, `from_db`, relations set) cost about 30 us per
    request for a token's user, membership and tenant; `built_from` copies them instead
    (`copied`, about 14 us). The instances in `built` are never handed out: every use gets its
    own copies."""

    built = None


def built_from(rows, build: Callable):
    """`build(rows)`, or for kept rows a copy of what `build` made from them the first time
    (two threads racing may both build: the same instances from the same rows, one kept)."""
    if type(rows) is not KeptRows:
        return build(rows)
    built = rows.built
    if built is None:
        built = rows.built = build(rows)
    return copied(built)


def copied(value, memo: dict | None = None):
    """A copy of model instances (and tuples, named tuples and lists of them) that shares
    nothing mutable with the original: each instance its own attributes and relation cache,
    related instances copied once each (so `a.b is c.b` holds in the copy as it did before),
    dicts and lists (JSON and array columns) copied to the bottom. Other values read from the
    database (str, numbers, datetimes, UUIDs, decimals) are immutable and shared."""
    if memo is None:
        memo = {}
    if isinstance(value, Model):
        return _copied_instance(value, memo)
    if isinstance(value, list):
        return [copied(item, memo) for item in value]
    if isinstance(value, tuple):
        items = [copied(item, memo) for item in value]
        return value._make(items) if hasattr(value, "_make") else type(value)(items)
    return value


def _copied_instance(instance: Model, memo: dict) -> Model:
    found = memo.get(id(instance))
    if found is not None:
        return found
    clone = object.__new__(type(instance))
    memo[id(instance)] = clone
    attributes = instance.__dict__.copy()
    for name, value in attributes.items():
        kind = type(value)
        if kind in _SHARED:
            continue
        if isinstance(value, Model):
            attributes[name] = _copied_instance(value, memo)
        elif isinstance(value, dict | list):
            attributes[name] = _copied_json(value)
    # The model state's copy: its own relation cache and no related managers, as Django's
    # pickling of it makes (ModelState.__getstate__), without pickling's cost.
    state = object.__new__(ModelState)
    state.__dict__.update(instance._state.__dict__)
    state.__dict__.pop("related_managers_cache", None)
    if "fields_cache" in state.__dict__:
        state.fields_cache = {
            name: related if related is None else _copied_instance(related, memo)
            for name, related in state.fields_cache.items()
        }
    attributes["_state"] = state
    clone.__dict__.update(attributes)
    return clone


# Immutable values read from the database: shared by the copies.
_SHARED = frozenset(
    {str, int, float, bool, bytes, type(None), datetime.datetime, datetime.date}
    | {datetime.time, datetime.timedelta, uuid.UUID, decimal.Decimal}
)


def _copied_json(value):
    if type(value) is dict:
        return {key: _copied_json(item) for key, item in value.items()}
    if type(value) is list:
        return [_copied_json(item) for item in value]
    if isinstance(value, dict | list):  # a subclass: copied the general way
        return copy.deepcopy(value)
    return value


@dataclass
class Rider:
    """A caller's own write carried by another service's statement (the host), so that both
    are one round trip and one atomic step on PostgreSQL: an orchestration phase notes the
    gateway reservation made for it in the reservation's statement, and records its outcome in
    the call's settlement.

    - `ctes`: data-modifying CTEs appended to the host's (`name AS (...)`, comma-separated).
      They may read the CTE the host documents (the gateway's ledger: `quota_update`, one row
      when the host's write happened) to write only then.
    - `answer`: SQL expressions over them, selected beside the host's own columns; `params`:
      the CTEs' parameters (the answer takes none).
    - `apart()`: the same write made apart, returning the same answer, where a statement
      cannot carry it (SQLite, or a host's path with no statement to carry it): the host runs
      it after its write, in its transaction.
    - `undo()`: optional; undoes the write, in the transaction in which the host gives its own
      write back when its caller refuses after it (the gateway's tokens-per-minute window).

    The host leaves the answer (a tuple) in `answered`; None while it has not run."""

    ctes: str
    answer: str
    params: list
    apart: Callable[[], tuple]
    undo: Callable[[], None] | None = None
    answered: tuple | None = None

    def made_apart(self) -> tuple:
        """Make the write apart (`apart()`) and keep its answer."""
        self.answered = self.apart()
        return self.answered

    def carried_by(self, *, ctes: str, columns: str, tail: str, params: list) -> tuple[str, list]:
        """The host's statement (`WITH {ctes} SELECT {columns} {tail}`, its parameters all in
        its CTEs) carrying this rider: its CTEs after the host's, its answer after the host's
        columns. The answer's values are the last in the row."""
        sql = f"WITH {ctes}, {self.ctes} SELECT {columns}, {self.answer} {tail}"
        return sql, [*params, *self.params]

    def alongside(self, other: "Rider") -> "Rider":
        """Both writes carried by one host: this rider's CTEs, then `other`'s (their names
        must differ); the answer is this one's values, then `other`'s; made apart and undone
        in that order."""

        def undo() -> None:
            for rider in (self, other):
                if rider.undo is not None:
                    rider.undo()

        return Rider(
            ctes=f"{self.ctes}, {other.ctes}",
            answer=f"{self.answer}, {other.answer}",
            params=[*self.params, *other.params],
            apart=lambda: (*self.apart(), *other.apart()),
            undo=undo,
        )


def one_row_from(cte: str) -> str:
    """A host statement's FROM that answers one row whether or not its CTE `cte` wrote one
    (its columns then NULL), so a rider's answer comes back either way."""
    return f"FROM (SELECT 1) AS one LEFT JOIN {cte} ON true"


@dataclass(frozen=True)
class _Compiled:
    converters: tuple
    sql: str
    params: tuple
    value_slot: int
    init_list: list
    model_columns: slice
    populators: list
    annotation_columns: tuple


class CompiledQuery:
    """`build(value)`, a queryset of one model that varies only by one value compared with
    `field`, compiled by the ORM once per process and database, then run with each new value
    through `fetch_prepared`. Rows become model instances the way the ORM's ModelIterable
    builds them (converters, select_related populators, annotations); each use has a test
    comparing them with the queryset's own. Calling it returns the list of instances.

    The SQL is fixed at the first call: `build` must depend on nothing but its value (no
    `timezone.now()`, no settings or request state), or later calls would reuse stale terms.

    Once per process, not per thread: under ASGI every request runs on a thread of its own, so
    a per-thread compilation was a compilation per request (a fifth of the gateway's CPU). What
    is kept is immutable (SQL, parameters, column layout, row builders); the converters are run
    with the calling thread's connection, never the compiling thread's."""

    def __init__(self, build: Callable[[object], QuerySet], field: Field):
        self._build = build
        self._field = field
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _db_value(self, value, alias: str):
        field = self._field
        return field.get_db_prep_value(field.to_python(value), connections[alias])

    def _compile(self, alias: str) -> _Compiled:
        # A value of the field's type that nothing else in the query can equal.
        marker = self._field.to_python(uuid.uuid4().hex)
        compiler = self._build(marker).query.get_compiler(using=alias)
        sql, params = compiler.as_sql()
        db_marker = self._db_value(marker, alias)
        slots = [index for index, param in enumerate(params) if param == db_marker]
        if len(slots) != 1:
            raise ValueError(f"The query must compare {self._field} with its value exactly once")
        select, klass_info = compiler.select, compiler.klass_info
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        return _Compiled(
            converters=tuple(compiler.get_converters([column[0] for column in select]).items()),
            sql=sql,
            params=tuple(params),
            value_slot=slots[0],
            init_list=[column[0].target.attname for column in select[start:end]],
            model_columns=slice(start, end),
            populators=get_related_populators(klass_info, select, alias),
            annotation_columns=tuple(compiler.annotation_col_map.items()),
        )

    def __call__(self, value, *, fetch: Callable[[str, str, list], list] | None = None):
        """The instances the query finds for `value`; its rows from `fetch(alias, sql, params)`
        if given (config.epoch.fetch_kept), else from the database. Kept rows give copies of
        the instances built from them once (`built_from`)."""
        model = self._field.model
        alias = router.db_for_read(model)
        compiled = self._compiled.get(alias)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(alias)
                if compiled is None:
                    compiled = self._compiled[alias] = self._compile(alias)
        params = list(compiled.params)
        params[compiled.value_slot] = self._db_value(value, alias)
        rows = (fetch or fetch_prepared)(alias, compiled.sql, params)
        return built_from(rows, lambda rows: self._instances(rows, compiled, alias))

    def _instances(self, rows, compiled: _Compiled, alias: str) -> list[Model]:
        model = self._field.model
        if compiled.converters:
            rows = _converted(rows, compiled.converters, connections[alias])
        found = []
        for row in rows:
            instance = model.from_db(alias, compiled.init_list, row[compiled.model_columns])
            for populator in compiled.populators:
                populator.populate(row, instance)
            for name, column in compiled.annotation_columns:
                setattr(instance, name, row[column])
            found.append(instance)
        return found


def _converted(rows, converters, connection):
    """SQLCompiler.apply_converters, with the connection of the thread running the query."""
    for row in rows:
        row = list(row)
        for position, (functions, expression) in converters:
            value = row[position]
            for function in functions:
                value = function(value, expression, connection)
            row[position] = value
        yield row


class SelectedModel:
    """A model's concrete columns in a hand-written SELECT under a table alias, and the
    instance the ORM would build from them (`from_db`, each field's database converters).

    For the few hot statements the ORM cannot express as one query (accounts.principals: a
    credential, its user and a LIMIT on a filtered join); the column lists come from the
    model's fields, so a field added to the model is selected without touching the SQL."""

    def __init__(self, model: type[Model], alias: str):
        self.model = model
        self.alias = alias
        self.fields = tuple(model._meta.concrete_fields)
        self.attnames = [field.attname for field in self.fields]
        self.width = len(self.fields)
        self._pk_position = self.fields.index(model._meta.pk)
        self._converters: dict[str, tuple] = {}

    def columns(self, connection) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{quote(self.alias)}.{quote(field.column)}" for field in self.fields)

    def _converters_for(self, connection) -> tuple:
        """Each converted column's (position, (functions, expression)): the shape the ORM's
        compiler gives its converters, which `_converted` applies."""
        converters = self._converters.get(connection.alias)
        if converters is None:
            found = []
            for position, field in enumerate(self.fields):
                column = field.get_col(self.alias)
                functions = connection.ops.get_db_converters(column)
                functions += column.get_db_converters(connection)
                if functions:
                    found.append((position, (tuple(functions), column)))
            converters = self._converters[connection.alias] = tuple(found)
        return converters

    def load(self, row, start: int, connection) -> Model | None:
        """The instance in `row` from column `start`; None for a LEFT JOIN that found none."""
        values = row[start : start + self.width]
        if values[self._pk_position] is None:
            return None
        converters = self._converters_for(connection)
        if converters:
            values = next(_converted([values], converters, connection))
        return self.model.from_db(connection.alias, self.attnames, values)
