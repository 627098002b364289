"""OpenAPI additions: the API key security scheme, strict request bodies, and every status an operation answers.

The schema must describe the API exactly (tests/test_schemathesis.py holds it to that): a strict
serializer's request body has ``additionalProperties: false``, and each operation lists the problem
responses it can give, with the headers every answer carries.
"""

from __future__ import annotations

import inspect

from django.core.validators import RegexValidator
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)

# Every operation: the answers that do not depend on what the operation does.
PROBLEM_STATUSES = {
    "400": "Malformed request or invalid fields.",
    "401": "Missing, invalid or revoked API key.",
    "403": "Authenticated but not allowed.",
    "404": "No such resource (or not yours).",
    "406": "The Accept header asks for a type the API cannot produce.",
    "414": "The request line (method, path and query) is longer than 8190 bytes.",
    "429": "Rate limit exceeded; see Retry-After.",
    "431": "A request header is longer than 8190 bytes, or there are more than 100 headers.",
    "500": "Unexpected error; quote request_id when reporting it.",
    "503": "A service the API depends on (database, cache) is unavailable; see Retry-After.",
}
# Operations that read a request body (every unsafe method may: the Idempotency-Key fingerprint does).
BODY_PROBLEM_STATUSES = {
    "413": "The request body is larger than 2.5 MB.",
    "415": "The request body is not application/json.",
}
UNSAFE_METHODS = ("post", "put", "patch", "delete")
# Text without NUL, and not empty: a blank-allowing field's schema adds the empty string itself.
NO_NUL_PATTERN = "^[^\\u0000]+$"
REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "required": True,
        "description": "The request's id (the caller's X-Request-ID if valid); quote it when reporting a problem.",
        "schema": {"type": "string"},
    },
}
RETRY_AFTER_HEADER = {
    "Retry-After": {"required": True, "description": "Seconds to wait before retrying.",
                    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"}},
}

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail", "instance", "request_id"],
    "properties": {
        "type": {"type": "string", "description": "Problem type URI (about:blank or urn:taskplane:problem:*)."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "nullable": True},
        "request_id": {"type": "string", "nullable": True},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message", "code"],
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
}


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.core.api_auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key created with `manage.py create_api_key <username>`.",
        }


def _base_docs() -> set[str]:
    from apps.core import serializers

    return {inspect.cleandoc(cls.__doc__ or "") for cls in (serializers.StrictSerializer,
                                                            serializers.StrictQuerySerializer)}


_BASE_DOCS = _base_docs()


class StrictSerializerScheme(OpenApiSerializerExtension):
    """A StrictSerializer refuses unknown fields, so its request body says ``additionalProperties: false``."""

    target_class = "apps.core.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        if schema.get("description") in _BASE_DOCS:  # inherited from the base class, says nothing of this one
            del schema["description"]
        return schema


class TextWithoutNulScheme(OpenApiSerializerFieldExtension):
    """DRF's CharField refuses NUL characters (PostgreSQL stores none), so request text says so."""

    target_class = "rest_framework.fields.CharField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        # A RegexField's own pattern is added after this, unless a pattern is already there.
        constrained = {"pattern", "format", "enum"} & set(schema) or any(
            isinstance(validator, RegexValidator) for validator in self.target.validators)
        if direction == "request" and schema.get("type") == "string" and not constrained:
            schema["pattern"] = NO_NUL_PATTERN
        return schema


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_response(description: str) -> dict:
    """An OpenAPI response whose body is a Problem."""
    return {"description": description, "headers": dict(REQUEST_ID_HEADER),
            "content": {"application/problem+json": {"schema": PROBLEM_REF}}}


def add_problem_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: document the problem responses and headers of every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            statuses = {**PROBLEM_STATUSES, **(BODY_PROBLEM_STATUSES if method in UNSAFE_METHODS else {})}
            for status, description in statuses.items():
                responses.setdefault(status, problem_response(description))
            for status, response in responses.items():
                headers = response.setdefault("headers", {})
                headers.update(REQUEST_ID_HEADER)
                if status == "429":
                    headers.update(RETRY_AFTER_HEADER)
    return result
