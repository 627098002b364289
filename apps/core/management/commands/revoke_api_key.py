from django.core.management.base import BaseCommand, CommandError

from apps.core.api_keys import api_key_revoke
from apps.core.audit import Actor
from apps.core.errors import TaskplaneError


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (the tp_xxxxxxxx shown in admin and by create_api_key)."

    def add_arguments(self, parser):
        parser.add_argument("prefix")
        parser.add_argument("--reason", default="", help="Why: kept in the operator audit log.")

    def handle(self, *args, prefix: str, reason: str, **options):
        try:
            count = api_key_revoke(prefix=prefix, actor=Actor.command_line(), reason=reason)
        except TaskplaneError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"Revoked {count} key(s) with prefix {prefix}.")
