"""Event subscribers: ``@subscriber("order.placed", name="orders.reserve_stock")``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Subscriber:
    topic: str
    name: str
    handler: Handler


_by_name: dict[str, Subscriber] = {}


def subscriber(topic: str, *, name: str) -> Callable[[Handler], Handler]:
    """Register ``handler(event)`` to run once per ``topic`` event, in its own transaction with an inbox row.

    ``name`` identifies the consumer in the inbox: keep it stable, renaming it re-delivers history.
    """

    def register(handler: Handler) -> Handler:
        existing = _by_name.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"Subscriber name {name!r} is already used by {existing.handler!r}")
        _by_name[name] = Subscriber(topic=topic, name=name, handler=handler)
        return handler

    return register


def subscribers_for(topic: str) -> list[Subscriber]:
    """Subscribers of ``topic``, in name order (stable fan-out order)."""
    return sorted((s for s in _by_name.values() if s.topic == topic), key=lambda s: s.name)


def subscriber_named(name: str) -> Subscriber | None:
    """The subscriber registered under ``name``, if any."""
    return _by_name.get(name)


def subscriber_names() -> list[str]:
    """Every registered subscriber's name, sorted."""
    return sorted(_by_name)
