"""OpenAPI: the Idempotency-Key header and its 400/409/422 answers on every unsafe operation."""

from django.conf import settings

from apps.core.openapi import UNSAFE_METHODS, problem_response
from apps.idempotency.keys import HEADER_PATTERN


def document_idempotency(result, generator, request, public):
    """drf-spectacular post-processing hook."""
    hours = settings.IDEMPOTENCY_RETENTION_SECONDS / 3600
    parameter = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": HEADER_PATTERN},
        "description": (
            "Makes a retry safe: the first request with a key runs, later ones with the same key, method, path "
            "and body replay its stored response (with `Idempotent-Replayed: true`). Keys are 1-255 printable "
            'ASCII characters, or a quoted string (`"..."`, escaping `"` and `\\`). They are scoped to the '
            f"caller and kept {hours:g} hours. A different request with the same key answers 422; a retry "
            "while the first is still running answers 409 with Retry-After."
        ),
    }
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in UNSAFE_METHODS:
                continue
            operation.setdefault("parameters", []).append(parameter)
            responses = operation.setdefault("responses", {})
            responses["400"] = problem_response(
                "Malformed request, invalid fields, or a malformed or missing Idempotency-Key.")
            responses.setdefault("409", problem_response(
                "A request with this Idempotency-Key is in progress (Retry-After), or a conflict with the "
                "resource's state."))
            responses.setdefault("422", problem_response("The Idempotency-Key was used for a different request."))
    return result
