"""`manage.py catalog set|list`: maintain the product catalog from a shell."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.errors import TaskplaneError
from apps.orders.catalog import product_list, product_set


class Command(BaseCommand):
    help = "Create or update a product (set) and list the catalog (list)."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True)
        commands.add_parser("list", help="Every product with its price and stock.")
        put = commands.add_parser("set", help="Create a product (needs --name and --price-cents) or update it.")
        put.add_argument("sku")
        put.add_argument("--name")
        put.add_argument("--price-cents", type=int, dest="price_cents")
        put.add_argument("--stock", type=int)
        put.add_argument("--if-missing", action="store_true", dest="if_missing",
                         help="Only create the product: an existing one is left unchanged.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "list":
            for product in product_list():
                self.stdout.write(f"{product.sku}\t{product.name}\t{product.price_cents}\t{product.stock}")
            return
        try:
            product, created = product_set(sku=options["sku"], name=options["name"],
                                           price_cents=options["price_cents"], stock=options["stock"],
                                           if_missing=options["if_missing"])
        except TaskplaneError as exc:
            raise CommandError(exc.detail) from None
        verb = "Created" if created else ("Kept" if options["if_missing"] else "Updated")
        self.stdout.write(f"{verb} {product.sku}: {product.name}, {product.price_cents} cents, stock {product.stock}")
