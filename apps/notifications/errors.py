"""Domain errors of webhooks."""

from apps.core.errors import InvalidInput


class InvalidEndpoint(InvalidInput):
    """Endpoint input whose types are right but whose meaning is not: a URL the SSRF guard refuses (scheme,
    allow-list, a non-public address, a host that does not resolve), an unknown event type or pattern, a
    reserved header, a header value with a line break. 400 with field errors; nothing is saved."""

    title, slug = "Invalid webhook endpoint", "invalid-endpoint"


def field_error(field: str, message: str, code: str = "invalid") -> dict[str, str]:
    """One entry of a problem's ``errors`` (the shape apps/core/problems.py documents)."""
    return {"field": field, "message": message, "code": code}
