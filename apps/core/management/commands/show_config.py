from django.core.management.base import BaseCommand

from apps.core.startup import configuration_summary


class Command(BaseCommand):
    help = "Print the settings module, database, broker, Redis and email server in use (never credentials)."

    def handle(self, *args, **options):
        for name, value in configuration_summary().items():
            self.stdout.write(f"  {name:<10} {value}")
