"""Attempting one delivery: claim the row, sign and POST the message, record the attempt, plan the next.

A claim is a conditional UPDATE (a pending delivery that is due → sending, or a sending one whose
lease expired on the database clock) whose rowcount is checked; the outcome is recorded only while
the claim token still matches, in one transaction with the attempt row and, for a retry, the next
task row written through the outbox with the schedule's delay (no broker ETA). The POST happens
outside any transaction.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from apps.core.crypto import decrypt_text
from apps.core.http_client import HttpError, ResponseTooLarge, UrlRefused
from apps.core.resilience.errors import CircuitOpen
from apps.core.resilience.http_support import retry_after_seconds
from apps.core.task_contract import WEBHOOKS_DELIVER
from apps.notifications.client import endpoint_rate_limiter, webhook_session
from apps.notifications.endpoint_health import endpoint_failure_note, endpoint_success_note
from apps.notifications.models import Attempt, Delivery, Endpoint, Message
from apps.notifications.secrets import endpoint_active_secrets
from apps.notifications.signing import signed_headers
from apps.outbox import enqueue, enqueue_claim_recheck

logger = logging.getLogger(__name__)
KEPT_BODY_BYTES = 2048
RETRY_AFTER_STATUSES = (429, 503)
JITTER = 0.1


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    latency_ms: int
    error: str = ""
    body: str = ""
    retry_after: float | None = None
    permanent: bool = False  # retrying cannot help (the URL is refused)

    @property
    def succeeded(self) -> bool:
        # The status decides, also when the body was cut off at the cap: the receiver has the message.
        return self.status_code is not None and 200 <= self.status_code < 300


def lease_seconds() -> float:
    """How long a claim holds: past the task's hard time limit, so a live attempt never loses its claim."""
    return settings.WEBHOOKS_TIMEOUT_SECONDS + 90


def delivery_attempt(*, delivery_id: int) -> str:
    """Make one attempt of delivery ``delivery_id`` if it is due; returns the outcome (sent, retry, failed…)."""
    token = uuid.uuid4()
    claimed = Delivery.objects.filter(pk=delivery_id).filter(
        Q(state=Delivery.State.PENDING, next_attempt_at__lte=Now())
        | Q(state=Delivery.State.SENDING, lease_until__lt=Now())
    ).update(state=Delivery.State.SENDING, claim_token=token, attempts=F("attempts") + 1,
             lease_until=Now() + timedelta(seconds=lease_seconds()), updated_at=Now())
    if claimed != 1:
        return _not_claimed(delivery_id)
    delivery = Delivery.objects.select_related("endpoint", "message").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        return _record(delivery, token, AttemptResult(None, 0, error=f"Endpoint disabled: {endpoint.disabled_reason}",
                                                      permanent=True), attempted=False)
    if endpoint.rate_limit_per_second:
        decision = endpoint_rate_limiter(per_second=endpoint.rate_limit_per_second).check(str(endpoint.pk))
        if not decision.allowed:
            return _postpone(delivery, token, seconds=max(decision.retry_after, 0.05))
    try:
        result = _post(endpoint, delivery.message)
    except Exception as exc:  # e.g. no FERNET_KEYS key decrypts the secret: this attempt fails, visibly, and retries
        logger.exception("Webhook delivery %s could not be attempted", delivery.pk)
        result = AttemptResult(None, 0, error=f"{type(exc).__name__}: {exc}")
    return _record(delivery, token, result)


def message_body(message: Message) -> str:
    """The JSON body receivers get: ``{"type", "timestamp", "data"}`` (the same bytes on every attempt)."""
    payload = decrypt_text(message.payload) if message.encrypted else message.payload
    stamp = message.occurred_at.isoformat().replace("+00:00", "Z")
    return f'{{"type":{json.dumps(message.topic)},"timestamp":"{stamp}","data":{payload}}}'


def _post(endpoint: Endpoint, message: Message) -> AttemptResult:
    body = message_body(message)
    headers = {**endpoint.headers, "Content-Type": "application/json",
               **signed_headers(secrets=endpoint_active_secrets(endpoint=endpoint), message_id=str(message.pk),
                                timestamp=int(time.time()), body=body)}
    started = time.perf_counter()
    try:
        response = webhook_session().post(endpoint.url, data=body.encode(), headers=headers)
    except UrlRefused as exc:
        return AttemptResult(None, _ms(started), error=f"Refused: {exc}", permanent=True)
    except CircuitOpen as exc:  # nothing was sent: the host's breaker is open
        return AttemptResult(None, 0, error=str(exc), retry_after=exc.retry_after)
    except ResponseTooLarge as exc:
        status = exc.response.status_code if exc.response is not None else None
        return AttemptResult(status, _ms(started), error=f"ResponseTooLarge: {exc}")
    except HttpError as exc:
        return AttemptResult(None, _ms(started), error=f"{type(exc).__name__}: {exc}")
    retry_after = None
    if response.status_code in RETRY_AFTER_STATUSES:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    # PostgreSQL text cannot hold NUL: a receiver's binary answer must not make the attempt unrecordable.
    text = response.content[:KEPT_BODY_BYTES].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return AttemptResult(response.status_code, _ms(started), body=text, retry_after=retry_after)


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def next_delay(*, attempts: int, retry_after: float | None) -> float | None:
    """Seconds until the attempt after ``attempts`` ones (jittered, never before Retry-After); None when exhausted."""
    schedule = settings.WEBHOOKS_RETRY_SCHEDULE
    if attempts >= len(schedule):
        return None
    delay = schedule[attempts] * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not security
    if retry_after is not None:  # honoured, but never beyond the schedule's longest wait
        delay = max(delay, min(retry_after, max(schedule)))
    return delay


def _record(delivery: Delivery, token: uuid.UUID, result: AttemptResult, *, attempted: bool = True) -> str:
    mine = Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENDING, claim_token=token)
    done = {"last_status": result.status_code, "last_error": result.error[:2000], "lease_until": None,
            "updated_at": Now()}
    gone = result.status_code == 410
    delay = None if (result.succeeded or gone or result.permanent) else next_delay(
        attempts=delivery.attempts, retry_after=result.retry_after)
    with transaction.atomic():
        if result.succeeded:
            outcome, changed = "sent", mine.update(state=Delivery.State.SUCCEEDED, next_attempt_at=None, **done)
        elif delay is None:
            outcome, changed = "failed", mine.update(state=Delivery.State.FAILED, next_attempt_at=None, **done)
        else:
            outcome, changed = "retry", mine.update(state=Delivery.State.PENDING,
                                                     next_attempt_at=Now() + timedelta(seconds=delay), **done)
        if changed != 1:
            logger.warning("Webhook delivery %s: this attempt's claim was taken over; the newer one records",
                           delivery.pk)
            return "claim-lost"
        if not attempted:
            return outcome
        Attempt.objects.create(delivery=delivery, status_code=result.status_code, latency_ms=result.latency_ms,
                               error=result.error[:2000], response_body=result.body)
        if delay is not None:
            enqueue(WEBHOOKS_DELIVER, args=[delivery.pk], delay=delay,
                    dedup_key=f"webhooks.deliver:{delivery.pk}:after:{token}")
        if result.succeeded:
            endpoint_success_note(endpoint_id=delivery.endpoint_id)
        else:
            endpoint_failure_note(endpoint_id=delivery.endpoint_id, gone=gone, token=token)
    if outcome != "sent":
        logger.warning("Webhook delivery %s attempt %d: %s (%s)", delivery.pk, delivery.attempts,
                       result.status_code or "no response", outcome)
    return outcome


def _postpone(delivery: Delivery, token: uuid.UUID, *, seconds: float) -> str:
    """The endpoint's rate limit is spent: give the attempt back (not counted) and come back when a slot frees."""
    with transaction.atomic():
        changed = Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENDING, claim_token=token).update(
            state=Delivery.State.PENDING, attempts=F("attempts") - 1, lease_until=None,
            next_attempt_at=Now() + timedelta(seconds=seconds), updated_at=Now())
        if changed != 1:
            return "claim-lost"
        enqueue(WEBHOOKS_DELIVER, args=[delivery.pk], delay=seconds,
                dedup_key=f"webhooks.deliver:{delivery.pk}:limited:{token}")
    return "rate-limited"


def _not_claimed(delivery_id: int) -> str:
    delivery = Delivery.objects.filter(pk=delivery_id).first()
    if delivery is None:
        return "missing"
    if delivery.state == Delivery.State.PENDING:
        return "not-due"  # an earlier dispatch; the row's own delayed dispatch comes at next_attempt_at
    if delivery.state != Delivery.State.SENDING:
        return f"already-{delivery.state}"
    # Another attempt holds a live claim (a redelivered task, or one whose worker died): look again once
    # the lease can have expired, so a dead claim is taken over and not lost.
    enqueue_claim_recheck(WEBHOOKS_DELIVER, object_id=delivery_id, claim_token=delivery.claim_token,
                          after_seconds=lease_seconds() + 1)
    return "busy"
