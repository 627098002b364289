"""Flag writes. Every path (admin, API, command, schedule, rollback) goes through here, so every
change is validated, versioned, audited and signalled the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.core.errors import InvalidInput, NotFound
from apps.flags.declarations import SYSTEM_ACTOR, declared_flags
from apps.flags.definitions import definition_of, validate_definition
from apps.flags.models import Flag, FlagChange, FlagRule, FlagsVersion, ScheduledFlagChange
from apps.flags.snapshot import mark_dirty, signal_change


def flag_save(*, definition: dict[str, Any], actor: str, reason: str, action: str | None = None) -> Flag:
    """Create or replace the flag named in ``definition``; raises DefinitionError with field errors."""
    return _save(definition, actor, reason, action, only_if_missing=False)


def flag_create_missing(*, definition: dict[str, Any], actor: str, reason: str) -> Flag | None:
    """Create the flag unless one with its key exists (which it never changes); None when it exists."""
    try:
        with transaction.atomic():
            return _save(definition, actor, reason, "create", only_if_missing=True)
    except IntegrityError:
        return None  # created concurrently, by an operator or another migrate: theirs stands


def declared_flags_create(*, actor: str = SYSTEM_ACTOR) -> list[str]:
    """Create every flag declared in code that has no row yet (migrate runs this); returns the keys created."""
    created = []
    for key, declaration in sorted(declared_flags().items()):
        reason = f"declared in code ({declaration.declared_in or 'unknown module'}) and missing: created by migrate"
        if flag_create_missing(definition=declaration.definition(), actor=actor, reason=reason) is not None:
            created.append(key)
    return created


def _save(definition: dict[str, Any], actor: str, reason: str, action: str | None, *,
          only_if_missing: bool) -> Flag | None:
    _require_reason(reason)
    clean = validate_definition(definition)
    with transaction.atomic():
        flag = Flag.objects.select_for_update().filter(key=clean["key"]).first()
        if flag is not None and only_if_missing:
            return None
        before = definition_of(flag) if flag else None
        flag = flag or Flag(key=clean["key"])
        for name in ("description", "owner", "kind", "enabled", "variants", "default_value"):
            setattr(flag, name, clean[name])
        flag.starts_at = _time(clean["starts_at"])
        flag.ends_at = _time(clean["ends_at"])
        flag.version += 1
        flag.save()
        flag.rules.all().delete()
        FlagRule.objects.bulk_create(
            FlagRule(flag=flag, position=index, kind=rule["kind"], params=rule["params"],
                     constraints=rule["constraints"], variant=rule["variant"])
            for index, rule in enumerate(clean["rules"])
        )
        after = definition_of(flag)
        _record(flag.key, flag.version, action or ("update" if before else "create"), actor, reason, before, after)
    return flag


def flag_update(*, key: str, changes: dict[str, Any], actor: str, reason: str, action: str | None = None) -> Flag:
    """Apply a partial change (top-level fields, or {"percentage": N} for the first percentage rule)."""
    flag = _get(key)
    definition = definition_of(flag)
    changes = dict(changes)
    percentage = changes.pop("percentage", None)
    unknown = set(changes) - (set(definition) - {"key"})
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    definition.update(changes)
    if percentage is not None:
        rule = next((rule for rule in definition["rules"] if rule["kind"] == FlagRule.Kind.PERCENTAGE), None)
        if rule is None:
            definition["rules"].append({"kind": "percentage", "params": {"percentage": percentage}})
        else:
            rule["params"] = {**rule["params"], "percentage": percentage}
    return flag_save(definition=definition, actor=actor, reason=reason, action=action)


def flag_delete(*, key: str, actor: str, reason: str) -> None:
    """Delete a flag (evaluations then answer the caller's default with reason ERROR)."""
    _require_reason(reason)
    with transaction.atomic():
        flag = _get(key, lock=True)
        before = definition_of(flag)
        flag.delete()
        _record(key, 0, "delete", actor, reason, before, None)


def flag_rollback(*, key: str, change_id: int, actor: str, reason: str) -> Flag:
    """Restore the definition a past change produced, as a new audited change."""
    change = FlagChange.objects.filter(pk=change_id, flag_key=key).first()
    if change is None or change.after is None:
        raise NotFound(f"No change {change_id} with a definition for flag {key!r}.")
    return flag_save(definition=change.after, actor=actor, reason=reason, action="rollback")


def scheduled_changes_apply(*, now: datetime | None = None) -> int:
    """Apply due scheduled changes (called by beat); each is audited like any change. Returns how many."""
    now = now or timezone.now()
    applied = 0
    due = ScheduledFlagChange.objects.filter(applied_at__isnull=True, run_at__lte=now, error="").select_related("flag")
    for scheduled in due:
        with transaction.atomic():
            claimed = ScheduledFlagChange.objects.select_for_update(skip_locked=True).filter(
                pk=scheduled.pk, applied_at__isnull=True).first()
            if claimed is None:
                continue  # another beat/worker is applying it
            try:
                with transaction.atomic():
                    flag_update(key=scheduled.flag.key, changes=scheduled.changes, actor="scheduler",
                                reason=f"scheduled: {scheduled.reason}", action="scheduled")
            except Exception as exc:  # a bad stored change is recorded on its row, never retried forever
                detail = exc.detail if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
                claimed.error = f"{detail} {exc.errors}" if isinstance(exc, InvalidInput) and exc.errors else detail
                claimed.save(update_fields=["error"])
                continue
            claimed.applied_at = timezone.now()
            claimed.save(update_fields=["applied_at"])
            applied += 1
    return applied


def _record(key, version, action, actor, reason, before, after) -> None:
    FlagChange.objects.create(flag_key=key, version=version, action=action, actor=actor, reason=reason,
                              before=before, after=after, diff=_diff(before, after))
    FlagsVersion.objects.get_or_create(pk=1)
    FlagsVersion.objects.filter(pk=1).update(version=F("version") + 1)
    new_version = FlagsVersion.objects.get(pk=1).version
    mark_dirty()  # read-your-writes inside this transaction
    transaction.on_commit(mark_dirty)  # and after it: a listener reload may have raced the commit
    transaction.on_commit(lambda: signal_change(new_version))


def _diff(before: dict | None, after: dict | None, prefix: str = "") -> list[dict[str, Any]]:
    """Field-level differences between two definitions: [{"field", "before", "after"}]."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [] if before == after else [{"field": prefix or "flag", "before": before, "after": after}]
    changes = []
    for name in sorted(set(before) | set(after)):
        path = f"{prefix}.{name}" if prefix else name
        old, new = before.get(name), after.get(name)
        if isinstance(old, dict) and isinstance(new, dict):
            changes.extend(_diff(old, new, path))
        elif old != new:
            changes.append({"field": path, "before": old, "after": new})
    return changes


def _require_reason(reason: str) -> None:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("A reason is required for every flag change.",
                           errors=[{"field": "reason", "message": "This field is required.", "code": "required"}])


def _get(key: str, *, lock: bool = False) -> Flag:
    queryset = Flag.objects.select_for_update() if lock else Flag.objects
    flag = queryset.filter(key=key).first()
    if flag is None:
        raise NotFound(f"No flag named {key!r}.")
    return flag


def _time(value: str | None):
    return datetime.fromisoformat(value) if value else None
