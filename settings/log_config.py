"""The LOGGING dict: JSON lines or readable text, with request/task context and secret masking."""

from __future__ import annotations

from typing import Any

JSON_FIELDS = "%(levelname)s %(name)s %(message)s"


def build_logging(*, level: str, fmt: str) -> dict[str, Any]:
    """Return a dictConfig mapping; ``fmt`` is "json" or "text"."""
    if fmt not in {"json", "text"}:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"LOG_FORMAT must be json or text; got {fmt!r}.")
    formatters = {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": JSON_FIELDS,
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        },
        "text": {"()": "apps.core.logs.TextFormatter"},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            # Context first, masking last, so masking also sees the fields context added.
            "context": {"()": "apps.core.logs.ContextFilter"},
            "mask": {"()": "apps.core.logs.MaskingFilter"},
        },
        "formatters": {"active": formatters[fmt]},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "active",
                "filters": ["context", "mask"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Replace Django's default handlers (which echo to the console in DEBUG) with ours.
            "django": {"handlers": ["console"], "level": level, "propagate": False},
            "django.db.backends": {"level": "INFO"},
            # Celery's own loggers propagate to the root handler so they get context and masking.
            "celery": {"level": level},
        },
    }
