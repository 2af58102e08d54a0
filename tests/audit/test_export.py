"""GET /api/v1/audit/events/export: a streamed JSON Lines export, verifiable offline."""

import json
import os
import re
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from audit import signing
from audit.export import HASH_RECIPE
from audit.offline import EXPORT_FORMAT, ExportError, verify_export
from tenants.models import Role
from tests.conftest import assert_envelope
from tests.factories import AuditEventFactory, TenantFactory

from .chain_helpers import (
    foreign_key_pair,
    json_lines,
    recipe_document,
    recipe_hash,
    sealed_chain,
    streamed_text,
)

pytestmark = pytest.mark.django_db

EXPORT_URL = "/api/v1/audit/events/export"


@pytest.fixture
def chain(owner):
    """Six sealed events of the owner's tenant, with signed checkpoints at seq 3 and 6."""
    sealed_chain(owner.tenant, 3, checkpoint=True)
    return sealed_chain(owner.tenant, 3, checkpoint=True)


def export(client, **params) -> str:
    response = client.get(EXPORT_URL, params)
    assert response.status_code == 200, getattr(response, "content", b"")[:500]
    assert response["Content-Type"] == "application/x-ndjson"
    return streamed_text(response)


def export_file(tmp_path, text: str, name="export.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def verify_command(path, *args) -> tuple[int, dict]:
    """Run manage.py verify_audit_export; (exit code, its JSON report)."""
    out = StringIO()
    try:
        call_command("verify_audit_export", str(path), *args, stdout=out)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, json.loads(out.getvalue())


def edit_event_line(text: str, seq: int, **payload) -> str:
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        record = json.loads(line)
        if record["type"] == "event" and record["document"]["seq"] == seq:
            record["document"]["payload"] = payload
            lines[index] = json.dumps(record) + "\n"
    return "".join(lines)


# The file --------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [EXPORT_URL, EXPORT_URL + "/"])
def test_export_streams_header_events_and_checkpoints(owner, chain, url):
    AuditEventFactory(tenant=owner.tenant)  # unsealed: not exported
    sealed_chain(TenantFactory(), 2, checkpoint=True)  # another tenant's chain

    response = owner.client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"] == (
        f'attachment; filename="audit-{owner.tenant.pk}.jsonl"'
    )
    header, *events, cp3, cp6 = json_lines(streamed_text(response))
    assert header == {
        "type": "header",
        "format": EXPORT_FORMAT,
        "version": 1,
        "chain": str(owner.tenant.pk),
        "from_seq": 1,
        "to_seq": None,
        "genesis_prev_hash": "",
        "hash_recipe": HASH_RECIPE,
        "public_key": signing.public_key(),
        "signature_algorithm": "Ed25519",
    }
    assert events == [
        {
            "type": "event",
            "document": recipe_document(event),
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        }
        for event in chain
    ]
    for line in events:
        assert line["hash"] == recipe_hash(line["prev_hash"], line["document"])
    assert (cp3["type"], cp3["chain"], cp3["seq"], cp3["head_hash"]) == (
        "checkpoint",
        str(owner.tenant.pk),
        3,
        chain[2].hash,
    )
    assert (cp6["seq"], cp6["head_hash"]) == (6, chain[5].hash)
    assert set(cp6) == {"type", "chain", "seq", "head_hash", "created_at", "signature"}


def test_from_seq_and_to_seq_narrow_the_events_and_checkpoints(owner, chain):
    text = export(owner.client, from_seq=2, to_seq=4)

    header, *rest = json_lines(text)
    assert (header["from_seq"], header["to_seq"]) == (2, 4)
    assert [line["document"]["seq"] for line in rest if line["type"] == "event"] == [2, 3, 4]
    assert [line["seq"] for line in rest if line["type"] == "checkpoint"] == [3]
    result = verify_export(text.splitlines())
    assert result.chain_valid, result.broken_links
    assert (result.verified_count, result.last_seq, result.checkpoints_checked) == (3, 4, 1)


def test_from_seq_alone_exports_the_rest_of_the_chain(owner, chain):
    text = export(owner.client, from_seq=5)

    events = [line for line in json_lines(text) if line["type"] == "event"]
    assert [line["document"]["id"] for line in events] == [str(chain[4].pk), str(chain[5].pk)]
    assert verify_export(text.splitlines()).chain_valid


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from_seq": "abc"}, "from_seq"),
        ({"from_seq": "0"}, "from_seq"),
        ({"to_seq": "-1"}, "to_seq"),
        ({"to_seq": "2.5"}, "to_seq"),
        ({"from_seq": "4", "to_seq": "3"}, "to_seq"),
    ],
)
def test_invalid_range_is_a_validation_error(owner, chain, params, field):
    response = owner.client.get(EXPORT_URL, params)

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert field in error["details"], error


def test_export_needs_audit_read(make_caller):
    viewer = make_caller(Role.VIEWER)
    sealed_chain(viewer.tenant, 1)

    assert_envelope(viewer.client.get(EXPORT_URL), 403, "INSUFFICIENT_PERMISSIONS")


def test_member_cannot_export_another_tenants_chain(owner):
    foreign = TenantFactory()
    sealed_chain(foreign, 2)

    response = owner.client_for(foreign.pk).get(EXPORT_URL)

    assert_envelope(response, 404, "RESOURCE_NOT_FOUND")


def test_staff_exports_the_platform_chain_or_a_named_tenant(staff_client):
    tenant = TenantFactory()
    tenant_events = sealed_chain(tenant, 2)
    platform_events = sealed_chain(None, 2, event_type="platform.thing")

    platform = json_lines(export(staff_client, chain="platform"))
    named = json_lines(export(staff_client, tenant_id=str(tenant.pk)))

    assert platform[0]["chain"] == "platform"
    assert [line["hash"] for line in platform[1:]] == [event.hash for event in platform_events]
    assert named[0]["chain"] == str(tenant.pk)
    assert [line["hash"] for line in named[1:]] == [event.hash for event in tenant_events]


def test_staff_naming_no_chain_is_told_to_name_one(staff_client):
    assert_envelope(staff_client.get(EXPORT_URL), 400, "TENANT_REQUIRED")


# Verifying offline -----------------------------------------------------------------------------


def test_verify_export_accepts_the_untouched_file(owner, chain):
    result = verify_export(export(owner.client).splitlines())

    assert result.chain_valid, result.broken_links
    assert (result.verified_count, result.last_seq, result.checkpoints_checked) == (6, 6, 2)
    assert result.chain_head == chain[-1].hash


def test_command_verifies_the_untouched_file(owner, chain, tmp_path):
    path = export_file(tmp_path, export(owner.client))

    code, report = verify_command(path, "--public-key", signing.public_key())

    assert code == 0
    assert report["chain_valid"] is True
    assert (report["verified_count"], report["checkpoints_checked"]) == (6, 2)
    assert report["broken_links"] == []


def test_command_names_the_event_of_an_edited_line(owner, chain, tmp_path):
    path = export_file(tmp_path, edit_event_line(export(owner.client), 4, amount=1))

    code, report = verify_command(path)

    assert code == 1
    assert report["chain_valid"] is False
    [link] = report["broken_links"]
    assert (link["event_id"], link["seq"], link["reason"]) == (
        str(chain[3].pk),
        4,
        "Hash mismatch - potential tampering detected",
    )


def test_command_with_another_public_key_rejects_the_checkpoints(owner, chain, tmp_path):
    path = export_file(tmp_path, export(owner.client))
    _, forged_public_key = foreign_key_pair()

    code, report = verify_command(path, "--public-key", forged_public_key)

    assert code == 1
    assert [(link["seq"], link["reason"]) for link in report["broken_links"]] == [
        (3, "Checkpoint signature invalid (seq 3)"),
        (6, "Checkpoint signature invalid (seq 6)"),
    ]


@pytest.mark.parametrize(
    "content",
    [
        "this is not json\n",
        "",
        '{"type": "event", "document": {}}\n',
        '{"type": "header", "format": "something-else"}\n',
    ],
    ids=["garbage", "empty", "no-header", "other-format"],
)
def test_command_refuses_a_file_that_is_not_an_export(tmp_path, content):
    path = export_file(tmp_path, content)

    with pytest.raises(CommandError, match="Cannot verify"):
        call_command("verify_audit_export", str(path), stdout=StringIO())


def _replace_line(text: str, number: int, line: str) -> str:
    lines = text.splitlines()
    lines[number - 1] = line
    return "\n".join(lines) + "\n"


def _edit_record(text: str, number: int, change) -> str:
    record = json.loads(text.splitlines()[number - 1])
    change(record)
    return _replace_line(text, number, json.dumps(record))


# A damaged or hostile file: each was a traceback (RecursionError, KeyError, AttributeError)
# or a message without its line, of the command and of `python -m audit.offline`.
HOSTILE_LINES = {
    "nested too deep": (2, lambda _: "[" * 100_000 + "]" * 100_000, "line 2: JSON nested too deep"),
    "not an object": (2, lambda _: '"event"', "line 2: not a JSON object"),
    "NaN": (2, lambda line: line.replace('"seq":1,', '"seq":NaN,'), "line 2: not valid JSON"),
    "huge number": (2, lambda line: line.replace('"seq":1,', f'"seq":{"9" * 5000},'), "line 2"),
    "document null": (
        2,
        lambda _: '{"type": "event", "document": null, "prev_hash": "", "hash": "x"}',
        "line 2: an event without a valid 'document'",
    ),
    "seq a float": (
        2,
        lambda line: line.replace('"seq":1,', '"seq":1e400,'),
        "line 2: an event's document without a valid 'seq'",
    ),
    "lone surrogate": (
        2,
        lambda line: line.replace('"payload":{', '"payload":{"\\ud800":1,', 1),
        "line 2: the event cannot be hashed",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_LINES.values(), ids=HOSTILE_LINES)
def test_a_damaged_line_is_refused_naming_it(owner, chain, tmp_path, case):
    number, damage, message = case
    text = export(owner.client)
    line = text.splitlines()[number - 1]
    path = export_file(tmp_path, _replace_line(text, number, damage(line)))
    assert path.read_text() != text

    with pytest.raises(CommandError, match=f"Cannot verify .*: {re.escape(message)}"):
        call_command("verify_audit_export", str(path), stdout=StringIO())
    run = {"cwd": settings.BASE_DIR, "env": offline_environment(), "capture_output": True}
    offline = subprocess.run([sys.executable, "-m", "audit.offline", str(path)], **run)  # noqa: S603
    assert offline.returncode == 2
    assert message in offline.stderr.decode()
    assert "Traceback" not in offline.stderr.decode()


@pytest.mark.parametrize(("field", "value"), [("signature", 12), ("seq", "x"), ("head_hash", None)])
def test_a_checkpoint_without_its_fields_is_refused_naming_its_line(
    owner, chain, tmp_path, field, value
):
    text = export(owner.client)
    last = len(text.splitlines())
    damaged = _edit_record(text, last, lambda record: record.update({field: value}))

    with pytest.raises(ExportError, match=f"line {last}: a checkpoint without a valid '{field}'"):
        verify_export(damaged.splitlines())


def test_a_header_with_a_bad_from_seq_is_refused(owner, chain):
    damaged = _edit_record(export(owner.client), 1, lambda header: header.update(from_seq="a"))

    with pytest.raises(ExportError, match="line 1: the header's 'from_seq'"):
        verify_export(damaged.splitlines())


def test_command_refuses_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="Cannot verify"):
        call_command("verify_audit_export", str(tmp_path / "nope.jsonl"), stdout=StringIO())


def test_verify_export_refuses_a_file_without_its_header():
    with pytest.raises(ExportError):
        verify_export(['{"type": "event"}'])


def offline_environment() -> dict:
    """The caller's environment without anything that would let Django or a database in."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO", "DATABASE", "REDIS", "CELERY"))
    }


def test_offline_module_verifies_without_django_or_a_database(owner, chain, tmp_path):
    path = export_file(tmp_path, export(owner.client))
    edited = export_file(tmp_path, edit_event_line(path.read_text(), 2, x=1), "edited.jsonl")
    run = {"cwd": settings.BASE_DIR, "env": offline_environment(), "capture_output": True}
    check_no_django = (
        "import runpy, sys; sys.argv = ['audit.offline', sys.argv[1]]\n"
        "try:\n    runpy.run_module('audit.offline', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    assert 'django' not in sys.modules, 'django was imported'\n"
        "    raise\n"
    )

    valid = subprocess.run([sys.executable, "-m", "audit.offline", str(path)], **run)  # noqa: S603
    broken = subprocess.run([sys.executable, "-m", "audit.offline", str(edited)], **run)  # noqa: S603
    isolated = subprocess.run([sys.executable, "-c", check_no_django, str(path)], **run)  # noqa: S603

    assert valid.returncode == 0, valid.stderr.decode()
    assert json.loads(valid.stdout)["verified_count"] == 6
    assert broken.returncode == 1, broken.stderr.decode()
    assert json.loads(broken.stdout)["broken_links"][0]["event_id"] == str(chain[1].pk)
    assert isolated.returncode == 0, isolated.stderr.decode()
