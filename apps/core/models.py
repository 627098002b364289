"""Models shared by the whole platform."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    """A bearer credential for the API. Only a SHA-256 hash of the key is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True, help_text="First characters of the key, to identify it.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def is_active(self) -> bool:
        """A key is usable until it is revoked."""
        return self.revoked_at is None


class Heartbeat(models.Model):
    """Last time a periodic process proved it was alive (written by the beat-driven heartbeat task)."""

    name = models.CharField(max_length=64, primary_key=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} @ {self.beat_at:%Y-%m-%d %H:%M:%S}"


class OperatorAction(models.Model):
    """Audit: one row per target of an operator action (who, what, when, why, on what, from where).

    Written by the services that act (apps.core.audit.operator_action_record), in the action's own
    transaction, so an action and its audit row commit together or not at all. Flag changes keep their
    own, richer trail (flags.FlagChange, with the definition before and after) and are not repeated here.
    """

    class Via(models.TextChoices):
        ADMIN = "admin", "Admin"
        API = "api", "API"
        CLI = "cli", "Command line"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The username as it was: the row must outlive the account (audits are read after people leave).
    actor = models.CharField(max_length=150)
    via = models.CharField(max_length=8, choices=Via.choices)
    credential = models.CharField(max_length=16, blank=True, help_text="API key prefix, when an API key was used.")
    request_id = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=64, help_text='What was done, e.g. "outbox.redrive".')
    target_type = models.CharField(max_length=100, help_text='app_label.model_name, e.g. "outbox.outboxmessage".')
    target_id = models.CharField(max_length=64)
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="operator_action_target")]

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}#{self.target_id} by {self.actor}"
