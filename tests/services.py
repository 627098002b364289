"""Reachability checks for the real services the suite needs; a missing one stops the run loudly."""

from __future__ import annotations

import psycopg
import redis
from django.conf import settings
from kombu import Connection

START_COMMANDS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    "RabbitMQ": "rabbitmq-server -detached",
}


def _postgres() -> None:
    db = settings.DATABASES["default"]
    psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
        dbname="postgres", connect_timeout=3,
    ).close()


def _redis() -> None:
    redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()


def _rabbitmq() -> None:
    with Connection(settings.RABBITMQ_URL, connect_timeout=3) as connection:
        connection.ensure_connection(max_retries=1)


def unreachable_services() -> list[str]:
    """Return one line per service that cannot be reached, naming how to start it."""
    problems = []
    for name, probe, where in (
        ("PostgreSQL", _postgres, "TEST_DATABASE_URL"),
        ("Redis", _redis, "TEST_REDIS_URL"),
        ("RabbitMQ", _rabbitmq, "TEST_RABBITMQ_URL"),
    ):
        try:
            probe()
        except Exception as exc:  # any failure to connect is reported, whatever the client raised
            problems.append(
                f"{name} is unreachable ({type(exc).__name__}: {exc}). "
                f"Start it with: {START_COMMANDS[name]}  (or point {where} at a running one)"
            )
    return problems
