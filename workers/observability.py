"""Worker signals: Django logging config, task metrics, and a Prometheus endpoint for the worker."""

from __future__ import annotations

import copy
import logging
import logging.config
import time

from celery import Celery, signals
from prometheus_client import Counter, Histogram

from apps.core.context_carriers import carriers_restore
from apps.core.request_context import set_request_id

logger = logging.getLogger(__name__)

TASKS_TOTAL = Counter(
    "taskplane_tasks_total", "Task runs, by name and outcome (success, retry, dead, dropped, requeued, duplicate, ...)",
    ["task", "outcome"],
)
TASK_SECONDS = Histogram("taskplane_task_duration_seconds", "Task run time", ["task"])
_started: dict[str, float] = {}


@signals.setup_logging.connect
def _keep_django_logging(loglevel=None, **kwargs) -> None:
    # Connecting this signal stops Celery from replacing the handlers Django's LOGGING installed.
    from django.conf import settings

    config = copy.deepcopy(settings.LOGGING)
    if loglevel and _loglevel_given():
        # `celery … -l LEVEL` wins over LOG_LEVEL for this process: it takes every level LOG_LEVEL set.
        chosen, level = config["root"]["level"], logging.getLevelName(loglevel)
        for section in (config["root"], *config.get("loggers", {}).values()):
            if section.get("level") == chosen:
                section["level"] = level
    logging.config.dictConfig(config)


def _loglevel_given() -> bool:
    # Celery passes its own default (WARNING) when -l is absent; only a level the operator chose
    # (command line or CELERY_WORKER_LOGLEVEL-style variable) overrides LOG_LEVEL.
    import click
    from click.core import ParameterSource

    context = click.get_current_context(silent=True)
    source = context.get_parameter_source("loglevel") if context is not None else None
    return source not in (None, ParameterSource.DEFAULT)


def message_header(request, name: str) -> dict:
    """A Taskplane header of the running message as a dict ({} when absent): ``taskplane`` (public) or
    ``taskplane_internal`` (context, key, encrypted), both written by the relay (apps/outbox/messages.py)."""
    value = getattr(request, name, None)
    if value is None:  # task.apply(headers=...) keeps them apart from the request's own fields
        value = (getattr(request, "headers", None) or {}).get(name)
    return value if isinstance(value, dict) else {}


def _on_prerun(task_id=None, task=None, **kwargs) -> None:
    _started[task_id] = time.perf_counter()
    if task is None:
        return
    # Messages relayed from the outbox carry the request that caused them: log lines say so (public
    # request_id), and every registered carrier (the flag context, ...) is bound again from the
    # message's internal context, so the task evaluates flags for the same subject.
    context = message_header(task.request, "taskplane_internal").get("context")
    set_request_id(message_header(task.request, "taskplane").get("request_id"))
    carriers_restore(context.get("carriers") if isinstance(context, dict) else None)


def _on_postrun(task_id=None, task=None, state=None, **kwargs) -> None:
    started = _started.pop(task_id, None)
    if task is None:
        return
    if started is not None:
        TASK_SECONDS.labels(task.name).observe(time.perf_counter() - started)
    # The failure policy (workers/task.py) names what became of a failed run: retry, dead, requeued...
    outcome = getattr(task.request, "taskplane_outcome", None) or (state or "unknown").lower()
    TASKS_TOTAL.labels(task.name, outcome).inc()
    set_request_id(None)
    carriers_restore(None)


def _start_metrics_server(sender=None, **kwargs) -> None:
    from django.conf import settings

    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = REGISTRY
    if settings.PROMETHEUS_MULTIPROC_DIR:
        # In prefork mode the metrics live in the child processes; the shared directory collects them.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    start_http_server(port, addr=settings.WORKER_METRICS_ADDR, registry=registry)
    logger.info("Worker metrics on :%s/metrics", port)


def connect(app: Celery) -> None:
    """Attach the signal handlers for processes started from this app."""
    signals.task_prerun.connect(_on_prerun, weak=False)
    signals.task_postrun.connect(_on_postrun, weak=False)
    signals.worker_ready.connect(_start_metrics_server, weak=False)
