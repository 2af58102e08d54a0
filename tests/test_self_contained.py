"""The project speaks for itself: no text in the repository and nothing in the OpenAPI schema
points at documents a clone does not have (numbered design documents, a design or API document
in a folder beside the repository). Shapes are described by their fields, not by where they
came from.

The patterns are built from pieces so that this file does not match them itself."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parent.parent

_SEED = "se" + "ed"
# A numbered design document ("<seed> 002", "<seed>s 000, 004", "<seed> 000's", "<SEED>_004" in
# a name, also across a line break) or one referred to as "the <seed> shape" or "its <seed> key".
# Not the Ed25519 key's seed, counters "seeded" from the database, or random seeds: those name
# no three-digit number from 0.
REFERENCE = re.compile(
    rf"(?<![a-z]){_SEED}s?[\s_]*0\d\d(?!\d)|(?<![a-z]){_SEED}[\s_]+(?:shape|key)(?![a-z])",
    re.IGNORECASE,
)
# Documents outside the repository: a sibling "shared" folder, or the design and API documents
# named bare (a path inside the repository, such as docs/api.md, is fine).
_SHARED = "shar" + "ed"
OUTSIDE_DOCUMENT = re.compile(
    rf"\.\./{_SHARED}\b|{_SHARED}/(?:API|DESIGN)\.md|(?<![\w/.-])(?:API|DESIGN)\.md\b"
)

TEXT_SUFFIXES = {
    ".py", ".md", ".txt", ".html", ".sh", ".toml", ".yml", ".yaml", ".cfg", ".ini", ".json",
    ".css", ".js",
}  # fmt: skip
TEXT_NAMES = {"run"}  # .ci/run
SKIPPED_DIRS = {".git", ".venv", "venv", "var", "staticfiles", "media", "__pycache__"}


def _matches(text: str) -> list[re.Match]:
    return [*REFERENCE.finditer(text), *OUTSIDE_DOCUMENT.finditer(text)]


def findings(text: str) -> list[str]:
    return [match.group(0) for match in _matches(text)]


def _repository_files() -> list[Path]:
    """The tracked files and the new ones not ignored; without git, a walk of the tree."""
    git = shutil.which("git")
    try:
        if git is None:
            raise OSError("no git")
        listed = subprocess.run(  # noqa: S603 (a fixed git command)
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
        paths = [REPO / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [name for name in dirs if name not in SKIPPED_DIRS]
            paths.extend(Path(root) / name for name in files)
    return [
        path
        for path in paths
        if path.is_file()
        and not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts)
        and (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES)
    ]


@pytest.mark.parametrize(
    "text",
    [
        f"{_SEED.title()} 002's tenant shape",
        f"(the {_SEED} 004 shape)",
        f"writes need settings.write ({_SEED}s 000, 004)",
        f"def test_login_answers_the_{_SEED}_004_shape():",
        f"{_SEED.upper()}_000_FIELDS = {{",
        f"the {_SEED} shape, replacing and merging settings",
        f"def test_bad_branding_is_refused_by_its_{_SEED}_key(owner):",
        f"`branding` ({_SEED}\n    000) sets the keys it names",
        f"see ../{_SHARED}/API.md",
        f"(DESI{'GN'}.md, Tenancy)",
        f"API-key scopes (DESI{'GN'}.md)",
    ],
)
def test_the_patterns_catch_a_reference(text):
    assert findings(text)


@pytest.mark.parametrize(
    "text",
    [
        "base64 32-byte Ed25519 seed that signs audit checkpoints",
        "seed = base64.b64decode(configured)",
        "a counter missing from Redis is seeded from it",
        "api_call_store.store().seed(owner.tenant, 41)",
        "random.seed(1234)",
        "demo data seeding for 100 tenants",
        "the request reference is in docs/api.md",
    ],
)
def test_the_patterns_leave_other_uses_alone(text):
    assert not findings(text)


def test_no_file_refers_to_documents_outside_the_repository():
    files = _repository_files()
    assert any(path.name == "README.md" for path in files)
    found = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for match in _matches(text):
            number = text.count("\n", 0, match.start()) + 1
            found.setdefault(f"{path.relative_to(REPO)}:{number}", []).append(match.group(0))
    assert found == {}


def _descriptions(node) -> list[str]:
    """Every description, summary and title in the schema, at any depth."""
    if isinstance(node, dict):
        texts = [
            value
            for key, value in node.items()
            if key in {"description", "summary", "title"} and isinstance(value, str)
        ]
        return texts + [text for value in node.values() for text in _descriptions(value)]
    if isinstance(node, list):
        return [text for value in node for text in _descriptions(value)]
    return []


@pytest.fixture(scope="module")
def schema():
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def test_the_openapi_schema_refers_to_no_outside_document(schema):
    assert findings(json.dumps(schema, default=str)) == []


def test_no_openapi_description_mentions_a_seed(schema):
    texts = _descriptions(schema)
    assert len(texts) > 50
    assert [text for text in texts if _SEED in text.lower()] == []
