"""Per-request and per-task context shared with logging, problem details and outgoing messages."""

from __future__ import annotations

from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("taskplane_request_id", default=None)


def get_request_id() -> str | None:
    """Return the id of the request (or the request that caused this task), if any."""
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    """Bind a request id (or None) to the current context."""
    _request_id.set(value)
