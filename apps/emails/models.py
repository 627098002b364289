"""One row per email a service asked for: what to send, and where its delivery stands."""

from __future__ import annotations

from django.db import models


class Email(models.Model):
    """An email to send once per ``key``; the send task claims it, sends it, records the outcome."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    key = models.CharField(max_length=200, unique=True, help_text="The caller's idempotency key.")
    to = models.CharField(max_length=254)
    template = models.CharField(max_length=100)
    # The template context as JSON text; a Fernet token when ``encrypted`` (it may hold personal data).
    context = models.TextField(default="{}")
    encrypted = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    # The current claim: a send owns the row while its token matches and the lease (database clock) holds.
    claim_token = models.UUIDField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "sent_at"], name="email_state_sent")]

    def __str__(self) -> str:
        return f"{self.template} to {self.to} ({self.state})"
