"""Projects and orchestration templates: create, change, delete, each audited.

A project's metadata and a template's data are checked by playground.orchestration. A
template's `usage_count` is the runs' (advanced with an F expression when a run uses it),
never set here.
"""

from django.conf import settings
from django.db import transaction

from audit.services import record
from config.db import locked_or_404
from config.exceptions import Conflict
from config.services import UNSET, given, model_update, person
from tenants.models import Tenant

from ..models import ACTIVE_JOB_STATUSES, Artifact, OrchestrationTemplate, Project
from ..orchestration import check_metadata, check_template_data
from .artifacts import artifacts_delete

PROJECT_FIELDS = ("name", "description", "topic", "status", "priority", "metadata")
TEMPLATE_FIELDS = ("name", "description", "category", "is_public", "template_data")


def _checked(fields: dict, allowed: tuple[str, ...]) -> dict:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    if "metadata" in fields:
        fields["metadata"] = check_metadata(fields["metadata"])
    if "template_data" in fields:
        fields["template_data"] = check_template_data(fields["template_data"])
    return fields


def _record(tenant, event_type: str, actor, obj, **payload) -> None:
    """The audit event of a change to a project (`project.*`) or a template
    (`orchestration_template.*`), naming the object by id under `project_id` / `template_id`."""
    key = "project_id" if isinstance(obj, Project) else "template_id"
    record(tenant=tenant, event_type=event_type, actor=actor, payload={key: str(obj.pk), **payload})


def _update(model, obj, *, actor, fields: dict, allowed: tuple[str, ...], event_type: str):
    """Change what `fields` names on the locked row; its event lists what changed."""
    fields = _checked(fields, allowed)
    obj = locked_or_404(model.objects, pk=obj.pk)
    changed = model_update(instance=obj, data=fields)
    if changed:
        _record(obj.tenant, event_type, actor, obj, changed=sorted(changed))
    return obj


def _delete(model, obj, *, actor, event_type: str) -> None:
    obj = locked_or_404(model.objects, pk=obj.pk)
    _record(obj.tenant, event_type, actor, obj, name=obj.name)
    obj.delete()


@transaction.atomic
def project_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    description: str = "",
    topic: str = "",
    status: str = "active",
    priority: str = "medium",
    metadata: dict | None = None,
) -> Project:
    fields = _checked(
        {
            "name": name,
            "description": description,
            "topic": topic,
            "status": status,
            "priority": priority,
            "metadata": metadata if metadata is not None else {},
        },
        PROJECT_FIELDS,
    )
    Tenant.objects.ensure_room(
        tenant.pk,
        Project.objects.filter(tenant=tenant),
        limit=settings.PROJECTS_PER_TENANT,
        counted="projects",
    )
    project = Project.objects.create(tenant=tenant, created_by=person(actor), **fields)
    _record(tenant, "project.created", actor, project, name=project.name, status=project.status)
    return project


@transaction.atomic
def project_update(
    *,
    project: Project,
    actor,
    name=UNSET,
    description=UNSET,
    topic=UNSET,
    status=UNSET,
    priority=UNSET,
    metadata=UNSET,
) -> Project:
    """Change the fields given (the others keep their values)."""
    return _update(
        Project,
        project,
        actor=actor,
        fields=given(
            name=name,
            description=description,
            topic=topic,
            status=status,
            priority=priority,
            metadata=metadata,
        ),
        allowed=PROJECT_FIELDS,
        event_type="project.updated",
    )


@transaction.atomic
def project_delete(*, project: Project, actor) -> None:
    """Delete the project with its runs and their artifacts (their storage given back); a
    project with a pending or running run is 409 (cancel the run first)."""
    project = locked_or_404(Project.objects, pk=project.pk)
    active = project.runs.filter(status__in=ACTIVE_JOB_STATUSES).values_list("pk", flat=True)
    if active:
        raise Conflict(
            "This project has a run in progress; cancel it (or let it finish) first.",
            details={"run_ids": [str(pk) for pk in active]},
        )
    artifacts_delete(tenant=project.tenant, artifacts=Artifact.objects.filter(run__project=project))
    _delete(Project, project, actor=actor, event_type="project.deleted")


@transaction.atomic
def orchestration_template_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    template_data: dict,
    description: str = "",
    category: str = "",
    is_public: bool = False,
) -> OrchestrationTemplate:
    fields = _checked(
        {
            "name": name,
            "description": description,
            "category": category,
            "is_public": is_public,
            "template_data": template_data,
        },
        TEMPLATE_FIELDS,
    )
    Tenant.objects.ensure_room(
        tenant.pk,
        OrchestrationTemplate.objects.filter(tenant=tenant),
        limit=settings.ORCHESTRATION_TEMPLATES_PER_TENANT,
        counted="orchestration_templates",
    )
    template = OrchestrationTemplate.objects.create(
        tenant=tenant, created_by=person(actor), **fields
    )
    _record(
        tenant,
        "orchestration_template.created",
        actor,
        template,
        name=template.name,
        is_public=template.is_public,
    )
    return template


@transaction.atomic
def orchestration_template_update(
    *,
    orchestration_template: OrchestrationTemplate,
    actor,
    name=UNSET,
    description=UNSET,
    category=UNSET,
    is_public=UNSET,
    template_data=UNSET,
) -> OrchestrationTemplate:
    """Change the fields given (the others keep their values)."""
    return _update(
        OrchestrationTemplate,
        orchestration_template,
        actor=actor,
        fields=given(
            name=name,
            description=description,
            category=category,
            is_public=is_public,
            template_data=template_data,
        ),
        allowed=TEMPLATE_FIELDS,
        event_type="orchestration_template.updated",
    )


@transaction.atomic
def orchestration_template_delete(*, orchestration_template: OrchestrationTemplate, actor) -> None:
    _delete(
        OrchestrationTemplate,
        orchestration_template,
        actor=actor,
        event_type="orchestration_template.deleted",
    )
