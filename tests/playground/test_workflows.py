"""Workflow jobs end to end: `POST workflows/execute` queues a job of a registered type
(template_batch, usage_report, audit_export) at its Celery priority, `workflow_job_execute`
runs it as the worker would, and the job ends with its `output_data`, an artifact counted
against the storage quota and its public event. Also: input validation (400, no job), who may
do what, a batch resuming where a previous attempt stopped, cancellation (pending, finished,
while running), failures (storage and tokens quotas, a suspended organization), the metrics,
Idempotency-Key, and artifacts (listing, download, deletion giving the storage back)."""

import csv
import dataclasses
import hashlib
import io
import json
import logging
from datetime import UTC, datetime, timedelta

import jsonschema
import psycopg
import pytest
from celery.signals import task_retry
from django.core.files.storage import storages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.export import export_lines
from audit.models import AuditEvent
from audit.offline import verify_export
from config.exceptions import StorageUnavailable, unavailable_dependency
from notifications import catalog
from notifications.models import WebhookEvent
from playground import workflows
from playground.models import (
    Artifact,
    CallSource,
    GatewayCall,
    JobStatus,
    PromptExecution,
    WorkflowJob,
)
from playground.rendering import MAX_RENDERED_CHARS
from playground.services.reaper import stalled_jobs_reap
from playground.services.workflows import workflow_job_execute
from playground.tasks import execute_workflow_job
from playground.workflows import REGISTRY, REPORT_COLUMNS
from tenants.models import QuotaCounter, Role, Tenant, TenantStatus
from tenants.plans import MIB, tenant_limits
from tests.conftest import assert_envelope
from tests.test_dependency_outages import closed_port
from tests.test_file_storage import volume_with_room

from .factories import (
    ArtifactFactory,
    GatewayCallFactory,
    PromptExecutionFactory,
    PromptTemplateFactory,
    PromptTemplateVersionFactory,
    WorkflowJobFactory,
)

pytestmark = pytest.mark.django_db

EXECUTE = "/api/v1/workflows/execute"
JOBS = "/api/v1/workflows/"
METRICS = f"{JOBS}metrics/"
TYPES = f"{JOBS}types/"
ARTIFACTS = "/api/v1/artifacts/"
REPORT = {"start": "2025-03-01", "end": "2025-03-31"}
ROWS = [{"question": "a"}, {"question": "b"}]


# Helpers ----------------------------------------------------------------------------------------


def job_url(job_id) -> str:
    return f"{JOBS}{job_id}/"


def artifact_url(artifact_id) -> str:
    return f"{ARTIFACTS}{artifact_id}/"


def body_of(workflow_type, input_data, **extra) -> dict:
    return {"workflow_type": workflow_type, "input_data": input_data, **extra}


def downloaded(caller, artifact_id):
    """(response, content) of the artifact's download."""
    response = caller.client.get(f"{ARTIFACTS}{artifact_id}/download")
    assert response.status_code == 200, response.content
    return response, b"".join(response.streaming_content)


def storage_used(tenant) -> int:
    row = QuotaCounter.objects.filter(tenant=tenant, resource="storage").first()
    return row.used if row else 0


def audit_events(tenant, event_type) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tenant=tenant, event_type=event_type))


def public_events(tenant, event_type) -> list[dict]:
    """The public (webhook) events of `event_type`, each checked against its catalogue schema;
    their `data`."""
    entry = catalog.EVENT_TYPES[event_type]
    found = []
    for event in WebhookEvent.objects.filter(tenant=tenant, event_type=event_type):
        body = json.loads(event.body)
        jsonschema.validate(body["data"], entry.schema)
        found.append(body["data"])
    return found


def batch_template(tenant, **fields):
    """A template whose version 1 asks `Question: {question}` (question required) of
    gpt-3.5-turbo."""
    return PromptTemplateFactory(tenant=tenant, **fields)


def at(call, when: datetime):
    """Move a gateway call to `when` (created_at is set on insert)."""
    GatewayCall.objects.filter(pk=call.pk).update(created_at=when)
    call.refresh_from_db()
    return call


def assert_refused(response, tenant, sent, status=400, code=None) -> dict:
    """The envelope with `status`, and nothing made: no job, no event, no message."""
    error = assert_envelope(response, status, code)
    assert not WorkflowJob.objects.filter(tenant=tenant).exists()
    assert not audit_events(tenant, "workflow.queued")
    assert sent == []
    return error


def stored_files(tenant) -> list[str]:
    """The files of the tenant in the artifacts storage."""
    storage = storages["artifacts"]
    found, folders = [], [str(tenant.pk)]
    while folders:
        folder = folders.pop()
        if not storage.exists(folder):
            continue
        subfolders, files = storage.listdir(folder)
        found += [f"{folder}/{name}" for name in files]
        folders += [f"{folder}/{name}" for name in subfolders]
    return found


def jobs_of(tenant, workflow_type, *statuses_and_times):
    for status, execution_time_ms in statuses_and_times:
        WorkflowJobFactory(
            tenant=tenant,
            workflow_type=workflow_type,
            status=status,
            execution_time_ms=execution_time_ms,
        )


@pytest.fixture
def sent(monkeypatch):
    """The Celery messages sent for workflow jobs (the apply_async keyword arguments)."""
    messages = []

    def apply_async(*args, **kwargs):
        messages.append(kwargs)

    monkeypatch.setattr(execute_workflow_job, "apply_async", apply_async)
    return messages


@pytest.fixture
def submit(django_capture_on_commit_callbacks, sent):
    """submit(caller, body, **headers) -> response; the commit hooks run (the job's message is
    recorded in `sent`, the audit chain sealed)."""

    def submit(caller, body, **headers):
        with django_capture_on_commit_callbacks(execute=True):
            return caller.client.post(EXECUTE, body, format="json", **headers)

    return submit


@pytest.fixture
def queued(submit):
    """queued(caller, workflow_type, input_data, **extra) -> the job id (201 asserted)."""

    def queued(caller, workflow_type, input_data, **extra):
        response = submit(caller, body_of(workflow_type, input_data, **extra))
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["status"] == "pending"
        assert body["message"]
        return body["job_id"]

    return queued


def completed(caller, job_id) -> dict:
    """Run the job as the worker would; its API body, completed."""
    assert workflow_job_execute(job_id=job_id) == JobStatus.COMPLETED
    response = caller.client.get(job_url(job_id))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed", body
    return body


# 1. End to end ----------------------------------------------------------------------------------

# The end-to-end test of each type is in the smoke part, so it also runs on SQLite: the quick
# start runs them there, and raw SQL takes its ids differently there (config.db.raw_uuid).


@pytest.mark.smoke
def test_template_batch_answers_every_row_and_writes_them_as_json_lines(owner, queued, sent):
    template = batch_template(owner.tenant)
    rows = [{"question": "Why is the sky blue?"}, {"question": "Why?"}, {"question": "How?"}]

    job_id = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": rows})

    job = WorkflowJob.objects.get(pk=job_id)
    assert job.input_data == {"template_id": str(template.pk), "version": 1, "rows": rows}
    assert (job.progress_total, job.created_by_id) == (3, owner.user.pk)
    assert [message["args"] for message in sent] == [[job_id]]
    body = completed(owner, job_id)

    executions = list(PromptExecution.objects.filter(workflow_job_id=job_id).order_by("batch_row"))
    assert [e.batch_row for e in executions] == [0, 1, 2]
    assert [e.variables for e in executions] == rows
    calls = GatewayCall.objects.filter(tenant=owner.tenant)
    assert calls.count() == 3
    assert {e.gateway_call_id for e in executions} == set(calls.values_list("pk", flat=True))
    output = body["output_data"]
    assert output["rows"] == 3
    assert (output["succeeded"], output["failed"]) == (3, 0)
    assert output["total_tokens"] == sum(e.tokens_used for e in executions) > 0
    assert output["cost_micros"] == sum(e.cost_micros for e in executions)
    assert (output["template_id"], output["version"]) == (str(template.pk), 1)
    assert body["progress"] == {"done": 3, "total": 3}

    artifact = Artifact.objects.get(workflow_job_id=job_id)
    assert output["artifact_id"] == str(artifact.pk)
    response, content = downloaded(owner, artifact.pk)
    assert response["Content-Type"] == "application/x-ndjson"
    assert f'filename="template-batch-{job_id}.jsonl"' in response["Content-Disposition"]
    lines = [json.loads(line) for line in content.decode().splitlines()]
    assert [line["row"] for line in lines] == [0, 1, 2]
    for line, execution, row in zip(lines, executions, rows, strict=True):
        assert line["variables"] == row
        assert line["status"] == "succeeded"
        assert line["output"] == execution.output
        assert line["output"].endswith(f"Question: {row['question']}")
        assert line["execution_id"] == str(execution.pk)
        assert (line["prompt_tokens"], line["completion_tokens"], line["total_tokens"]) == (
            execution.prompt_tokens,
            execution.completion_tokens,
            execution.tokens_used,
        )
        assert line["cost_micros"] == execution.cost_micros
        assert line["model"] == "gpt-3.5-turbo"
    assert output["size_bytes"] == artifact.size_bytes == len(content)
    assert storage_used(owner.tenant) == artifact.size_bytes
    [event] = public_events(owner.tenant, "workflow.completed")
    assert event["job_id"] == job_id
    assert event["workflow_type"] == "template_batch"
    assert event["artifact_id"] == str(artifact.pk)


@pytest.mark.smoke
def test_usage_report_is_a_csv_of_the_range_with_totals_per_model(owner, make_caller, queued):
    tenant = owner.tenant
    first = at(GatewayCallFactory(tenant=tenant), datetime(2025, 3, 1, 0, 0, tzinfo=UTC))
    second = at(
        GatewayCallFactory(tenant=tenant, total_tokens=70, cost_micros=2_000, user=owner.user),
        datetime(2025, 3, 15, 12, 0, tzinfo=UTC),
    )
    last = at(
        GatewayCallFactory(
            tenant=tenant,
            requested_model="fast",
            model="gpt-3.5-turbo",
            status="failed",
            error_type="timeout",
            total_tokens=5,
            cost_micros=7,
            streamed=True,
            # The client's X-Request-ID, which a spreadsheet would run as a formula.
            request_id="-1+1",
        ),
        datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC),
    )
    at(GatewayCallFactory(tenant=tenant), datetime(2025, 2, 28, 23, 59, 59, tzinfo=UTC))
    at(GatewayCallFactory(tenant=tenant), datetime(2025, 4, 1, 0, 0, tzinfo=UTC))
    at(GatewayCallFactory(tenant=make_caller().tenant), datetime(2025, 3, 10, tzinfo=UTC))

    job_id = queued(owner, "usage_report", REPORT)
    body = completed(owner, job_id)

    artifact = Artifact.objects.get(workflow_job_id=job_id)
    response, content = downloaded(owner, artifact.pk)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="usage-2025-03-01-to-2025-03-31.csv"' in response["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(content.decode())))
    assert list(table[0]) == list(REPORT_COLUMNS)
    # A cell a spreadsheet would run is written as text, as in the API's CSV answers.
    assert [row["request_id"] for row in table] == ["", "", "'-1+1"]
    assert [row["streamed"] for row in table] == ["no", "no", "yes"]
    assert [row["created_at"] for row in table] == [
        call.created_at.isoformat() for call in (first, second, last)
    ]
    assert [int(row["total_tokens"]) for row in table] == [30, 70, 5]
    assert [int(row["cost_micros"]) for row in table] == [1_200, 2_000, 7]
    assert [row["user_id"] for row in table] == ["", str(owner.user.pk), ""]
    assert (table[2]["requested_model"], table[2]["model"]) == ("fast", "gpt-3.5-turbo")
    assert (table[2]["status"], table[2]["error_type"]) == ("failed", "timeout")
    output = body["output_data"]
    assert output["by_model"] == {
        "gpt-3.5-turbo": {"calls": 1, "total_tokens": 5, "cost_micros": 7},
        "gpt-4": {"calls": 2, "total_tokens": 100, "cost_micros": 3_200},
    }
    assert (output["calls"], output["total_tokens"], output["cost_micros"]) == (3, 105, 3_207)
    assert (output["start"], output["end"], output["currency"]) == (
        "2025-03-01",
        "2025-03-31",
        "USD",
    )
    assert output["size_bytes"] == len(content) == storage_used(owner.tenant)
    [event] = public_events(owner.tenant, "workflow.completed")
    assert (event["job_id"], event["status"]) == (job_id, "completed")


@pytest.mark.smoke
def test_audit_export_writes_the_chain_as_audit_export_does_and_it_verifies(owner, queued):
    for _ in range(2):
        queued(owner, "usage_report", REPORT)
    job_id = queued(owner, "audit_export", {})

    body = completed(owner, job_id)

    artifact = Artifact.objects.get(workflow_job_id=job_id)
    response, content = downloaded(owner, artifact.pk)
    assert response["Content-Type"] == "application/x-ndjson"
    assert content.decode() == "".join(export_lines(owner.tenant.pk, from_seq=1))
    lines = content.decode().splitlines()
    assert verify_export(lines).chain_valid
    events = [json.loads(line) for line in lines if json.loads(line)["type"] == "event"]
    queued_events = AuditEvent.objects.filter(tenant=owner.tenant, event_type="workflow.queued")
    assert len(events) == body["output_data"]["events"] == queued_events.count() == 3
    assert [event["document"]["seq"] for event in events] == [1, 2, 3]
    assert body["output_data"]["from_seq"] == 1
    assert storage_used(owner.tenant) == artifact.size_bytes == len(content)
    [event] = public_events(owner.tenant, "workflow.completed")
    assert event["workflow_type"] == "audit_export"


def test_audit_export_from_seq_to_seq_exports_only_that_part(owner, queued):
    for _ in range(4):
        queued(owner, "usage_report", REPORT)
    job_id = queued(owner, "audit_export", {"from_seq": 2, "to_seq": 3})

    body = completed(owner, job_id)

    _, content = downloaded(owner, body["output_data"]["artifact_id"])
    records = [json.loads(line) for line in content.decode().splitlines()]
    assert (records[0]["from_seq"], records[0]["to_seq"]) == (2, 3)
    assert [r["document"]["seq"] for r in records if r["type"] == "event"] == [2, 3]
    assert body["output_data"]["events"] == 2
    assert verify_export(content.decode().splitlines()).chain_valid


def test_a_batch_pins_the_production_version_when_queued(owner, queued):
    template = batch_template(owner.tenant)
    PromptTemplateVersionFactory(template=template, version=2, user_prompt_template="V2 {question}")
    template.latest_version = 2
    template.production_version = 1
    template.save()
    rows = [{"question": "Q"}]

    pinned = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": rows})
    chosen = queued(
        owner, "template_batch", {"template_id": str(template.pk), "version": 2, "rows": rows}
    )
    template.production_version = 2
    template.save()

    assert WorkflowJob.objects.get(pk=pinned).input_data["version"] == 1
    assert completed(owner, pinned)["output_data"]["version"] == 1
    assert PromptExecution.objects.get(workflow_job_id=pinned).rendered_prompt == "Question: Q"
    assert completed(owner, chosen)["output_data"]["version"] == 2
    assert PromptExecution.objects.get(workflow_job_id=chosen).rendered_prompt == "V2 Q"


# 2. Validation ----------------------------------------------------------------------------------


def test_an_unknown_type_is_400_listing_the_types(owner, submit, sent):
    error = assert_refused(submit(owner, body_of("make_coffee", {})), owner.tenant, sent)

    assert "make_coffee" in error["message"]
    assert error["details"] == {
        "workflow_type": ["One of: audit_export, template_batch, usage_report."]
    }


@pytest.mark.parametrize("input_data", [[{"start": "2025-03-01"}], "2025-03-01", 5, None])
def test_input_data_that_is_not_an_object_is_400(owner, submit, sent, input_data):
    error = assert_refused(submit(owner, body_of("usage_report", input_data)), owner.tenant, sent)

    assert "input_data" in error["details"]


@pytest.mark.parametrize(
    ("input_data", "fields"),
    [
        ({}, {"input_data.template_id", "input_data.rows"}),
        ({"rows": ROWS, "model": "gpt-4"}, {"input_data.model"}),
        ({"rows": []}, {"input_data.rows"}),
        ({"rows": [{"question": "q"}] * 1001}, {"input_data.rows"}),
        ({"rows": {"question": "q"}}, {"input_data.rows"}),
        ({"rows": [*ROWS, "c"]}, {"input_data.rows[2]"}),
        ({"rows": [*ROWS, {"question": "c", "colour": "red"}]}, {"input_data.rows[2]"}),
        ({"rows": [{"question": "a"}, {}, {"question": "c"}]}, {"input_data.rows[1]"}),
        ({"rows": [{}, "b", {"question": 3}]}, {f"input_data.rows[{i}]" for i in range(3)}),
        ({"rows": ROWS, "version": 0}, {"input_data.version"}),
        ({"rows": ROWS, "version": "1"}, {"input_data.version"}),
        ({"rows": ROWS, "template_id": "not-a-uuid"}, {"input_data.template_id"}),
        ({"rows": ROWS, "template_id": "00000000-0000-4000-8000-000000000000"},
         {"input_data.template_id"}),
    ],
)  # fmt: skip
def test_bad_template_batch_input_is_400_naming_what_is_wrong(
    owner, submit, sent, input_data, fields
):
    template = batch_template(owner.tenant)
    if "rows" in input_data:
        input_data = {"template_id": str(template.pk), **input_data}

    error = assert_refused(submit(owner, body_of("template_batch", input_data)), owner.tenant, sent)

    assert set(error["details"]) == fields, error["details"]
    assert not GatewayCall.objects.exists()


def test_a_row_names_the_missing_or_undeclared_variable(owner, submit, sent):
    template = batch_template(owner.tenant)
    rows = [{"question": "a"}, {"colour": "red"}]

    error = assert_refused(
        submit(owner, body_of("template_batch", {"template_id": str(template.pk), "rows": rows})),
        owner.tenant,
        sent,
    )

    [problems] = error["details"].values()
    joined = " ".join(problems)
    assert "colour" in joined
    assert "question" in joined


def test_a_row_that_would_render_past_the_bound_is_refused_before_the_job(owner, submit, sent):
    version = PromptTemplateVersionFactory(
        template=batch_template(owner.tenant), version=2, user_prompt_template="{question} " * 100
    )
    rows = [{"question": "short"}, {"question": "x" * (MAX_RENDERED_CHARS // 50)}]
    body = {"template_id": str(version.template_id), "version": version.version, "rows": rows}

    error = assert_refused(submit(owner, body_of("template_batch", body)), owner.tenant, sent)

    assert list(error["details"]) == ["input_data.rows[1]"]
    assert f"at most {MAX_RENDERED_CHARS:,}" in error["details"]["input_data.rows[1]"][0]


def test_a_template_of_another_tenant_is_400_like_a_missing_one(owner, make_caller, submit, sent):
    theirs = batch_template(make_caller().tenant)

    error = assert_refused(
        submit(owner, body_of("template_batch", {"template_id": str(theirs.pk), "rows": ROWS})),
        owner.tenant,
        sent,
    )

    assert error["details"] == {"input_data.template_id": ["No such prompt template."]}


def test_a_version_the_template_does_not_have_is_400(owner, submit, sent):
    template = batch_template(owner.tenant)
    body = body_of("template_batch", {"template_id": str(template.pk), "version": 9, "rows": ROWS})

    error = assert_refused(submit(owner, body), owner.tenant, sent)

    assert "no version 9" in json.dumps(error)


def test_a_missing_version_is_named_input_data_version(owner, submit, sent):
    template = batch_template(owner.tenant)
    body = body_of("template_batch", {"template_id": str(template.pk), "version": 9, "rows": ROWS})

    error = assert_refused(submit(owner, body), owner.tenant, sent)

    assert set(error["details"]) == {"input_data.version"}


def test_the_row_limit_itself_is_accepted(owner, submit):
    template = batch_template(owner.tenant)
    rows = [{"question": str(n)} for n in range(1000)]

    response = submit(
        owner, body_of("template_batch", {"template_id": str(template.pk), "rows": rows})
    )

    assert response.status_code == 201, response.content
    assert WorkflowJob.objects.get(pk=response.json()["job_id"]).progress_total == 1000


@pytest.mark.parametrize(
    ("input_data", "fields"),
    [
        ({}, {"input_data.start", "input_data.end"}),
        ({**REPORT, "model": "gpt-4"}, {"input_data.model"}),
        ({"start": "2025-02-30", "end": "2025-03-31"}, {"input_data.start"}),
        ({"start": "yesterday", "end": "today"}, {"input_data.start", "input_data.end"}),
        ({"start": 20250301, "end": "2025-03-31"}, {"input_data.start"}),
        ({"start": "2025-03-31", "end": "2025-03-01"}, {"input_data.end"}),
        ({"start": "2025-01-01", "end": "2026-01-02"}, {"input_data.end"}),
    ],
)
def test_bad_usage_report_input_is_400_naming_what_is_wrong(
    owner, submit, sent, input_data, fields
):
    error = assert_refused(submit(owner, body_of("usage_report", input_data)), owner.tenant, sent)

    assert set(error["details"]) == fields, error["details"]


def test_a_report_of_the_longest_range_is_accepted(owner, submit, settings):
    settings.WORKFLOW_REPORT_MAX_DAYS = 31

    accepted = submit(owner, body_of("usage_report", REPORT))
    refused = submit(owner, body_of("usage_report", {"start": "2025-03-01", "end": "2025-04-01"}))

    assert accepted.status_code == 201, accepted.content
    error = assert_envelope(refused, 400)
    assert error["details"] == {"input_data.end": ["At most 31 days."]}
    assert WorkflowJob.objects.filter(tenant=owner.tenant).count() == 1


@pytest.mark.parametrize(
    ("input_data", "fields"),
    [
        ({"from_seq": 5, "to_seq": 4}, {"input_data.to_seq"}),
        ({"to_seq": 0}, {"input_data.to_seq"}),
        ({"from_seq": 0}, {"input_data.from_seq"}),
        ({"from_seq": "1"}, {"input_data.from_seq"}),
        ({"from_seq": True}, {"input_data.from_seq"}),
        ({"since": "2025-01-01"}, {"input_data.since"}),
    ],
)
def test_bad_audit_export_input_is_400_naming_what_is_wrong(
    owner, submit, sent, input_data, fields
):
    error = assert_refused(submit(owner, body_of("audit_export", input_data)), owner.tenant, sent)

    assert set(error["details"]) == fields, error["details"]


@pytest.mark.parametrize("priority", [0, 11, "high", 2.5])
def test_a_priority_outside_1_to_10_is_400(owner, submit, sent, priority):
    error = assert_refused(
        submit(owner, body_of("usage_report", REPORT, priority=priority)), owner.tenant, sent
    )

    assert set(error["details"]) == {"priority"}


# 3. Permissions ---------------------------------------------------------------------------------


def test_a_member_without_audit_read_cannot_export_the_audit_chain(make_caller, submit, sent):
    member = make_caller(Role.MEMBER)

    error = assert_refused(
        submit(member, body_of("audit_export", {})),
        member.tenant,
        sent,
        403,
        "INSUFFICIENT_PERMISSIONS",
    )

    assert error["details"]["required_permission"] == "audit.read"


def test_a_member_granted_audit_read_can_export_it(make_caller, submit):
    member = make_caller(Role.MEMBER, permissions={"audit": {"read": True}})

    response = submit(member, body_of("audit_export", {}))

    assert response.status_code == 201, response.content
    assert WorkflowJob.objects.get(tenant=member.tenant).workflow_type == "audit_export"


def test_a_dpo_with_audit_read_but_not_playground_execute_is_403(make_caller, submit, sent):
    dpo = make_caller(Role.DPO)

    assert_refused(submit(dpo, body_of("audit_export", {})), dpo.tenant, sent, 403)


@pytest.mark.parametrize("workflow_type", sorted(REGISTRY))
def test_a_viewer_cannot_queue_a_workflow(make_caller, submit, sent, workflow_type):
    viewer = make_caller(Role.VIEWER)

    assert_refused(
        submit(viewer, body_of(workflow_type, {})),
        viewer.tenant,
        sent,
        403,
        "INSUFFICIENT_PERMISSIONS",
    )


def test_a_viewer_reads_jobs_metrics_types_and_artifacts_but_cannot_cancel_or_delete(
    owner, make_caller, queued
):
    viewer = make_caller(Role.VIEWER, tenant=owner.tenant)
    done = queued(owner, "usage_report", REPORT)
    body = completed(owner, done)
    waiting = queued(owner, "usage_report", REPORT)
    artifact_id = body["output_data"]["artifact_id"]

    listed = viewer.client.get(JOBS).json()["results"]
    assert {row["id"] for row in listed} == {done, waiting}
    assert viewer.client.get(job_url(done)).json()["output_data"] == body["output_data"]
    assert viewer.client.get(METRICS).json()["total_jobs"] == 2
    types = viewer.client.get(TYPES).json()["results"]
    assert {row["name"]: row["permission"] for row in types} == {
        "template_batch": "playground.execute",
        "usage_report": "analytics.read",
        "audit_export": "audit.read",
    }
    assert viewer.client.get(artifact_url(artifact_id)).json()["workflow_job_id"] == done
    downloaded(viewer, artifact_id)
    assert_envelope(viewer.client.delete(job_url(waiting)), 403, "INSUFFICIENT_PERMISSIONS")
    assert_envelope(viewer.client.delete(artifact_url(artifact_id)), 403)
    assert WorkflowJob.objects.get(pk=waiting).status == "pending"
    assert Artifact.objects.filter(pk=artifact_id).exists()


def test_unauthenticated_calls_are_401(owner, api_client):
    WorkflowJobFactory(tenant=owner.tenant)
    api_client.credentials(HTTP_X_ORGANIZATION_ID=str(owner.tenant.pk))

    assert_envelope(api_client.post(EXECUTE, body_of("usage_report", REPORT), format="json"), 401)
    assert_envelope(api_client.get(JOBS), 401)
    assert_envelope(api_client.get(ARTIFACTS), 401)
    assert WorkflowJob.objects.filter(tenant=owner.tenant).count() == 1


def test_another_tenants_job_and_artifact_are_404(owner, make_caller, queued):
    stranger = make_caller()
    job_id = queued(owner, "usage_report", REPORT)
    artifact_id = completed(owner, job_id)["output_data"]["artifact_id"]
    pending = queued(owner, "usage_report", REPORT)

    for response in (
        stranger.client.get(job_url(job_id)),
        stranger.client.delete(job_url(pending)),
        stranger.client.get(artifact_url(artifact_id)),
        stranger.client.get(f"{ARTIFACTS}{artifact_id}/download"),
        stranger.client.delete(artifact_url(artifact_id)),
    ):
        assert_envelope(response, 404)
    assert stranger.client.get(JOBS).json()["results"] == []
    assert stranger.client.get(ARTIFACTS).json()["results"] == []
    assert stranger.client.get(METRICS).json()["total_jobs"] == 0
    assert WorkflowJob.objects.get(pk=pending).status == "pending"
    assert Artifact.objects.filter(pk=artifact_id).exists()


def test_an_audit_export_is_not_readable_without_audit_read(owner, make_caller, queued):
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    job_id = queued(owner, "audit_export", {})
    artifact_id = completed(owner, job_id)["output_data"]["artifact_id"]

    assert member.client.get(f"{ARTIFACTS}{artifact_id}/download").status_code in (403, 404)
    assert artifact_id not in {row["id"] for row in member.client.get(ARTIFACTS).json()["results"]}


def test_jobs_filter_by_type_and_several_statuses(owner):
    tenant = owner.tenant
    report = WorkflowJobFactory(tenant=tenant, status="pending")
    running = WorkflowJobFactory(tenant=tenant, status="running", workflow_type="audit_export")
    done = WorkflowJobFactory(tenant=tenant, status="completed")
    WorkflowJobFactory(tenant=tenant, status="failed", workflow_type="audit_export")

    def ids(**params):
        response = owner.client.get(JOBS, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(workflow_type="usage_report") == {str(report.pk), str(done.pk)}
    assert ids(status="pending,running") == {str(report.pk), str(running.pk)}
    assert ids(workflow_type="audit_export", status="running,completed") == {str(running.pk)}
    assert_envelope(owner.client.get(JOBS, {"status": "asleep"}), 400)


# 4. template_batch resume -----------------------------------------------------------------------


def test_a_resumed_batch_answers_only_the_rows_left_and_writes_all_in_order(owner, queued):
    template = batch_template(owner.tenant)
    rows = [{"question": f"Q{n}"} for n in range(5)]
    job_id = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": rows})
    job = WorkflowJob.objects.get(pk=job_id)
    # A previous attempt answered rows 0 and 3, then its worker died (its lease expired).
    earlier = {
        index: PromptExecutionFactory(
            template=template,
            tenant=owner.tenant,
            workflow_job=job,
            batch_row=index,
            variables=rows[index],
            output=f"earlier answer {index}",
        )
        for index in (0, 3)
    }
    WorkflowJob.objects.filter(pk=job_id).update(
        status="running",
        attempts=1,
        lease_token="6f1c5a2e-8b3d-4c7e-9a1f-2b3c4d5e6f70",
        lease_expires_at=datetime(2025, 1, 1, tzinfo=UTC),
    )

    body = completed(owner, job_id)

    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 3
    answered = PromptExecution.objects.filter(workflow_job=job).order_by("batch_row")
    assert [e.batch_row for e in answered] == [0, 1, 2, 3, 4]
    new = answered.exclude(pk__in=[e.pk for e in earlier.values()])
    assert sorted(e.variables["question"] for e in new) == ["Q1", "Q2", "Q4"]
    _, content = downloaded(owner, body["output_data"]["artifact_id"])
    lines = [json.loads(line) for line in content.decode().splitlines()]
    assert [line["row"] for line in lines] == [0, 1, 2, 3, 4]
    assert [line["variables"] for line in lines] == rows
    assert (lines[0]["output"], lines[3]["output"]) == ("earlier answer 0", "earlier answer 3")
    assert lines[1]["output"].endswith("Question: Q1")
    assert body["output_data"]["rows"] == 5
    assert body["attempts"] == 2
    assert body["progress"] == {"done": 5, "total": 5}


def test_running_a_job_again_does_nothing(owner, queued):
    template = batch_template(owner.tenant)
    job_id = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": ROWS})
    completed(owner, job_id)

    assert workflow_job_execute(job_id=job_id) is None

    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 2
    assert Artifact.objects.filter(workflow_job_id=job_id).count() == 1
    assert len(audit_events(owner.tenant, "workflow.completed")) == 1


def test_a_job_held_by_a_live_worker_is_not_taken(owner, queued):
    job_id = queued(owner, "usage_report", REPORT)
    WorkflowJob.objects.filter(pk=job_id).update(
        status="running",
        attempts=1,
        lease_token="6f1c5a2e-8b3d-4c7e-9a1f-2b3c4d5e6f70",
        lease_expires_at=datetime(2999, 1, 1, tzinfo=UTC),
    )

    assert workflow_job_execute(job_id=job_id) is None

    job = WorkflowJob.objects.get(pk=job_id)
    assert (job.status, job.attempts) == ("running", 1)
    assert not Artifact.objects.filter(workflow_job_id=job_id).exists()


# 5. Cancel --------------------------------------------------------------------------------------


def test_cancelling_a_pending_job_answers_it_cancelled_and_it_never_runs(owner, queued):
    job_id = queued(owner, "usage_report", REPORT)

    response = owner.client.delete(job_url(job_id))

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["job_type"]) == (job_id, "cancelled", "usage_report")
    assert body["completed_at"] is not None
    [event] = audit_events(owner.tenant, "workflow.cancelled")
    assert event.actor_id == owner.user.pk
    assert event.payload["job_id"] == job_id
    assert workflow_job_execute(job_id=job_id) is None
    assert WorkflowJob.objects.get(pk=job_id).status == "cancelled"
    assert not Artifact.objects.filter(workflow_job_id=job_id).exists()
    assert owner.client.get(job_url(job_id)).json()["status"] == "cancelled"


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancelling_a_finished_job_is_409_and_changes_nothing(owner, status):
    job = WorkflowJobFactory(tenant=owner.tenant, status=status, execution_time_ms=1500)

    error = assert_envelope(owner.client.delete(job_url(job.pk)), 409, "CONFLICT")

    assert error["details"] == {"job_id": str(job.pk), "status": status}
    job.refresh_from_db()
    assert (job.status, job.execution_time_ms) == (status, 1500)
    assert not audit_events(owner.tenant, "workflow.cancelled")


def test_cancelling_a_completed_job_keeps_its_artifact(owner, queued):
    job_id = queued(owner, "usage_report", REPORT)
    artifact_id = completed(owner, job_id)["output_data"]["artifact_id"]

    assert_envelope(owner.client.delete(job_url(job_id)), 409)

    assert WorkflowJob.objects.get(pk=job_id).status == "completed"
    assert Artifact.objects.filter(pk=artifact_id).exists()


def test_a_batch_cancelled_while_running_stops_at_its_next_row(owner, queued, monkeypatch):
    template = batch_template(owner.tenant)
    rows = [{"question": f"Q{n}"} for n in range(4)]
    job_id = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": rows})
    execute_row = workflows._execute_row

    def cancelled_during_row_2(context, template, version, actor, index, row):
        execution = execute_row(context, template, version, actor, index, row)
        if row == rows[1]:
            assert owner.client.delete(job_url(job_id)).status_code == 200
        return execution

    monkeypatch.setattr(workflows, "_execute_row", cancelled_during_row_2)

    assert workflow_job_execute(job_id=job_id) is None

    job = WorkflowJob.objects.get(pk=job_id)
    assert job.status == "cancelled"
    assert GatewayCall.objects.filter(tenant=owner.tenant).count() == 2
    assert sorted(job.executions.values_list("batch_row", flat=True)) == [0, 1]
    assert not Artifact.objects.filter(workflow_job_id=job_id).exists()
    assert stored_files(owner.tenant) == []
    assert storage_used(owner.tenant) == 0
    assert not audit_events(owner.tenant, "workflow.completed")
    assert not public_events(owner.tenant, "workflow.completed")
    assert len(audit_events(owner.tenant, "workflow.cancelled")) == 1


def test_a_job_cancelled_after_its_runner_finished_writes_no_artifact(owner, queued, monkeypatch):
    job_id = queued(owner, "usage_report", REPORT)
    report = REGISTRY["usage_report"]

    def cancelled_at_the_end(context, tenant, actor):
        result = report.run(context, tenant, actor)
        assert owner.client.delete(job_url(job_id)).status_code == 200
        return result

    monkeypatch.setitem(
        REGISTRY, "usage_report", dataclasses.replace(report, run=cancelled_at_the_end)
    )

    assert workflow_job_execute(job_id=job_id) is None

    assert WorkflowJob.objects.get(pk=job_id).status == "cancelled"
    assert WorkflowJob.objects.get(pk=job_id).output_data == {}
    assert not Artifact.objects.filter(tenant=owner.tenant).exists()
    assert stored_files(owner.tenant) == []
    assert storage_used(owner.tenant) == 0
    assert not audit_events(owner.tenant, "workflow.completed")


# 6. Failure -------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_jobs_message_that_arrives_while_the_database_is_down_is_sent_again(owner, queued):
    job_id = queued(owner, "usage_report", REPORT)
    settings_dict = connection.settings_dict
    before = settings_dict["HOST"], settings_dict["PORT"]
    retried = []

    def database_back(sender=None, reason=None, **_):
        # The retry is sent: the database is back by the time it runs.
        retried.append(reason)
        settings_dict["HOST"], settings_dict["PORT"] = before
        connection.close()

    task_retry.connect(database_back, weak=False)
    connection.close()
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", closed_port()
    try:
        result = execute_workflow_job.apply(args=[job_id])
    finally:
        task_retry.disconnect(database_back)
        settings_dict["HOST"], settings_dict["PORT"] = before
        connection.close()

    assert result.get() == JobStatus.COMPLETED
    [retry] = retried
    assert unavailable_dependency(retry.exc) == "database"
    assert retry.when == 5  # seconds; doubling to a minute
    job = WorkflowJob.objects.get(pk=job_id)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_job_whose_database_goes_away_is_resumed_by_the_reaper_if_no_retry_comes(
    owner, queued, sent, monkeypatch, caplog
):
    job_id = queued(owner, "usage_report", REPORT)
    report = REGISTRY["usage_report"]

    def database_gone(context, tenant, actor):
        own_backend = connection.connection.info.backend_pid
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [own_backend])
        return report.run(context, tenant, actor)

    monkeypatch.setitem(REGISTRY, "usage_report", dataclasses.replace(report, run=database_gone))

    with (
        caplog.at_level(logging.WARNING, logger="playground.services.workflows"),
        pytest.raises(Exception) as stopped,  # for its task to send it again
    ):
        workflow_job_execute(job_id=job_id)

    assert unavailable_dependency(stopped.value) == "database"
    connection.close()
    job = WorkflowJob.objects.get(pk=job_id)
    assert (job.status, job.attempts, job.error) == (JobStatus.RUNNING, 1, "")
    assert not audit_events(owner.tenant, "workflow.failed")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        f"Workflow job {job_id} (usage_report) stopped: the database is unavailable ("
    )
    assert line.endswith("; it is sent again")

    # No retry came (its worker died meanwhile): once its lease ends, the reaper queues it
    # again, and the next claim completes it.
    monkeypatch.setitem(REGISTRY, "usage_report", report)
    WorkflowJob.objects.filter(pk=job_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        queued_at=timezone.now() - timedelta(seconds=2),
    )
    sent.clear()
    assert stalled_jobs_reap()["workflows"].requeued == 1
    assert sent and sent[0]["args"] == [str(job_id)]

    assert workflow_job_execute(job_id=job_id) == JobStatus.COMPLETED
    job = WorkflowJob.objects.get(pk=job_id)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 2)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_job_whose_database_goes_away_mid_run_is_taken_back_by_its_retry_at_once(
    owner, queued, monkeypatch
):
    """The task's retry carries the stopped attempt's claim token and takes the job over at
    once: it does not wait out the lease (10 minutes), and counts no new attempt."""
    job_id = queued(owner, "usage_report", REPORT)
    report = REGISTRY["usage_report"]
    runs = []

    def database_gone_once(context, tenant, actor):
        runs.append(context.held.token)
        if len(runs) == 1:
            own_backend = connection.connection.info.backend_pid
            with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [own_backend])
        return report.run(context, tenant, actor)

    monkeypatch.setitem(
        REGISTRY, "usage_report", dataclasses.replace(report, run=database_gone_once)
    )
    retried = []

    def note_retry(sender=None, reason=None, **_):
        retried.append(reason)

    task_retry.connect(note_retry, weak=False)
    try:
        result = execute_workflow_job.apply(args=[job_id])
    finally:
        task_retry.disconnect(note_retry)

    assert result.get() == JobStatus.COMPLETED
    [retry] = retried
    assert unavailable_dependency(retry.exc) == "database"
    assert len(runs) == 2 and runs[0] != runs[1]
    job = WorkflowJob.objects.get(pk=job_id)
    assert (job.status, job.attempts, job.lease_token) == (JobStatus.COMPLETED, 1, None)
    assert job.lease_expires_at is None
    assert len(audit_events(owner.tenant, "workflow.completed")) == 1


def test_a_storage_quota_too_small_for_the_artifact_fails_the_job(owner, queued):
    Tenant.objects.filter(pk=owner.tenant.pk).update(settings={"maxStorageMB": 1})
    QuotaCounter.objects.update_or_create(
        tenant=owner.tenant, resource="storage", defaults={"used": MIB - 10}
    )
    at(GatewayCallFactory(tenant=owner.tenant), datetime(2025, 3, 2, tzinfo=UTC))
    job_id = queued(owner, "usage_report", REPORT)

    assert workflow_job_execute(job_id=job_id) == JobStatus.FAILED

    body = owner.client.get(job_url(job_id)).json()
    assert body["status"] == "failed"
    assert "storage quota" in body["error"]
    assert body["output_data"] == {}
    assert body["completed_at"] is not None
    assert not Artifact.objects.filter(tenant=owner.tenant).exists()
    assert stored_files(owner.tenant) == []
    assert storage_used(owner.tenant) == MIB - 10
    [event] = public_events(owner.tenant, "workflow.failed")
    assert (event["job_id"], event["status"], event["error"]) == (job_id, "failed", body["error"])
    assert not audit_events(owner.tenant, "workflow.completed")


def test_a_full_file_storage_stops_the_job_for_its_retry_rather_than_failing_it(
    owner, queued, monkeypatch, caplog
):
    at(GatewayCallFactory(tenant=owner.tenant), datetime(2025, 3, 2, tzinfo=UTC))
    job_id = queued(owner, "usage_report", REPORT)
    volume = volume_with_room(monkeypatch, room=0)

    with (
        caplog.at_level(logging.WARNING, logger="playground.services.workflows"),
        pytest.raises(StorageUnavailable),  # for its task to send it again
    ):
        workflow_job_execute(job_id=job_id)

    job = WorkflowJob.objects.get(pk=job_id)
    assert (job.status, job.attempts, job.error) == (JobStatus.RUNNING, 1, "")
    assert not Artifact.objects.filter(tenant=owner.tenant).exists()
    assert stored_files(owner.tenant) == []
    assert storage_used(owner.tenant) == 0
    assert not audit_events(owner.tenant, "workflow.failed")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"Workflow job {job_id} (usage_report) stopped: the storage is ")

    # Room again: its retry takes it back and completes it.
    volume.room = 10**9
    assert workflow_job_execute(job_id=job_id, taking_over=[str(job.lease_token)]) == (
        JobStatus.COMPLETED
    )
    assert stored_files(owner.tenant) != []


def test_a_report_past_the_spools_memory_is_written_through_a_file(owner, queued, monkeypatch):
    # A report is never whole in the worker's memory: past the spool's share it is on disk,
    # and what is stored is what was written.
    from config import files
    from playground.services import workflows as workflow_services

    monkeypatch.setattr(files, "SPOOL_IN_MEMORY_BYTES", 1_000)
    on_disk = []
    write = workflow_services.artifact_write

    def artifact_write(**kwargs):
        on_disk.append(kwargs["content"].on_disk)
        return write(**kwargs)

    monkeypatch.setattr(workflow_services, "artifact_write", artifact_write)
    for day in range(1, 21):
        at(GatewayCallFactory(tenant=owner.tenant), datetime(2025, 3, day, tzinfo=UTC))
    job_id = queued(owner, "usage_report", REPORT)

    body = completed(owner, job_id)

    assert on_disk == [True]
    artifact = Artifact.objects.get(workflow_job_id=job_id)
    _, content = downloaded(owner, artifact.pk)
    assert len(content) > 1_000
    assert len(list(csv.DictReader(io.StringIO(content.decode())))) == 20
    assert artifact.sha256 == hashlib.sha256(content).hexdigest()
    assert body["output_data"]["size_bytes"] == len(content) == storage_used(owner.tenant)


def test_an_artifact_outgrowing_the_storage_room_stops_as_soon_as_it_does(
    owner, queued, monkeypatch
):
    from playground.services import workflows as workflow_services

    Tenant.objects.filter(pk=owner.tenant.pk).update(settings={"maxStorageMB": 1})
    room = 2_000
    QuotaCounter.objects.update_or_create(
        tenant=owner.tenant, resource="storage", defaults={"used": MIB - room}
    )
    spools = []
    spool = workflow_services.artifact_spool

    def artifact_spool(**kwargs):
        spools.append(spool(**kwargs))
        return spools[-1]

    monkeypatch.setattr(workflow_services, "artifact_spool", artifact_spool)
    for minute in range(200):  # about 50 kB of CSV
        at(
            GatewayCallFactory(tenant=owner.tenant),
            datetime(2025, 3, 2, 0, minute // 60, minute % 60, tzinfo=UTC),
        )
    job_id = queued(owner, "usage_report", REPORT)

    assert workflow_job_execute(job_id=job_id) == JobStatus.FAILED

    body = owner.client.get(job_url(job_id)).json()
    assert "storage quota" in body["error"]
    # Written up to the row that did not fit, not the whole report.
    [refused] = spools
    assert room < refused.size < room + 500
    assert not Artifact.objects.filter(tenant=owner.tenant).exists()
    assert storage_used(owner.tenant) == MIB - room


def test_a_tokens_quota_exhausted_during_a_batch_fails_it(owner, queued, monkeypatch):
    template = batch_template(owner.tenant)
    rows = [{"question": f"Q{n}"} for n in range(3)]
    job_id = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": rows})
    execute_row = workflows._execute_row

    def quota_gone_after_the_first_row(context, template, version, actor, index, row):
        execution = execute_row(context, template, version, actor, index, row)
        QuotaCounter.objects.filter(tenant=owner.tenant, resource="tokens").update(
            used=tenant_limits(owner.tenant)["tokens"]
        )
        return execution

    monkeypatch.setattr(workflows, "_execute_row", quota_gone_after_the_first_row)

    assert workflow_job_execute(job_id=job_id) == JobStatus.FAILED

    job = WorkflowJob.objects.get(pk=job_id)
    assert job.status == "failed"
    assert "tokens quota" in job.error
    assert list(job.executions.values_list("batch_row", flat=True)) == [0]
    assert GatewayCall.objects.filter(tenant=owner.tenant, status="succeeded").count() == 1
    assert not Artifact.objects.filter(workflow_job=job).exists()
    [event] = public_events(owner.tenant, "workflow.failed")
    assert event["error"] == job.error


def test_a_job_of_a_suspended_organization_fails_without_running(owner, queued):
    template = batch_template(owner.tenant)
    job_id = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": ROWS})
    Tenant.objects.filter(pk=owner.tenant.pk).update(status=TenantStatus.SUSPENDED)

    assert workflow_job_execute(job_id=job_id) == JobStatus.FAILED

    job = WorkflowJob.objects.get(pk=job_id)
    assert (job.status, job.error) == ("failed", "The organization is suspended.")
    assert not GatewayCall.objects.filter(tenant=owner.tenant).exists()
    assert len(public_events(owner.tenant, "workflow.failed")) == 1


def test_a_batch_whose_template_was_deleted_fails_naming_the_template(owner, queued):
    template = batch_template(owner.tenant)
    job_id = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": ROWS})
    template.delete()

    assert workflow_job_execute(job_id=job_id) == JobStatus.FAILED

    assert "template" in WorkflowJob.objects.get(pk=job_id).error.lower()


def test_a_batchs_gateway_calls_are_recorded_as_workflow_calls(owner, queued):
    template = batch_template(owner.tenant)
    job_id = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": ROWS})

    completed(owner, job_id)

    sources = set(GatewayCall.objects.filter(tenant=owner.tenant).values_list("source", flat=True))
    assert sources == {CallSource.WORKFLOW}


# 7. Metrics -------------------------------------------------------------------------------------


def test_metrics_count_jobs_by_status_and_type_and_average_finished_ones(owner, make_caller):
    tenant = owner.tenant
    jobs_of(tenant, "usage_report", ("pending", 0), ("running", 0), ("completed", 5_000))
    # The cancelled job took the mean: the averages hold whether or not it counts as finished.
    jobs_of(tenant, "template_batch", ("completed", 4_000), ("failed", 6_000), ("cancelled", 5_000))
    jobs_of(tenant, "audit_export", ("pending", 0))
    jobs_of(make_caller().tenant, "usage_report", ("completed", 60_000), ("failed", 1_000))

    response = owner.client.get(METRICS)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "total_jobs": 7,
        "pending_jobs": 2,
        "running_jobs": 1,
        "completed_jobs": 2,
        "failed_jobs": 1,
        "cancelled_jobs": 1,
        "avg_execution_time_seconds": 5.0,
        "by_type": {
            "audit_export": {
                "total_jobs": 1,
                "completed_jobs": 0,
                "failed_jobs": 0,
                "avg_execution_time_seconds": None,
            },
            "template_batch": {
                "total_jobs": 3,
                "completed_jobs": 1,
                "failed_jobs": 1,
                "avg_execution_time_seconds": 5.0,
            },
            "usage_report": {
                "total_jobs": 3,
                "completed_jobs": 1,
                "failed_jobs": 0,
                "avg_execution_time_seconds": 5.0,
            },
        },
    }


def test_metrics_of_jobs_that_ran_through_the_api(owner, queued):
    template = batch_template(owner.tenant)
    done = queued(owner, "template_batch", {"template_id": str(template.pk), "rows": ROWS})
    completed(owner, done)
    queued(owner, "usage_report", REPORT)

    body = owner.client.get(METRICS).json()

    job = WorkflowJob.objects.get(pk=done)
    assert (body["total_jobs"], body["completed_jobs"], body["pending_jobs"]) == (2, 1, 1)
    assert body["avg_execution_time_seconds"] == round(job.execution_time_ms / 1000, 3)
    assert body["by_type"]["usage_report"]["avg_execution_time_seconds"] is None


def test_metrics_without_jobs_are_zeros_and_no_average(owner):
    body = owner.client.get(METRICS).json()

    assert body == {
        "total_jobs": 0,
        "pending_jobs": 0,
        "running_jobs": 0,
        "completed_jobs": 0,
        "failed_jobs": 0,
        "cancelled_jobs": 0,
        "avg_execution_time_seconds": None,
        "by_type": {},
    }


def test_metrics_queries_do_not_grow_with_the_jobs(owner, django_assert_max_num_queries):
    jobs_of(owner.tenant, "usage_report", ("completed", 1_000))
    owner.client.get(METRICS)  # the first request of a caller may warm caches

    with CaptureQueriesContext(connection) as one_job:
        assert owner.client.get(METRICS).status_code == 200
    for workflow_type in REGISTRY:
        jobs_of(owner.tenant, workflow_type, *[("completed", 1_000), ("failed", 3_000)] * 10)

    with django_assert_max_num_queries(len(one_job.captured_queries)):
        response = owner.client.get(METRICS)

    assert response.json()["total_jobs"] == 61


# 8. Priority ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("priority", "celery_priority"), [(1, 9), (5, 5), (8, 2), (10, 0)])
def test_the_job_is_queued_at_celery_priority_10_minus_its_priority(
    owner, submit, sent, priority, celery_priority
):
    response = submit(owner, body_of("usage_report", REPORT, priority=priority))

    assert response.status_code == 201, response.content
    job_id = response.json()["job_id"]
    assert sent == [{"args": [job_id], "priority": celery_priority}]
    job = WorkflowJob.objects.get(pk=job_id)
    assert job.priority == priority
    assert job.queued_at is not None
    [event] = audit_events(owner.tenant, "workflow.queued")
    assert event.payload["priority"] == priority


def test_without_a_priority_the_job_is_queued_at_the_default(owner, submit, sent):
    response = submit(owner, body_of("usage_report", REPORT))

    job_id = response.json()["job_id"]
    assert sent == [{"args": [job_id], "priority": 5}]
    assert owner.client.get(job_url(job_id)).json()["priority"] == 5


def test_nothing_is_sent_before_the_request_commits(owner, sent):
    response = owner.client.post(EXECUTE, body_of("usage_report", REPORT), format="json")

    assert response.status_code == 201, response.content
    assert sent == []
    assert WorkflowJob.objects.get(pk=response.json()["job_id"]).queued_at is None


# 9. Idempotency-Key -----------------------------------------------------------------------------


def test_the_same_key_and_body_answer_the_same_job_once(owner, submit, sent):
    body = body_of("usage_report", REPORT, priority=7)
    headers = {"HTTP_IDEMPOTENCY_KEY": "report-march"}

    first = submit(owner, body, **headers)
    again = submit(owner, body, **headers)

    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert WorkflowJob.objects.filter(tenant=owner.tenant).count() == 1
    assert len(sent) == 1
    assert len(audit_events(owner.tenant, "workflow.queued")) == 1


def test_the_same_key_with_another_body_is_422(owner, submit):
    headers = {"HTTP_IDEMPOTENCY_KEY": "report-march"}
    submit(owner, body_of("usage_report", REPORT), **headers)

    response = submit(
        owner, body_of("usage_report", {"start": "2025-04-01", "end": "2025-04-30"}), **headers
    )

    assert_envelope(response, 422, "IDEMPOTENCY_KEY_REUSED")
    assert list(
        WorkflowJob.objects.filter(tenant=owner.tenant).values_list("input_data", flat=True)
    ) == [REPORT]


def test_another_key_queues_another_job(owner, submit):
    body = body_of("usage_report", REPORT)

    first = submit(owner, body, HTTP_IDEMPOTENCY_KEY="one")
    second = submit(owner, body, HTTP_IDEMPOTENCY_KEY="two")

    assert first.json()["job_id"] != second.json()["job_id"]
    assert WorkflowJob.objects.filter(tenant=owner.tenant).count() == 2


# 10. Artifacts ----------------------------------------------------------------------------------


def test_deleting_an_artifact_gives_its_storage_back_and_removes_its_file(
    owner, make_caller, queued, django_capture_on_commit_callbacks
):
    member = make_caller(Role.MEMBER, tenant=owner.tenant)
    kept = Artifact.objects.get(
        pk=completed(owner, queued(owner, "audit_export", {}))["output_data"]["artifact_id"]
    )
    job_id = queued(owner, "usage_report", REPORT)
    artifact = Artifact.objects.get(pk=completed(owner, job_id)["output_data"]["artifact_id"])
    storage = storages["artifacts"]
    assert storage.exists(artifact.file.name)
    assert storage_used(owner.tenant) == kept.size_bytes + artifact.size_bytes

    with django_capture_on_commit_callbacks(execute=True):
        response = member.client.delete(artifact_url(artifact.pk))

    assert response.status_code == 204, response.content
    assert not Artifact.objects.filter(pk=artifact.pk).exists()
    assert not storage.exists(artifact.file.name)
    assert storage.exists(kept.file.name)
    assert storage_used(owner.tenant) == kept.size_bytes
    [event] = audit_events(owner.tenant, "artifact.deleted")
    assert event.actor_id == member.user.pk
    assert event.payload == {
        "artifact_id": str(artifact.pk),
        "name": artifact.name,
        "size_bytes": artifact.size_bytes,
    }
    assert_envelope(owner.client.get(artifact_url(artifact.pk)), 404)
    assert WorkflowJob.objects.get(pk=job_id).status == "completed"


def test_artifacts_are_listed_by_workflow_job(owner, queued):
    first = queued(owner, "usage_report", REPORT)
    second = queued(owner, "usage_report", REPORT)
    for job_id in (first, second):
        completed(owner, job_id)
    ArtifactFactory(tenant=owner.tenant)

    def listed(**params):
        response = owner.client.get(ARTIFACTS, params)
        assert response.status_code == 200, response.content
        return response.json()["results"]

    assert len(listed()) == 3
    [row] = listed(workflow_job_id=first)
    artifact = Artifact.objects.get(workflow_job_id=first)
    assert row == {
        "id": str(artifact.pk),
        "name": "usage-2025-03-01-to-2025-03-31.csv",
        "content_type": "text/csv; charset=utf-8",
        "size_bytes": artifact.size_bytes,
        "sha256": artifact.sha256,
        "run_id": None,
        "workflow_job_id": first,
        "download_url": f"/api/v1/artifacts/{artifact.pk}/download",
        "created_at": row["created_at"],
    }
    assert [r["workflow_job_id"] for r in listed(workflow_job_id=second)] == [second]
    assert_envelope(owner.client.get(ARTIFACTS, {"workflow_job_id": "not-a-uuid"}), 400)


def test_the_artifact_checksum_is_the_downloaded_contents(owner, queued):
    artifact_id = completed(owner, queued(owner, "audit_export", {}))["output_data"]["artifact_id"]

    _, content = downloaded(owner, artifact_id)

    assert hashlib.sha256(content).hexdigest() == Artifact.objects.get(pk=artifact_id).sha256
