"""The gateway's catalogue, changed by platform staff (the admin): providers and models.

Each change is a platform audit event (no tenant), so a price change is on the record. A
provider that models still use cannot be deleted (409): move its models first.
"""

from django.db import transaction

from audit.services import record
from config.db import create_or_conflict, locked_or_404, update_or_conflict
from config.exceptions import ApplicationError, Conflict

from ..models import LanguageModel, Provider
from .gateway import catalogue_cache


def _changed() -> None:
    # This process reads the new catalogue at once; the others within its cache's TTL.
    transaction.on_commit(catalogue_cache.clear)


PROVIDER_FIELDS = (
    "name",
    "kind",
    "base_url",
    "api_key_env",
    "timeout_seconds",
    "max_retries",
    "enabled",
)
# A name another save took after the admin form checked it (a double-clicked "Save").
PROVIDER_TAKEN = "A provider with this name already exists."
MODEL_TAKEN = "A model with this name already exists."
MODEL_FIELDS = (
    "name",
    "description",
    "provider",
    "upstream_model",
    "context_window",
    "max_output_tokens",
    "input_price_micros",
    "output_price_micros",
    "fallbacks",
    "active",
)


def check_fallbacks(fallbacks, *, name: str) -> list[str]:
    """The fallback names, each an existing model other than `name`, without repeats."""
    if not isinstance(fallbacks, list) or not all(isinstance(item, str) for item in fallbacks):
        raise ApplicationError(
            "Fallbacks are a list of model names.", details={"fallbacks": ["A list of names."]}
        )
    problems = []
    if name in fallbacks:
        problems.append("A model cannot fall back to itself.")
    if len(set(fallbacks)) != len(fallbacks):
        problems.append("A fallback is listed twice.")
    unknown = sorted(
        set(fallbacks)
        - set(LanguageModel.objects.filter(name__in=fallbacks).values_list("name", flat=True))
    )
    if unknown:
        problems.append(f"Unknown models: {', '.join(unknown)}.")
    if problems:
        raise ApplicationError(problems[0], details={"fallbacks": problems})
    return fallbacks


def _plain_diff(diff: dict) -> dict:
    # A changed provider is shown by name: audit payloads are JSON.
    def plain(value):
        return str(value) if isinstance(value, Provider) else value

    return {key: {"from": plain(c["from"]), "to": plain(c["to"])} for key, c in diff.items()}


def _provider_payload(provider: Provider, **extra) -> dict:
    # The key's variable name only: the key itself is never read here.
    return {
        "provider": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "api_key_env": provider.api_key_env,
        **extra,
    }


def _model_payload(model: LanguageModel, **extra) -> dict:
    return {
        "model": model.name,
        "provider": model.provider.name if model.provider_id else "local",
        "input_price_micros": model.input_price_micros,
        "output_price_micros": model.output_price_micros,
        **extra,
    }


@transaction.atomic
def provider_create(*, actor, **fields) -> Provider:
    provider = create_or_conflict(
        Provider,
        conflict_message=PROVIDER_TAKEN,
        **{k: v for k, v in fields.items() if k in PROVIDER_FIELDS},
    )
    _changed()
    record(
        tenant=None,
        event_type="gateway.provider.created",
        actor=actor,
        payload=_provider_payload(provider),
    )
    return provider


@transaction.atomic
def provider_update(*, provider: Provider, actor, **changes) -> Provider:
    provider = locked_or_404(Provider.objects, pk=provider.pk)
    diff = update_or_conflict(
        provider,
        {k: v for k, v in changes.items() if k in PROVIDER_FIELDS},
        conflict_message=PROVIDER_TAKEN,
    )
    if diff:
        _changed()
        record(
            tenant=None,
            event_type="gateway.provider.updated",
            actor=actor,
            payload=_provider_payload(provider, changes=diff),
        )
    return provider


@transaction.atomic
def provider_delete(*, provider: Provider, actor) -> None:
    provider = locked_or_404(Provider.objects, pk=provider.pk)
    in_use = list(provider.models.values_list("name", flat=True))
    if in_use:
        raise Conflict(f"{provider.name} serves {', '.join(in_use)}; move those models first.")
    payload = _provider_payload(provider)
    provider.delete()
    _changed()
    record(tenant=None, event_type="gateway.provider.deleted", actor=actor, payload=payload)


@transaction.atomic
def language_model_create(*, actor, **fields) -> LanguageModel:
    fields = {k: v for k, v in fields.items() if k in MODEL_FIELDS}
    fields["fallbacks"] = check_fallbacks(fields.get("fallbacks") or [], name=fields["name"])
    model = create_or_conflict(LanguageModel, conflict_message=MODEL_TAKEN, **fields)
    _changed()
    record(
        tenant=None, event_type="gateway.model.created", actor=actor, payload=_model_payload(model)
    )
    return model


@transaction.atomic
def language_model_update(*, model: LanguageModel, actor, **changes) -> LanguageModel:
    model = locked_or_404(LanguageModel.objects, pk=model.pk)
    changes = {k: v for k, v in changes.items() if k in MODEL_FIELDS}
    if "fallbacks" in changes:
        changes["fallbacks"] = check_fallbacks(
            changes["fallbacks"], name=changes.get("name", model.name)
        )
    diff = update_or_conflict(model, changes, conflict_message=MODEL_TAKEN)
    if diff:
        _changed()
        record(
            tenant=None,
            event_type="gateway.model.updated",
            actor=actor,
            payload=_model_payload(model, changes=_plain_diff(diff)),
        )
    return model


@transaction.atomic
def language_model_delete(*, model: LanguageModel, actor) -> None:
    """Remove a model from the catalogue (deactivating keeps it for later); its call records
    keep its name."""
    model = locked_or_404(LanguageModel.objects, pk=model.pk)
    payload = _model_payload(model)
    model.delete()
    _changed()
    record(tenant=None, event_type="gateway.model.deleted", actor=actor, payload=payload)
