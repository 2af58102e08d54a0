"""Projects and orchestration templates: create, change, delete, each audited.

A project's metadata and a template's data are checked by playground.orchestration. A
template's `usage_count` is the runs' (advanced with an F expression when a run uses it),
never set here.
"""

from django.db import transaction

from audit.services import record
from config.services import model_update
from tenants.models import Tenant

from ..models import OrchestrationTemplate, Project
from ..orchestration import check_metadata, check_template_data

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


def _person(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


def _changes(changed: dict) -> list[str]:
    return sorted(changed)


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
    project = Project.objects.create(tenant=tenant, created_by=_person(actor), **fields)
    record(
        tenant=tenant,
        event_type="project.created",
        actor=actor,
        payload={"project_id": str(project.pk), "name": project.name, "status": project.status},
    )
    return project


@transaction.atomic
def project_update(*, project: Project, actor, **fields) -> Project:
    """Change what `fields` names (PROJECT_FIELDS)."""
    # The API passes the caller's permissions too; the rules here do not depend on them.
    fields.pop("actor_permissions", None)
    fields = _checked(fields, PROJECT_FIELDS)
    project = Project.objects.select_for_update().get(pk=project.pk)
    changed = model_update(instance=project, data=fields)
    if changed:
        record(
            tenant=project.tenant,
            event_type="project.updated",
            actor=actor,
            payload={"project_id": str(project.pk), "changed": _changes(changed)},
        )
    return project


@transaction.atomic
def project_delete(*, project: Project, actor) -> None:
    project = Project.objects.select_for_update().get(pk=project.pk)
    record(
        tenant=project.tenant,
        event_type="project.deleted",
        actor=actor,
        payload={"project_id": str(project.pk), "name": project.name},
    )
    project.delete()


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
    template = OrchestrationTemplate.objects.create(
        tenant=tenant, created_by=_person(actor), **fields
    )
    record(
        tenant=tenant,
        event_type="orchestration_template.created",
        actor=actor,
        payload={
            "template_id": str(template.pk),
            "name": template.name,
            "is_public": template.is_public,
        },
    )
    return template


@transaction.atomic
def orchestration_template_update(
    *, orchestration_template: OrchestrationTemplate, actor, **fields
) -> OrchestrationTemplate:
    """Change what `fields` names (TEMPLATE_FIELDS)."""
    # The API passes the caller's permissions too; the rules here do not depend on them.
    fields.pop("actor_permissions", None)
    fields = _checked(fields, TEMPLATE_FIELDS)
    template = OrchestrationTemplate.objects.select_for_update().get(pk=orchestration_template.pk)
    changed = model_update(instance=template, data=fields)
    if changed:
        record(
            tenant=template.tenant,
            event_type="orchestration_template.updated",
            actor=actor,
            payload={"template_id": str(template.pk), "changed": _changes(changed)},
        )
    return template


@transaction.atomic
def orchestration_template_delete(*, orchestration_template: OrchestrationTemplate, actor) -> None:
    template = OrchestrationTemplate.objects.select_for_update().get(pk=orchestration_template.pk)
    record(
        tenant=template.tenant,
        event_type="orchestration_template.deleted",
        actor=actor,
        payload={"template_id": str(template.pk), "name": template.name},
    )
    template.delete()
