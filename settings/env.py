"""Strict readers for environment variables, and the `.env` file every entry point loads first.

Every helper fails with ImproperlyConfigured naming the variable, so a bad deployment stops at
start-up with a message an operator can act on instead of failing later in a request. Errors never
repeat a secret: values of secret-like variables are not shown at all, and URLs lose their userinfo.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")
_MISSING: Any = object()
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# --- The .env file ----------------------------------------------------------------------------
ENV_FILE_VARIABLE = "TASKPLANE_ENV_FILE"
DEFAULT_ENV_FILE = Path(__file__).resolve().parent.parent / ".env"
_ASSIGNMENT = re.compile(r"\A(?:export )?[A-Za-z_][A-Za-z_0-9]*=")  # the lines django-environ's reader takes


def env_file() -> Path | None:
    """Return the .env file to load: TASKPLANE_ENV_FILE, else the repository's .env; None when off or absent."""
    configured = os.environ.get(ENV_FILE_VARIABLE, "")
    if configured.lower() == "off":
        return None
    if not configured:
        return DEFAULT_ENV_FILE if DEFAULT_ENV_FILE.is_file() else None
    path = Path(configured)
    if not path.is_file():
        raise ImproperlyConfigured(f"{ENV_FILE_VARIABLE} names {configured}, which is not a file (use off for none).")
    return path


def read_env_file() -> dict[str, str]:
    """Load the .env file into os.environ, never overriding a variable already set; return what it added."""
    path = env_file()
    if path is None:
        return {}
    assignments = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if _ASSIGNMENT.match(line):
            assignments.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            # django-environ would skip the line with a warning quoting it (a secret, perhaps): stop instead.
            raise ImproperlyConfigured(f"{path}, line {number}: expected NAME=value (the line is not shown).")
    before = set(os.environ)
    environ.Env.read_env(io.StringIO("\n".join(assignments)))
    return {name: os.environ[name] for name in os.environ.keys() - before}


def load(*, default_settings: str, read_file: bool = True) -> None:
    """Entry points call this first: load .env (unless told not to), then default DJANGO_SETTINGS_MODULE."""
    if read_file:
        read_env_file()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", default_settings)


# --- Errors that never repeat a secret --------------------------------------------------------
_SECRET_WORDS = {"SECRET", "PASSWORD", "PASSWD", "TOKEN", "KEY", "KEYS", "CREDENTIALS", "PASSPHRASE"}
# Everything between a scheme's // (if any) and the last @ is userinfo, however malformed the rest is.
_USERINFO = re.compile(r"\A(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:?//)?.*@", re.DOTALL)
# Without an @, "user:password" parses as host:port: a port that is not a number may be a password.
_PORT = re.compile(r"\A(?P<host>[A-Za-z][A-Za-z0-9+.-]*:?//(?:\*\*\*@)?[^/:?#]*:)(?P<port>[^/?#]*)")
_QUERY_VALUE = re.compile(r"(?P<name>[?&;][^=&;#]*=)[^&;#]*")


def is_secret(name: str) -> bool:
    """True for variables whose values must never appear in a message (SECRET_KEY, FERNET_KEYS, *_TOKEN…)."""
    return bool(_SECRET_WORDS & set(name.upper().split("_")))


def redact(value: str) -> str:
    """Return ``value`` with URL userinfo and query values replaced by ***, for error messages."""
    value = _USERINFO.sub(lambda match: f"{match.group('scheme') or ''}***@", value, count=1)
    value = _PORT.sub(_mask_port, value, count=1)
    return _QUERY_VALUE.sub(lambda match: f"{match.group('name')}***", value)


def _mask_port(match: re.Match[str]) -> str:
    port = match.group("port")
    return match.group("host") + (port if port.isdigit() else "***")


def _malformed(name: str, expected: str, value: str) -> ImproperlyConfigured:
    shown = "the value is not shown: it is a secret" if is_secret(name) else f"got {redact(value)!r}"
    return ImproperlyConfigured(f"{name} must be {expected}; {shown}.")


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
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a parser's warning would quote the value too
            return parse(value)
    except (TypeError, ValueError, UserWarning):
        # `from None`: the parser's own exception, printed as the cause, would quote the value.
        raise _malformed(name, expected, value) from None


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


def seconds_list(name: str, default: Any = _MISSING) -> list[float]:
    """Return a non-empty comma-separated list of non-negative seconds, e.g. "0,5,300"."""

    def parse(value: str) -> list[float]:
        items = [float(item) for item in value.split(",") if item.strip()]
        if not items or any(not 0 <= item < 10**8 for item in items):
            raise ValueError(value)
        return items

    return _parsed(name, default, parse, "a comma-separated list of seconds, e.g. 0,5,300")


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
        if scheme not in (environ.Env.DB_SCHEMES if schemes is None else schemes):
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


def email(name: str, default: Any = _MISSING) -> dict[str, Any]:
    """Return Django EMAIL_* settings from ``smtp://``, ``smtp+tls://`` (STARTTLS), ``smtp+ssl://`` or ``console:``."""

    def parse(value: str) -> dict[str, Any]:
        scheme, _, rest = value.partition(":")
        if scheme == "console" and rest.strip("/") == "":
            return environ.Env.email_url_config("consolemail://")
        if scheme not in ("smtp", "smtp+tls", "smtp+ssl") or not rest.startswith("//"):
            raise ValueError(value)
        config = environ.Env.email_url_config(value)
        if not config.get("EMAIL_HOST"):
            raise ValueError(value)
        if not config.get("EMAIL_PORT"):
            config["EMAIL_PORT"] = 465 if scheme == "smtp+ssl" else 587 if scheme == "smtp+tls" else 25
        return config

    if isinstance(default, str):
        default = parse(default)  # a default is written as a URL too
    return _parsed(name, default, parse, "an email URL (smtp://, smtp+tls://, smtp+ssl://user:password@host:port "
                   "or console:)")


def fernet_keys(name: str, default: Any = _MISSING) -> list[str]:
    """Return comma-separated Fernet keys, newest first, each validated."""

    def parse(value: str) -> list[str]:
        keys = [item.strip() for item in value.split(",") if item.strip()]
        if not keys:
            raise ValueError(value)
        for key in keys:
            Fernet(key)  # raises ValueError for a malformed key
        return keys

    return _parsed(name, default, parse, "a comma-separated list of Fernet keys (32 url-safe base64 bytes each)")


if __name__ == "__main__":
    # compose/start/local.sh runs `eval "$(python -m settings.env)"`: the shell gets what .env adds.
    for variable, text_value in sorted(read_env_file().items()):
        print(f"export {variable}={shlex.quote(text_value)}")  # noqa: T201 - the shell reads stdout
