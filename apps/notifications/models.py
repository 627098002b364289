"""Webhook endpoints, the messages sent to them, one delivery per (message, endpoint) and its attempts."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Endpoint(models.Model):
    """A URL an owner subscribes to event types; secrets are Fernet tokens (FERNET_KEYS), never plaintext."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True, default="")
    # Exact topics or "order.*" patterns; empty subscribes to every event type.
    event_types = models.JSONField(default=list, blank=True)
    headers = models.JSONField(default=dict, blank=True, help_text="Extra request headers sent with every attempt.")
    rate_limit_per_second = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    secret = models.TextField(help_text="The current signing secret, encrypted.")
    previous_secret = models.TextField(blank=True, default="", help_text="The rotated-out secret, encrypted.")
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    # The first failed attempt since the last success: the auto-disable clock (cleared by a success).
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url


class Message(models.Model):
    """One webhook message: its id is the ``webhook-id`` every attempt, retry and replay sends."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    topic = models.CharField(max_length=200)
    # The event's payload as JSON text; a Fernet token when ``encrypted`` (the event was encrypted).
    payload = models.TextField()
    encrypted = models.BooleanField(default=False)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["created_at"], name="webhook_message_created")]

    def __str__(self) -> str:
        return f"{self.topic} {self.id}"


class Delivery(models.Model):
    """Where sending one message to one endpoint stands; claimed by a conditional UPDATE per attempt."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts of the current round (a replay resets).")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["message", "endpoint"], name="webhook_delivery_once")]
        indexes = [models.Index(fields=["endpoint", "state"], name="webhook_delivery_endpoint")]

    def __str__(self) -> str:
        return f"{self.message_id} to {self.endpoint_id} ({self.state})"


class Attempt(models.Model):
    """One POST of a delivery: when, what came back (the first 2 KiB of the body), how long it took."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    attempted_at = models.DateTimeField(auto_now_add=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    response_body = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-attempted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.attempted_at:%Y-%m-%d %H:%M:%S} ({self.status_code or self.error[:40]})"
