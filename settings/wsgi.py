"""WSGI entry point (gunicorn settings.wsgi). Reads .env, then defaults to production settings."""

from django.core.wsgi import get_wsgi_application

from apps.core.startup import log_configuration
from settings import env

env.load(default_settings="settings.production")
application = get_wsgi_application()
log_configuration(process="web")
