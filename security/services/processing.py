"""The register of processing activities (GDPR Art. 30): create, change, approve, deprecate,
delete a draft.

`dpia_required` is computed here on every write (security.models.dpia_required), never given.
An approved or deprecated activity is part of the register's record: it is deprecated, not
deleted (409).
"""

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import record
from config.db import locked_or_404
from config.exceptions import Conflict
from config.services import UNSET, check_move, given, model_update, person
from tenants.models import Tenant

from ..models import ACTIVITY_TRANSITIONS, ActivityStatus, ProcessingActivity, dpia_required

_DPIA_INPUTS = (
    "privacy_impact_score",
    "profiling_involved",
    "automated_processing",
    "special_categories",
)


def _payload(activity: ProcessingActivity, **extra) -> dict:
    return {
        "activity_id": str(activity.pk),
        "name": activity.name,
        "legal_basis": activity.legal_basis,
        "status": activity.status,
        "dpia_required": activity.dpia_required,
        **extra,
    }


def _name_taken(name: str) -> Conflict:
    return Conflict(
        "The register already has an activity with this name.",
        details={"name": [f"{name!r} is taken."]},
    )


def _check_name(tenant, name: str, *, exclude=None) -> None:
    """Names are unique per organization, whatever their case."""
    same = ProcessingActivity.objects.filter(tenant=tenant, name__iexact=name)
    if exclude is not None:
        same = same.exclude(pk=exclude.pk)
    if same.exists():
        raise _name_taken(name)


@transaction.atomic
def processing_activity_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    purpose: str,
    legal_basis: str,
    retention_period_months: int,
    privacy_impact_score: int,
    description: str = "",
    data_categories: list | None = None,
    data_subjects: list | None = None,
    special_categories: list | None = None,
    recipients: list | None = None,
    international_transfers: list | None = None,
    automated_processing: bool = False,
    profiling_involved: bool = False,
    third_parties_involved: bool = False,
    risk_mitigation_measures: str = "",
    dpia_completed_on=None,
) -> ProcessingActivity:
    """Add an activity to the register, as a draft."""
    _check_name(tenant, name)
    special_categories = list(special_categories or [])
    fields = {
        "name": name,
        "description": description,
        "purpose": purpose,
        "legal_basis": legal_basis,
        "data_categories": list(data_categories or []),
        "data_subjects": list(data_subjects or []),
        "special_categories": special_categories,
        "recipients": list(recipients or []),
        "international_transfers": list(international_transfers or []),
        "automated_processing": automated_processing,
        "profiling_involved": profiling_involved,
        "retention_period_months": retention_period_months,
        "third_parties_involved": third_parties_involved,
        "privacy_impact_score": privacy_impact_score,
        "risk_mitigation_measures": risk_mitigation_measures,
        "dpia_completed_on": dpia_completed_on,
    }
    fields["dpia_required"] = dpia_required(**{key: fields[key] for key in _DPIA_INPUTS})
    try:
        with transaction.atomic():
            activity = ProcessingActivity.objects.create(
                tenant=tenant, created_by=person(actor), **fields
            )
    except IntegrityError:
        raise _name_taken(name) from None
    record(
        tenant=tenant,
        event_type="processing_activity.created",
        actor=actor,
        payload=_payload(activity),
    )
    return activity


@transaction.atomic
def processing_activity_update(
    *,
    processing_activity: ProcessingActivity,
    actor,
    status=UNSET,
    name=UNSET,
    description=UNSET,
    purpose=UNSET,
    legal_basis=UNSET,
    data_categories=UNSET,
    data_subjects=UNSET,
    special_categories=UNSET,
    recipients=UNSET,
    international_transfers=UNSET,
    automated_processing=UNSET,
    profiling_involved=UNSET,
    retention_period_months=UNSET,
    third_parties_involved=UNSET,
    privacy_impact_score=UNSET,
    risk_mitigation_measures=UNSET,
    dpia_completed_on=UNSET,
) -> ProcessingActivity:
    """Change the fields given; a status move must be legal (ACTIVITY_TRANSITIONS, else 409).
    Approving records who approved it and when."""
    changes = given(
        name=name,
        description=description,
        purpose=purpose,
        legal_basis=legal_basis,
        data_categories=data_categories,
        data_subjects=data_subjects,
        special_categories=special_categories,
        recipients=recipients,
        international_transfers=international_transfers,
        automated_processing=automated_processing,
        profiling_involved=profiling_involved,
        retention_period_months=retention_period_months,
        third_parties_involved=third_parties_involved,
        privacy_impact_score=privacy_impact_score,
        risk_mitigation_measures=risk_mitigation_measures,
        dpia_completed_on=dpia_completed_on,
    )
    activity = locked_or_404(ProcessingActivity.objects, pk=processing_activity.pk)
    old_status = activity.status
    fields = dict(changes)
    if "name" in fields:
        _check_name(activity.tenant, fields["name"], exclude=activity)
    if old_status == ActivityStatus.DEPRECATED and any(
        getattr(activity, name) != value for name, value in fields.items()
    ):
        raise Conflict(
            "The activity is deprecated: it stays in the register as it was.",
            details={"status": old_status},
        )
    revised = sorted(
        name
        for name, value in fields.items()
        if name != "dpia_completed_on" and getattr(activity, name) != value
    )
    if old_status == ActivityStatus.APPROVED and revised and status != ActivityStatus.DRAFT:
        # What was approved stays what it says; a revision goes through a draft (recording a
        # finished DPIA is not a revision).
        raise Conflict(
            "The activity is approved: move it back to draft to revise it.",
            details={"status": old_status, "fields": revised},
        )
    if status is not UNSET and status != old_status:
        check_move(ACTIVITY_TRANSITIONS, old_status, status, noun="An activity")
        fields["status"] = status
        if status == ActivityStatus.APPROVED:
            fields.update(approved_at=timezone.now(), approved_by=person(actor))
        elif status == ActivityStatus.DRAFT:
            # Back to a draft for a revision: no longer approved until approved again.
            fields.update(approved_at=None, approved_by=None)
    inputs = {key: fields.get(key, getattr(activity, key)) for key in _DPIA_INPUTS}
    fields["dpia_required"] = dpia_required(**inputs)
    try:
        with transaction.atomic():
            changed = model_update(instance=activity, data=fields)
    except IntegrityError:
        raise _name_taken(fields["name"]) from None
    if not changed:
        return activity
    event_type = {
        ActivityStatus.APPROVED: "processing_activity.approved",
        ActivityStatus.DEPRECATED: "processing_activity.deprecated",
    }.get(activity.status if activity.status != old_status else "", "processing_activity.updated")
    payload = _payload(activity, changed=sorted(changed))
    if activity.status != old_status:
        payload["previous_status"] = old_status
    record(tenant=activity.tenant, event_type=event_type, actor=actor, payload=payload)
    return activity


@transaction.atomic
def processing_activity_delete(*, processing_activity: ProcessingActivity, actor) -> None:
    """Delete a draft; an approved or deprecated activity is part of the record (409)."""
    activity = locked_or_404(ProcessingActivity.objects, pk=processing_activity.pk)
    if activity.status != ActivityStatus.DRAFT:
        raise Conflict(
            f"The activity is {activity.status}: deprecate it instead, the register keeps it.",
            details={"status": activity.status},
        )
    record(
        tenant=activity.tenant,
        event_type="processing_activity.deleted",
        actor=actor,
        payload=_payload(activity),
    )
    activity.delete()
