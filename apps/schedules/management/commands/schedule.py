"""`manage.py schedule list|show|create|pause|resume|trigger|preview|backfill`: schedules from a shell, audited."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from apps.core.audit import Actor
from apps.core.errors import TaskplaneError
from apps.schedules.cadence import zone_of
from apps.schedules.selectors import (
    cron_preview,
    schedule_fires,
    schedule_get,
    schedule_last_fire,
    schedule_list,
    schedule_next_fires,
)
from apps.schedules.services import (
    schedule_backfill,
    schedule_create,
    schedule_pause,
    schedule_resume,
    schedule_trigger,
)


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{what} is not JSON: {exc}") from None


def _instant(text: str, what: str):
    value = parse_datetime(text) if text else None
    if value is None or value.tzinfo is None:
        raise CommandError(f"{what} must be an ISO 8601 instant with an offset, e.g. 2027-03-28T01:00:00Z.")
    return value


class Command(BaseCommand):
    help = "List, show, create, pause, resume, trigger, backfill schedules and preview cron expressions."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True)
        commands.add_parser("list", help="Every schedule with its cadence, state and next fire.")
        show = commands.add_parser("show", help="A schedule, its next 5 fires (zone and UTC) and recent fires.")
        show.add_argument("name")
        create = commands.add_parser("create", help="Create a schedule (one of --cron, --interval, --run-at).")
        create.add_argument("name")
        create.add_argument("task")
        create.add_argument("--args", default="[]", dest="task_args", help="JSON array.")
        create.add_argument("--kwargs", default="{}", dest="task_kwargs", help="JSON object.")
        create.add_argument("--cron")
        create.add_argument("--timezone", default="UTC")
        create.add_argument("--interval", type=int, dest="interval_seconds")
        create.add_argument("--run-at", dest="run_at")
        create.add_argument("--overlap", default="skip")
        create.add_argument("--catchup-window", type=int, default=60, dest="catchup_window_seconds")
        create.add_argument("--jitter", type=int, default=0, dest="jitter_seconds")
        create.add_argument("--paused", action="store_true")
        for name in ("pause", "resume"):
            sub = commands.add_parser(name, help=f"{name.title()} a schedule.")
            sub.add_argument("name")
            sub.add_argument("--note", default="", help="Why (kept on the schedule and audited).")
        trigger = commands.add_parser("trigger", help="Run now: an extra, manual fire.")
        trigger.add_argument("name")
        backfill = commands.add_parser("backfill", help="Fire every nominal time of a past range once.")
        backfill.add_argument("name")
        backfill.add_argument("start")
        backfill.add_argument("end")
        preview = commands.add_parser("preview", help="The next fire instants of a cron expression, in UTC.")
        preview.add_argument("cron")
        preview.add_argument("--timezone", default="UTC")
        preview.add_argument("--start", help="ISO 8601 instant (default: now).")
        preview.add_argument("--count", type=int, default=5)

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        try:
            getattr(self, f"_{subcommand}")(options)
        except TaskplaneError as exc:
            details = "; ".join(f"{error['field']}: {error['message']}" for error in exc.errors)
            raise CommandError(f"{exc.detail} {details}".strip()) from None

    def _list(self, options: dict[str, Any]) -> None:
        for schedule in schedule_list():
            state = "enabled" if schedule.enabled else f"paused ({schedule.note})" if schedule.note else "paused"
            next_at = f"{schedule.next_fire_at:%Y-%m-%dT%H:%M:%SZ}" if schedule.next_fire_at else "-"
            self.stdout.write(f"{schedule.name}\t{schedule.task}\t{schedule.cadence}\t{state}\tnext {next_at}")

    def _show(self, options: dict[str, Any]) -> None:
        schedule = schedule_get(name=options["name"])
        zone = zone_of(schedule.timezone)
        self.stdout.write(f"{schedule.name}: {schedule.task} {json.dumps(schedule.args)} "
                          f"{json.dumps(schedule.kwargs)}, {schedule.cadence}, overlap {schedule.overlap}, "
                          f"{'enabled' if schedule.enabled else 'paused'} {schedule.note}".rstrip())
        for occurrence in schedule_next_fires(schedule=schedule):
            self.stdout.write(f"  next {occurrence.at.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}  "
                              f"{occurrence.at:%Y-%m-%dT%H:%M:%SZ}{'  (shifted by DST)' if occurrence.shifted else ''}")
        last = schedule_last_fire(schedule=schedule)
        if last:
            self.stdout.write(f"  last {last.nominal_at:%Y-%m-%dT%H:%M:%SZ} {last.decision}/{last.state}")
        for fire in schedule_fires(name=schedule.name)[:10]:
            late = f" {fire.lateness_seconds:.3f}s late" if fire.lateness_seconds is not None else ""
            self.stdout.write(f"  fire {fire.nominal_at:%Y-%m-%dT%H:%M:%S.%fZ} {fire.decision}/{fire.state}{late}")

    def _create(self, options: dict[str, Any]) -> None:
        data = {"name": options["name"], "task": options["task"], "args": _json(options["task_args"], "--args"),
                "kwargs": _json(options["task_kwargs"], "--kwargs"), "timezone": options["timezone"],
                "overlap": options["overlap"], "catchup_window_seconds": options["catchup_window_seconds"],
                "jitter_seconds": options["jitter_seconds"], "enabled": not options["paused"]}
        for kind in ("cron", "interval_seconds", "run_at"):
            if options[kind] is not None:
                data[kind] = options[kind]
        schedule = schedule_create(data=data, actor=Actor.command_line())
        next_at = f"{schedule.next_fire_at:%Y-%m-%dT%H:%M:%SZ}" if schedule.next_fire_at else "never"
        self.stdout.write(f"Created {schedule.name}: {schedule.cadence}, next fire {next_at}")

    def _pause(self, options: dict[str, Any]) -> None:
        schedule_pause(name=options["name"], note=options["note"], actor=Actor.command_line())
        self.stdout.write(f"Paused {options['name']}")

    def _resume(self, options: dict[str, Any]) -> None:
        schedule = schedule_resume(name=options["name"], note=options["note"], actor=Actor.command_line())
        self.stdout.write(f"Resumed {schedule.name}, next fire {schedule.next_fire_at}")

    def _trigger(self, options: dict[str, Any]) -> None:
        fire = schedule_trigger(name=options["name"], actor=Actor.command_line())
        self.stdout.write(f"Triggered {options['name']}: fire {fire.pk}, task {fire.task_id}")

    def _backfill(self, options: dict[str, Any]) -> None:
        counts = schedule_backfill(name=options["name"], start=_instant(options["start"], "start"),
                                   end=_instant(options["end"], "end"), actor=Actor.command_line())
        self.stdout.write(", ".join(f"{key} {value}" for key, value in counts.items()))

    def _preview(self, options: dict[str, Any]) -> None:
        if not 1 <= options["count"] <= 100:
            raise CommandError("--count must be from 1 to 100.")
        start = _instant(options["start"], "--start") if options["start"] else None
        for instant in cron_preview(cron=options["cron"], timezone=options["timezone"], start=start,
                                    count=options["count"]):
            self.stdout.write(instant.strftime("%Y-%m-%dT%H:%M:%SZ"))
