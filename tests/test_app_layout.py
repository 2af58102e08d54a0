"""Every project app keeps its files in the same places, and the app template
(config/app_template, which `manage.py startapp --template` renders for a new app) renders an
app that imports and passes ruff.

- A domain app (every project app but the platform's accounts, tenants and audit) has exactly
  the template's modules, each a module or a package (`services/` with one module per area, as
  tenants has). A module the template lacks has no named place in the layout: add it to the
  template for every app, or to EXTRA_MODULES below with its reason.
- Every app, the platform's included, has apps, models, admin and routes, never one name as
  both `x.py` and `x/` (Python imports the package and ignores the file), and a
  tests/<app>/factories.py, where tests.factories.factory_for finds its factories. The platform
  apps predate the template and keep the request kernel (tenants.api, permissions, resolution)
  beside their models, so they are held to these only.
- A domain app's module whose code is still the template's (nothing built there yet) keeps the
  template's rules word for word; only its docstring's first paragraph, what the module holds,
  may be the app's own. A change to the template's rules so reaches the apps laid out from it.
- Every app is an import-linter root package, the domain apps are its top two layers (those
  reading other apps' facts, billing and analytics, above the apps producing them), and
  config/urls.py registers every app's routes.
"""

import ast
import configparser
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import call_command
from django.template import Context, Engine
from django.test import modify_settings

from tests.project import PROJECT_APPS

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "config" / "app_template"
TEMPLATE_SUFFIX = ".py-tpl"
PLATFORM_APPS = ("accounts", "tenants", "audit")
DOMAIN_APPS = tuple(app for app in PROJECT_APPS if app not in PLATFORM_APPS)

# What the template renders, by path inside the new app.
SKELETON = frozenset(
    {
        "__init__.py",
        "apps.py",
        "models.py",
        "services.py",
        "selectors.py",
        "serializers.py",
        "filters.py",
        "views.py",
        "admin.py",
        "tasks.py",
        "routes.py",
        "management/__init__.py",
        "management/commands/__init__.py",
        "migrations/__init__.py",
    }
)
REQUIRED_IN_EVERY_APP = ("apps", "models", "admin", "routes")
# Domain app -> {module: why it is outside the template}. None so far.
EXTRA_MODULES: dict[str, dict[str, str]] = {
    "billing": {
        "catalogue": "the seeded plan catalogue and the shape of a plan's features",
        "periods": "calendar billing periods and the proration arithmetic (integer cents)",
        "pdf": "invoice PDFs (fpdf2), served by GET billing/invoices/{id}/pdf",
        "providers": "the payment provider interface and the local provider (hosted checkout)",
        "demo": "the quick start's subscriptions, invoices, payments and credit notes",
    },
    "notifications": {
        "catalog": "the public event catalogue every app adds its events to",
        "signing": "webhook secrets and Standard Webhooks signatures",
        "targets": "the SSRF guard: where a webhook may be sent",
        "sender": "one webhook request to the checked address",
        "channels": "notification delivery channels (email, SMS provider)",
        "demo": "the quick start's webhooks and notifications (load_demo_data loads it)",
    },
    "security": {
        "demo": "the quick start's incidents, breaches, audits and GDPR register",
    },
    "support": {
        "demo": "the quick start's support desk: customers, representatives, SLA policies",
        "clock": "working-time arithmetic of SLA clocks (business hours), pure functions",
        "attachments": "the attachment policy: a file's type from its content, names cleaned",
        "rules": "the decision rule language: fields, operators, actions and the interpreter",
    },
    "playground": {
        "providers": "the LLM provider interface and its local, OpenAI and Anthropic adapters",
        "tokens": "the documented token counting rule and the cost arithmetic",
        "rendering": "safe prompt template placeholders and typed variables",
        "cooldown": "the upstream cooldown shared through the cache",
        "catalogue": "the seeded providers and models (a data migration and the demo load it)",
        "demo": "the quick start's templates, executions and gateway calls",
        "serving": "the ASGI front serving chat/completions (config/asgi.py)",
        "orchestration": "the shapes of orchestration templates' data and projects' metadata",
        "jobs": "the job engine under runs and workflows: claims, leases, priorities, reaper",
        "workflows": "the workflow registry: each job type's input check and runner",
    },
    "analytics": {
        "sketches": "the mergeable latency histogram and distinct-count sketch, pure functions",
        "aggregates": "what a roll-up row holds in memory, and merging two of them",
        "streams": "the four fact streams: which hours new facts touch, one hour's aggregate",
        "capture": "request capture off the request path (a response observer) and its flush",
        "demo": "the quick start's query events, request facts and built roll-ups",
    },
}
PROBE_APP = "sample"


# Helpers ---------------------------------------------------------------------------------------


def render_template(app_name: str) -> dict[str, str]:
    """What startapp writes for `app_name`, by path inside the app. Rendered here because
    startapp refuses a name that is already importable, as the existing apps are;
    test_startapp_renders_the_skeleton checks that both agree."""
    context = Context(
        {
            "app_name": app_name,
            # As startapp spells it: notifications -> Notifications, ai_gateway -> AiGateway.
            "camel_case_app_name": "".join(c for c in app_name.title() if c != "_"),
        },
        autoescape=False,
    )
    rendered = {}
    for path in sorted(TEMPLATE.rglob(f"*{TEMPLATE_SUFFIX}")):
        template = Engine().from_string(path.read_text(encoding="utf-8"))
        rendered[str(path.relative_to(TEMPLATE)).removesuffix("-tpl")] = template.render(context)
    return rendered


def python_entries(directory: Path) -> dict[str, set[str]]:
    """Top-level name -> its kinds: "module" (x.py), "package" (x/__init__.py), "namespace"
    (a folder holding Python files but no __init__.py). Folders without Python (templates,
    static files) are not modules and are left out."""
    entries: dict[str, set[str]] = {}
    for entry in directory.iterdir():
        if entry.name == "__pycache__":
            continue
        if entry.is_file() and entry.suffix == ".py":
            entries.setdefault(entry.stem, set()).add("module")
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            entries.setdefault(entry.name, set()).add("package")
        elif entry.is_dir() and any(entry.rglob("*.py")):
            entries.setdefault(entry.name, set()).add("namespace")
    return entries


def skeleton_modules() -> set[str]:
    return {path.split("/")[0].removesuffix(".py") for path in SKELETON} - {"__init__"}


def module_name(app: str, path: str) -> str:
    """management/commands/__init__.py -> app.management.commands, views.py -> app.views."""
    return ".".join((app, *path.removesuffix(".py").removesuffix("/__init__").split("/")))


def files_under(directory: Path) -> set[str]:
    return {
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def code_and_rules(source: str) -> tuple[str, str]:
    """A module's code (its AST without the docstring) and its docstring's rules (what follows
    the first paragraph)."""
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree, clean=False) or ""
    if docstring:
        tree.body = tree.body[1:]
    _, _, rules = docstring.partition("\n\n")
    return ast.dump(tree), rules


def ruff() -> str:
    """The ruff of this virtualenv (a dev requirement), else the one on PATH."""
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.exists() else shutil.which("ruff")
    assert found, "ruff is not installed (requirements-dev.txt)"
    return found


@pytest.fixture
def rendered_app(tmp_path):
    """The template rendered by startapp as `sample` in a temporary folder; the app's modules
    are forgotten afterwards, so each test imports its own rendering."""
    target = tmp_path / PROBE_APP
    target.mkdir()
    call_command("startapp", PROBE_APP, str(target), template=str(TEMPLATE), verbosity=0)
    yield target
    for name in [name for name in sys.modules if name.split(".")[0] == PROBE_APP]:
        del sys.modules[name]


# The template ----------------------------------------------------------------------------------


def test_the_template_holds_python_templates_only():
    files = files_under(TEMPLATE)

    # Any other file would be copied as it is into every new app, a README included.
    assert {name for name in files if not name.endswith(TEMPLATE_SUFFIX)} == set()
    # Without an __init__.py, config.app_template is no package: the walks of the project's
    # modules (tests/project.py) and import-linter never import a template.
    assert not (TEMPLATE / "__init__.py").exists()
    assert set(render_template(PROBE_APP)) == SKELETON


def test_startapp_renders_the_skeleton(rendered_app):
    expected = render_template(PROBE_APP)

    assert files_under(rendered_app) == SKELETON
    for name in sorted(SKELETON):
        path = rendered_app / name
        source = path.read_text(encoding="utf-8")
        assert source == expected[name], name
        compile(source, str(path), "exec")
    result = subprocess.run(  # noqa: S603 (our own ruff, on files we just rendered)
        [ruff(), "check", "--no-cache", "--config", "pyproject.toml", str(rendered_app)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rendered_app_imports_once_installed(rendered_app, monkeypatch):
    monkeypatch.syspath_prepend(str(rendered_app.parent))

    with modify_settings(INSTALLED_APPS={"append": PROBE_APP}):
        config = apps.get_app_config(PROBE_APP)
        modules = {
            name: importlib.import_module(module_name(PROBE_APP, name))
            for name in SKELETON - {"__init__.py"}
        }

        assert type(config).__name__ == "SampleConfig"
        assert config.default_auto_field == "config.models.ExplicitPrimaryKeyRequired"
        assert list(config.get_models()) == []
        assert modules["routes.py"].routes == []
        for name, module in modules.items():
            if name != "management/__init__.py":
                assert module.__doc__, f"{name} says what belongs there"


# The apps --------------------------------------------------------------------------------------


@pytest.mark.parametrize("app", PROJECT_APPS)
def test_every_app_has_its_core_modules_and_factories(app):
    entries = python_entries(REPO / app)

    both = {name for name, kinds in entries.items() if len(kinds) > 1}
    assert both == set(), f"{app}: a module and a package of the same name (one is dead)"
    namespaces = {name for name, kinds in entries.items() if "namespace" in kinds}
    assert namespaces == set(), f"{app}: folders of Python files without __init__.py"
    missing = [name for name in REQUIRED_IN_EVERY_APP if name not in entries]
    assert missing == [], f"{app} lacks {missing}"
    assert (REPO / "tests" / app / "__init__.py").is_file()
    assert (REPO / "tests" / app / "factories.py").is_file(), (
        f"add tests/{app}/factories.py (factories of the app's models)"
    )


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_a_domain_app_has_exactly_the_templates_modules(app):
    entries = python_entries(REPO / app)
    expected = skeleton_modules() | set(EXTRA_MODULES.get(app, {}))

    assert set(entries) - {"__init__"} == expected, (
        f"{app}: the modules of config/app_template, no more (EXTRA_MODULES) and no fewer"
    )
    for path in SKELETON:
        if "/" in path:
            assert (REPO / app / path).is_file(), path


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_a_domain_module_still_the_templates_keeps_its_rules(app):
    for name, rendered in render_template(app).items():
        path = REPO / app / name
        if not path.is_file():
            continue  # a package in its place, checked above
        code, rules = code_and_rules(path.read_text(encoding="utf-8"))
        template_code, template_rules = code_and_rules(rendered)
        if code == template_code:
            assert rules == template_rules, (
                f"{app}/{name}: the docstring's rules differ from config/app_template's (only "
                "its first paragraph is the app's own)"
            )


def test_the_layers_and_the_router_know_every_app():
    linter = configparser.ConfigParser()
    linter.read(REPO / ".importlinter")
    roots = set(linter["importlinter"]["root_packages"].split())
    layers = linter["importlinter:contract:layers"]["layers"].strip().splitlines()
    # The first three layers are the domain apps' (the surfaces of tenants, accounts and audit
    # follow, named by module).
    domain_layers = {
        part.strip() for layer in layers[:3] for part in layer.split("|") if "." not in part
    }

    urls = ast.parse((REPO / "config" / "urls.py").read_text(encoding="utf-8"))
    bound = {
        node.module.removesuffix(".routes"): alias.asname or alias.name
        for node in ast.walk(urls)
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith(".routes")
        for alias in node.names
    }
    registered = {
        node.value.id
        for node in ast.walk(urls)
        if isinstance(node, ast.Starred) and isinstance(node.value, ast.Name)
    }

    assert set(PROJECT_APPS) <= roots
    assert domain_layers == set(DOMAIN_APPS)
    for app in PROJECT_APPS:
        assert bound.get(app) in registered, f"config/urls.py does not register {app}.routes"
