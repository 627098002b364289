from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import TaskplaneError
from apps.outbox.services import outbox_rotate_keys


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted outbox payload with the newest key in FERNET_KEYS. Run it after putting a "
        "new key first, and before removing the old one."
    )

    def handle(self, *args, **options):
        try:
            count = outbox_rotate_keys()
        except TaskplaneError as exc:  # no keys configured, or a payload no configured key opens
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"Re-encrypted {count} payload(s) with the newest key.")
