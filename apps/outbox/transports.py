"""Broker transports for the relay: a pipelined Redis path and a general kombu path (RabbitMQ, filesystem).

Both report per message whether the broker accepted it; the relay marks rows accordingly. Both keep
per-key order through partial failures: messages carry a *group* (their row's ordering key, or the row
itself when it has none), and once a message of a group is refused, later messages of that group are
not sent (``SKIPPED``). Other groups carry on.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from bisect import bisect
from collections.abc import Hashable, Sequence
from itertools import chain
from typing import Protocol

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.virtual.exchange import TopicExchange

from apps.core.task_contract import QUEUES
from apps.outbox.messages import Outgoing

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker could not be reached: the whole batch is abandoned and retried, no attempt counted."""


class _Outcome:
    """A per-message result other than "accepted" (None) or refused (the error text)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# Accepted by the broker, but no queue was bound for it (the broker dropped it, or kombu's deadletter_queue got it).
UNROUTED = _Outcome("UNROUTED")
# Not sent: an earlier message of its group was refused in this batch.
SKIPPED = _Outcome("SKIPPED")
Outcome = str | _Outcome | None


class Transport(Protocol):
    def send(self, messages: Sequence[Outgoing], groups: Sequence[Hashable]) -> list[Outcome]:
        """Send in order; one entry per message: None (accepted), UNROUTED, SKIPPED or the error text.

        ``groups[i]`` is message i's ordering group: after a refusal, later messages of that group are SKIPPED.
        """

    def close(self) -> None:
        """Release connections."""


def open_transport() -> Transport:
    """Open the transport for CELERY_BROKER_URL (ImproperlyConfigured for transport options it cannot honour)."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        return RedisTransport(url, settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    return KombuTransport(url, settings.CELERY_BROKER_TRANSPORT_OPTIONS)


# Replies that say the server cannot take writes at all (failover, memory, loading, persistence): an outage,
# never the message's fault. redis-py maps most of them to classes; MISCONF, BUSY and NOREPLICAS stay plain.
_OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
                  redis.exceptions.OutOfMemoryError, redis.exceptions.TryAgainError,
                  redis.exceptions.ClusterDownError)
_OUTAGE_PREFIXES = ("READONLY", "OOM", "LOADING", "MASTERDOWN", "MISCONF", "BUSY", "NOREPLICAS", "CLUSTERDOWN",
                    "TRYAGAIN")


def _is_outage(error: Exception) -> bool:
    return isinstance(error, _OUTAGE_ERRORS) or str(error).startswith(_OUTAGE_PREFIXES)


def _describe(error: Exception) -> str:
    code = getattr(error, "status_code", None)  # redis-py strips the reply's code from the message
    text = str(error)
    return f"{type(error).__name__}: {code} {text}" if code and not text.startswith(code) else \
        f"{type(error).__name__}: {text}"


class RedisTransport:
    """Write kombu-format messages straight into Redis lists with one pipeline per batch.

    kombu's Redis transport stores each message as JSON in a list named after the queue (for
    priority 0) and routes exchanges through binding sets named ``_kombu.binding.<exchange>``.
    Producing the same records here, pipelined, is what lets the relay move tens of thousands of
    messages a second; per-message kombu publishes cost a round trip each (two for topic exchanges).

    The kombu transport options that change key names are honoured exactly as kombu applies them:
    ``global_keyprefix`` (every key, not the queue names inside binding members), ``sep`` (binding
    members and priority suffixes), ``priority_steps`` (the list priority 0 maps to) and
    ``deadletter_queue`` (where kombu sends messages no binding matches). The others act on the
    consuming side only.
    """

    def __init__(self, url: str, transport_options: dict | None = None) -> None:
        options = transport_options or {}
        self.prefix = str(options.get("global_keyprefix") or "")
        self.sep = str(options.get("sep") or "\x06\x16")
        self.deadletter_queue = options.get("deadletter_queue") or None
        steps = list(options.get("priority_steps") or PRIORITY_STEPS)
        if not steps or any(not isinstance(step, int) for step in steps) or steps != sorted(steps):
            raise ImproperlyConfigured(
                f"CELERY_BROKER_TRANSPORT_OPTIONS['priority_steps'] must be a sorted list of integers; got {steps!r}."
            )
        priority = steps[bisect(steps, 0) - 1]  # kombu's Channel.priority(0): messages carry priority 0
        self.suffix = f"{self.sep}{priority}" if priority else ""
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        self._topic = TopicExchange(channel=None)
        self._declared = False

    def _list(self, queue: str) -> str:
        return f"{self.prefix}{queue}{self.suffix}"

    def _declare(self) -> None:
        # Bind Taskplane's queues as a Celery worker would, so kombu can route restored messages.
        if self._declared:
            return
        pipe = self.client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.sadd(f"{self.prefix}_kombu.binding.{queue}", self.sep.join((queue, "", queue)))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise BrokerUnavailable(_describe(exc)) from exc
        self._declared = True

    def _routes(self, exchange: str, routing_keys: set[str]) -> dict[str, list[str]]:
        """Resolve routing keys of one topic exchange to queue names, reading its bindings once."""
        bindings = [
            member.decode().split(self.sep)
            for member in self.client.smembers(f"{self.prefix}_kombu.binding.{exchange}")
        ]
        patterns = [(re.compile(self._topic.key_to_pattern(binding_key)), queue) for binding_key, _, queue in bindings]
        return {key: sorted({queue for pattern, queue in patterns if pattern.match(key)}) for key in routing_keys}

    def send(self, messages: Sequence[Outgoing], groups: Sequence[Hashable]) -> list[Outcome]:
        self._declare()
        topic_keys: dict[str, set[str]] = {}
        for message in messages:
            if message.exchange_type == "topic":
                topic_keys.setdefault(message.exchange, set()).add(message.routing_key)
        try:
            routes = {exchange: self._routes(exchange, keys) for exchange, keys in topic_keys.items()}
        except redis.RedisError as exc:
            raise BrokerUnavailable(_describe(exc)) from exc

        outcome: list[Outcome] = [None] * len(messages)
        destinations: list[list[str]] = []
        for index, message in enumerate(messages):
            queues = routes[message.exchange][message.routing_key] if message.exchange_type == "topic" \
                else [message.routing_key]
            if not queues:
                outcome[index] = UNROUTED
                queues = [self.deadletter_queue] if self.deadletter_queue else queues
            destinations.append(queues)

        failed: set[Hashable] = set()
        for round_trip in _round_trips(messages, groups, destinations):
            # One multi-value LPUSH per queue: the same order as one LPUSH per message (the consumer
            # pops from the other end), at a fraction of the commands.
            per_queue: dict[str, list[str]] = {}
            senders: dict[str, list[int]] = {}
            for index in round_trip:
                if failed and groups[index] in failed:
                    outcome[index] = SKIPPED
                    continue
                for queue in destinations[index]:
                    # A record per queue: kombu tracks unacknowledged messages by delivery tag.
                    per_queue.setdefault(queue, []).append(self._record(messages[index]))
                    senders.setdefault(queue, []).append(index)
            if not per_queue:
                continue
            for queue, result in zip(per_queue, self._push(per_queue), strict=True):
                if isinstance(result, Exception):
                    for index in senders[queue]:
                        if not isinstance(outcome[index], str):
                            outcome[index] = f"{_describe(result)} (queue {queue})"
                        failed.add(groups[index])
        return outcome

    def _push(self, per_queue: dict[str, list[str]]) -> list:
        """LPUSH each queue's records in one pipeline; BrokerUnavailable for an outage, else per-queue results."""
        pipe = self.client.pipeline(transaction=False)
        for queue, records in per_queue.items():
            pipe.lpush(self._list(queue), *records)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:  # the connection or the whole pipeline failed: it hit every queue
            raise BrokerUnavailable(_describe(exc)) from exc
        errors = [result for result in results if isinstance(result, Exception)]
        if errors:
            outage = next((error for error in errors if _is_outage(error)), None)
            if outage is not None:
                raise BrokerUnavailable(_describe(outage)) from outage
            if len(errors) == len(results) > 1:
                # Several queues, every one refusing: the server is the problem, not a queue. (A batch for one
                # queue cannot tell; its error, e.g. WRONGTYPE on that key, is the message's and is retried.)
                raise BrokerUnavailable(f"Every queue refused the batch: {_describe(errors[0])}") from errors[0]
        return results

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


def _round_trips(messages: Sequence[Outgoing], groups: Sequence[Hashable],
                 destinations: Sequence[Sequence[str]]) -> list[Sequence[int]]:
    """Message indices per pipeline round trip, so a group's refusal stops its later messages.

    Within one round trip every queue gets one LPUSH, which succeeds or fails as a whole. A row may
    share a round trip with its group's previous row only when both go to exactly the same queues:
    then they succeed or fail together. A row going elsewhere waits for the next round trip, where
    it is skipped if its group failed. Usually (one topic per key, or unkeyed rows) that is one.
    """
    levels: list[int] | None = None
    seen: dict[Hashable, tuple[int, object]] = {}
    count = len(messages)
    start = 0
    while start < count:
        end = start + 1
        row_id = messages[start].row_id
        while end < count and messages[end].row_id == row_id:
            end += 1
        target: object = destinations[start] if end == start + 1 else \
            frozenset(chain.from_iterable(destinations[start:end]))
        if target:  # a row that reaches no queue sends nothing and cannot fail
            group = groups[start]
            previous = seen.get(group)
            level = 0 if previous is None else previous[0] if previous[1] == target else previous[0] + 1
            seen[group] = (level, target)
            if level:
                levels = levels or [0] * count
                levels[start:end] = [level] * (end - start)
        start = end
    if levels is None:
        return [range(count)]
    trips: list[list[int]] = [[] for _ in range(max(levels) + 1)]
    for index, level in enumerate(levels):
        trips[level].append(index)
    return trips


class KombuTransport:
    """Publish through kombu, with publisher confirms on AMQP so "sent" means the broker has it."""

    def __init__(self, url: str, transport_options: dict) -> None:
        options = dict(transport_options)
        self.amqp = url.startswith(("amqp://", "amqps://"))
        if self.amqp:
            options["confirm_publish"] = True
        self.connection = Connection(url, transport_options=options, connect_timeout=5)
        self._returned = False
        try:
            self.connection.ensure_connection(max_retries=1)
            self._open_channel()
        except (OSError, *self.connection.connection_errors, *self.connection.channel_errors) as exc:
            self.close()
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _open_channel(self) -> None:
        self.channel = self.connection.channel()
        # AMQP returns a mandatory message no queue is bound for (before confirming it): counted as UNROUTED.
        self.producer = Producer(self.channel, on_return=self._on_return if self.amqp else None)
        self._exchanges: dict[tuple[str, str], Exchange] = {}
        for name in QUEUES:  # unroutable messages are dropped by RabbitMQ: make sure routes exist
            Queue(name, self._exchange(name, "direct"), routing_key=name)(self.channel).declare()

    def _on_return(self, exception, exchange, routing_key, message) -> None:
        self._returned = True

    def _exchange(self, name: str, kind: str) -> Exchange:
        exchange = self._exchanges.get((name, kind))
        if exchange is None:
            exchange = Exchange(name, type=kind, durable=True)
            exchange(self.channel).declare()
            self._exchanges[(name, kind)] = exchange
        return exchange

    def _routed(self, message: Outgoing, cache: dict[tuple[str, str], bool]) -> bool:
        """Virtual transports (filesystem) drop unroutable messages silently: ask their routing table first."""
        if self.amqp or message.exchange_type != "topic" or not hasattr(self.channel, "_lookup"):
            return True
        route = (message.exchange, message.routing_key)
        if route not in cache:
            cache[route] = bool(self.channel._lookup(message.exchange, message.routing_key))
        return cache[route]

    def send(self, messages: Sequence[Outgoing], groups: Sequence[Hashable]) -> list[Outcome]:
        outcome: list[Outcome] = []
        failed: set[Hashable] = set()
        routes: dict[tuple[str, str], bool] = {}
        for message, group in zip(messages, groups, strict=True):
            if group in failed:
                outcome.append(SKIPPED)
                continue
            try:
                properties = {}
                if message.correlation_id:
                    properties = {"correlation_id": message.correlation_id, "reply_to": ""}
                exchange = self._exchange(message.exchange, message.exchange_type)
                routed = self._routed(message, routes)
                self._returned = False
                self.producer.publish(
                    message.body, exchange=exchange, routing_key=message.routing_key,
                    content_type="application/json", content_encoding="utf-8",
                    headers=json.loads(message.headers_json), delivery_mode=2, retry=False, declare=None,
                    mandatory=self.amqp, **properties,
                )
            except (OSError, *self.connection.connection_errors) as exc:
                raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
            except Exception as exc:  # refused for this message (a nack, a channel error): its group stops here
                outcome.append(f"{type(exc).__name__}: {exc or 'the broker refused the message'}")
                failed.add(group)
                self._reopen_if_closed()
                continue
            outcome.append(UNROUTED if self._returned or not routed else None)
        return outcome

    def _reopen_if_closed(self) -> None:
        # A channel error (e.g. PRECONDITION_FAILED) closes the AMQP channel; the batch's other groups need one.
        if getattr(self.channel, "is_open", True):
            return
        try:
            self._open_channel()
        except (OSError, *self.connection.connection_errors, *self.connection.channel_errors) as exc:
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        try:
            self.connection.release()
        except Exception:  # closing a broken connection may fail; nothing more to release
            logger.debug("closing broker connection failed", exc_info=True)
