from django.conf import settings
from django.db import models


class IdempotencyRecord(models.Model):
    """One (principal, method, path, key): claimed while in flight, then the stored response."""

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight"
        COMPLETED = "completed"

    # sha256 of principal, method, path and key: the unique scope, short enough to index.
    scope_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.TextField()
    fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path, query, content type, body.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    attempt_token = models.UUIDField(help_text="Identifies the execution that owns the record.")
    locked_at = models.DateTimeField(help_text="Start of the current execution's lease.")
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    response_body = models.BinaryField(default=b"", blank=True)
    body_encrypted = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="idem_user_created")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}] {self.state}"
