"""What the relay puts on the wire: event envelopes and Celery task messages (protocol 2).

Apps never import the Celery app (``workers``), so task messages are built here from Celery's
documented message protocol, version 2: headers name the task, the body is [args, kwargs, embed].
Bodies and headers are carried as JSON text: the relay splices stored JSON instead of parsing and
re-serialising it for every message.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings

ORIGIN = f"taskplane-relay@{socket.gethostname()}"
_EMBED = '{"callbacks":null,"errbacks":null,"chain":null,"chord":null}'


@dataclass
class Outgoing:
    """One broker message: destination, JSON body and headers (as text), AMQP properties."""

    row_id: int
    exchange: str
    exchange_type: str
    routing_key: str
    body: str
    headers_json: str
    correlation_id: str | None = None


@dataclass
class ClaimedRow:
    """A pending outbox row as the relay reads it (payload decrypted before use)."""

    id: int
    message_id: str
    kind: str
    name: str
    key: str | None
    queue: str
    payload: str
    encrypted: bool
    headers_json: str
    created_at: datetime
    context_json: str = "{}"  # internal: only Taskplane's own task messages carry it

    @property
    def headers(self) -> dict[str, Any]:
        """The stored headers, parsed (only the slow paths need them as a dict)."""
        return json.loads(self.headers_json) if self.headers_json else {}


def event_envelope(row: ClaimedRow) -> str:
    """The JSON body consumers outside Taskplane receive: id, topic, key, payload, headers, occurred_at.

    ``headers`` are the public ones only; the row's internal context never goes into an envelope.
    """
    return (
        f'{{"id":"{row.message_id}","topic":{json.dumps(row.name)},"key":{json.dumps(row.key)},'
        f'"payload":{row.payload},"headers":{row.headers_json or "{}"},'
        f'"occurred_at":"{row.created_at.isoformat()}"}}'
    )


def event_message(row: ClaimedRow, envelope: str) -> Outgoing:
    """The event on the topic exchange, routing key = topic; its broker headers are the public headers."""
    return Outgoing(row_id=row.id, exchange=settings.OUTBOX_EVENTS_EXCHANGE, exchange_type="topic",
                    routing_key=row.name, body=envelope, headers_json=row.headers_json or "{}")


def task_message(
    *, row_id: int, task_id: str, task_name: str, queue: str, args_json: str, kwargs_json: str, argsrepr: str,
    source: ClaimedRow,
) -> Outgoing:
    """A Celery protocol-2 task message for ``task_name`` on ``queue`` (direct exchange named like the queue).

    ``args_json``/``kwargs_json`` are JSON text. ``source`` is the outbox row the message comes from
    (the task row, or the event row of a subscriber delivery): its public headers are carried as
    the ``taskplane`` header, its traceparent also at the top level (where Celery's OpenTelemetry
    instrumentation looks for it), and ``taskplane_internal`` holds what only Taskplane's workers
    read: the row's context (carriers, retry attempt), its key and whether it was encrypted.
    """
    headers_json = source.headers_json or "{}"
    headers = json.loads(headers_json)
    trace = {name: headers[name] for name in ("traceparent", "tracestate") if name in headers}
    celery_headers = {
        "lang": "py", "task": task_name, "id": task_id, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
        "parent_id": None, "argsrepr": argsrepr, "kwargsrepr": "{}" if kwargs_json == "{}" else "...",
        "origin": ORIGIN, "ignore_result": True, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        **trace,
    }
    prefix = json.dumps(celery_headers, separators=(",", ":"))[:-1]
    internal = (f'{{"context":{source.context_json or "{}"},"key":{json.dumps(source.key)},'
                f'"encrypted":{"true" if source.encrypted else "false"}}}')
    return Outgoing(
        row_id=row_id, exchange=queue, exchange_type="direct", routing_key=queue,
        body=f"[{args_json},{kwargs_json},{_EMBED}]",
        headers_json=f'{prefix},"taskplane":{headers_json},"taskplane_internal":{internal}}}',
        correlation_id=task_id,
    )


def short_repr(value: Any) -> str:
    """A bounded repr for Celery's argsrepr header (shown by monitoring tools)."""
    text = repr(value)
    return text if len(text) <= 256 else text[:253] + "..."
