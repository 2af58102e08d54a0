from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone

# From here on the gateway notes every call's reservation (a GatewayReservation row), an
# orchestration phase's and a batch row's too, and whoever takes such work over gives its
# reservation back by deleting that note. The work in flight when this runs was noted on the
# phase or the job only: its notes are written here, so that a successor finds them. A call
# already recorded under the work's request id was settled and gets none.


def _note_missing(apps, *, tenant_id, request_id: str, tokens: int, source: str, expires_at):
    GatewayCall = apps.get_model("playground", "GatewayCall")
    GatewayReservation = apps.get_model("playground", "GatewayReservation")
    if GatewayCall.objects.filter(tenant_id=tenant_id, request_id=request_id).exists():
        return
    if GatewayReservation.objects.filter(tenant_id=tenant_id, request_id=request_id).exists():
        return
    GatewayReservation.objects.create(
        tenant_id=tenant_id,
        source=source,
        tokens=tokens,
        request_id=request_id[:128],
        expires_at=expires_at,
    )


def note_work_in_flight(apps, schema_editor):
    OrchestrationPhase = apps.get_model("playground", "OrchestrationPhase")
    WorkflowJob = apps.get_model("playground", "WorkflowJob")
    expires_at = timezone.now() + timedelta(seconds=settings.GATEWAY_RESERVATION_LEASE_SECONDS)
    phases = OrchestrationPhase.objects.filter(
        status="running", claim__isnull=False, reserved_tokens__gt=0
    )
    for phase in phases.only("tenant_id", "run_id", "claim", "reserved_tokens").iterator():
        _note_missing(
            apps,
            tenant_id=phase.tenant_id,
            # playground.services.runs._request_id
            request_id=f"run:{phase.run_id}:phase:{phase.pk}:{phase.claim}",
            tokens=phase.reserved_tokens,
            source="orchestration",
            expires_at=expires_at,
        )
    jobs = WorkflowJob.objects.filter(status="running", reserved_tokens__gt=0).exclude(
        reserved_call=""
    )
    for job in jobs.only("tenant_id", "reserved_call", "reserved_tokens").iterator():
        _note_missing(
            apps,
            tenant_id=job.tenant_id,
            request_id=job.reserved_call,
            tokens=job.reserved_tokens,
            source="workflow",
            expires_at=expires_at,
        )


def forget_notes_of_work(apps, schema_editor):
    # Before this migration a phase's or a batch row's reservation was noted on the work only,
    # and its settlement deleted no note: a note left here would be given back a second time
    # when its lease ran out.
    GatewayReservation = apps.get_model("playground", "GatewayReservation")
    GatewayReservation.objects.filter(source__in=["orchestration", "workflow"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("playground", "0009_gateway_reservations_logged"),
    ]

    operations = [
        migrations.RunPython(note_work_in_flight, forget_notes_of_work),
    ]
