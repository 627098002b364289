"""Per-request and per-task context shared with logging, problem details and outgoing messages."""

from __future__ import annotations

from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("taskplane_request_id", default=None)


def get_request_id() -> str | None:
    """Return the id of the request (or the request that caused this task), if any."""
    return _request_id.get()


def set_request_id(value: str | None) -> object:
    """Bind a request id to the current context and return a token for ``reset_request_id``."""
    return _request_id.set(value)


def reset_request_id(token: object) -> None:
    """Restore the request id that was bound before ``set_request_id``."""
    _request_id.reset(token)  # type: ignore[arg-type]
