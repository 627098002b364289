"""Broker transports for the relay: a pipelined Redis path and a general kombu path (RabbitMQ, filesystem).

Both report per message whether the broker accepted it; the relay marks rows accordingly.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Protocol

import redis
from django.conf import settings
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport.virtual.exchange import TopicExchange

from apps.core.task_contract import QUEUES
from apps.outbox.messages import Outgoing

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker could not be reached: the whole batch is abandoned and retried, no attempt counted."""


class Transport(Protocol):
    def send(self, messages: Sequence[Outgoing]) -> list[str | None]:
        """Send in order; return one entry per message: None if accepted, else the error text."""

    def close(self) -> None:
        """Release connections."""


def open_transport() -> Transport:
    """Open the transport for CELERY_BROKER_URL."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        return RedisTransport(url)
    return KombuTransport(url, settings.CELERY_BROKER_TRANSPORT_OPTIONS)


class RedisTransport:
    """Write kombu-format messages straight into Redis lists with one pipeline per batch.

    kombu's Redis transport stores each message as JSON in a list named after the queue (priority
    0) and routes exchanges through binding sets named ``_kombu.binding.<exchange>``. Producing the
    same records here, pipelined, is what lets the relay move tens of thousands of messages a
    second; per-message kombu publishes cost a round trip each (two for topic exchanges).
    """

    _BINDING_SEPARATOR = "\x06\x16"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        self._topic = TopicExchange(channel=None)
        self._declared = False

    def _declare(self) -> None:
        # Bind Taskplane's queues as a Celery worker would, so kombu can route restored messages.
        if self._declared:
            return
        pipe = self.client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.sadd(f"_kombu.binding.{queue}", self._BINDING_SEPARATOR.join((queue, "", queue)))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self._declared = True

    def _routes(self, exchange: str, routing_keys: set[str]) -> dict[str, list[str]]:
        """Resolve routing keys of one topic exchange to queue names, reading its bindings once."""
        bindings = [
            member.decode().split(self._BINDING_SEPARATOR)
            for member in self.client.smembers(f"_kombu.binding.{exchange}")
        ]
        patterns = [(re.compile(self._topic.key_to_pattern(binding_key)), queue) for binding_key, _, queue in bindings]
        return {key: sorted({queue for pattern, queue in patterns if pattern.match(key)}) for key in routing_keys}

    def send(self, messages: Sequence[Outgoing]) -> list[str | None]:
        self._declare()
        topic_keys: dict[str, set[str]] = {}
        for message in messages:
            if message.exchange_type == "topic":
                topic_keys.setdefault(message.exchange, set()).add(message.routing_key)
        try:
            routes = {exchange: self._routes(exchange, keys) for exchange, keys in topic_keys.items()}
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

        # One multi-value LPUSH per queue: the same order as one LPUSH per message (the consumer
        # pops from the other end), at a fraction of the commands.
        per_queue: dict[str, list[str]] = {}
        senders: dict[str, list[int]] = {}
        for index, message in enumerate(messages):
            if message.exchange_type == "topic":
                queues = routes[message.exchange][message.routing_key]
            else:
                queues = [message.routing_key]
            if not queues:
                continue
            for queue in queues:
                # A record per queue: kombu tracks unacknowledged messages by delivery tag.
                per_queue.setdefault(queue, []).append(self._record(message))
                senders.setdefault(queue, []).append(index)
        pipe = self.client.pipeline(transaction=False)
        for queue, records in per_queue.items():
            pipe.lpush(queue, *records)
        try:
            results = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except redis.RedisError as exc:
            return [f"{type(exc).__name__}: {exc}"] * len(messages)
        outcome: list[str | None] = [None] * len(messages)
        for queue, result in zip(per_queue, results, strict=True):
            if isinstance(result, Exception):
                for index in senders[queue]:
                    outcome[index] = outcome[index] or f"{type(result).__name__}: {result}"
        return outcome

    @staticmethod
    def _record(message: Outgoing) -> str:
        """kombu's Redis message record, built from text: the body and headers are already JSON."""
        body = base64.b64encode(message.body.encode()).decode()
        correlation = f'"correlation_id":"{message.correlation_id}","reply_to":"",' if message.correlation_id else ""
        return (
            f'{{"body":"{body}","content-encoding":"utf-8","content-type":"application/json",'
            f'"headers":{message.headers_json},"properties":{{{correlation}"delivery_mode":2,'
            f'"delivery_info":{{"exchange":{json.dumps(message.exchange)},'
            f'"routing_key":{json.dumps(message.routing_key)}}},"priority":0,"body_encoding":"base64",'
            f'"delivery_tag":"{uuid.uuid4()}"}}}}'
        )

    def close(self) -> None:
        self.client.close()


class KombuTransport:
    """Publish through kombu, with publisher confirms on AMQP so "sent" means the broker has it."""

    def __init__(self, url: str, transport_options: dict) -> None:
        options = dict(transport_options)
        if url.startswith(("amqp://", "amqps://")):
            options["confirm_publish"] = True
        self.connection = Connection(url, transport_options=options, connect_timeout=5)
        try:
            self.connection.ensure_connection(max_retries=1)
            self.channel = self.connection.channel()
            self.producer = Producer(self.channel)
            self._exchanges: dict[tuple[str, str], Exchange] = {}
            for name in QUEUES:  # unroutable messages are dropped by RabbitMQ: make sure routes exist
                Queue(name, self._exchange(name, "direct"), routing_key=name)(self.channel).declare()
        except (OSError, *self.connection.connection_errors, *self.connection.channel_errors) as exc:
            self.close()
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _exchange(self, name: str, kind: str) -> Exchange:
        exchange = self._exchanges.get((name, kind))
        if exchange is None:
            exchange = Exchange(name, type=kind, durable=True)
            exchange(self.channel).declare()
            self._exchanges[(name, kind)] = exchange
        return exchange

    def send(self, messages: Sequence[Outgoing]) -> list[str | None]:
        outcome: list[str | None] = []
        for message in messages:
            try:
                properties = {}
                if message.correlation_id:
                    properties = {"correlation_id": message.correlation_id, "reply_to": ""}
                self.producer.publish(
                    message.body, exchange=self._exchange(message.exchange, message.exchange_type),
                    routing_key=message.routing_key, content_type="application/json", content_encoding="utf-8",
                    headers=json.loads(message.headers_json), delivery_mode=2, retry=False, declare=None,
                    **properties,
                )
            except (OSError, *self.connection.connection_errors) as exc:
                raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
            except Exception as exc:  # refused for this message (e.g. a nack): later ones are not sent
                outcome.append(f"{type(exc).__name__}: {exc}")
                outcome.extend([outcome[-1]] * (len(messages) - len(outcome)))
                break
            outcome.append(None)
        return outcome

    def close(self) -> None:
        try:
            self.connection.release()
        except Exception:  # closing a broken connection may fail; nothing more to release
            logger.debug("closing broker connection failed", exc_info=True)
