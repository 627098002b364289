"""is_enabled / get_value / get_details: the only entry points callers need."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from apps.flags import metrics
from apps.flags.context import current_context
from apps.flags.engine import ERROR, Details
from apps.flags.snapshot import current

logger = logging.getLogger(__name__)
_logged_errors: set[tuple[str, str]] = set()


def get_details(key: str, default: Any = False, context: Mapping[str, Any] | None = None, *,
                explain: bool = False) -> Details:
    """Evaluate ``key``; never raises: unknown flags and broken rules give ``default`` with reason ERROR."""
    try:
        flag = current().flags.get(key)
        if flag is None:
            return _error(key, default, "FLAG_NOT_FOUND", f"no flag named {key!r}")
        details = flag.evaluate(current_context() if context is None else context, explain=explain)
    except Exception as exc:  # evaluation must never break the caller
        return _error(key, default, "GENERAL", f"{type(exc).__name__}: {exc}")
    if details.value is None and details.reason in ("DEFAULT", "DISABLED"):
        return details._replace(value=default)  # a multivariate flag without its own default
    return details


def is_enabled(key: str, context: Mapping[str, Any] | None = None) -> bool:
    """True when the flag serves a truthy value for the context (False for unknown flags)."""
    return bool(get_details(key, False, context).value)


def get_value(key: str, default: Any, context: Mapping[str, Any] | None = None) -> Any:
    """The value the flag serves for the context, or ``default`` when it cannot be evaluated."""
    return get_details(key, default, context).value


def _error(key: str, default: Any, code: str, message: str) -> Details:
    metrics.EVALUATION_ERRORS.labels(code).inc()
    if (key, code) not in _logged_errors:  # once per flag and error, not once per evaluation
        if len(_logged_errors) >= 10_000:  # callers can name any key: keep the memory bounded
            _logged_errors.clear()
        _logged_errors.add((key, code))
        logger.warning("Flag %s evaluated to its default: %s", key, message)
    return Details(default, None, ERROR, error_code=code, explanation=(message,))
