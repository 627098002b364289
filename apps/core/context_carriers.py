"""Ambient-context carriers: per-request state that follows the work it causes into Taskplane's own tasks.

An app registers a carrier (a name, ``capture()`` and ``restore(value)``) once, usually in its
``AppConfig.ready()``. ``publish()``/``enqueue()`` capture every carrier into the outbox row's
internal ``context`` column; the worker restores them before a task runs and clears them after. The
outbox never learns who owns a value, and nothing captured here ever reaches a consumer outside
Taskplane: the event envelope and the public headers carry none of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Carrier:
    """One kind of ambient context: how to read it now, and how to bind a captured value (or None)."""

    name: str
    capture: Callable[[], Any]
    restore: Callable[[Any], None]


_carriers: dict[str, Carrier] = {}


def carrier_register(*, name: str, capture: Callable[[], Any], restore: Callable[[Any], None]) -> None:
    """Register a carrier; its captured values must be JSON. Registering the same name again replaces it."""
    if not _NAME.match(name):
        raise ValueError(f"Carrier name {name!r} must be 1-64 lowercase letters, digits, '_', '.' or '-'")
    _carriers[name] = Carrier(name=name, capture=capture, restore=restore)


def carriers_capture() -> dict[str, Any]:
    """Every carrier's current value, by name; carriers with nothing bound (None or empty) are left out."""
    captured = {}
    for carrier in _carriers.values():
        value = carrier.capture()
        if value:
            captured[carrier.name] = value
    return captured


def carriers_restore(values: Mapping[str, Any] | None) -> None:
    """Bind ``values`` (as captured) in every carrier; a carrier missing from them is cleared (None)."""
    values = values if isinstance(values, Mapping) else {}
    for carrier in _carriers.values():
        carrier.restore(values.get(carrier.name))
