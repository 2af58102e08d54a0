"""notifications 0003: the relay's partial index on due deliveries becomes (tenant,
next_attempt_at). The new one is built before the old one goes, and on PostgreSQL neither
statement blocks writes to the table (CREATE / DROP INDEX CONCURRENTLY): every audited change
writes deliveries."""

import pytest
from django.db import connection

from tests.conftest import migrate_to, migrated_back_to

BEFORE = ("notifications", "0002_tenant_column_indexed_once")
AFTER = ("notifications", "0003_delivery_due_index_by_organization")
TABLE = "notifications_webhookdelivery"


def _due_indexes() -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TABLE)
    return {name: info["columns"] for name, info in constraints.items() if "delivery_due" in name}


@pytest.fixture
def before_the_change():
    with migrated_back_to(BEFORE):
        yield


@pytest.mark.django_db(transaction=True)
def test_the_index_by_organization_replaces_the_old_one_both_ways(before_the_change):
    assert _due_indexes() == {"webhook_delivery_due": ["next_attempt_at"]}

    forwards = [sql for sql in migrate_to(AFTER) if "INDEX" in sql]

    assert _due_indexes() == {"webhook_delivery_due_tenant": ["tenant_id", "next_attempt_at"]}
    assert [sql.split()[0] for sql in forwards] == ["CREATE", "DROP"]  # the new one first
    if connection.vendor == "postgresql":
        assert all("CONCURRENTLY" in sql for sql in forwards)

    backwards = [sql for sql in migrate_to(BEFORE) if "INDEX" in sql]

    assert _due_indexes() == {"webhook_delivery_due": ["next_attempt_at"]}
    if connection.vendor == "postgresql":
        assert all("CONCURRENTLY" in sql for sql in backwards)
