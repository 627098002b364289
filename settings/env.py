"""Strict readers for environment variables: the only place Taskplane touches os.environ.

Every helper fails with ImproperlyConfigured naming the variable, so a bad deployment stops at
start-up with a message an operator can act on instead of failing later in a request.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Any, TypeVar

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")
_MISSING: Any = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str, default: Any) -> str | Any:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is _MISSING:
            raise ImproperlyConfigured(f"{name} is required but not set.")
        return default
    return value


def _parsed(name: str, default: Any, parse: Callable[[str], T], expected: str) -> T | Any:
    if not is_set(name):
        return _raw(name, default)  # defaults are trusted as written; only the environment is parsed
    value = os.environ[name]
    try:
        return parse(value)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name} must be {expected}; got {value!r}.") from exc


def is_set(name: str) -> bool:
    """Return True when the variable is present and not empty."""
    return bool(os.environ.get(name))


def text(name: str, default: Any = _MISSING) -> str:
    """Return a string variable."""
    return _raw(name, default)


def boolean(name: str, default: Any = _MISSING) -> bool:
    """Return a boolean variable; only true/false/1/0/yes/no/on/off are accepted."""

    def parse(value: str) -> bool:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(value)

    return _parsed(name, default, parse, "a boolean (true/false)")


def integer(name: str, default: Any = _MISSING, *, minimum: int | None = None) -> int:
    """Return an integer variable, optionally bounded below."""

    def parse(value: str) -> int:
        number = int(value)
        if minimum is not None and number < minimum:
            raise ValueError(value)
        return number

    bound = "" if minimum is None else f" >= {minimum}"
    return _parsed(name, default, parse, f"an integer{bound}")


def csv(name: str, default: Any = _MISSING) -> list[str]:
    """Return a comma-separated list with blanks removed."""

    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not items:
            raise ValueError(value)
        return items

    return _parsed(name, default, parse, "a comma-separated list")


def rate(name: str, default: Any = _MISSING) -> str:
    """Return a DRF throttle rate such as "600/min" (units: s, sec, m, min, h, hour, d, day)."""

    def parse(value: str) -> str:
        count, _, period = value.partition("/")
        if not count.isdigit() or int(count) < 1 or period not in {"s", "sec", "m", "min", "h", "hour", "d", "day"}:
            raise ValueError(value)
        return value

    return _parsed(name, default, parse, "a rate like 600/min (count/s|m|h|d)")


def networks(name: str, default: Any = _MISSING) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Return a comma-separated list of CIDR networks."""

    def parse(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item.strip(), strict=False) for item in value.split(",") if item.strip()]

    return _parsed(name, default, parse, "a comma-separated list of CIDR networks")


def database(name: str, default: Any = _MISSING, *, schemes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Return a Django DATABASES entry parsed from a database URL."""

    def parse(value: str) -> dict[str, Any]:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if schemes is not None and scheme not in schemes:
            raise ValueError(value)
        config = environ.Env.db_url_config(value)
        if not config.get("ENGINE") or not config.get("NAME"):
            raise ValueError(value)
        return config

    allowed = "a database URL" if schemes is None else f"a database URL with scheme {'/'.join(schemes)}"
    if isinstance(default, str):
        default = parse(default)  # a default is written as a URL too
    return _parsed(name, default, parse, allowed)


def url(name: str, default: Any = _MISSING, *, schemes: tuple[str, ...]) -> str:
    """Return a URL whose scheme is one of ``schemes``."""

    def parse(value: str) -> str:
        scheme, sep, _ = value.partition("://")
        if not sep or scheme not in schemes:
            raise ValueError(value)
        return value

    return _parsed(name, default, parse, f"a URL with scheme {'/'.join(schemes)}")


def fernet_keys(name: str, default: Any = _MISSING) -> list[str]:
    """Return comma-separated Fernet keys, newest first, each validated."""

    def parse(value: str) -> list[str]:
        keys = [item.strip() for item in value.split(",") if item.strip()]
        if not keys:
            raise ValueError(value)
        for key in keys:
            Fernet(key)  # raises ValueError for a malformed key
        return keys

    # Never echo key material in the error message.
    if not is_set(name):
        return _raw(name, default)
    try:
        return parse(os.environ[name])
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"{name} must be a comma-separated list of Fernet keys (32 url-safe base64 bytes each)."
        ) from exc
