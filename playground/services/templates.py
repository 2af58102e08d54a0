"""Prompt templates: create, update, version, publish, delete, bulk operations, execute, rate.

A template's content (system prompt, user prompt template, variables, model config) lives in
immutable versions: a content change is saved as version n+1 (`create_new_version`), which the
`latest` label follows; `production` moves only when a version is published. Name,
description, category and status change in place.
"""

import re
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import APIKey
from audit.services import record
from config.db import create_or_conflict, locked_or_404
from config.exceptions import ApplicationError, Conflict
from config.services import model_update
from tenants.models import Tenant

from .. import rendering
from ..models import (
    CallSource,
    ExecutionStatus,
    LanguageModel,
    PromptExecution,
    PromptTemplate,
    PromptTemplateVersion,
    TemplateStatus,
)
from .gateway import ChatInput, gateway_call

CONTENT_FIELDS = ("system_prompt", "user_prompt_template", "variables", "model_config")
METADATA_FIELDS = ("name", "description", "category", "status")
# model_config key -> (low, high) for the numeric settings; max_tokens is checked against the
# model's own limit.
MODEL_CONFIG_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
}
MODEL_CONFIG_KEYS = frozenset({"model", "max_tokens", *MODEL_CONFIG_RANGES})
# What a category may be (the API's serializer checks the same pattern).
CATEGORY_PATTERN = re.compile(r"(?:[a-z0-9][a-z0-9_-]{0,63})?")
BULK_OPERATIONS = ("activate", "deactivate", "delete", "change_category")
BULK_MAX_IDS = 100


def _invalid(errors: dict[str, list[str]]) -> ApplicationError:
    first = next(iter(errors.values()))[0]
    return ApplicationError(first, details=errors)


def _checked_model_config(config: dict) -> dict:
    """`config` with its model resolved (the default model when none is named) and every
    setting in range for that model; a 400 naming each problem."""
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(config) - MODEL_CONFIG_KEYS)
    if unknown:
        errors["model_config"] = [
            f"Unknown settings: {', '.join(unknown)}; allowed: "
            f"{', '.join(sorted(MODEL_CONFIG_KEYS))}."
        ]
    name = config.get("model") or settings.GATEWAY_DEFAULT_MODEL
    model = LanguageModel.objects.filter(name=name, active=True).first()
    if model is None:
        errors["model_config.model"] = [f"Unknown model {name!r}; GET gateway/models lists them."]
    for key, (low, high) in MODEL_CONFIG_RANGES.items():
        value = config.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            errors[f"model_config.{key}"] = [f"{key} must be a number from {low} to {high}."]
    max_tokens = config.get("max_tokens")
    if max_tokens is not None:
        limit = model.max_output_tokens if model is not None else None
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            errors["model_config.max_tokens"] = ["max_tokens must be a positive whole number."]
        elif limit is not None and max_tokens > limit:
            errors["model_config.max_tokens"] = [f"{name} answers at most {limit} tokens."]
    if errors:
        raise _invalid(errors)
    return {**config, "model": name}


def _checked_variables(variables: list[dict]) -> list[dict]:
    errors, names = [], set()
    for variable in variables:
        name = variable["name"]
        if name in names:
            errors.append(f"Variable {name!r} is declared twice.")
        names.add(name)
        kind = variable.get("type", "string")
        if kind == "enum" and not variable.get("options"):
            errors.append(f"Enum variable {name!r} needs its options.")
        default = variable.get("default")
        if default is not None:
            try:
                rendering.resolve_values([{**variable, "required": False}], {name: default})
            except rendering.TemplateError as error:
                errors.append(f"The default of {name!r} is invalid: {error}")
    if errors:
        raise _invalid({"variables": errors})
    return variables


def _checked_content(content: dict) -> dict:
    """Template content checked as a whole: placeholders are bare, declared names; variables
    are unique and their defaults fit their types; the model config fits its model."""
    variables = _checked_variables(list(content.get("variables") or []))
    errors, used, used_in_system = {}, [], []
    try:
        used = rendering.placeholders(content["user_prompt_template"])
    except rendering.TemplateError as error:
        errors.update(error.errors)
    try:
        used_in_system = rendering.placeholders(
            content.get("system_prompt") or "", field="system_prompt"
        )
    except rendering.TemplateError as error:
        errors.update(error.errors)
    if errors:
        raise _invalid(errors)
    undeclared = sorted((set(used) | set(used_in_system)) - {v["name"] for v in variables})
    if undeclared:
        raise _invalid(
            {
                "variables": [
                    f"The prompts use undeclared variables: {', '.join(undeclared)}; declare "
                    "each in `variables`."
                ]
            }
        )
    return {
        "system_prompt": content.get("system_prompt") or "",
        "user_prompt_template": content["user_prompt_template"],
        "variables": variables,
        "model_config": _checked_model_config(dict(content.get("model_config") or {})),
    }


def _payload(template: PromptTemplate, **extra) -> dict:
    return {
        "template_id": str(template.pk),
        "name": template.name,
        "category": template.category,
        "status": template.status,
        "latest_version": template.latest_version,
        "production_version": template.production_version,
        **extra,
    }


_NAME_TAKEN = "A template named {name!r} already exists in this organization."


def _name_taken(name: str) -> Conflict:
    return Conflict(
        _NAME_TAKEN.format(name=name), details={"name": ["Already used by another template."]}
    )


@transaction.atomic
def prompt_template_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    user_prompt_template: str,
    description: str = "",
    category: str = "",
    status: str = TemplateStatus.DRAFT,
    system_prompt: str = "",
    variables: list | None = None,
    model_config: dict | None = None,
) -> PromptTemplate:
    """Create a template with its version 1."""
    content = _checked_content(
        {
            "system_prompt": system_prompt,
            "user_prompt_template": user_prompt_template,
            "variables": variables or [],
            "model_config": model_config or {},
        }
    )
    Tenant.objects.ensure_room(
        tenant.pk,
        PromptTemplate.objects.filter(tenant=tenant),
        limit=settings.PROMPT_TEMPLATES_PER_TENANT,
        counted="prompt_templates",
    )
    template = create_or_conflict(
        PromptTemplate,
        conflict_message=_NAME_TAKEN.format(name=name),
        conflict_details={"name": ["Already used by another template."]},
        tenant=tenant,
        name=name,
        description=description,
        category=category,
        status=status,
        created_by=actor,
    )
    PromptTemplateVersion.objects.create(
        tenant=tenant, template=template, version=1, created_by=actor, **content
    )
    record(
        tenant=tenant, event_type="prompt_template.created", actor=actor, payload=_payload(template)
    )
    return template


def _as_stored(key: str, value):
    # A model config is stored with its model filled in: one that names none means the default.
    if key == "model_config" and isinstance(value, dict):
        return {**value, "model": value.get("model") or settings.GATEWAY_DEFAULT_MODEL}
    return value


@transaction.atomic
def prompt_template_update(
    *,
    template: PromptTemplate,
    actor,
    create_new_version: bool = False,
    change_note: str = "",
    **changes,
) -> PromptTemplate:
    """Change a template's name, description, category or status in place, and save content
    changes as a new version (only with `create_new_version`: versions are immutable)."""
    unknown = set(changes) - set(METADATA_FIELDS) - set(CONTENT_FIELDS)
    if unknown:
        raise ValueError(f"prompt_template_update cannot change {sorted(unknown)}")
    template = locked_or_404(PromptTemplate.objects, pk=template.pk)
    if create_new_version:
        _ensure_version_room(template)
    latest = template.versions.get(version=template.latest_version)
    content_changes = {
        key: value
        for key, value in changes.items()
        if key in CONTENT_FIELDS and _as_stored(key, value) != getattr(latest, key)
    }
    if content_changes and not create_new_version:
        raise ApplicationError(
            "Template content is versioned and versions are immutable: send "
            "create_new_version=true to save these changes as version "
            f"{template.latest_version + 1}.",
            details={key: ["Changes need create_new_version=true."] for key in content_changes},
        )
    metadata = {key: value for key, value in changes.items() if key in METADATA_FIELDS}
    try:
        with transaction.atomic():
            diff = model_update(instance=template, data=metadata)
    except IntegrityError:
        raise _name_taken(metadata["name"]) from None
    if diff:
        record(
            tenant=template.tenant,
            event_type="prompt_template.updated",
            actor=actor,
            payload=_payload(template, changes=diff),
        )
    if create_new_version:
        content = _checked_content(
            {key: changes.get(key, getattr(latest, key)) for key in CONTENT_FIELDS}
        )
        version = template.latest_version + 1
        PromptTemplateVersion.objects.create(
            tenant=template.tenant,
            template=template,
            version=version,
            created_by=actor,
            change_note=change_note,
            **content,
        )
        model_update(instance=template, data={"latest_version": version})
        record(
            tenant=template.tenant,
            event_type="prompt_template.versioned",
            actor=actor,
            payload=_payload(template, version=version, change_note=change_note),
        )
    return template


def _ensure_version_room(template: PromptTemplate) -> None:
    """409 CONFLICT when the (locked) template already has PROMPT_TEMPLATE_VERSIONS_PER_TEMPLATE
    versions. Versions are never deleted (executions and labels refer to them), so they are
    numbered 1 to latest_version."""
    limit = settings.PROMPT_TEMPLATE_VERSIONS_PER_TEMPLATE
    if template.latest_version >= limit:
        raise Conflict(
            f"The template already has {template.latest_version} versions; it may have at most "
            f"{limit}. Create a new template from its latest version.",
            details={"versions": template.latest_version, "limit": limit},
        )


@transaction.atomic
def prompt_template_publish(*, template: PromptTemplate, actor, version: int) -> PromptTemplate:
    """Move the `production` label to `version` (of this template)."""
    template = locked_or_404(PromptTemplate.objects, pk=template.pk)
    if not template.versions.filter(version=version).exists():
        raise ApplicationError(
            f"This template has no version {version}.",
            details={"version": [f"Versions run from 1 to {template.latest_version}."]},
        )
    previous = template.production_version
    if previous != version:
        model_update(instance=template, data={"production_version": version})
        record(
            tenant=template.tenant,
            event_type="prompt_template.published",
            actor=actor,
            payload=_payload(template, version=version, previous_version=previous),
        )
    return template


@transaction.atomic
def prompt_template_delete(*, template: PromptTemplate, actor) -> None:
    """Delete a template with its versions and executions (the gateway's call records stay)."""
    template = locked_or_404(PromptTemplate.objects, pk=template.pk)
    payload = _payload(template)
    template.delete()
    record(
        tenant=template.tenant, event_type="prompt_template.deleted", actor=actor, payload=payload
    )


@dataclass(frozen=True)
class BulkResult:
    id: str
    status: str  # success, error
    error: str = ""


def _bulk_one(template: PromptTemplate, *, actor, operation: str, parameters: dict) -> None:
    if operation == "delete":
        prompt_template_delete(template=template, actor=actor)
        return
    change = {
        "activate": {"status": TemplateStatus.ACTIVE},
        "deactivate": {"status": TemplateStatus.DRAFT},
        "change_category": {"category": parameters.get("category", "")},
    }[operation]
    prompt_template_update(template=template, actor=actor, **change)


def prompt_templates_bulk(
    *, tenant: Tenant, actor, operation: str, template_ids: list, parameters: dict | None = None
) -> list[BulkResult]:
    """Apply `operation` to each template, each in its own transaction: one failure (a
    foreign or missing id) never undoes the others. At most BULK_MAX_IDS ids."""
    parameters = parameters or {}
    if operation not in BULK_OPERATIONS:
        raise ApplicationError(
            f"Unknown operation {operation!r}.",
            details={"operation": [f"One of: {', '.join(BULK_OPERATIONS)}."]},
        )
    if operation == "change_category" and not (
        isinstance(parameters.get("category"), str)
        and CATEGORY_PATTERN.fullmatch(parameters["category"])
    ):
        raise ApplicationError(
            "change_category needs parameters.category: lower-case letters, digits, - and _.",
            details={"parameters.category": ["A category such as faq or support-macros."]},
        )
    if len(template_ids) > BULK_MAX_IDS:
        raise ApplicationError(
            f"At most {BULK_MAX_IDS} templates per request.",
            details={"template_ids": [f"At most {BULK_MAX_IDS} ids."]},
        )
    found = PromptTemplate.objects.filter(tenant=tenant, pk__in=template_ids).in_bulk()
    results = []
    for template_id in template_ids:
        template = found.get(template_id)
        if template is None:
            results.append(BulkResult(str(template_id), "error", "Template not found."))
            continue
        try:
            with transaction.atomic():
                _bulk_one(template, actor=actor, operation=operation, parameters=parameters)
        except ApplicationError as error:
            results.append(BulkResult(str(template_id), "error", error.message))
            continue
        except PromptTemplate.DoesNotExist:  # named twice: the first deleted it
            results.append(BulkResult(str(template_id), "error", "Template not found."))
            continue
        results.append(BulkResult(str(template_id), "success"))
    return results


def prompt_template_execute(
    *,
    template: PromptTemplate,
    version: PromptTemplateVersion,
    actor,
    api_key: APIKey | None,
    variables: dict,
    save_execution: bool = True,
    request_id: str = "",
    source: str = CallSource.PLAYGROUND,
    note=None,
) -> PromptExecution:
    """Render `version` with `variables` and run it through the gateway (same reservation,
    metering and call record as chat/completions). Returns the execution, saved unless
    `save_execution` is false; a failed upstream is a failed execution, not an error.
    `request_id` and `note` go to the gateway (gateway_call)."""
    try:
        values = rendering.resolve_values(version.variables, variables)
        rendering.ensure_renderable(version.texts, values)
    except rendering.TemplateError as error:
        raise _invalid(error.errors) from None
    user_prompt = rendering.render(version.user_prompt_template, values)
    system_prompt = rendering.render(version.system_prompt, values)
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user_prompt}
    ]
    config = version.model_config
    result, call, error = gateway_call(
        tenant=template.tenant,
        user_id=getattr(actor, "pk", None),
        api_key=api_key,
        chat=ChatInput(
            model=config.get("model") or settings.GATEWAY_DEFAULT_MODEL,
            messages=tuple(messages),
            max_tokens=config.get("max_tokens"),
            temperature=config.get("temperature"),
            top_p=config.get("top_p"),
        ),
        source=source,
        request_id=request_id,
        note=note,
    )
    execution = PromptExecution(
        tenant=template.tenant,
        template=template,
        version=version,
        gateway_call=call,
        status=ExecutionStatus.SUCCEEDED if error is None else ExecutionStatus.FAILED,
        variables=variables,
        rendered_prompt=user_prompt,
        output=result.content if result is not None else "",
        error="" if error is None else f"The AI provider could not answer ({error.kind}).",
        model=call.model,
        response_time_ms=call.latency_ms,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        tokens_used=call.total_tokens,
        cost_micros=call.cost_micros,
        executed_by=actor,
    )
    execution.created_at = timezone.now()
    if save_execution:
        execution.save()
    return execution


@transaction.atomic
def prompt_execution_rate(*, execution: PromptExecution, actor, rating: int) -> PromptExecution:
    """Rate an execution 1 to 5 (again to change it)."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ApplicationError("The rating is 1 to 5.", details={"rating": ["From 1 to 5."]})
    execution = locked_or_404(PromptExecution.objects, pk=execution.pk)
    previous = execution.rating
    model_update(
        instance=execution,
        data={"rating": rating, "rated_at": timezone.now(), "rated_by": actor},
    )
    record(
        tenant=execution.tenant,
        event_type="prompt_execution.rated",
        actor=actor,
        payload={
            "execution_id": str(execution.pk),
            "template_id": str(execution.template_id),
            "rating": rating,
            "previous_rating": previous,
        },
    )
    return execution
