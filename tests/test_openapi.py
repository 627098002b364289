"""The published OpenAPI schema: valid OpenAPI 3, API-key security and problem responses on every orders operation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from django.test import Client
from drf_spectacular.validation import validate_schema

# The ApiKey security scheme is an extension class that drf-spectacular only knows once its module is
# imported. Import it here so these in-process tests check the schema a warmed-up process serves,
# whatever ran first; test_a_fresh_process_serves_api_key_security covers the cold start.
import apps.core.openapi  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_URL = "/api/schema/"
PROBLEM_REF = "#/components/schemas/Problem"
PROBLEM_STATUSES = ["400", "401", "404", "429", "500"]
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def openapi() -> dict:
    response = Client().get(SCHEMA_URL, {"format": "json"})
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def orders_operations(schema: dict) -> list[tuple[str, str, dict]]:
    """Every (path, method, operation) under /api/orders."""
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        if path.startswith("/api/orders")
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ({"format": "json"}, {}),
        ({}, {"Accept": "application/vnd.oai.openapi+json"}),
        ({}, {"Accept": "application/json"}),
    ],
    ids=["format-param", "openapi-accept", "json-accept"],
)
def test_schema_is_served_as_json_without_authentication(query, headers):
    response = Client().get(SCHEMA_URL, query, headers=headers)

    assert response.status_code == 200, response.content
    assert "json" in response["Content-Type"]
    assert json.loads(response.content)["openapi"].startswith("3.")


def test_schema_is_valid_openapi_3(openapi):
    validate_schema(openapi)


def test_schema_lists_the_orders_operations(openapi):
    operations = {(path, method) for path, method, _ in orders_operations(openapi)}

    assert operations == {("/api/orders/", "get"), ("/api/orders/", "post"), ("/api/orders/{order_id}/", "get")}


def test_api_key_security_scheme_is_bearer(openapi):
    scheme = openapi["components"]["securitySchemes"]["ApiKey"]

    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_every_orders_operation_accepts_the_api_key(openapi):
    missing = [
        f"{method.upper()} {path}"
        for path, method, operation in orders_operations(openapi)
        if {"ApiKey": []} not in operation.get("security", openapi.get("security", []))
    ]

    assert not missing, f"operations without ApiKey security: {missing}"


@pytest.mark.parametrize("status", PROBLEM_STATUSES)
def test_every_orders_operation_documents_the_problem_response(openapi, status):
    for path, method, operation in orders_operations(openapi):
        response = operation["responses"].get(status)
        label = f"{method.upper()} {path} {status}"
        assert response is not None, f"{label} is not documented"
        assert response.get("description"), f"{label} has no description"
        assert set(response.get("content", {})) == {"application/problem+json"}, label
        assert response["content"]["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}, label


def test_problem_component_matches_a_real_problem_response(openapi):
    problem_schema = openapi["components"]["schemas"]["Problem"]
    response = Client().get("/api/orders/")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= set(problem_schema["required"])
    jsonschema.validate(response.json(), problem_schema)


def test_docs_page_renders_swagger_ui_for_the_schema():
    response = Client().get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "SwaggerUIBundle" in page
    assert f'url: "{SCHEMA_URL}"' in page


def _run_django(*args: str) -> subprocess.CompletedProcess[str]:
    """Run Python in a fresh process with the test settings, from the repository root."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.test"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )




def test_spectacular_command_validates_without_warnings(tmp_path):
    result = _run_django(
        "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml")
    )

    assert result.returncode == 0, result.stderr[-4000:]


FIRST_SCHEMA_SECURITY = """
import json, django
django.setup()
from django.test import Client
schema = json.loads(Client().get("/api/schema/", {"format": "json"}).content)
print(json.dumps({f"{method} {path}": op.get("security", []) for path, item in schema["paths"].items()
                  for method, op in item.items()}))
"""


def test_a_fresh_process_serves_api_key_security():
    result = _run_django("-c", FIRST_SCHEMA_SECURITY)

    assert result.returncode == 0, result.stderr[-4000:]
    security = json.loads(result.stdout.strip().splitlines()[-1])
    assert security
    assert all({"ApiKey": []} in requirements for requirements in security.values()), security
