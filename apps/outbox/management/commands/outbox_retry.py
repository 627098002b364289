import argparse

from django.core.management.base import BaseCommand, CommandError

from apps.core.audit import Actor
from apps.outbox.models import OutboxMessage
from apps.outbox.services import RETRYABLE, outbox_retry


def message_id(text: str) -> int:
    """argparse type: a positive outbox row id."""
    if not text.isdigit() or int(text) < 1 or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{text!r} is not a message id (a positive whole number).")
    return int(text)


class Command(BaseCommand):
    help = (
        "Put outbox messages back to pending: `--dead` retries every dead one; ids retry dead or discarded ones "
        "and exit with status 1, naming them, when some were not retried."
    )

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
        wanted = sorted(set(ids))
        before = dict(OutboxMessage.objects.filter(id__in=wanted).values_list("id", "status"))
        count = outbox_retry(message_ids=wanted, actor=Actor.command_line(), reason=reason)
        self.stdout.write(f"Re-queued {count} of {len(wanted)} message(s).")
        if count < len(wanted):
            # Partial success still re-queues what it can; the exit status says not everything was.
            raise CommandError(_not_retried(wanted, before))


def _not_retried(wanted: list[int], before: dict[int, str]) -> str:
    reasons = [
        f"{message_id} ({'no such message' if message_id not in before else before[message_id]})"
        for message_id in wanted
        if before.get(message_id) not in RETRYABLE
    ]
    detail = f"Not retried: {', '.join(reasons)}." if reasons else "Some messages changed status meanwhile."
    return f"{detail} Only dead or discarded messages can be retried."


def _dead_ids() -> list[int]:
    # outbox_retry(all_dead=True) also revives discarded rows, which an operator stopped on purpose;
    # `--dead` promises dead ones only, so they are picked here.
    return list(OutboxMessage.objects.filter(status=OutboxMessage.Status.DEAD).values_list("id", flat=True))
