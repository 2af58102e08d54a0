"""What the tests that walk the whole project share: which packages are the project's, how to
import all their modules and find subclasses, and how to post an admin form back."""

import importlib
import pkgutil
from pathlib import Path

from django.apps import apps

REPO = Path(__file__).resolve().parents[1]
# The project's own apps: the installed apps that are top-level packages of the repository (a
# virtualenv inside it holds the third-party ones deeper down). `config` holds code (base
# classes, conventions) but no models.
PROJECT_APPS = tuple(
    config.name for config in apps.get_app_configs() if Path(config.path).parent == REPO
)
PROJECT_PACKAGES = (*PROJECT_APPS, "config")
# Modules not to import while walking: settings (production refuses to load without secrets)
# and the entry points that configure Django themselves.
_SKIPPED_MODULES = ("config.settings", "config.wsgi", "config.asgi", "config.celery")


def is_project_code(obj) -> bool:
    return obj.__module__.split(".")[0] in PROJECT_PACKAGES


def import_project_modules() -> None:
    """Import every module of the project's packages (migrations aside), so that walking
    subclasses sees them all."""
    for package_name in PROJECT_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            if ".migrations" in module.name or module.name.startswith(_SKIPPED_MODULES):
                continue
            importlib.import_module(module.name)


def subclasses(cls):
    """Every subclass of `cls`, at any depth."""
    for subclass in cls.__subclasses__():
        yield subclass
        yield from subclasses(subclass)


def admin_form_data(response) -> dict:
    """The POST data of a rendered admin change or add form, as a browser would submit it."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    data = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            if isinstance(value, list | tuple):
                value = [str(item) for item in value]
            data[form[name].html_name] = "on" if value is True else value
    return data
