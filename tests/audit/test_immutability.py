"""Append-only on PostgreSQL: the triggers refuse every change but sealing; chain_purge is the
one way to delete a chain, and it leaves a record of what it deleted."""

import json
from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection, transaction

from audit import tasks
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import chain_purge, chain_verify
from tenants.models import Tenant
from tests.factories import AuditEventFactory, TenantFactory, UserFactory

from .chain_helpers import make_events, run_sql, sealed_chain

postgres = pytest.mark.postgres


@pytest.fixture
def tenant():
    return TenantFactory()


@pytest.fixture
def sealed(tenant):
    """A sealed event (seq 3 of its chain) and its checkpoint."""
    return sealed_chain(tenant, 3, checkpoint=True)[-1]


@pytest.fixture
def unsealed(tenant):
    return AuditEventFactory(tenant=tenant, payload={"state": "pending"})


@contextmanager
def refused(operation: str):
    """The statement in the block is refused by a trigger; the test transaction survives."""
    with pytest.raises(DatabaseError, match=f"append-only: {operation}"), transaction.atomic():
        yield


def stored(event) -> tuple:
    return AuditEvent.objects.filter(pk=event.pk).values_list("payload", "seq", "hash").get()


# Events ----------------------------------------------------------------------------------------


@postgres
@pytest.mark.django_db
def test_update_of_a_sealed_events_payload_is_refused(sealed):
    before = stored(sealed)

    with refused("UPDATE"):
        run_sql(
            "UPDATE audit_auditevent SET payload = %s::jsonb WHERE id = %s",
            [json.dumps({"forged": True}), str(sealed.pk)],
        )

    assert stored(sealed) == before


@postgres
@pytest.mark.django_db
def test_saving_a_sealed_event_through_the_orm_is_refused(sealed):
    sealed.event_type = "forged.type"

    with refused("UPDATE"):
        sealed.save()

    assert AuditEvent.objects.get(pk=sealed.pk).event_type == "test.happened"


@postgres
@pytest.mark.django_db
def test_update_of_an_unsealed_events_payload_is_refused(unsealed):
    with refused("UPDATE"):
        AuditEvent.objects.filter(pk=unsealed.pk).update(payload={"state": "forged"})

    assert AuditEvent.objects.get(pk=unsealed.pk).payload == {"state": "pending"}


@postgres
@pytest.mark.django_db
@pytest.mark.parametrize(
    "column", ["seq = seq + 10", "hash = repeat('0', 64)", "prev_hash = 'x'", "seq = NULL"]
)
def test_resealing_or_unsealing_a_sealed_event_is_refused(sealed, column):
    before = stored(sealed)

    with refused("UPDATE"):
        # The SET clause is one of the test's own constants; the id is a parameter.
        run_sql(f"UPDATE audit_auditevent SET {column} WHERE id = %s", [str(sealed.pk)])  # noqa: S608

    assert stored(sealed) == before


@postgres
@pytest.mark.django_db
def test_sealing_an_unsealed_event_is_allowed(unsealed):
    run_sql(
        "UPDATE audit_auditevent SET seq = 1, prev_hash = '', hash = %s WHERE id = %s",
        ["c" * 64, str(unsealed.pk)],
    )

    assert stored(unsealed) == ({"state": "pending"}, 1, "c" * 64)


@postgres
@pytest.mark.django_db
@pytest.mark.parametrize(
    "also",
    [
        'payload = \'{"state": "forged"}\'::jsonb',
        "event_type = 'forged.type'",
        "created_at = created_at - interval '1 hour'",
        "actor_label = 'someone else'",
        "tenant_id = NULL",
    ],
)
def test_sealing_that_also_changes_another_column_is_refused(unsealed, also):
    with refused("UPDATE"):
        run_sql(
            f"UPDATE audit_auditevent SET seq = 1, prev_hash = '', hash = %s, {also} "  # noqa: S608
            "WHERE id = %s",
            ["c" * 64, str(unsealed.pk)],
        )

    assert stored(unsealed) == ({"state": "pending"}, None, "")


@postgres
@pytest.mark.django_db
def test_the_sealing_service_passes_the_trigger(tenant):
    make_events(tenant, 4)

    events = sealed_chain(tenant, 0)

    assert [event.seq for event in events] == [1, 2, 3, 4]
    assert chain_verify(tenant_id=tenant.pk).chain_valid


@postgres
@pytest.mark.django_db
@pytest.mark.parametrize("which", ["sealed", "unsealed"])
def test_delete_of_any_event_is_refused(request, which):
    event = request.getfixturevalue(which)

    with refused("DELETE"):
        run_sql("DELETE FROM audit_auditevent WHERE id = %s", [str(event.pk)])
    with refused("DELETE"):
        AuditEvent.objects.filter(pk=event.pk).delete()

    assert AuditEvent.objects.filter(pk=event.pk).exists()


@postgres
@pytest.mark.django_db
@pytest.mark.parametrize("table", ["audit_auditevent", "audit_auditcheckpoint"])
def test_truncate_is_refused_without_the_test_runners_setting(sealed, table):
    with transaction.atomic():
        run_sql("SET LOCAL audit.allow_truncate = 'off'")
        # Fire the deferred foreign-key checks: PostgreSQL refuses to TRUNCATE a table with
        # pending trigger events before the audit trigger is even asked.
        run_sql("SET CONSTRAINTS ALL IMMEDIATE")
        with refused("TRUNCATE"):
            run_sql(f"TRUNCATE {table}")
        transaction.set_rollback(True)  # and restore the test runner's setting
    run_sql("SET CONSTRAINTS ALL DEFERRED")

    assert AuditEvent.objects.filter(pk=sealed.pk).exists()
    assert AuditCheckpoint.objects.filter(tenant=sealed.tenant).exists()


# Checkpoints -----------------------------------------------------------------------------------


@postgres
@pytest.mark.django_db
@pytest.mark.parametrize(
    "assignment", ["head_hash = repeat('0', 64)", "seq = seq + 1", "signature = 'forged'"]
)
def test_update_of_a_checkpoint_is_refused(sealed, assignment):
    checkpoint = AuditCheckpoint.objects.get(tenant=sealed.tenant)

    with refused("UPDATE"):
        run_sql(
            f"UPDATE audit_auditcheckpoint SET {assignment} WHERE id = %s",  # noqa: S608
            [str(checkpoint.pk)],
        )

    assert AuditCheckpoint.objects.get(pk=checkpoint.pk).head_hash == sealed.hash


@postgres
@pytest.mark.django_db
def test_delete_of_a_checkpoint_is_refused(sealed):
    checkpoint = AuditCheckpoint.objects.get(tenant=sealed.tenant)

    with refused("DELETE"):
        run_sql("DELETE FROM audit_auditcheckpoint WHERE id = %s", [str(checkpoint.pk)])
    with refused("DELETE"):
        checkpoint.delete()

    assert AuditCheckpoint.objects.filter(pk=checkpoint.pk).exists()


# Purging ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_chain_purge_deletes_the_chain_and_records_its_final_head(tenant):
    other = TenantFactory()
    head = sealed_chain(tenant, 4, checkpoint=True)[-1]
    AuditEventFactory(tenant=tenant)  # unsealed: purged too
    kept = sealed_chain(other, 2, checkpoint=True)
    staff = UserFactory(is_staff=True)

    with transaction.atomic():
        deleted = chain_purge(tenant=tenant, actor=staff)

    assert deleted == 5
    assert not AuditEvent.objects.filter(tenant=tenant).exists()
    assert not AuditCheckpoint.objects.filter(tenant=tenant).exists()
    purged = AuditEvent.objects.get(event_type="audit.chain.purged")
    assert purged.tenant_id is None
    assert purged.actor_id == staff.pk
    assert purged.actor_label == staff.email
    assert purged.payload == {
        "tenant_id": str(tenant.pk),
        "tenant_slug": tenant.slug,
        "events_deleted": 5,
        "last_seq": 4,
        "head_hash": head.hash,
    }
    assert AuditEvent.objects.filter(tenant=other).count() == len(kept)
    assert chain_verify(tenant_id=other.pk).chain_valid
    assert AuditCheckpoint.objects.filter(tenant=other).count() == 1


@pytest.mark.django_db
def test_a_purged_tenant_can_then_be_deleted(tenant):
    sealed_chain(tenant, 2, checkpoint=True)

    with transaction.atomic():
        chain_purge(tenant=tenant, actor=None)
        tenant.delete()

    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert AuditEvent.objects.filter(event_type="audit.chain.purged").count() == 1


@postgres
@pytest.mark.django_db
def test_deleting_a_tenant_with_audit_events_without_chain_purge_is_refused(tenant, sealed):
    with refused("DELETE"):
        tenant.delete()

    assert Tenant.objects.filter(pk=tenant.pk).exists()
    assert AuditEvent.objects.filter(tenant=tenant).count() == 3


@postgres
@pytest.mark.django_db
def test_chain_purge_opens_delete_for_its_own_chain_only(tenant):
    """The purge's door must close when chain_purge returns: a service that purges one
    tenant's chain and then (by mistake) deletes another's in the same transaction must be
    refused, or the second chain disappears without an audit.chain.purged record."""
    sealed_chain(tenant, 2)
    other_events = sealed_chain(TenantFactory(), 2)

    with transaction.atomic():
        chain_purge(tenant=tenant, actor=None)
        with refused("DELETE"):
            run_sql("DELETE FROM audit_auditevent WHERE id = %s", [str(other_events[0].pk)])

    assert AuditEvent.objects.filter(pk=other_events[0].pk).exists()


@postgres
def test_chain_purges_door_is_closed_for_the_next_transaction(transactional_db, monkeypatch):
    # No broker message.
    monkeypatch.setattr(tasks.seal_audit_chains, "apply_async", lambda **kwargs: None)
    tenant, other = TenantFactory(), TenantFactory()
    with transaction.atomic():
        for owner in (tenant, other):
            make_events(owner, 2)
    with transaction.atomic():
        chain_purge(tenant=tenant, actor=None)

    with refused("DELETE"):
        AuditEvent.objects.filter(tenant=other).delete()

    assert AuditEvent.objects.filter(tenant=other).count() == 2
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('audit.allow_purge', true)")
        assert cursor.fetchone()[0] in (None, "", "off")
