"""The shapes of orchestration: a template's `template_data` and a project's `metadata`,
checked the same way by the API and the admin (the services call these).

`template_data`:

    {"phases": ["research", "design", ...],     # 1 to MAX_PHASES names, in run order
     "integrations": ["file_system", ...],      # what runs may do with phase outputs
     "settings": {"ai_model": "gpt-4", "max_tokens": 2000, "temperature": 0.7,
                  "integration_enabled": true}}

A phase name is 1 to 64 letters, digits, spaces, `_` or `-`, unique in the list (case aside).
Integrations are names of the same form; `file_system` is the one runs perform (a phase's
output written to the tenant's file storage); others are kept for the record. `settings` may
name a model of the gateway's catalogue, `max_tokens` within that model's output limit (or
1 to 100,000 without a model), `temperature` 0 to 2. Without phases, a run uses DEFAULT_PHASES.
"""

import json
import re
from collections.abc import Mapping

from config.exceptions import ApplicationError

from .models import LanguageModel

MAX_PHASES = 20
DEFAULT_PHASES = (
    "ideation",
    "research",
    "design",
    "implementation",
    "testing",
    "documentation",
    "review",
)
INTEGRATIONS_PERFORMED = ("file_system",)
PROJECT_METADATA_MAX_BYTES = 16 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}\Z")
_SETTINGS_KEYS = frozenset({"ai_model", "max_tokens", "temperature", "integration_enabled"})
_DATA_KEYS = frozenset({"phases", "integrations", "settings"})


def _names(value, field: str, *, required: bool) -> list[str]:
    problems = []
    if not isinstance(value, list):
        raise ApplicationError("Invalid template data.", details={field: ["A list of names."]})
    if required and not value:
        problems.append("At least one.")
    if len(value) > MAX_PHASES:
        problems.append(f"At most {MAX_PHASES}.")
    seen = set()
    for item in value:
        if not isinstance(item, str) or not _NAME.match(item):
            problems.append(
                f"{str(item)[:70]!r}: 1 to 64 letters, digits, spaces, '_' or '-', starting "
                "with a letter or digit."
            )
        elif item.lower() in seen:
            problems.append(f"{item!r} is listed twice.")
        else:
            seen.add(item.lower())
    if problems:
        raise ApplicationError("Invalid template data.", details={field: problems})
    return value


def check_phase_names(value, *, field: str = "custom_phases") -> list[str]:
    """A run's own list of phases: 1 to MAX_PHASES names (see the module docstring)."""
    try:
        return _names(value, field, required=True)
    except ApplicationError as error:
        raise ApplicationError("Invalid phases.", details=error.details) from None


def check_settings(value, *, field: str = "settings") -> dict:
    """A run's (or template's) settings: known keys, a catalogue model, numbers in range."""
    return checked_settings(value, field=field)[0]


def checked_settings(value, *, field: str = "settings") -> tuple[dict, LanguageModel | None]:
    """`check_settings`, with the catalogue model the settings name (None if they name none),
    read once for the check and for whoever needs its limits next."""
    if not isinstance(value, Mapping):
        raise ApplicationError("Invalid settings.", details={field: ["An object."]})
    problems = [f"{key}: unknown (known: {', '.join(sorted(_SETTINGS_KEYS))})." for key in value
                if key not in _SETTINGS_KEYS]  # fmt: skip
    limit = 100_000
    model_name = value.get("ai_model")
    model = None
    if model_name is not None:
        model = LanguageModel.objects.filter(name=model_name, active=True).first()
        if not isinstance(model_name, str) or model is None:
            problems.append(f"ai_model: {str(model_name)[:100]!r} is not an active model.")
        else:
            limit = model.max_output_tokens
    max_tokens = value.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= limit
    ):
        problems.append(f"max_tokens: a whole number from 1 to {limit}.")
    temperature = value.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        problems.append("temperature: a number from 0 to 2.")
    enabled = value.get("integration_enabled")
    if enabled is not None and not isinstance(enabled, bool):
        problems.append("integration_enabled: true or false.")
    if problems:
        raise ApplicationError("Invalid settings.", details={field: problems})
    return dict(value), model


def check_template_data(value) -> dict:
    """A template's phases, integrations and settings (see the module docstring)."""
    if not isinstance(value, Mapping):
        raise ApplicationError("Invalid template data.", details={"template_data": ["An object."]})
    unknown = sorted(set(value) - _DATA_KEYS)
    if unknown:
        raise ApplicationError(
            "Invalid template data.",
            details={"template_data": [f"Unknown keys: {', '.join(map(str, unknown))}."]},
        )
    return {
        "phases": _names(value.get("phases", []), "template_data.phases", required=True),
        "integrations": _names(
            value.get("integrations", []), "template_data.integrations", required=False
        ),
        "settings": check_settings(value.get("settings", {}), field="template_data.settings"),
    }


def check_metadata(value) -> dict:
    """A project's metadata: a JSON object of at most PROJECT_METADATA_MAX_BYTES."""
    if not isinstance(value, Mapping):
        raise ApplicationError("Invalid metadata.", details={"metadata": ["An object."]})
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > PROJECT_METADATA_MAX_BYTES:
        raise ApplicationError(
            "Invalid metadata.",
            details={"metadata": [f"At most {PROJECT_METADATA_MAX_BYTES} bytes as JSON ({size})."]},
        )
    return dict(value)
