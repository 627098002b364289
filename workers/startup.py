"""Worker and beat start-up: say where they run, and start the outbox relays a worker is there for.

A worker that consumes the outbox queue starts its relays itself, so beat's keep-alive only
replaces relays that died and a worker running without beat still publishes the outbox
(issue 15, §0). A relay task that finds every slot taken ends at once, so several workers starting
together cost a few empty tasks, nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Container

from celery import Celery, signals

from apps.core.startup import log_configuration
from apps.core.task_contract import OUTBOX_RELAY, TASK_QUEUES

logger = logging.getLogger(__name__)


def consumes_outbox(queues: Container[str]) -> bool:
    """True when a worker consuming ``queues`` runs relay tasks."""
    return TASK_QUEUES[OUTBOX_RELAY] in queues


def _worker_set_up(sender=None, **kwargs) -> None:
    # celeryd_after_setup: logging is configured, the broker not yet connected, so the line shows
    # where the worker is trying to connect even when it cannot.
    log_configuration(process=f"worker {sender}")


def _beat_started(sender=None, **kwargs) -> None:
    log_configuration(process="beat")


def _start_relays(sender=None, **kwargs) -> None:
    from django.conf import settings

    app = sender.app  # worker_ready's sender is the worker's consumer
    if not consumes_outbox(app.amqp.queues.consume_from):
        return
    # Sent directly, like a relay's successor: the relay is the outbox's own machinery, not business work.
    for _ in range(settings.OUTBOX_RELAYS):
        app.send_task(OUTBOX_RELAY)
    logger.info("Started %s outbox relay(s): this worker consumes the %r queue", settings.OUTBOX_RELAYS,
                TASK_QUEUES[OUTBOX_RELAY])


def connect(app: Celery) -> None:
    """Attach the start-up handlers for processes of this app."""
    signals.celeryd_after_setup.connect(_worker_set_up, weak=False)
    signals.beat_init.connect(_beat_started, weak=False)
    signals.worker_ready.connect(_start_relays, weak=False)
