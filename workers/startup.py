"""Worker and beat say once at start which settings module, database and broker they use."""

from __future__ import annotations

from celery import signals

from apps.core.startup import log_configuration


def _worker_set_up(sender=None, **kwargs) -> None:
    # celeryd_after_setup: logging is configured, the broker not yet connected, so the line shows
    # where the worker is trying to connect even when it cannot.
    log_configuration(process=f"worker {sender}")


def _beat_started(sender=None, **kwargs) -> None:
    log_configuration(process="beat")


def connect() -> None:
    """Attach the start-up handlers."""
    signals.celeryd_after_setup.connect(_worker_set_up, weak=False)
    signals.beat_init.connect(_beat_started, weak=False)
