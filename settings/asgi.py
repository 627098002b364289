"""ASGI entry point. Reads .env, then defaults to production settings."""

from django.core.asgi import get_asgi_application

from apps.core.startup import log_configuration
from settings import env

env.load(default_settings="settings.production")
application = get_asgi_application()
log_configuration(process="web")
