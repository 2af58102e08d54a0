"""accounts 0004 moves AuthToken's primary key from the digest to a UUID `id`: tokens issued
before it keep working, each with its own id, and the migration can be reversed.

Runs on PostgreSQL and on SQLite (the migration alters the table differently on each). Only the
`accounts` app is migrated, back to 0003 and forwards again: once, by one test, since the round
trip (every app depending on accounts' later migrations goes with it) is some twenty seconds."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import AuthToken, hash_secret
from tests.conftest import token_for
from tests.factories import UserFactory

# Schema changes cannot run inside the test's transaction on SQLite; the test commits, and the
# tables are emptied afterwards.
pytestmark = [pytest.mark.smoke, pytest.mark.django_db(transaction=True)]

BEFORE = ("accounts", "0003_text_rules")
AFTER = ("accounts", "0004_authtoken_uuid_pk")


def migrate(target: tuple[str, str]):
    """Migrate the accounts app to `target`; returns the models as of that migration."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


@pytest.fixture
def accounts_at_0003():
    """The accounts app migrated back before the change (and the apps depending on its later
    migrations with it); every app forwards to its latest afterwards, whatever the test did."""
    old_apps = migrate(BEFORE)
    yield old_apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.fixture
def token_before_migration():
    """A token issued through the service, before the accounts app is migrated back."""
    user = UserFactory()
    return user, token_for(user)


def test_tokens_issued_before_keep_working_with_their_own_uuid_which_is_the_key(
    token_before_migration, accounts_at_0003, api_client
):
    user, raw = token_before_migration
    OldAuthToken = accounts_at_0003.get_model("accounts", "AuthToken")
    assert OldAuthToken._meta.pk.name == "digest"
    # A second token written as the old code wrote it: no id column exists.
    other_digest = hash_secret("written-before-the-uuid-key")
    OldAuthToken.objects.create(
        digest=other_digest, user_id=user.pk, expires_at=timezone.now() + timedelta(hours=1)
    )
    assert OldAuthToken.objects.count() == 2

    migrate(AFTER)

    token = AuthToken.objects.get(digest=hash_secret(raw))
    other = AuthToken.objects.get(digest=other_digest)
    assert isinstance(token.pk, uuid.UUID)
    assert isinstance(other.pk, uuid.UUID)
    assert token.pk != other.pk
    assert token.user_id == other.user_id == user.pk
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    response = api_client.get("/api/v1/auth/me")
    assert response.status_code == 200
    assert response.json()["user"]["email"] == user.email

    # The table's own constraints: the id is the primary key, the digest stays unique.
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, AuthToken._meta.db_table)
    primary_keys = [c["columns"] for c in constraints.values() if c["primary_key"]]
    unique = [c["columns"] for c in constraints.values() if c["unique"] and not c["primary_key"]]
    assert primary_keys == [["id"]]
    assert ["digest"] in unique
