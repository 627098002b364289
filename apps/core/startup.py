"""What a process says when it starts: its settings module, database, broker and Redis, never credentials."""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connections

logger = logging.getLogger("taskplane.startup")


def url_location(url: str) -> str:
    """Return ``scheme://host:port/path`` of a URL: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def configuration_summary() -> dict[str, str]:
    """Return the settings module, database, broker and Redis this process uses, without credentials."""
    database = settings.DATABASES["default"]
    vendor = connections["default"].vendor
    if vendor == "sqlite":
        where = str(database["NAME"])
    else:
        port = f":{database['PORT']}" if database.get("PORT") else ""
        where = f"{database.get('HOST') or 'localhost'}{port}/{database['NAME']}"
    # Celery accepts several broker URLs separated by ";" (failover); each is shown.
    brokers = "; ".join(url_location(url) for url in settings.CELERY_BROKER_URL.split(";") if url.strip())
    redis = url_location(settings.REDIS_URL) if settings.REDIS_URL else "none (process-local cache)"
    return {"settings": settings.SETTINGS_MODULE, "database": f"{vendor} {where}", "broker": brokers, "redis": redis,
            "email": email_location()}


def email_location() -> str:
    """Where mail goes, from the EMAIL_URL settings: scheme, host and port for SMTP, never user or password."""
    if settings.EMAIL_BACKEND != "django.core.mail.backends.smtp.EmailBackend":
        return settings.EMAIL_BACKEND
    scheme = "smtp+ssl" if settings.EMAIL_USE_SSL else "smtp+tls" if settings.EMAIL_USE_TLS else "smtp"
    return f"{scheme}://{settings.EMAIL_HOST}:{settings.EMAIL_PORT}"


def log_configuration(*, process: str) -> None:
    """Log, once at start, which settings module, database, broker and Redis ``process`` uses."""
    summary = configuration_summary()
    logger.info(
        "%s (pid %s) uses settings %s, database %s, broker %s, redis %s, email %s",
        process, os.getpid(), summary["settings"], summary["database"], summary["broker"], summary["redis"],
        summary["email"],
        extra={"process_kind": process, "settings_module": summary["settings"], "database": summary["database"],
               "broker": summary["broker"], "redis": summary["redis"], "email": summary["email"]},
    )
