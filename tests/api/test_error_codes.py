"""Every error code the API can answer with is in the one documented list
(config.exceptions.ERROR_CODES), with the status it is answered with; the documentation and the
OpenAPI schema show exactly that list.

The codes in the code are found three ways: the `code` of every ApplicationError subclass, the
DRF exception mapping of the handler, and every literal code passed to the functions that build
an envelope (read from the source, so a new call site is checked without being listed here).
"""

import ast
import re
from pathlib import Path

import pytest
from drf_spectacular.generators import SchemaGenerator

from config import exceptions
from config.exceptions import ERROR_CODES, ApplicationError
from tests.project import PROJECT_PACKAGES, import_project_modules, is_project_code, subclasses

REPO = Path(__file__).resolve().parents[2]
# Functions whose string arguments are envelope codes.
_ENVELOPE_BUILDERS = {"error_body", "_envelope"}
_CODE = re.compile(r"^[A-Z][A-Z_]+$")


def _application_errors() -> list[type]:
    import_project_modules()
    return [cls for cls in subclasses(ApplicationError) if is_project_code(cls)]


def _source_files():
    for package in PROJECT_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" not in path.parts:
                yield path


def _literal_codes_in_source() -> dict[str, list[str]]:
    """code -> where it is passed to an envelope builder."""
    found: dict[str, list[str]] = {}
    for path in _source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in _ENVELOPE_BUILDERS:
                continue
            for argument in node.args:
                value = argument.value if isinstance(argument, ast.Constant) else None
                if isinstance(value, str) and _CODE.match(value):
                    where = f"{path.relative_to(REPO)}:{node.lineno}"
                    found.setdefault(value, []).append(where)
    return found


def test_every_application_error_code_is_documented_with_its_status():
    for cls in _application_errors():
        assert cls.code in ERROR_CODES, f"{cls.__qualname__}: {cls.code} is not in ERROR_CODES"
        status, _ = ERROR_CODES[cls.code]
        assert cls.status_code == status, (cls.__qualname__, cls.status_code, status)


def test_every_mapped_drf_exception_code_is_documented():
    for exception_class, code in exceptions._CODES:
        assert code in ERROR_CODES, (exception_class.__name__, code)
        assert exception_class.status_code == ERROR_CODES[code][0], exception_class.__name__


def test_every_literal_envelope_code_is_documented():
    found = _literal_codes_in_source()
    assert "RESOURCE_NOT_FOUND" in found  # the scan sees the call sites
    undocumented = {code: where for code, where in found.items() if code not in ERROR_CODES}
    assert not undocumented


@pytest.mark.parametrize("status", sorted({status for status, _ in ERROR_CODES.values()}))
def test_any_status_maps_to_a_documented_code(status):
    from rest_framework.exceptions import APIException

    class Unlisted(APIException):
        status_code = status
        default_code = "something_else"

    assert exceptions.code_for(Unlisted()) in ERROR_CODES


def test_an_unlisted_status_still_gets_a_documented_code():
    from rest_framework.exceptions import APIException

    class Teapot(APIException):
        status_code = 418

    assert exceptions.code_for(Teapot()) == "VALIDATION_ERROR"


def _documented_codes(path: Path) -> list[str]:
    """The codes of the error table in docs/api.md: rows `| `CODE` | status | ... |`."""
    return re.findall(r"^\| `([A-Z_]+)` \| \d{3} \|", path.read_text(), flags=re.MULTILINE)


def test_the_api_reference_lists_exactly_the_codes():
    documented = _documented_codes(REPO / "docs" / "api.md")
    assert documented == list(ERROR_CODES)


def test_the_api_reference_gives_each_code_its_status():
    text = (REPO / "docs" / "api.md").read_text()
    for code, (status, _) in ERROR_CODES.items():
        assert re.search(rf"^\| `{code}` \| {status} \|", text, flags=re.MULTILINE), code


def test_the_openapi_schema_enumerates_exactly_the_codes():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    detail = schema["components"]["schemas"]["ErrorDetail"]["properties"]["code"]
    ref = detail.get("$ref") or detail.get("allOf", [{}])[0].get("$ref")
    enum = (
        schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]["enum"] if ref else detail["enum"]
    )
    assert enum == list(ERROR_CODES)
