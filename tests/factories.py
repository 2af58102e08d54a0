"""The factory registry: each app's factories live beside its tests (tests/<app>/factories.py)
and are found from their model, so a new model's factory needs no line anywhere else.

`factory_for(Model)` is what the generic tests (tests/api) use. The names below are the
factories most tests need, importable from here as before; new code may import them from
their app's module just as well.
"""

import importlib
import pkgutil
from pathlib import Path

import factory

from tests.accounts.factories import TEST_PASSWORD, APIKeyFactory, UserFactory, issue_api_key
from tests.audit.factories import AuditEventFactory
from tests.tenants.factories import (
    InvitationFactory,
    MembershipFactory,
    TenantFactory,
    ThemeFactory,
)

__all__ = [
    "TEST_PASSWORD",
    "APIKeyFactory",
    "AuditEventFactory",
    "InvitationFactory",
    "MembershipFactory",
    "TenantFactory",
    "ThemeFactory",
    "UserFactory",
    "factory_for",
    "issue_api_key",
]


def _import_app_factories() -> None:
    tests = Path(__file__).parent
    for module in pkgutil.iter_modules([str(tests)]):
        if module.ispkg and (tests / module.name / "factories.py").exists():
            importlib.import_module(f"tests.{module.name}.factories")


def _subclasses(cls):
    for subclass in cls.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def factory_for(model):
    """The factory registered for `model` (a DjangoModelFactory in some tests/<app>/factories.py
    whose Meta.model is it)."""
    _import_app_factories()
    found = [
        candidate
        for candidate in _subclasses(factory.django.DjangoModelFactory)
        if candidate._meta.model is model and candidate.__module__.startswith("tests.")
    ]
    if not found:
        raise LookupError(
            f"No factory for {model._meta.label}: add one to tests/{model._meta.app_label}/"
            "factories.py (a DjangoModelFactory whose Meta.model is the model)."
        )
    return found[0]
