"""Logging filters and formatters: request/trace/task context on every line, secrets masked."""

from __future__ import annotations

import logging
import re

from celery._state import get_current_task
from opentelemetry import trace

from apps.core.request_context import get_request_id

REDACTED = "[REDACTED]"

# Values of these keys are secrets wherever they appear: key=value, key: value, "key": "value".
# (The names of secret fields, not secrets: hence the S105 waiver.)
_SECRET_KEYS = (
    r"password|passwd|pwd|secret|token|access[_-]?token|refresh[_-]?token|api[_-]?key|apikey"  # noqa: S105
    r"|authorization|cookie|set-cookie|session[_-]?id|sessionid|csrftoken|private[_-]?key|fernet[_-]?keys?"
)
_KEY_VALUE = re.compile(
    rf"""(?P<key>["']?\b(?:{_SECRET_KEYS})\b["']?\s*[:=]\s*)(?P<quote>["']?)(?P<value>(?:Bearer\s+|Basic\s+)?[^"'\s,;&}}]+)""",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_API_KEY = re.compile(r"\btp_[A-Za-z0-9_-]{16,}")
# A password may hold an unescaped "/" (clients accept it); masking a port and path by mistake is harmless.
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?=@)", re.IGNORECASE)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD_CANDIDATE = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_SENSITIVE_ATTRS = re.compile(rf"^(?:{_SECRET_KEYS})$", re.IGNORECASE)


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = int(char)
        if index % 2 == 1:
            number = number * 2 - 9 if number > 4 else number * 2
        total += number
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[REDACTED_CARD]" if 13 <= len(digits) <= 19 and _luhn_valid(digits) else match.group(0)


def mask_text(text: str) -> str:
    """Return ``text`` with secrets, credentials, emails and card numbers redacted."""
    text = _URL_PASSWORD.sub(lambda m: m.group("prefix") + REDACTED, text)
    text = _KEY_VALUE.sub(lambda m: m.group("key") + m.group("quote") + REDACTED, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _API_KEY.sub(REDACTED, text)
    text = _EMAIL.sub("[REDACTED_EMAIL]", text)
    return _CARD_CANDIDATE.sub(_mask_card, text)


class MaskingFilter(logging.Filter):
    """Redact secrets and PII in the message, its arguments, extra fields and tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
            # The traceback text is kept; the live exception could re-render unmasked values.
            record.exc_info = None
        for name, value in list(vars(record).items()):
            if name in _STANDARD_ATTRS:
                continue
            if _SENSITIVE_ATTRS.match(name):
                setattr(record, name, REDACTED)
            elif isinstance(value, str):
                setattr(record, name, mask_text(value))
            elif isinstance(value, dict):
                setattr(record, name, _mask_mapping(value))
        return True


def _mask_mapping(mapping: dict) -> dict:
    masked = {}
    for key, value in mapping.items():
        if isinstance(key, str) and _SENSITIVE_ATTRS.match(key):
            masked[key] = REDACTED
        elif isinstance(value, str):
            masked[key] = mask_text(value)
        elif isinstance(value, dict):
            masked[key] = _mask_mapping(value)
        else:
            masked[key] = value
    return masked


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Attach request_id, trace_id/span_id and task_id/task_name when they exist."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = get_request_id()
        if request_id:
            record.request_id = request_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        task = get_current_task()
        if task is not None and task.request.id:
            record.task_id = task.request.id
            record.task_name = task.name
        return True


class TextFormatter(logging.Formatter):
    """Readable one-line format for local runs: time, level, logger, [context] message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(context)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"{label}={getattr(record, attr)}"
            for label, attr in (("req", "request_id"), ("task", "task_name"), ("id", "task_id"), ("trace", "trace_id"))
            if getattr(record, attr, None)
        ]
        record.context = f"[{' '.join(parts)}] " if parts else ""
        return super().format(record)
