from django.core.management.base import BaseCommand, CommandError

from apps.core.api_keys import api_key_create
from apps.core.errors import TaskplaneError


class Command(BaseCommand):
    help = "Create an API key for a user and print it once, on the last line of output."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to tell keys apart.")

    def handle(self, *args, username: str, name: str, **options):
        try:
            api_key, raw_key = api_key_create(username=username, name=name)
        except TaskplaneError as exc:
            raise CommandError(exc.detail) from exc
        # The note goes to stderr first (unstyled: it is not an error) and the key alone to stdout, last,
        # so `KEY=$(manage.py create_api_key … | tail -n 1)` captures exactly the key.
        self.stderr.write(f"Created key {api_key.prefix}… for {username}. Store it now; it is not shown again.",
                          style_func=str)
        self.stderr.flush()
        self.stdout.write(raw_key)
