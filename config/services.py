"""Helpers the apps' services share."""

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models

from .exceptions import Conflict


def model_update(*, instance: models.Model, data: Mapping[str, Any]) -> dict[str, dict]:
    """Set the fields of `data` that differ on `instance` and save only those (plus an
    `auto_now` field such as `updated_at`), so that concurrent writers of other columns (a
    usage flush, a counter) are not overwritten. Returns `{field: {"from": old, "to": new}}`
    for the fields that changed, empty (and nothing saved) when none did: what the caller's
    audit event records."""
    changes = {
        name: {"from": getattr(instance, name), "to": value}
        for name, value in data.items()
        if getattr(instance, name) != value
    }
    if not changes:
        return changes
    for name, change in changes.items():
        setattr(instance, name, change["to"])
    auto_now = [
        field.name
        for field in instance._meta.concrete_fields
        if getattr(field, "auto_now", False) and field.name not in changes
    ]
    instance.save(update_fields=[*changes, *auto_now])
    return changes


def person(actor):
    """The user a service records as having made a row (`created_by`): the actor when it is a
    signed-in user, None for the system (a beat job, a management command without one)."""
    return actor if actor is not None and getattr(actor, "is_authenticated", False) else None


# An update service's "not given" default: None is a value some fields take (no assignee).
UNSET = object()


def given(**fields) -> dict:
    """The keyword arguments of an update that were given (not UNSET)."""
    return {name: value for name, value in fields.items() if value is not UNSET}


def check_move(transitions: Mapping[str, Iterable[str]], current: str, new: str, *, noun: str):
    """409 Conflict unless `new` is a legal move from `current` in `transitions` (status ->
    the statuses it may move to), naming the allowed moves: "A ticket cannot go from OPEN to
    CLOSED (allowed: ...)." `noun` is the subject of that sentence."""
    if new in transitions[current]:
        return
    allowed = sorted(transitions[current])
    raise Conflict(
        f"{noun} cannot go from {current} to {new}"
        + (f" (allowed: {', '.join(allowed)})." if allowed else f" ({current} is final)."),
        details={"status": current, "allowed": allowed},
    )
