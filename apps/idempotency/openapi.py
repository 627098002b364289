"""OpenAPI: the Idempotency-Key header and its 400/409/422 answers on every unsafe operation."""

from django.conf import settings

from apps.core.openapi import PROBLEM_REF

UNSAFE = ("post", "put", "patch", "delete")


def document_idempotency(result, generator, request, public):
    """drf-spectacular post-processing hook."""
    hours = settings.IDEMPOTENCY_RETENTION_SECONDS / 3600
    parameter = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": (
            "Makes a retry safe: the first request with a key runs, later ones with the same key, method, path "
            "and body replay its stored response (with `Idempotent-Replayed: true`). Keys are scoped to the "
            f"caller and kept {hours:g} hours. A different body with the same key answers 422; a retry while "
            "the first is still running answers 409 with Retry-After."
        ),
    }
    problem = {"content": {"application/problem+json": {"schema": PROBLEM_REF}}}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in UNSAFE:
                continue
            operation.setdefault("parameters", []).append(parameter)
            responses = operation.setdefault("responses", {})
            responses["400"] = {"description": "Malformed request, invalid fields, or a malformed/missing "
                                "Idempotency-Key.", **problem}
            responses.setdefault("409", {"description": "A request with this Idempotency-Key is in progress.",
                                         **problem})
            responses.setdefault("422", {"description": "The Idempotency-Key was used for a different request.",
                                         **problem})
    return result
