"""Ops commands (verify_audit_chain, seal_audit_chains, issue_audit_checkpoints), the Celery
tasks and beat entries behind them, and the checkpoints they sign."""

import base64
from datetime import timedelta
from io import StringIO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit import signing, tasks
from audit.canonical import checkpoint_message, format_timestamp
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import chain_checkpoints, checkpoint_issue, checkpoints_issue_all
from audit.verification import HASH_MISMATCH
from tests.conftest import rows_read
from tests.factories import TenantFactory

from .chain_helpers import chain_of, edit_payload, make_events, sealed_chain

pytestmark = pytest.mark.django_db


def run(command: str, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a management command."""
    out, err = StringIO(), StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def tenant():
    return TenantFactory(slug="acme")


# verify_audit_chain ----------------------------------------------------------------------------


def test_verify_valid_tenant_chain_exits_zero(tenant):
    events = sealed_chain(tenant, 3, checkpoint=True)
    AuditEvent.objects.create(tenant=tenant, event_type="x.y", created_at=events[-1].created_at)

    code, out, err = run("verify_audit_chain", "--tenant", "acme")

    assert code == 0
    assert out.splitlines() == [
        f"acme: valid, 3/3 sealed events verified, 1 unsealed, 1 checkpoints, "
        f"head {events[-1].hash}",
        "All chains valid.",
    ]
    assert err == ""


def test_verify_finds_the_tenant_slug_case_insensitively(tenant):
    sealed_chain(tenant, 1)

    code, out, _ = run("verify_audit_chain", "--tenant", "ACME")

    assert code == 0
    assert out.startswith("acme: valid")


def test_verify_platform_chain(tenant):
    events = sealed_chain(None, 2, event_type="platform.thing")
    sealed_chain(tenant, 1)

    code, out, _ = run("verify_audit_chain", "--platform")

    assert code == 0
    assert out.splitlines()[0] == (
        f"platform: valid, 2/2 sealed events verified, 0 unsealed, 0 checkpoints, "
        f"head {events[-1].hash}"
    )


def test_verify_broken_chain_exits_one_and_prints_the_broken_event(tenant):
    events = sealed_chain(tenant, 3)
    edit_payload(events[1], {"forged": True})

    code, out, err = run("verify_audit_chain", "--tenant", "acme")

    assert code == 1
    assert out.splitlines() == [
        f"acme: BROKEN, 2/3 sealed events verified, 0 unsealed, 0 checkpoints, "
        f"head {events[-1].hash}",
        f"  seq 2 event {events[1].pk} (test.happened): {HASH_MISMATCH}",
    ]
    assert "1 chain(s) broken." in err


def test_verify_all_checks_every_chain_and_fails_on_any_broken_one(tenant):
    broken = sealed_chain(tenant, 2)
    sealed_chain(TenantFactory(slug="beta"), 2)
    sealed_chain(None, 1)
    edit_payload(broken[0], {"forged": True})

    code, out, err = run("verify_audit_chain", "--all")

    assert code == 1
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines if not line.startswith(" ")] == [
        "acme",
        "beta",
        "platform",
    ]
    assert lines[0].startswith("acme: BROKEN")
    assert lines[1] == f"  seq 1 event {broken[0].pk} (test.happened): {HASH_MISMATCH}"
    assert lines[2].startswith("beta: valid")
    assert lines[3].startswith("platform: valid")
    assert "1 chain(s) broken." in err


def test_verify_all_exits_zero_when_every_chain_is_valid(tenant):
    sealed_chain(tenant, 2)
    sealed_chain(None, 1)

    code, out, _ = run("verify_audit_chain", "--all")

    assert code == 0
    assert out.splitlines()[-1] == "All chains valid."


def test_verify_unknown_tenant_is_a_command_error():
    with pytest.raises(CommandError, match="No tenant with slug 'nobody'"):
        call_command("verify_audit_chain", "--tenant", "nobody", stdout=StringIO())


@pytest.mark.parametrize("command", ["verify_audit_chain", "seal_audit_chains",
                                     "issue_audit_checkpoints"])  # fmt: skip
def test_commands_need_exactly_one_chain_option(command):
    with pytest.raises(CommandError):
        call_command(command, stdout=StringIO())
    with pytest.raises(CommandError):
        call_command(command, "--platform", "--all", stdout=StringIO())


# seal_audit_chains / issue_audit_checkpoints ------------------------------------------------


def test_seal_command_seals_only_the_named_tenant(tenant):
    other = TenantFactory()
    make_events(tenant, 3)
    make_events(other, 2)

    code, out, _ = run("seal_audit_chains", "--tenant", "acme")

    assert code == 0
    assert out == "acme: sealed 3 event(s)\n"
    assert [event.seq for event in chain_of(tenant)] == [1, 2, 3]
    assert AuditEvent.objects.filter(tenant=other, seq__isnull=True).count() == 2


def test_seal_command_all_seals_every_chain(tenant):
    make_events(tenant, 2)
    make_events(None, 1)

    code, out, _ = run("seal_audit_chains", "--all")

    assert code == 0
    assert "acme: sealed 2 event(s)" in out.splitlines()
    assert "platform: sealed 1 event(s)" in out.splitlines()
    assert not AuditEvent.objects.filter(seq__isnull=True).exists()


def test_checkpoint_command_signs_the_head_once(tenant):
    events = sealed_chain(tenant, 3)

    first = run("issue_audit_checkpoints", "--tenant", "acme")
    again = run("issue_audit_checkpoints", "--tenant", "acme")

    assert first == (0, "acme: checkpoint at seq 3\n", "")
    assert again == (0, "acme: no new sealed events since the last checkpoint\n", "")
    [checkpoint] = AuditCheckpoint.objects.filter(tenant=tenant)
    assert (checkpoint.seq, checkpoint.head_hash) == (3, events[-1].hash)


# Tasks, checkpoints and beat -------------------------------------------------------------------


def test_seal_task_seals_every_chain(tenant):
    other = TenantFactory()
    make_events(tenant, 2)
    make_events(other, 3)
    make_events(None, 1)

    assert tasks.seal_audit_chains() == 6

    assert not AuditEvent.objects.filter(seq__isnull=True).exists()
    assert [len(chain_of(t)) for t in (tenant.pk, other.pk, None)] == [2, 3, 1]
    assert tasks.seal_audit_chains() == 0


def test_checkpoint_task_checkpoints_every_sealed_chain_whose_head_moved(tenant):
    other = TenantFactory()
    heads = {t: sealed_chain(t, 2)[-1] for t in (tenant, other)}
    platform_head = sealed_chain(None, 1)[-1]
    make_events(TenantFactory(), 2)  # unsealed only: nothing to sign

    assert tasks.issue_audit_checkpoints() == 3

    signed = {cp.tenant_id: (cp.seq, cp.head_hash) for cp in AuditCheckpoint.objects.all()}
    assert signed == {
        tenant.pk: (2, heads[tenant].hash),
        other.pk: (2, heads[other].hash),
        None: (platform_head.seq, platform_head.hash),
    }
    assert tasks.issue_audit_checkpoints() == 0

    sealed_chain(tenant, 1)
    assert tasks.issue_audit_checkpoints() == 1
    assert AuditCheckpoint.objects.filter(tenant=tenant).order_by("seq").last().seq == 3


def test_checkpoint_issue_is_a_no_op_on_an_empty_or_unmoved_chain(tenant):
    make_events(tenant, 2)  # recorded but not sealed

    assert checkpoint_issue(tenant_id=tenant.pk) is None
    sealed_chain(tenant, 0)
    assert checkpoint_issue(tenant_id=tenant.pk).seq == 2
    assert checkpoint_issue(tenant_id=tenant.pk) is None
    make_events(tenant, 1)  # the head has not moved until it is sealed
    assert checkpoint_issue(tenant_id=tenant.pk) is None
    assert AuditCheckpoint.objects.filter(tenant=tenant).count() == 1


def test_checkpoints_verify_with_the_published_public_key(tenant):
    sealed_chain(tenant, 2, checkpoint=True)
    sealed_chain(tenant, 2, checkpoint=True)
    sealed_chain(None, 1, checkpoint=True)

    for tenant_id, chain in ((tenant.pk, str(tenant.pk)), (None, "platform")):
        for checkpoint in chain_checkpoints(tenant_id):
            assert checkpoint.chain == chain
            assert checkpoint.signature_is_valid(signing.public_key())
            # And independently of audit.verification: plain Ed25519 over the signed message.
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(signing.public_key()))
            key.verify(
                base64.b64decode(checkpoint.signature),
                checkpoint_message(
                    chain=chain,
                    seq=checkpoint.seq,
                    head_hash=checkpoint.head_hash,
                    created_at=checkpoint.created_at,
                ),
            )
    assert [cp.seq for cp in chain_checkpoints(tenant.pk)] == [2, 4]
    assert {cp.key_id for cp in AuditCheckpoint.objects.all()} == {signing.key_id()}


def test_checkpoint_records_the_time_it_was_signed(tenant):
    sealed_chain(tenant, 1)

    checkpoint = checkpoint_issue(tenant_id=tenant.pk)

    [listed] = chain_checkpoints(tenant.pk)
    assert listed.created_at == format_timestamp(checkpoint.created_at)
    assert listed.signature == checkpoint.signature


def test_checkpoints_issue_all_counts_the_checkpoints_it_signed(tenant):
    sealed_chain(tenant, 1)
    sealed_chain(None, 1)

    assert checkpoints_issue_all() == 2
    assert checkpoints_issue_all() == 0


@pytest.mark.postgres
def test_checkpoints_issue_all_reads_a_few_events_per_chain_not_every_event():
    """The beat job finds the chains by one index descent each: it read every sealed event
    (a DISTINCT over the whole log, each run, growing with every event ever recorded)."""
    tenants = [TenantFactory() for _ in range(3)]
    for chain in (*tenants, None):
        sealed_chain(chain, 40)
    with CaptureQueriesContext(connection) as statements:
        assert checkpoints_issue_all() == 4

    reads = [
        query["sql"]
        for query in statements.captured_queries
        if query["sql"].startswith("SELECT") and AuditEvent._meta.db_table in query["sql"]
    ]
    read = [rows_read(sql, AuditEvent._meta.db_table) for sql in reads]
    assert read and max(read) <= 1, read  # 160 events, 4 chains: one row per statement
    assert len(reads) <= 3 * 4  # finding a chain, its head; never the whole log


def test_beat_runs_sealing_every_minute_and_checkpoints_periodically():
    schedule = settings.CELERY_BEAT_SCHEDULE
    entries = {entry["task"]: entry["schedule"] for entry in schedule.values()}

    assert entries["audit.tasks.seal_audit_chains"] == timedelta(minutes=1)
    assert "audit.tasks.issue_audit_checkpoints" in entries
    assert tasks.seal_audit_chains.name == "audit.tasks.seal_audit_chains"
    assert tasks.issue_audit_checkpoints.name == "audit.tasks.issue_audit_checkpoints"
