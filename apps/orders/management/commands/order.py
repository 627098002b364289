"""`manage.py order approve ID`: approve an order its checkout holds for an operator (audited as the OS user)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.audit import Actor
from apps.core.errors import TaskplaneError
from apps.orders.services import order_approve


class Command(BaseCommand):
    help = "Approve an order whose checkout waits for an operator (approve)."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True)
        approve = commands.add_parser("approve", help="Send the approval signal; the checkout goes on.")
        approve.add_argument("order_id", type=int)
        approve.add_argument("--reason", default="", help="Kept in the operator audit log.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            order = order_approve(order_id=options["order_id"], actor=Actor.command_line(), reason=options["reason"])
        except TaskplaneError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"Approved order {order.pk}: its checkout goes on.")
