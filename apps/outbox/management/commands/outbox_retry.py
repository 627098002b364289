import argparse

from django.core.management.base import BaseCommand, CommandError

from apps.core.audit import Actor
from apps.outbox.models import OutboxMessage
from apps.outbox.services import outbox_retry


def message_id(text: str) -> int:
    """argparse type: a positive outbox row id."""
    if not text.isdigit() or int(text) < 1 or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{text!r} is not a message id (a positive whole number).")
    return int(text)


class Command(BaseCommand):
    help = "Put outbox messages back to pending: `--dead` retries every dead one; ids retry dead or discarded ones."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=message_id, metavar="ID", help="Outbox row ids to retry.")
        parser.add_argument("--dead", action="store_true", help="Retry every dead message.")
        parser.add_argument("--reason", default="", help="Why: kept in the operator audit log.")

    def handle(self, *args, ids: list[int], dead: bool, reason: str, **options):
        if dead and ids:
            raise CommandError("Give either message ids or --dead, not both.")
        if not dead and not ids:
            raise CommandError("Nothing to retry: give message ids or --dead.")
        if dead:
            count = outbox_retry(message_ids=_dead_ids(), actor=Actor.command_line(), reason=reason)
            self.stdout.write(f"Re-queued {count} dead message(s).")
            return
        wanted = len(set(ids))
        count = outbox_retry(message_ids=ids, actor=Actor.command_line(), reason=reason)
        self.stdout.write(f"Re-queued {count} of {wanted} message(s).")
        if count < wanted:
            self.stderr.write("The others do not exist or are not dead or discarded.")


def _dead_ids() -> list[int]:
    # outbox_retry(all_dead=True) also revives discarded rows, which an operator stopped on purpose;
    # `--dead` promises dead ones only, so they are picked here.
    return list(OutboxMessage.objects.filter(status=OutboxMessage.Status.DEAD).values_list("id", flat=True))
