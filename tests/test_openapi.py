"""The published OpenAPI schema: valid OpenAPI 3, API-key security, and every status, header and bound it documents."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from django.test import Client
from drf_spectacular.validation import validate_schema
from hypothesis import given, settings
from hypothesis import strategies as st

# The ApiKey security scheme is an extension class that drf-spectacular only knows once its module is
# imported. Import it here so these in-process tests check the schema a warmed-up process serves,
# whatever ran first; test_a_fresh_process_serves_api_key_security covers the cold start.
import apps.core.openapi  # noqa: F401
from apps.core.errors import InvalidInput
from apps.idempotency.keys import parse_key

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


# --- issue 15 §0: the schema describes the API exactly ------------------------------------------------

UNSAFE = {"post", "put", "patch", "delete"}


def operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, operation) for path, item in schema["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS]


def test_every_operation_documents_every_status_it_can_answer(openapi):
    """gunicorn's 414/431, a dependency's 503, and on unsafe operations 409/413/415/422 were missing."""
    for path, method, operation in operations(openapi):
        expected = {"400", "401", "403", "404", "406", "414", "429", "431", "500", "503"}
        if method in UNSAFE:
            expected |= {"409", "413", "415", "422"}
        assert expected <= set(operation["responses"]), f"{method.upper()} {path}"
        for status, response in operation["responses"].items():
            assert response["headers"]["X-Request-ID"]["required"], f"{method.upper()} {path} {status}"


def test_request_bodies_refuse_unknown_fields(openapi):
    """The serializers refuse unknown fields, so every request body says additionalProperties: false."""
    schemas = openapi["components"]["schemas"]
    for path, method, operation in operations(openapi):
        content = operation.get("requestBody", {}).get("content", {})
        for media in content.values():
            schema = schemas[media["schema"]["$ref"].rsplit("/", 1)[1]]
            for branch in schema.get("oneOf", [schema]):
                assert branch["additionalProperties"] is False, f"{method.upper()} {path}"
                # A body with required fields is itself required (retry's optional {"reason"} is not).
                if branch.get("required"):
                    assert operation["requestBody"].get("required"), f"{method.upper()} {path}"


def test_required_reasons_and_notes_refuse_nul_and_blank_in_the_schema(openapi):
    """The re-drive reason's pattern was "\\S", which admits NUL: clients sent what the server refuses."""
    schemas = openapi["components"]["schemas"]
    checked = 0
    for path, method, operation in operations(openapi):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            schema = schemas[media["schema"]["$ref"].rsplit("/", 1)[1]]
            for branch in schema.get("oneOf", [schema]):
                branch = schemas[branch["$ref"].rsplit("/", 1)[1]] if "$ref" in branch else branch
                for name in set(branch.get("required", ())) & {"reason", "note"}:
                    pattern = re.compile(branch["properties"][name]["pattern"])
                    assert pattern.search("fixed by hand"), f"{method.upper()} {path} {name}"
                    for refused in ("why\x00", "\x00", "   ", ""):
                        assert not pattern.search(refused), f"{method.upper()} {path} {name} admits {refused!r}"
                    checked += 1
    assert checked >= 3  # the outbox re-drive, flags' reasons and the saga resolve note at least


def test_page_parameters_are_bounded_integers(openapi):
    for path, _method, operation in operations(openapi):
        parameters = {parameter["name"]: parameter["schema"] for parameter in operation.get("parameters", [])}
        if "page" in parameters:
            assert parameters["page"] == {"type": "integer", "minimum": 1, "maximum": 1_000_000}, path
            assert parameters["page_size"] == {"type": "integer", "minimum": 1, "maximum": 200}, path
            page_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            assert "count_estimated" in openapi["components"]["schemas"][page_schema.rsplit("/", 1)[1]]["required"]


def idempotency_key_schema(openapi) -> dict:
    parameters = openapi["paths"]["/api/orders/"]["post"]["parameters"]
    return next(parameter["schema"] for parameter in parameters if parameter["name"] == "Idempotency-Key")


# What an HTTP client can put in a header value: no leading whitespace (requests refuses it), no CR/LF/NUL.
header_values = st.text(st.characters(min_codepoint=0x09, max_codepoint=0xFF,
                                      exclude_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0"),
                        min_size=1, max_size=300).filter(lambda value: not value[0].isspace())
key_like = st.one_of(
    header_values,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=260),
    st.text(st.sampled_from('ab\\" '), min_size=1, max_size=12).map(lambda inner: f'"{inner}"'),
    st.text(st.sampled_from('ab\\" '), min_size=1, max_size=12).map(lambda inner: f'"{inner}"  '),
).filter(lambda value: not value[0].isspace())


@settings(max_examples=2000, deadline=None, database=None)
@given(value=key_like)
def test_the_idempotency_key_pattern_accepts_exactly_what_the_server_does(openapi, value):
    """issue 15 §0: the schema said "1-255 characters" while the server refused e.g. a lone opening quote."""
    pattern = idempotency_key_schema(openapi)["pattern"]
    try:
        parse_key(value.strip(" \t"))  # HTTP servers drop a header value's surrounding spaces and tabs
        accepted = True
    except InvalidInput:
        accepted = False

    assert bool(re.fullmatch(pattern, value)) == accepted, value
