import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Create the admin account if it does not exist. Uses DJANGO_SUPERUSER_USERNAME/EMAIL/PASSWORD; "
        "without a password one is generated and printed once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        username = settings.ADMIN_USERNAME
        with transaction.atomic():
            if User.objects.filter(username=username).exists():
                self.stdout.write(f"Admin account {username!r} already exists.")
                return
            password = settings.ADMIN_PASSWORD or secrets.token_urlsafe(12)
            User.objects.create_superuser(username=username, email=settings.ADMIN_EMAIL, password=password)
        if settings.ADMIN_PASSWORD:
            self.stdout.write(f"Created admin account {username!r} with DJANGO_SUPERUSER_PASSWORD.")
        else:
            self.stdout.write(f"Created admin account {username!r} with password: {password}  (shown once)")
