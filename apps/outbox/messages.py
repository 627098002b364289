"""What the relay puts on the wire: event envelopes and Celery task messages (protocol 2).

Apps never import the Celery app (``workers``), so task messages are built here from Celery's
documented message protocol, version 2: headers name the task, the body is [args, kwargs, embed].
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

ORIGIN = f"taskplane-relay@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass
class Outgoing:
    """One broker message: destination, JSON body, headers and AMQP properties."""

    row_id: int
    exchange: str
    exchange_type: str
    routing_key: str
    body: str
    headers: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClaimedRow:
    """A pending outbox row as the relay reads it (payload already decrypted)."""

    id: int
    message_id: str
    kind: str
    name: str
    key: str | None
    queue: str
    payload: str
    encrypted: bool
    headers: dict[str, Any]
    created_at: Any


def event_envelope(row: ClaimedRow) -> str:
    """The JSON body consumers outside Taskplane receive: id, topic, key, payload, headers, occurred_at."""
    # The payload is already JSON text; splicing it avoids parsing and re-serialising every event.
    return (
        f'{{"id":"{row.message_id}","topic":{json.dumps(row.name)},"key":{json.dumps(row.key)},'
        f'"payload":{row.payload},"headers":{json.dumps(row.headers)},'
        f'"occurred_at":"{row.created_at.isoformat()}"}}'
    )


def event_message(row: ClaimedRow, envelope: str) -> Outgoing:
    """The event on the topic exchange, routing key = topic."""
    return Outgoing(row_id=row.id, exchange=settings.OUTBOX_EVENTS_EXCHANGE, exchange_type="topic",
                    routing_key=row.name, body=envelope, headers=dict(row.headers))


def task_message(
    *, row_id: int, task_id: str, task_name: str, queue: str, args: list, kwargs: dict, headers: dict[str, Any]
) -> Outgoing:
    """A Celery protocol-2 task message for ``task_name`` on ``queue`` (direct exchange named like the queue)."""
    celery_headers = {
        "lang": "py", "task": task_name, "id": task_id, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
        "parent_id": None, "argsrepr": _short_repr(args), "kwargsrepr": _short_repr(kwargs), "origin": ORIGIN,
        "ignore_result": True, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
    }
    # traceparent at the top level is where Celery's OpenTelemetry instrumentation looks for it.
    celery_headers.update({name: value for name, value in headers.items() if name in ("traceparent", "tracestate")})
    celery_headers["taskplane"] = headers
    body = json.dumps([args, kwargs, _EMBED], separators=(",", ":"))
    return Outgoing(row_id=row_id, exchange=queue, exchange_type="direct", routing_key=queue, body=body,
                    headers=celery_headers, properties={"correlation_id": task_id, "reply_to": ""})


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 256 else text[:253] + "..."
