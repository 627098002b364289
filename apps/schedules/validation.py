"""Checking schedule input for meaning (the serializers check JSON types): one place for API, admin and CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime

from apps.core.task_contract import TASK_QUEUES
from apps.schedules.cadence import cron_check, zone_of
from apps.schedules.errors import InvalidSchedule
from apps.schedules.models import NAME_PATTERN, Schedule

CADENCE_FIELDS = frozenset({"cron", "timezone", "interval_seconds", "run_at", "start_at", "end_at"})
WRITABLE = frozenset({"name", "task", "args", "kwargs", "enabled", "note", "jitter_seconds", "overlap",
                      "pause_on_failure", "catchup_window_seconds", "ordering_key"}) | CADENCE_FIELDS
_KINDS = ("cron", "interval_seconds", "run_at")
_MAX_SECONDS = 10 * 365 * 86400


def schedule_clean(*, data: Mapping[str, Any], current: Schedule | None) -> dict[str, Any]:
    """The model field values ``data`` sets (a definition, or changes to ``current``); InvalidInput if bad."""
    errors: list[dict[str, str]] = []

    def fail(field: str, message: str) -> None:
        errors.append({"field": field, "message": message, "code": "invalid"})

    fields: dict[str, Any] = {}
    for name in sorted(set(data) - WRITABLE):
        fail(name, "Unknown field.")
    if current is not None and "name" in data and data["name"] != current.name:
        fail("name", "A schedule cannot be renamed; create a new one.")
    for name, value in data.items():
        if name in WRITABLE:
            _clean_field(name, value, fields, fail)
    if current is None:
        for required in ("name", "task"):
            if required not in data:
                fail(required, "This field is required.")
    _clean_cadence(data, fields, current, fail)
    if errors:
        raise InvalidSchedule("The schedule has invalid fields; see errors.", errors=errors)
    return fields


def _clean_field(name: str, value: Any, fields: dict[str, Any], fail) -> None:
    if name == "name":
        if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
            return fail(name, "1-200 letters, digits, '_', '.', ':' or '-', starting with a letter or digit.")
    elif name == "task":
        if value not in TASK_QUEUES:
            return fail(name, "Unknown task: not listed in apps/core/task_contract.py.")
    elif name in ("args", "kwargs"):
        expected = list if name == "args" else dict
        if not isinstance(value, expected):
            return fail(name, f"Must be a JSON {'array' if name == 'args' else 'object'}.")
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return fail(name, "Must be JSON.")
        if "\\u0000" in text:  # PostgreSQL's jsonb cannot store NUL characters
            return fail(name, "Must not contain NUL characters.")
        if len(text.encode()) > settings.OUTBOX_MAX_PAYLOAD_BYTES // 2:
            return fail(name, "Too large for a task message (OUTBOX_MAX_PAYLOAD_BYTES).")
    elif name == "overlap":
        if value not in Schedule.Overlap.values:
            return fail(name, f"One of {', '.join(Schedule.Overlap.values)}.")
    elif name in ("enabled", "pause_on_failure"):
        if not isinstance(value, bool):
            return fail(name, "Must be true or false.")
    elif name in ("jitter_seconds", "catchup_window_seconds"):
        if not _is_int(value) or not 0 <= value <= _MAX_SECONDS:
            return fail(name, f"An integer from 0 to {_MAX_SECONDS}.")
    elif name == "interval_seconds":
        if value is not None and (not _is_int(value) or not 1 <= value <= _MAX_SECONDS):
            return fail(name, f"An integer from 1 to {_MAX_SECONDS}.")
    elif name in ("note", "cron", "timezone"):
        if not isinstance(value, str) or "\x00" in value or len(value) > (200 if name != "note" else 2000):
            return fail(name, "Must be text (no NUL characters, not too long).")
    elif name == "ordering_key":
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 200 or "\x00" in value):
            return fail(name, "1 to 200 characters, or null.")
    elif name in ("run_at", "start_at", "end_at"):
        instant = _instant(value)
        if instant is False:
            return fail(name, "An ISO 8601 instant with its offset (e.g. 2027-03-28T01:00:00Z), or null.")
        value = instant
    fields[name] = value
    return None


def _clean_cadence(data: Mapping[str, Any], fields: dict[str, Any], current: Schedule | None, fail) -> None:
    given = [kind for kind in _KINDS if data.get(kind) not in (None, "")]
    if len(given) > 1:
        fail(given[1], f"Give one of cron, interval_seconds or run_at, not {' and '.join(given)}.")
        return
    if given:  # setting one kind clears the others, so a PATCH can switch from cron to an interval
        for kind in _KINDS:
            if kind != given[0]:
                fields[kind] = "" if kind == "cron" else None
    elif current is None or (any(kind in data for kind in _KINDS) and not _current_kind(current, data)):
        fail("cron", "Give one of cron, interval_seconds or run_at.")
        return
    cron = fields.get("cron", current.cron if current else "")
    zone = fields.get("timezone", current.timezone if current else "UTC")
    if "timezone" in fields or cron:
        try:
            zone_of(zone)
        except ValueError as exc:
            fail("timezone", str(exc))
    if cron:
        try:
            cron_check(cron)
        except ValueError as exc:
            fail("cron", str(exc))
    start = fields.get("start_at", current.start_at if current else None)
    end = fields.get("end_at", current.end_at if current else None)
    if isinstance(start, datetime) and isinstance(end, datetime) and end <= start:
        fail("end_at", "Must be after start_at.")


def _current_kind(current: Schedule, data: Mapping[str, Any]) -> bool:
    # A PATCH that blanks the schedule's only cadence (cron: "") without giving another leaves none.
    return any(kind not in data and getattr(current, kind) not in (None, "") for kind in _KINDS)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _instant(value: Any) -> datetime | bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = parse_datetime(value)
        except ValueError:
            return False
    if not isinstance(value, datetime) or value.tzinfo is None:
        return False
    return value
