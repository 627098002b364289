"""Flags, their ordered rules, the audit trail, and scheduled changes."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"


class Flag(models.Model):
    """A feature flag. Boolean flags serve True/False; multivariate flags serve weighted variants."""

    class Kind(models.TextChoices):
        BOOLEAN = "boolean"
        MULTIVARIATE = "multivariate"

    key = models.CharField(max_length=100, unique=True, validators=[RegexValidator(KEY_PATTERN)])
    description = models.TextField(blank=True)
    owner = models.CharField(max_length=200, blank=True, help_text="Team or person responsible.")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.BOOLEAN)
    enabled = models.BooleanField(default=False, help_text="Kill switch: off serves the default to everyone.")
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    variants = models.JSONField(default=list, blank=True, help_text='[{"name": "a", "value": ..., "weight": 50}, ...]')
    default_value = models.JSONField(default=None, null=True, blank=True,
                                     help_text="Served when off or no rule matches (multivariate flags).")
    version = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class FlagRule(models.Model):
    """One rule, evaluated top-down; the first that matches decides."""

    class Kind(models.TextChoices):
        EVERYONE = "everyone"
        USERS = "users"
        GROUPS = "groups"
        CONSTRAINT = "constraint"
        PERCENTAGE = "percentage"

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True,
                              help_text='users: {"user_ids": [..]}; groups: {"groups": [..]}; '
                                        'percentage: {"percentage": 30, "stickiness": "user_id"}')
    constraints = models.JSONField(
        default=list, blank=True,
        help_text='[{"attribute": "plan", "operator": "in", "values": ["pro"]}]; all must hold',
    )
    variant = models.CharField(max_length=100, blank=True,
                               help_text="Multivariate: serve this variant; empty splits by weights.")

    class Meta:
        ordering = ["flag", "position"]

    def __str__(self) -> str:
        return f"{self.flag.key} #{self.position} {self.kind}"


class FlagsVersion(models.Model):
    """A single row whose counter moves with every committed flag change (the snapshot's version)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"flags v{self.version}"


class FlagChange(models.Model):
    """Audit: who changed which flag, when, why, and the definition before and after."""

    flag_key = models.CharField(max_length=100, db_index=True)
    version = models.PositiveIntegerField(help_text="The flag's version after this change (0 for deletes).")
    action = models.CharField(max_length=16)  # create, update, delete, rollback, scheduled
    actor = models.CharField(max_length=200)
    reason = models.TextField()
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    diff = models.JSONField(default=list, blank=True)
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.flag_key} v{self.version} {self.action} by {self.actor}"


class ScheduledFlagChange(models.Model):
    """A change applied by Celery beat at ``run_at`` (e.g. rollout to 50% at 09:00 UTC, off at a date)."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="scheduled_changes")
    run_at = models.DateTimeField(db_index=True)
    changes = models.JSONField(help_text='{"enabled": false} and/or {"percentage": 50} (first percentage rule)')
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    applied_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run_at"]

    def __str__(self) -> str:
        return f"{self.flag.key} at {self.run_at:%Y-%m-%d %H:%M} {self.changes}"
