"""Errors raised to callers of publish() and enqueue()."""

from apps.core.errors import TaskplaneError


class OutboxError(TaskplaneError):
    """A message was refused; nothing was written."""

    status, title, slug = 500, "Outbox write refused", "outbox-write-refused"
