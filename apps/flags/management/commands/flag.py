"""`manage.py flag show|set|list|history`: read and change flags from a shell, audited like admin and API."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.errors import TaskplaneError
from apps.flags.definitions import definition_of
from apps.flags.models import Flag, FlagChange
from apps.flags.services import flag_save, flag_update


def _percentage(text: str) -> int | float:
    # Only the parsing happens here; the range is the definition validator's, as for admin and API.
    try:
        value = float(text)
    except ValueError:
        raise CommandError(f"--percentage must be a number from 0 to 100, not {text!r}.") from None
    return int(value) if value.is_integer() else value


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # containers often run as a uid without a passwd entry
        return "cli"


class Command(BaseCommand):
    help = "Show, change, list and audit feature flags. Every change needs --reason and is recorded."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="{show,set,list,history}")

        show = commands.add_parser("show", help="A flag's definition, version and recent changes.")
        show.add_argument("key")

        change = commands.add_parser("set", help="Change a flag (creates a boolean flag if it does not exist).")
        change.add_argument("key")
        switch = change.add_mutually_exclusive_group()
        switch.add_argument("--enable", dest="enabled", action="store_const", const=True, help="Turn the flag on.")
        switch.add_argument("--disable", dest="enabled", action="store_const", const=False, help="Turn it off.")
        # Parsed as text so a bad value gets this command's message, not argparse's.
        change.add_argument("--percentage", help="Rollout percentage (0-100) of the first percentage rule.")
        change.add_argument("--description")
        change.add_argument("--reason", required=True, help="Why: recorded in the flag's history.")
        change.add_argument("--actor", default=_default_actor(), help="Who, for the audit trail (default cli:$USER).")

        commands.add_parser("list", help="Every flag with its state and version.")

        history = commands.add_parser("history", help="A flag's recorded changes, newest first.")
        history.add_argument("key")
        history.add_argument("--limit", type=int, default=50)

    def handle(self, *args: Any, **options: Any) -> None:
        subcommand = options["subcommand"]
        try:
            getattr(self, f"handle_{subcommand}")(options)
        except TaskplaneError as exc:
            details = "".join(f"\n  {error['field']}: {error['message']}" for error in exc.errors)
            raise CommandError(f"{exc.detail}{details}") from exc

    def handle_show(self, options: dict[str, Any]) -> None:
        """Print a flag's definition, version and last changes."""
        flag = self._flag(options["key"])
        self.stdout.write(f"{flag.key} ({flag.kind}, {'on' if flag.enabled else 'off'}), version {flag.version}")
        self.stdout.write(json.dumps(definition_of(flag), indent=2, sort_keys=True))
        self.stdout.write("Recent changes:")
        self._write_changes(FlagChange.objects.filter(flag_key=flag.key)[:5], with_diff=False)

    def handle_set(self, options: dict[str, Any]) -> None:
        """Apply --enable/--disable, --percentage and --description, creating a boolean flag if needed."""
        key, reason, actor = options["key"], options["reason"], options["actor"]
        if not reason.strip():
            raise CommandError("--reason must say why (it is recorded in the flag's history).")
        changes: dict[str, Any] = {}
        if options["enabled"] is not None:
            changes["enabled"] = options["enabled"]
        if options["percentage"] is not None:
            changes["percentage"] = _percentage(options["percentage"])
        if options["description"] is not None:
            changes["description"] = options["description"]
        if Flag.objects.filter(key=key).exists():
            if not changes:
                raise CommandError("Nothing to change: give --enable, --disable, --percentage or --description.")
            flag = flag_update(key=key, changes=changes, actor=actor, reason=reason)
            self.stdout.write(f"Updated {flag.key}: version {flag.version}.")
            return
        percentage = changes.pop("percentage", None)
        definition = {"key": key, "kind": Flag.Kind.BOOLEAN, "enabled": False, **changes, "rules": []}
        if percentage is not None:
            definition["rules"] = [{"kind": "percentage", "params": {"percentage": percentage}}]
        flag = flag_save(definition=definition, actor=actor, reason=reason)
        self.stdout.write(f"Created {flag.key} ({'on' if flag.enabled else 'off'}): version {flag.version}.")

    def handle_list(self, options: dict[str, Any]) -> None:
        """Print one line per flag."""
        flags = list(Flag.objects.order_by("key"))
        if not flags:
            self.stdout.write("No flags.")
            return
        width = max(len(flag.key) for flag in flags)
        for flag in flags:
            state = "on " if flag.enabled else "off"
            self.stdout.write(f"{flag.key:<{width}}  {state}  {flag.kind:<12}  v{flag.version:<4}  {flag.description}")

    def handle_history(self, options: dict[str, Any]) -> None:
        """Print a flag's changes (deleted flags keep theirs)."""
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        changes = list(FlagChange.objects.filter(flag_key=options["key"])[: options["limit"]])
        if not changes:
            raise CommandError(f"No changes recorded for flag {options['key']!r}.")
        self._write_changes(changes, with_diff=True)

    def _flag(self, key: str) -> Flag:
        flag = Flag.objects.prefetch_related("rules").filter(key=key).first()
        if flag is None:
            raise CommandError(f"No flag named {key!r}. `manage.py flag list` shows them all.")
        return flag

    def _write_changes(self, changes, *, with_diff: bool) -> None:
        for change in changes:
            self.stdout.write(f"  {change.changed_at:%Y-%m-%d %H:%M:%S} v{change.version} {change.action} "
                              f"by {change.actor}: {change.reason}")
            for item in change.diff if with_diff else ():
                self.stdout.write(f"      {item['field']}: {json.dumps(item['before'])} -> {json.dumps(item['after'])}")
        if not changes:
            self.stdout.write("  (none)")
