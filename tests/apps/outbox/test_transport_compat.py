"""The fast Redis path against kombu's own consumer, for every transport option docs/outbox.md supports.

RedisTransport writes kombu's Redis records itself (apps/outbox/transports.py); here kombu reads them back
(a real kombu SimpleQueue on the test broker), with the same transport options a Celery worker would use.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import transaction
from kombu import Connection, Exchange, Producer, Queue

from apps.outbox import enqueue, publish
from apps.outbox.models import OutboxMessage
from apps.outbox.relay import relay_once
from apps.outbox.transports import RedisTransport, open_transport

pytestmark = pytest.mark.django_db(transaction=True)

OPTIONS = {
    "default": {},
    "global_keyprefix": {"global_keyprefix": "tp-test:"},
    "sep": {"sep": "|"},
    "priority_steps": {"priority_steps": [3, 6, 9]},  # priority 0 then lives in the list "<queue><sep>9"
    "all-together": {"global_keyprefix": "tp:", "sep": ":", "priority_steps": list(range(10)),
                     "visibility_timeout": 7200},
}


@pytest.fixture(params=list(OPTIONS), ids=list(OPTIONS))
def options(request, settings, broker_redis):
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {**settings.CELERY_BROKER_TRANSPORT_OPTIONS,
                                                **OPTIONS[request.param]}
    return settings.CELERY_BROKER_TRANSPORT_OPTIONS


def _relay() -> None:
    transport = open_transport()
    try:
        assert relay_once(transport).published >= 1
    finally:
        transport.close()


def test_kombu_consumes_relayed_events_and_tasks(options):
    """issue 15 §8: events and tasks the fast path wrote are read back by kombu with the same options."""
    exchange = Exchange(settings.OUTBOX_EVENTS_EXCHANGE, type="topic", durable=True)
    with Connection(settings.CELERY_BROKER_URL, transport_options=options) as conn:
        observer = conn.SimpleQueue(Queue("compat-observer", exchange, routing_key="compat.#"))
        default = conn.SimpleQueue(Queue("default", Exchange("default", type="direct"), routing_key="default"))
        with transaction.atomic():
            event = publish("compat.event", {"n": 1}, key="k")
            task = enqueue("core.heartbeat", args=["compat"])

        _relay()

        received = observer.get(timeout=10)
        envelope = received.decode()
        assert (envelope["id"], envelope["topic"], envelope["payload"]) == (str(event.message_id), "compat.event",
                                                                             {"n": 1})
        assert received.headers == OutboxMessage.objects.get(pk=event.pk).headers
        assert received.delivery_info["routing_key"] == "compat.event"
        assert received.content_type == "application/json"
        received.ack()

        dispatched = default.get(timeout=10)
        assert dispatched.headers["task"] == "core.heartbeat"
        assert dispatched.headers["id"] == dispatched.properties["correlation_id"] == str(task.message_id)
        args, kwargs, _ = dispatched.decode()
        assert (args, kwargs) == (["compat"], {})
        dispatched.ack()
        observer.close()
        default.close()


def test_records_have_exactly_kombus_shape(broker_redis):
    """issue 15 §8: the hand-built record has the fields and properties kombu's own producer writes."""
    with transaction.atomic():
        enqueue("core.heartbeat", args=["shape"])
    _relay()
    [ours] = broker_redis.lrange("default", 0, -1)
    with Connection(settings.CELERY_BROKER_URL) as conn:
        Producer(conn.default_channel).publish(
            "[]", exchange=Exchange("default", type="direct"), routing_key="kombu-shape", declare=[
                Queue("kombu-shape", Exchange("default", type="direct"), routing_key="kombu-shape")],
            content_type="application/json", content_encoding="utf-8", headers={"task": "x"}, delivery_mode=2,
            correlation_id="c", reply_to="",
        )
    [theirs] = broker_redis.lrange("kombu-shape", 0, -1)
    ours, theirs = json.loads(ours), json.loads(theirs)

    assert set(ours) == set(theirs)
    assert set(ours["properties"]) == set(theirs["properties"])
    assert set(ours["properties"]["delivery_info"]) == set(theirs["properties"]["delivery_info"])
    for field in ("content-encoding", "content-type"):
        assert ours[field] == theirs[field]
    for field in ("body_encoding", "delivery_mode", "priority"):
        assert ours["properties"][field] == theirs["properties"][field]


def test_unusable_priority_steps_are_refused_at_start():
    """issue 15 §8: an option the fast path cannot honour stops it with a message naming the option."""
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="priority_steps"):
        RedisTransport(settings.CELERY_BROKER_URL, {"priority_steps": [9, 3]})
