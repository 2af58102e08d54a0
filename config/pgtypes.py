"""`timestamptz` values read by psycopg's C loader, not by Django's Python one.

Django reads every `timestamptz` with a loader of its own (BaseTzLoader in
django.db.backends.postgresql.psycopg_any), a subclass of psycopg's pure-Python loader that
sets its timezone on the result: about 5.7 µs a value. psycopg's binary package has a C loader
for the type, about 0.4 µs a value, which Django cannot use because a C type cannot be
subclassed. A page of audit events or members carries a hundred such values, every kept
lookup and organization detail a handful.

When Django's connection timezone is UTC (USE_TZ, the platform's setting, and no TIME_ZONE in
the database's settings), both loaders give the same value: Django sets each
connection's TimeZone to UTC when it opens it, and psycopg reads UTC as
`datetime.UTC`, the tzinfo Django would have set. On such connections `use_c_loader`
registers `UTCTimestamptzLoader`, a thin class whose instances load with the C loader
(tests/test_pgtypes.py compares the two on the same values). Elsewhere, or without the C
implementation, Django's loader stays.
"""

import datetime

try:
    import psycopg
    from psycopg.adapt import Loader
    from psycopg.pq import Format
except ImportError:  # pragma: no cover - psycopg is a requirement; SQLite-only installs skip
    psycopg = None
    Loader = object

_C_LOADER = None
if psycopg is not None and psycopg.pq.__impl__ == "binary":
    from psycopg_binary._psycopg import TimestamptzLoader as _C_LOADER
elif psycopg is not None and psycopg.pq.__impl__ == "c":  # pragma: no cover - a local build
    from psycopg_c._psycopg import TimestamptzLoader as _C_LOADER


class UTCTimestamptzLoader(Loader):
    """psycopg's C `timestamptz` loader behind the attribute Django reads on the registered
    loader (`timezone`, compared with the connection's in DatabaseWrapper.create_cursor)."""

    timezone = datetime.UTC

    def __init__(self, oid, context=None):
        super().__init__(oid, context)
        # The C loader reads the connection's TimeZone when it is made, as each cursor's are.
        self._loader = _C_LOADER(oid, context)
        # psycopg calls the bound `load` it finds on the instance: the C method, no Python frame.
        self.load = self._loader.load

    def load(self, data):
        return self._loader.load(data)


def use_c_loader(sender=None, connection=None, **kwargs) -> None:
    """A `connection_created` receiver: the connection's `timestamptz` values are read by the C
    loader where it gives what Django's would (above)."""
    if (
        _C_LOADER is None
        or connection.vendor != "postgresql"
        or connection.timezone is not datetime.UTC
        or connection.timezone_name != "UTC"
    ):
        return
    adapters = connection.connection.adapters
    oid = adapters.types["timestamptz"].oid
    # A pooled connection is handed out again and again: registered once.
    if adapters.get_loader(oid, Format.TEXT) is not UTCTimestamptzLoader:
        adapters.register_loader(oid, UTCTimestamptzLoader)
