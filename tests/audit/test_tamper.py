"""Tamper detection: each edit made behind the triggers' back is named at its first broken event.

Every test tampers through raw SQL with the audit triggers switched off inside the test's
transaction, as someone with direct database access could, then verifies the chain.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.db import DatabaseError, transaction

from audit.services import chain_verify
from audit.verification import HASH_MISMATCH
from tests.factories import TenantFactory

from .chain_helpers import (
    CHECKPOINTS_TABLE,
    canonical_hash,
    chain_of,
    forge_checkpoint,
    protections_off,
    recipe_document,
    recipe_hash,
    run_sql,
    sealed_chain,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def tenant():
    return TenantFactory()


@pytest.fixture
def chain(tenant):
    """Six sealed events of one tenant, in seq order."""
    return sealed_chain(tenant, 6)


def set_payload(event_id, payload: dict) -> None:
    run_sql(
        "UPDATE audit_auditevent SET payload = %s::jsonb WHERE id = %s",
        [json.dumps(payload), str(event_id)],
    )


def set_seq(event_id, seq: int) -> None:
    run_sql("UPDATE audit_auditevent SET seq = %s WHERE id = %s", [seq, str(event_id)])


def set_links(event_id, *, prev_hash: str, hash: str) -> None:
    run_sql(
        "UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s",
        [prev_hash, hash, str(event_id)],
    )


def verify(tenant):
    return chain_verify(tenant_id=getattr(tenant, "pk", None))


def test_untouched_chain_with_checkpoints_is_valid(tenant):
    sealed_chain(tenant, 3, checkpoint=True)
    events = sealed_chain(tenant, 3, checkpoint=True)

    result = verify(tenant)

    assert result.chain_valid
    assert result.broken_links == []
    assert result.verified_count == result.sealed_count == 6
    assert result.last_seq == 6
    assert result.chain_head == events[-1].hash
    assert result.checkpoints_checked == 2


def test_edited_payload_is_named_as_the_only_broken_event(tenant, chain):
    edited = chain[2]
    with protections_off():
        set_payload(edited.pk, {"n": 2, "amount": 1_000_000})

    result = verify(tenant)

    assert not result.chain_valid
    assert len(result.broken_links) == 1
    [link] = result.broken_links
    assert (link.event_id, link.seq, link.event_type) == (str(edited.pk), 3, edited.event_type)
    assert link.reason == HASH_MISMATCH
    assert link.stored_hash == edited.hash
    forged = recipe_document(edited, payload={"n": 2, "amount": 1_000_000})
    assert link.computed_hash == recipe_hash(edited.prev_hash, forged)
    assert link.timestamp == recipe_document(edited)["created_at"]
    assert result.verified_count == 5


def test_edited_platform_event_is_named(tenant):
    events = sealed_chain(None, 4, event_type="platform.thing")
    sealed_chain(tenant, 2)
    with protections_off():
        set_payload(events[1].pk, {"forged": True})

    result = verify(None)

    assert [(link.event_id, link.seq) for link in result.broken_links] == [(str(events[1].pk), 2)]
    assert verify(tenant).chain_valid  # the other chains are unaffected


def test_event_deleted_from_the_middle_is_named_at_the_next_event(tenant, chain):
    with protections_off():
        run_sql("DELETE FROM audit_auditevent WHERE id = %s", [str(chain[2].pk)])

    result = verify(tenant)

    assert not result.chain_valid
    assert len(result.broken_links) == 1
    [link] = result.broken_links
    assert (link.event_id, link.seq) == (str(chain[3].pk), 4)
    assert "Sequence gap: expected seq 3, found 4" in link.reason
    assert "Link broken" in link.reason
    assert result.verified_count == 4


def test_first_event_deleted_is_named_at_the_new_first_event(tenant, chain):
    with protections_off():
        run_sql("DELETE FROM audit_auditevent WHERE id = %s", [str(chain[0].pk)])

    [link] = verify(tenant).broken_links

    assert (link.event_id, link.seq) == (str(chain[1].pk), 2)
    assert "Sequence gap: expected seq 1, found 2" in link.reason


def test_swapped_events_are_named_from_the_first_swapped_position(tenant, chain):
    third, fourth = chain[2], chain[3]
    with protections_off():
        set_seq(third.pk, -1)  # step aside: (tenant, seq) is unique
        set_seq(fourth.pk, 3)
        set_seq(third.pk, 4)

    result = verify(tenant)

    links = result.broken_links
    assert (links[0].event_id, links[0].seq) == (str(fourth.pk), 3)
    assert "Link broken" in links[0].reason
    assert HASH_MISMATCH in links[0].reason
    assert [(link.event_id, link.seq) for link in links] == [
        (str(fourth.pk), 3),
        (str(third.pk), 4),
        (str(chain[4].pk), 5),  # its prev_hash is the old fourth's hash, not the new fourth's
    ]


def test_event_inserted_in_the_middle_is_named_where_the_link_breaks(tenant, chain):
    second, third = chain[1], chain[2]
    forged_id = uuid.uuid4()
    created_at = second.created_at + (third.created_at - second.created_at) / 2
    forged = recipe_document(
        second,
        id=str(forged_id),
        seq=3,
        event_type="billing.refund.issued",
        payload={"amount": 5000},
        created_at=created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    )
    forged_hash = recipe_hash(second.hash, forged)  # a plausible hash, linked to seq 2
    with protections_off():
        # Make room at seq 3: move the tail aside, then back one further.
        run_sql(
            "UPDATE audit_auditevent SET seq = -seq WHERE tenant_id = %s AND seq >= 3",
            [str(tenant.pk)],
        )
        run_sql(
            "UPDATE audit_auditevent SET seq = 1 - seq WHERE tenant_id = %s AND seq < 0",
            [str(tenant.pk)],
        )
        run_sql(
            "INSERT INTO audit_auditevent (id, tenant_id, event_type, actor_type, actor_label, "
            "payload, request_id, ip_address, user_agent, created_at, seq, prev_hash, hash) "
            "VALUES (%s, %s, %s, 'system', '', %s::jsonb, '', NULL, '', %s, 3, %s, %s)",
            [
                str(forged_id),
                str(tenant.pk),
                "billing.refund.issued",
                json.dumps({"amount": 5000}),
                created_at,
                second.hash,
                forged_hash,
            ],
        )

    result = verify(tenant)

    assert [event.seq for event in chain_of(tenant)] == list(range(1, 8))
    first = result.broken_links[0]
    # The forged row links correctly to seq 2; the original third event no longer links to it.
    assert (first.event_id, first.seq) == (str(third.pk), 4)
    assert "Link broken" in first.reason
    assert str(forged_id) not in {link.event_id for link in result.broken_links}
    assert result.last_seq == 7


def test_truncated_tail_is_named_after_the_last_remaining_event(tenant):
    events = sealed_chain(tenant, 6, checkpoint=True)
    with protections_off():
        run_sql("DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq > 4", [str(tenant.pk)])

    result = verify(tenant)

    assert not result.chain_valid
    [link] = result.broken_links
    assert link.seq == 5
    assert link.event_id is None
    assert link.reason.startswith("Truncated")
    assert "covers seq 6" in link.reason
    assert "ends at seq 4" in link.reason
    assert link.computed_hash == events[3].hash
    assert link.stored_hash == events[5].hash
    assert result.verified_count == 4
    assert result.last_seq == 4


def test_whole_chain_deleted_after_a_checkpoint_is_reported_truncated(tenant):
    sealed_chain(tenant, 3, checkpoint=True)
    with protections_off():
        run_sql("DELETE FROM audit_auditevent WHERE tenant_id = %s", [str(tenant.pk)])

    [link] = verify(tenant).broken_links

    assert link.seq == 1
    assert link.reason.startswith("Truncated")


def test_without_a_checkpoint_a_truncated_tail_goes_unnoticed(tenant, chain):
    """Why checkpoints exist: the remaining prefix is a valid chain on its own."""
    with protections_off():
        run_sql("DELETE FROM audit_auditevent WHERE tenant_id = %s AND seq > 4", [str(tenant.pk)])

    result = verify(tenant)

    assert result.chain_valid
    assert result.last_seq == 4


def rewrite_suffix(events, start: int, payload: dict) -> list[str]:
    """Edit the payload at seq `start`, then re-hash it and every later event consistently with
    audit.canonical, as a forger who knows the recipe would. Returns the new hashes."""
    prev_hash = events[start - 2].hash
    new_hashes = []
    set_payload(events[start - 1].pk, payload)
    events[start - 1].payload = payload
    for event in events[start - 1 :]:
        event_hash = canonical_hash(event, prev_hash=prev_hash)
        set_links(event.pk, prev_hash=prev_hash, hash=event_hash)
        new_hashes.append(event_hash)
        prev_hash = event_hash
    return new_hashes


def test_consistently_rehashed_suffix_is_named_from_its_first_rewritten_event(tenant):
    sealed_chain(tenant, 3, checkpoint=True)  # signed head at seq 3
    events = sealed_chain(tenant, 3, checkpoint=True)  # signed head at seq 6
    with protections_off():
        new_hashes = rewrite_suffix(events, 4, {"n": 0, "forged": True})

    result = verify(tenant)

    # Every event recomputes: only the signed checkpoint at seq 6 gives the rewrite away.
    assert result.verified_count == 6
    assert not result.chain_valid
    [link] = result.broken_links
    assert (link.event_id, link.seq) == (str(events[3].pk), 4)
    assert link.reason.startswith("Rewritten")
    assert "checkpoint at seq 6" in link.reason
    assert "last matching checkpoint at seq 3" in link.reason
    assert link.computed_hash == new_hashes[-1]
    assert link.stored_hash == events[5].hash


def test_rehashed_suffix_with_a_replaced_checkpoint_reports_the_forged_signature(tenant):
    sealed_chain(tenant, 3, checkpoint=True)
    events = sealed_chain(tenant, 3, checkpoint=True)
    with protections_off("audit_auditevent", CHECKPOINTS_TABLE):
        new_hashes = rewrite_suffix(events, 4, {"forged": True})
        run_sql("DELETE FROM audit_auditcheckpoint WHERE tenant_id = %s AND seq = 6",
                [str(tenant.pk)])  # fmt: skip
    forge_checkpoint(tenant, seq=6, head_hash=new_hashes[-1])

    result = verify(tenant)

    assert not result.chain_valid
    [link] = result.broken_links
    assert link.reason == "Checkpoint signature invalid (seq 6)"
    assert (link.event_id, link.seq) == (None, 6)
    assert link.stored_hash == new_hashes[-1]


def test_checkpoint_signed_with_another_key_is_reported(tenant, chain):
    forge_checkpoint(tenant, seq=6, head_hash=chain[-1].hash)

    result = verify(tenant)

    assert not result.chain_valid
    [link] = result.broken_links
    assert (link.event_id, link.seq) == (None, 6)
    assert link.reason == "Checkpoint signature invalid (seq 6)"
    assert result.verified_count == 6


def test_checkpoint_whose_signed_fields_were_edited_is_reported(tenant):
    events = sealed_chain(tenant, 4, checkpoint=True)
    with protections_off(CHECKPOINTS_TABLE):
        run_sql(
            "UPDATE audit_auditcheckpoint SET created_at = created_at - interval '1 day' "
            "WHERE tenant_id = %s",
            [str(tenant.pk)],
        )

    [link] = verify(tenant).broken_links

    assert link.reason == "Checkpoint signature invalid (seq 4)"
    assert link.stored_hash == events[-1].hash


def test_protections_are_back_on_after_tampering(tenant, chain):
    with protections_off():
        set_payload(chain[0].pk, {"edited": True})

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        set_payload(chain[1].pk, {"edited": True})

    assert [link.event_id for link in verify(tenant).broken_links] == [str(chain[0].pk)]


def test_broken_links_are_listed_in_seq_order(tenant, chain):
    with protections_off():
        set_payload(chain[4].pk, {"edited": 5})
        set_payload(chain[1].pk, {"edited": 2})
    forge_checkpoint(tenant, seq=3, head_hash=chain[2].hash)

    result = verify(tenant)

    assert [(link.seq, link.event_id) for link in result.broken_links] == [
        (2, str(chain[1].pk)),
        (3, None),
        (5, str(chain[4].pk)),
    ]


def test_created_at_edited_by_a_microsecond_is_detected(tenant, chain):
    with protections_off():
        run_sql(
            "UPDATE audit_auditevent SET created_at = %s WHERE id = %s",
            [chain[3].created_at + timedelta(microseconds=1), str(chain[3].pk)],
        )

    [link] = verify(tenant).broken_links

    assert (link.event_id, link.seq, link.reason) == (str(chain[3].pk), 4, HASH_MISMATCH)
