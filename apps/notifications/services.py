"""Write services of webhooks: endpoints (create, change, rotate, test, delete), replay and recover."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from apps.core.audit import Actor, operator_action_record
from apps.core.crypto import encrypt_text
from apps.core.errors import Conflict, InvalidInput, NotFound
from apps.core.purging import delete_in_batches
from apps.core.task_contract import WEBHOOKS_DELIVER
from apps.notifications.errors import field_error
from apps.notifications.events import WEBHOOK_TEST, event_types_check
from apps.notifications.models import Delivery, Endpoint, Message
from apps.notifications.secrets import secret_seal
from apps.notifications.signing import secret_generate
from apps.notifications.validation import endpoint_headers_check, endpoint_url_check
from apps.outbox import enqueue

RECOVER_LIMIT = 10_000  # deliveries one recover call re-queues; call again for more
EDITABLE = ("url", "description", "event_types", "headers", "rate_limit_per_second", "enabled")


def endpoint_create(*, owner: AbstractBaseUser, url: str, description: str = "", event_types: Iterable[str] = (),
                    headers: dict[str, str] | None = None, rate_limit_per_second: int | None = None,
                    ) -> tuple[Endpoint, str]:
    """Create an endpoint for ``owner``; returns it with its new secret (shown once here, and on request)."""
    clean = _checked({"url": url, "event_types": list(event_types), "headers": headers or {},
                      "rate_limit_per_second": rate_limit_per_second})
    secret = secret_generate()
    endpoint = Endpoint.objects.create(owner=owner, description=description, secret=secret_seal(secret=secret),
                                       **clean)
    return endpoint, secret


def endpoint_update(*, endpoint_id: uuid.UUID, changes: dict[str, Any]) -> Endpoint:
    """Change an endpoint's editable fields; enabling a disabled one clears its reason and failure clock."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.",
                           errors=[field_error(name, "Cannot be changed.") for name in sorted(unknown)])
    clean = _checked({name: value for name, value in changes.items() if name != "enabled" and name != "description"})
    with transaction.atomic():
        endpoint = _locked(endpoint_id)
        for name, value in {**changes, **clean}.items():
            setattr(endpoint, name, value)
        if changes.get("enabled") is True:
            endpoint.disabled_reason, endpoint.disabled_at, endpoint.failing_since = "", None, None
        elif changes.get("enabled") is False and not endpoint.disabled_reason:
            endpoint.disabled_reason, endpoint.disabled_at = "Disabled by its owner.", timezone.now()
        endpoint.save()
    return endpoint


def endpoint_delete(*, endpoint_id: uuid.UUID) -> None:
    """Delete an endpoint with its deliveries and attempts (messages stay for other endpoints)."""
    Endpoint.objects.filter(pk=endpoint_id).delete()


def endpoint_secret_rotate(*, endpoint_id: uuid.UUID) -> str:
    """A new secret; the current one keeps signing alongside it for WEBHOOKS_SECRET_GRACE_SECONDS."""
    secret = secret_generate()
    with transaction.atomic():
        endpoint = _locked(endpoint_id)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_until = timezone.now() + timedelta(seconds=settings.WEBHOOKS_SECRET_GRACE_SECONDS)
        endpoint.secret = secret_seal(secret=secret)
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    return secret


def endpoint_send_test(*, endpoint_id: uuid.UUID) -> Message:
    """Send a ``webhook.test`` message to this endpoint only (whatever its event types)."""
    with transaction.atomic():
        endpoint = _locked(endpoint_id)
        if not endpoint.enabled:
            raise Conflict("The endpoint is disabled: enable it before sending a test message.")
        payload = json.dumps({"endpoint_id": str(endpoint.pk), "note": "A test message sent on request."})
        message = Message.objects.create(topic=WEBHOOK_TEST, payload=payload, occurred_at=timezone.now())
        deliveries_dispatch(deliveries=[Delivery.objects.create(message=message, endpoint=endpoint,
                                                                next_attempt_at=Now())], reason="test")
    return message


def message_store(*, message_id: str, topic: str, payload: Any, occurred_at: datetime) -> Message:
    """The message of an event, encrypted when its topic is (OUTBOX_ENCRYPTED_TOPICS): never a plaintext copy."""
    text = json.dumps(payload, separators=(",", ":"))
    encrypted = topic in settings.OUTBOX_ENCRYPTED_TOPICS
    return Message.objects.create(id=message_id, topic=topic, payload=encrypt_text(text) if encrypted else text,
                                  encrypted=encrypted, occurred_at=occurred_at)


def deliveries_dispatch(*, deliveries: list[Delivery], reason: str) -> None:
    """Enqueue the first attempt of each delivery through the outbox (in the caller's transaction)."""
    for delivery in deliveries:
        enqueue(WEBHOOKS_DELIVER, args=[delivery.pk], dedup_key=f"webhooks.{reason}:{delivery.pk}:{uuid.uuid4()}")


def message_replay(*, message_id: uuid.UUID, endpoint_id: uuid.UUID, actor: Actor) -> Delivery:
    """Send a message to an endpoint again, as a new round of attempts with the same ``webhook-id`` (audited)."""
    with transaction.atomic():
        endpoint = _locked(endpoint_id)
        if not endpoint.enabled:
            raise Conflict("The endpoint is disabled: enable it before replaying messages to it.")
        message = Message.objects.filter(pk=message_id).first()
        if message is None:
            raise NotFound(f"No webhook message {message_id}.")
        delivery, created = Delivery.objects.select_for_update().get_or_create(
            message=message, endpoint=endpoint, defaults={"next_attempt_at": Now()})
        if not created:
            # A pending one may be replayed (its task row may have been discarded in outbox admin): the
            # claim lets one attempt through, whichever task comes first.
            if delivery.state == Delivery.State.SENDING:
                raise Conflict("This message is being sent to this endpoint right now; try again shortly.")
            _restart(ids=[delivery.pk], seen_state=delivery.state)
        deliveries_dispatch(deliveries=[delivery], reason="replay")
        operator_action_record(actor=actor, action="webhooks.replay", target_type="notifications.delivery",
                               target_ids=[delivery.pk])
    delivery.refresh_from_db()
    return delivery


def endpoint_recover(*, endpoint_id: uuid.UUID, since: datetime, actor: Actor) -> int:
    """Replay every failed message of an endpoint created since ``since`` (up to RECOVER_LIMIT; audited)."""
    with transaction.atomic():
        endpoint = _locked(endpoint_id)
        if not endpoint.enabled:
            raise Conflict("The endpoint is disabled: enable it before recovering its failed messages.")
        failed = list(Delivery.objects.select_for_update().filter(
            endpoint=endpoint, state=Delivery.State.FAILED, message__created_at__gte=since,
        ).order_by("message__created_at")[:RECOVER_LIMIT])
        if not failed:
            return 0
        _restart(ids=[delivery.pk for delivery in failed], seen_state=Delivery.State.FAILED)
        deliveries_dispatch(deliveries=failed, reason="recover")
        operator_action_record(actor=actor, action="webhooks.recover", target_type="notifications.endpoint",
                               target_ids=[endpoint.pk], details={"since": since.isoformat(), "count": len(failed)})
    return len(failed)


def _restart(*, ids: list[int], seen_state: str) -> None:
    """A fresh round: the rows are locked, so the state seen is the state updated (checked all the same)."""
    changed = Delivery.objects.filter(pk__in=ids, state=seen_state).update(
        state=Delivery.State.PENDING, attempts=0, next_attempt_at=Now(), claim_token=None, lease_until=None,
        updated_at=Now())
    if changed != len(ids):
        raise Conflict("A delivery changed while it was being restarted; try again.")


def _locked(endpoint_id: uuid.UUID) -> Endpoint:
    endpoint = Endpoint.objects.select_for_update().filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound(f"No webhook endpoint {endpoint_id}.")
    return endpoint


def _checked(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate the fields given (all or nothing: nothing is saved when one is bad)."""
    clean = dict(fields)
    if "url" in fields:
        clean["url"] = endpoint_url_check(url=fields["url"])
    if "event_types" in fields:
        clean["event_types"] = event_types_check(event_types=fields["event_types"] or [])
    if "headers" in fields:
        clean["headers"] = endpoint_headers_check(headers=fields["headers"] or {})
    limit = fields.get("rate_limit_per_second")
    if limit is not None and (not isinstance(limit, int) or not 1 <= limit <= 10_000):
        raise InvalidInput("rate_limit_per_second must be an integer from 1 to 10000 (or null for none).",
                           errors=[field_error("rate_limit_per_second", "Must be from 1 to 10000, or null.")])
    return clean


def endpoints_set_enabled(*, endpoint_ids: Iterable[uuid.UUID], enabled: bool, actor: Actor) -> int:
    """Enable or disable endpoints as an operator (audited); returns how many changed."""
    with transaction.atomic():
        rows = Endpoint.objects.select_for_update().filter(pk__in=list(endpoint_ids), enabled=not enabled)
        ids = list(rows.values_list("pk", flat=True))
        if enabled:
            Endpoint.objects.filter(pk__in=ids).update(enabled=True, disabled_reason="", disabled_at=None,
                                                       failing_since=None)
        else:
            Endpoint.objects.filter(pk__in=ids).update(enabled=False, disabled_reason=f"Disabled by {actor.name}.",
                                                       disabled_at=Now())
        operator_action_record(actor=actor, action="webhooks.enable" if enabled else "webhooks.disable",
                               target_type="notifications.endpoint", target_ids=ids)
    return len(ids)


def webhook_messages_purge() -> int:
    """Delete messages past WEBHOOKS_RETENTION_DAYS whose deliveries are all finished; returns rows deleted."""
    cutoff = timezone.now() - timedelta(days=settings.WEBHOOKS_RETENTION_DAYS)
    in_flight = Delivery.objects.filter(state__in=[Delivery.State.PENDING, Delivery.State.SENDING])
    return delete_in_batches(Message.objects.filter(created_at__lt=cutoff).exclude(
        pk__in=in_flight.values("message_id")))
