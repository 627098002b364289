"""Domain errors. Services raise these; the API layer turns each into RFC 9457 problem details."""

from __future__ import annotations


class TaskplaneError(Exception):
    """Base of every error a caller can act on; carries an HTTP status and a problem type."""

    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(self, detail: str, *, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    @property
    def type_uri(self) -> str:
        """The problem type: a stable URN that documentation and clients key on."""
        return f"urn:taskplane:problem:{self.slug}"


class InvalidInput(TaskplaneError):
    status, title, slug = 400, "Invalid input", "invalid-input"


class NotFound(TaskplaneError):
    status, title, slug = 404, "Not found", "not-found"


class PermissionDenied(TaskplaneError):
    status, title, slug = 403, "Permission denied", "permission-denied"


class Conflict(TaskplaneError):
    status, title, slug = 409, "Conflict", "conflict"
