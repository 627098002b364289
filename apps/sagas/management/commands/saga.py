"""`manage.py saga list|show|cancel|retry|resolve`: the saga control plane from a shell, audited as the OS user."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from apps.core.audit import Actor
from apps.core.errors import TaskplaneError
from apps.sagas.models import SagaInstance
from apps.sagas.presentation import timeline_rows
from apps.sagas.selectors import saga_definition_status, saga_get, saga_list, saga_timeline
from apps.sagas.services import saga_cancel, saga_resolve, saga_retry


def saga_id(text: str) -> uuid.UUID:
    """argparse type: a saga instance id."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a saga id (a UUID).") from None


def aware_datetime(text: str) -> datetime:
    """argparse type: an ISO 8601 date-time with its UTC offset (or Z)."""
    try:
        value = parse_datetime(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date-time with a UTC offset, e.g. 2026-01-31T12:00Z.")
    return value


def note_text(text: str) -> str:
    """argparse type: a note with some text besides white space."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the note must not be blank.")
    return text


class Command(BaseCommand):
    help = (
        "Inspect and operate sagas: `list` (filters), `show ID` (the timeline), `cancel ID` (compensate now), "
        "`retry ID` (run a failed compensation again), `resolve ID --note …` (mark a compensation_failed saga "
        "compensated after fixing it by hand). Actions are recorded in the operator audit log."
    )

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="{list,show,cancel,retry,resolve}")
        listing = commands.add_parser("list", help="Instances, newest first.")
        listing.add_argument("--name", help="Saga name (exact).")
        listing.add_argument("--state", choices=SagaInstance.State.values)
        listing.add_argument("--key", help="Business key (exact).")
        listing.add_argument("--created-after", type=aware_datetime, metavar="DATETIME")
        listing.add_argument("--created-before", type=aware_datetime, metavar="DATETIME")
        listing.add_argument("--limit", type=int, default=50, help="At most this many (default 50).")
        show = commands.add_parser("show", help="One instance with its timeline.")
        show.add_argument("id", type=saga_id)
        for name, text in (("cancel", "Compensate now; the saga ends cancelled."),
                           ("retry", "Run the failed compensation of a compensation_failed saga again.")):
            action = commands.add_parser(name, help=text)
            action.add_argument("id", type=saga_id)
            action.add_argument("--reason", default="", help="Why: kept in the operator audit log.")
        resolve = commands.add_parser("resolve", help="Mark a compensation_failed saga compensated.")
        resolve.add_argument("id", type=saga_id)
        resolve.add_argument("--note", type=note_text, required=True,
                             help="What you fixed by hand (required): kept on the saga and in the audit log.")

    def handle(self, *args, subcommand: str, **options):
        try:
            if subcommand == "list":
                self._list(options)
            elif subcommand == "show":
                self._show(saga_get(saga_id=options["id"]))
            else:
                self._act(subcommand, options)
        except TaskplaneError as exc:  # NotFound, Conflict, InvalidInput: a clear message and exit status 1
            raise CommandError(exc.detail) from exc

    def _list(self, options: dict) -> None:
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        instances = saga_list(name=options["name"], state=options["state"], key=options["key"],
                              created_before=options["created_before"], created_after=options["created_after"])
        rows = list(instances[:options["limit"]])
        for instance in rows:
            self.stdout.write(f"{instance.pk}  {instance.name}  key={instance.key}  {instance.state}  "
                              f"created {instance.created_at.isoformat(timespec='seconds')}")
        self.stdout.write(f"{len(rows)} saga(s){' (limit reached)' if len(rows) == options['limit'] else ''}.")

    def _act(self, subcommand: str, options: dict) -> None:
        actor = Actor.command_line()
        if subcommand == "cancel":
            instance = saga_cancel(saga_id=options["id"], actor=actor, reason=options["reason"])
        elif subcommand == "retry":
            instance = saga_retry(saga_id=options["id"], actor=actor, reason=options["reason"])
        else:
            instance = saga_resolve(saga_id=options["id"], actor=actor, note=options["note"])
        self.stdout.write(f"{subcommand}: saga {instance.pk} is now {instance.state}.")

    def _show(self, instance: SagaInstance) -> None:
        status = saga_definition_status(instance)
        lines = [
            f"saga {instance.pk}", f"  name: {instance.name}", f"  key: {instance.key}",
            f"  state: {instance.state}", f"  steps at start: {', '.join(instance.definition_steps)}",
            f"  step index: {instance.step_index}  pivot passed: {instance.pivot_passed}",
            f"  created: {instance.created_at.isoformat()}  finished: "
            f"{instance.finished_at.isoformat() if instance.finished_at else '—'}",
        ]
        if instance.failure:
            lines.append(f"  failure: {instance.failure}")
        if instance.resolution_note:
            lines.append(f"  resolution note: {instance.resolution_note}")
        if not status["declared"]:
            lines.append("  definition: the code no longer declares this saga")
        elif not status["current"]:
            missing = ", ".join(status["missing_steps"]) or "none missing"
            lines.append(f"  definition: changed since start (steps the code no longer has: {missing})")
        else:
            lines.append("  definition: current")
        lines.append(f"  context: {json.dumps(instance.context, ensure_ascii=False, sort_keys=True)}")
        lines.append("timeline:")
        for row in timeline_rows(saga_timeline(saga_id=instance.pk)):
            attempt = row.attempt
            lines.append(f"  [{attempt.step_index}] {attempt.step} {attempt.kind} #{attempt.attempt} {attempt.state}"
                         f"  start {row.started}  end {row.finished}  ({row.duration})  key {attempt.idempotency_key}")
            if row.outcome:
                lines.append(f"      {'error' if attempt.error else 'result'}: {row.outcome}")
        self.stdout.write("\n".join(lines))
