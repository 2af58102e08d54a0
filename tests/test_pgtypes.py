"""config.pgtypes: on a UTC connection, `timestamptz` values are read by psycopg's C loader and
come out exactly as Django's own loader gives them."""

import datetime

import pytest
from django.db import DataError, connection, connections
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format

from config.pgtypes import UTCTimestamptzLoader, use_c_loader
from tenants.models import Tenant

from .conftest import without_connection_pool
from .factories import TenantFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

TIMESTAMPTZ = 1184

VALUES = [
    "2026-12-04 16:33:47.123456+00",
    "2026-12-04 16:33:47+00",
    "1970-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2024-02-29 12:00:00.5+05:30",
    "2026-03-29 01:30:00 Europe/Paris",
    "2026-10-25 02:30:00 Europe/Paris",
    "1900-06-30 23:59:59.000001-09:30",
]


def text_loader(adapters):
    return adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


def read(values, *, djangos_loader: bool):
    """`values` read back as timestamptz, by the connection's loader or by Django's."""
    with connection.cursor() as cursor:
        if djangos_loader:
            register_tzloader(connection.timezone, cursor.cursor)
        cursor.execute(
            "SELECT v::timestamptz FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n",
            [values],
        )
        return [row[0] for row in cursor.fetchall()]


def test_connections_read_timestamptz_with_the_c_loader():
    connection.ensure_connection()

    assert text_loader(connection.connection.adapters) is UTCTimestamptzLoader
    with connection.cursor() as cursor:
        # Django registers a loader per cursor when the connection's disagrees: it does not.
        assert text_loader(cursor.cursor.adapters) is UTCTimestamptzLoader


def test_values_are_those_djangos_loader_gives():
    ours = read(VALUES, djangos_loader=False)
    djangos = read(VALUES, djangos_loader=True)

    assert ours == djangos
    assert [value.isoformat() for value in ours] == [value.isoformat() for value in djangos]
    assert all(value.tzinfo is datetime.UTC for value in ours + djangos)
    assert ours[0] == datetime.datetime(2026, 12, 4, 16, 33, 47, 123456, tzinfo=datetime.UTC)
    assert ours[5] == datetime.datetime(2024, 2, 29, 6, 30, 0, 500000, tzinfo=datetime.UTC)


@pytest.mark.parametrize("value", ["infinity", "-infinity"])
def test_out_of_range_values_are_refused_alike(value):
    for djangos_loader in (False, True):
        with pytest.raises(DataError):
            read([value], djangos_loader=djangos_loader)


def test_models_read_aware_utc_values():
    tenant = TenantFactory()
    read_back = Tenant.objects.get(pk=tenant.pk)

    assert read_back.created_at == tenant.created_at
    assert read_back.created_at.tzinfo is datetime.UTC


def test_registered_once_on_a_connection_handed_out_again():
    connection.ensure_connection()
    adapters = connection.connection.adapters
    loaders = adapters._loaders[Format.TEXT]

    use_c_loader(sender=type(connection), connection=connection)

    assert adapters._loaders[Format.TEXT] is loaders
    assert text_loader(adapters) is UTCTimestamptzLoader


@without_connection_pool  # the pool configures every connection of the alias
def test_a_database_time_zone_of_its_own_keeps_djangos_loader():
    other = connections.create_connection("default")
    other.settings_dict = {**other.settings_dict, "TIME_ZONE": "Europe/Paris"}
    try:
        other.ensure_connection()
        loader = text_loader(other.connection.adapters)

        assert loader is not UTCTimestamptzLoader
        assert loader.timezone.key == "Europe/Paris"
    finally:
        other.close()
