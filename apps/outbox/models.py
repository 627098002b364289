"""Outbox rows (events and task dispatches) and the inbox that makes consumers effectively-once."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class OutboxMessage(models.Model):
    """A message written in a business transaction, relayed to the broker after commit."""

    class Kind(models.TextChoices):
        EVENT = "event"
        TASK = "task"

    class Status(models.TextChoices):
        PENDING = "pending"
        PUBLISHED = "published"
        DEAD = "dead"
        DISCARDED = "discarded"

    # The bigint id orders messages; per key it equals commit order (see writing.py).
    id = models.BigAutoField(primary_key=True)
    message_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=200, help_text="Event topic or task name.")
    # NULL (not "") means unordered: the relay's ordering checks and partial index skip such rows.
    key = models.CharField(max_length=200, null=True, blank=True, help_text="Ordering key.")  # noqa: DJ001
    queue = models.CharField(max_length=64, blank=True, help_text="Target queue of a task.")
    payload = models.TextField(help_text="JSON text, or a Fernet token when encrypted.")
    encrypted = models.BooleanField(default=False)
    # Public headers: they travel with the event to every consumer (docs/outbox.md lists them).
    headers = models.JSONField(default=dict, blank=True)
    # Internal: {"carriers": {name: value}} captured by apps.core.context_carriers (e.g. the flag
    # evaluation context), plus the task failure policy's "attempt" and "origin" on retry rows. It
    # rides Taskplane's own task messages only, never an event envelope or an event's headers.
    context = models.JSONField(default=dict, blank=True)
    # enqueue(dedup_key=...): at most one row per key while rows are retained (OUTBOX_RETENTION_DAYS).
    dedup_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # Both times come from the database clock (issue 15 §6): a skewed app server can neither delay
    # nor advance a message. A delayed write stores now() + delay (apps/outbox/writing.py).
    available_at = models.DateTimeField(db_default=Now(), help_text="Not relayed before this time.")
    # A delayed row does not hold back later rows of its key unless its writer asked (docs/outbox.md,
    # "Ordering keys"); a row waiting out a relay retry (attempts > 0) always does.
    holds_key = models.BooleanField(
        default=False, db_default=False, help_text="While delayed, later messages of its key wait for it."
    )
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The relay's hot path reads only pending rows: partial indexes keep it as fast with a
            # million retained published rows as with none.
            models.Index(fields=["id"], name="outbox_pending", condition=Q(status="pending")),
            models.Index(
                fields=["key", "id"], name="outbox_pending_key", condition=Q(status="pending", key__isnull=False)
            ),
            models.Index(fields=["status", "published_at"], name="outbox_status_published"),
            models.Index(fields=["name", "id"], name="outbox_name"),
            models.Index(fields=["key", "id"], name="outbox_key"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} #{self.pk} ({self.status})"


class RelayStatus(models.Model):
    """What one relay slot last did: its last successful cycle, its last error, and unroutable events.

    Written by the slot's holder at most about once a second, and at once when its error state changes,
    so a failing relay shows in stats, admin and /health/ within one cycle (apps/outbox/relay_status.py).
    """

    slot = models.PositiveSmallIntegerField(primary_key=True)
    holder = models.CharField(max_length=200, blank=True, help_text="Host and process serving the slot.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When the holder took the slot.")
    last_success_at = models.DateTimeField(null=True, blank=True, help_text="End of the last successful cycle.")
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    error_count = models.PositiveIntegerField(default=0, help_text="Failed cycles in the last run of failures.")
    unroutable_events = models.PositiveBigIntegerField(
        default=0, help_text="Events published while no queue was bound and no subscriber listened."
    )
    last_unroutable_topic = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "relay status"
        verbose_name_plural = "relay statuses"
        ordering = ["slot"]

    def __str__(self) -> str:
        return f"relay slot {self.slot}"


class InboxEntry(models.Model):
    """A message a consumer has handled; its presence makes a redelivery a no-op."""

    consumer = models.CharField(max_length=200)
    message_id = models.UUIDField()
    processed_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name_plural = "inbox entries"
        constraints = [models.UniqueConstraint(fields=["consumer", "message_id"], name="inbox_unique_delivery")]
        indexes = [models.Index(fields=["processed_at"], name="inbox_processed")]

    def __str__(self) -> str:
        return f"{self.consumer} ← {self.message_id}"
