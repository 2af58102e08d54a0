"""The OpenAPI schema generates cleanly and describes auth, the tenant header and errors;
the docs pages are served with no network."""

import re

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command

pytestmark = [pytest.mark.django_db, pytest.mark.smoke]


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    # --fail-on-warn turns any drf-spectacular warning or error into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_schema_declares_the_auth_schemes(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schemes["tokenAuth"]["description"],
    }
    assert "cookieAuth" in schemes


def test_public_operations_need_no_auth(schema):
    assert "security" not in schema  # no global requirement to inherit
    assert schema["paths"]["/api/v1/auth/token/"]["post"].get("security", []) in ([], [{}])
    assert {"tokenAuth": []} in schema["paths"]["/api/v1/auth/me/"]["get"]["security"]


def test_tenant_scoped_operations_document_the_tenant_header(schema):
    params = schema["paths"]["/api/v1/audit/events/"]["get"]["parameters"]
    names = {(p["in"], p["name"]) for p in params}
    assert ("header", "X-Organization-ID") in names
    assert ("query", "organization_id") in names
    tenants_params = schema["paths"]["/api/v1/tenants/"]["get"]["parameters"]
    assert "X-Organization-ID" not in {p["name"] for p in tenants_params}


def test_every_operation_documents_the_error_envelope(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            for code in ("400", "404", "429", "500"):
                ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorEnvelope"), (path, method, code)
    envelope = schema["components"]["schemas"]["ErrorDetail"]
    assert set(envelope["properties"]) == {"code", "message", "details", "request_id"}


def test_schema_is_served(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_only_local_assets(api_client, page):
    response = api_client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html)
    assert assets, "the docs page references no assets"
    for asset in assets:
        assert asset.startswith("/static/"), f"{page} loads {asset} from elsewhere"
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not shipped"
