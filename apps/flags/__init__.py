"""Feature flags owned by Django: ``from apps.flags import is_enabled, get_value, get_details``.

Evaluation reads an in-process snapshot (no query per call); changes reach every process within a
second through a Redis signal, with a version poll as the fallback.
"""

from typing import Any

__all__ = ["get_details", "get_value", "is_enabled"]


def __getattr__(name: str) -> Any:
    # Resolved lazily so importing the package during app loading does not touch models.
    if name in __all__:
        from apps.flags import evaluation

        return getattr(evaluation, name)
    raise AttributeError(name)
