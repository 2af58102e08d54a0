"""Prompt templates: `{variable}` placeholders, parsed and rendered safely.

Not `str.format`: a placeholder is a bare name (`{question}`), nothing else. Attribute and
index access (`{a.b}`, `{a[0]}`), conversions (`{a!r}`) and format specs (`{a:>99999}`) are
refused when the template is saved, so rendering can neither reach into objects nor be made to
allocate at will. `{{` and `}}` write literal braces. Only declared variables may appear;
values are typed (string, number, boolean, enum) and checked before rendering, and missing
required ones are one error naming them all.
"""

import re
from collections.abc import Iterable, Mapping

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
MAX_VALUE_CHARS = 100_000
# What a template's texts may render to together. A value is written at each of its
# placeholders, so 50,000 characters of `{a}` with a 100,000-character `a` would be 1.6 GB; this
# is well above the largest context window's worth of text, and about what a chat/completions
# body may carry.
MAX_RENDERED_CHARS = 2_000_000


class TemplateError(ValueError):
    """A template or its variables are invalid; `errors` maps a field to its messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(message for messages in errors.values() for message in messages))
        self.errors = errors


def placeholders(text: str, field: str = "user_prompt_template") -> list[str]:
    """The variable names `text` uses, in order of first use; TemplateError on anything
    other than a bare name in braces, or a lone brace."""
    names, problems = [], []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        inner = match.group(1)
        if inner is None:
            problems.append(f"A lone {token!r}: write {token * 2!r} for a literal brace.")
        elif not _NAME.match(inner):
            problems.append(
                f"{{{inner}}} is not a variable: placeholders are bare names such as "
                "{question} (no attributes, indexes, conversions or format specs)."
            )
        elif inner not in names:
            names.append(inner)
    if problems:
        raise TemplateError({field: problems})
    return names


def render(text: str, values: Mapping[str, str]) -> str:
    """`text` with each placeholder replaced by its value (checked by `placeholders` first)."""

    def substitute(match: re.Match) -> str:
        name = match.group(1)
        return match.group(0)[0] if name is None else values[name]

    return _TOKEN.sub(substitute, text)


def ensure_renderable(texts: Iterable[str], values: Mapping[str, str]) -> None:
    """TemplateError when `texts` rendered with `values` would be more than MAX_RENDERED_CHARS
    together; counted without rendering them."""
    size = 0
    for text in texts:
        size += len(text)
        for match in _TOKEN.finditer(text):
            name = match.group(1)
            size += (len(values[name]) if name is not None else 1) - len(match.group(0))
    if size > MAX_RENDERED_CHARS:
        raise TemplateError(
            {
                "variables": [
                    f"Rendered, the prompt would be {size:,} characters: at most "
                    f"{MAX_RENDERED_CHARS:,} (each value is written at every one of its "
                    "placeholders)."
                ]
            }
        )


def _as_text(declared: Mapping, value) -> str:
    kind = declared.get("type", "string")
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return repr(value) if isinstance(value, float) else str(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return "true" if value else "false"
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"must be at most {MAX_VALUE_CHARS} characters")
    if kind == "enum" and value not in declared.get("options", ()):
        raise ValueError(f"must be one of {list(declared.get('options', ()))}")
    return value


def resolve_values(variables: list[Mapping], given: Mapping) -> dict[str, str]:
    """The text of each declared variable: given, else its default. TemplateError naming
    unknown variables, wrongly typed ones and every missing required one."""
    declared = {variable["name"]: variable for variable in variables}
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        errors["variables"] = [f"Not declared by the template: {', '.join(unknown)}."]
    values, missing = {}, []
    for name, variable in declared.items():
        if name in given and given[name] is not None:
            value = given[name]
        elif variable.get("default") is not None:
            value = variable["default"]
        elif variable.get("required", False):
            missing.append(name)
            continue
        else:
            # An optional variable nobody gave renders as nothing.
            values[name] = ""
            continue
        try:
            values[name] = _as_text(variable, value)
        except ValueError as error:
            errors[f"variables.{name}"] = [f"{name} {error}."]
    if missing:
        errors.setdefault("variables", []).append(
            f"Missing required variables: {', '.join(missing)}."
        )
    if errors:
        raise TemplateError(errors)
    return values
