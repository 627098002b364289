"""OpenAPI additions: the API key security scheme and problem responses on every operation."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

PROBLEM_STATUSES = {
    "400": "Malformed request or invalid fields.",
    "401": "Missing, invalid or revoked API key.",
    "403": "Authenticated but not allowed.",
    "404": "No such resource (or not yours).",
    "405": "Method not allowed on this resource.",
    "406": "The Accept header asks for a type the API cannot produce.",
    "415": "The request body is not application/json.",
    "429": "Rate limit exceeded; see Retry-After.",
    "500": "Unexpected error; quote request_id when reporting it.",
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


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def add_problem_responses(result, generator, request, public):
    """drf-spectacular post-processing hook: document the problem responses every operation can give."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    ref = PROBLEM_REF
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, description in PROBLEM_STATUSES.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/problem+json": {"schema": ref}}}
                )
    return result
