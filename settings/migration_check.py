"""Settings for `make check-migrations`: the test settings on Django's dummy database backend.

Finding model changes without a migration needs no database. With a real one, makemigrations also
checks that database's migration history, and warns when the database does not exist.
"""

from settings.test import *  # noqa: F403

DATABASES = {"default": {"ENGINE": "django.db.backends.dummy"}}
