"""Schedules and their fires: one row per occurrence, unique on (schedule, nominal time)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"


class Schedule(models.Model):
    """A task fired on a cron expression in a time zone, on a fixed interval, or once at ``run_at``."""

    class Overlap(models.TextChoices):
        SKIP = "skip"  # a fire due while an earlier one is enqueued or running is skipped (recorded)
        BUFFER_ONE = "buffer_one"  # at most one fire waits for the running one
        BUFFER_ALL = "buffer_all"  # every fire waits, run one after the other
        ALLOW_ALL = "allow_all"  # fires run concurrently

    name = models.CharField(max_length=200, unique=True)
    task = models.CharField(max_length=200, help_text="Task name from apps/core/task_contract.py.")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    cron = models.CharField(max_length=200, blank=True, help_text="5 fields, or 6 with seconds first.")
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA zone the cron is evaluated in.")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    run_at = models.DateTimeField(null=True, blank=True, help_text="A one-off fire at this instant.")
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    # Intervals count from here: start_at, else the moment the cadence was last set.
    anchor_at = models.DateTimeField(db_default=Now())
    enabled = models.BooleanField(default=True)
    note = models.TextField(blank=True, help_text="Why it is paused (or was resumed).")
    jitter_seconds = models.PositiveIntegerField(default=0)
    overlap = models.CharField(max_length=16, choices=Overlap.choices, default=Overlap.SKIP)
    pause_on_failure = models.BooleanField(default=False)
    catchup_window_seconds = models.PositiveIntegerField(default=60)
    ordering_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001  (NULL: unordered)
    # The next occurrence not decided yet; NULL when none is left (a past run_at, after end_at).
    next_fire_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            # The due index the firing loop claims from (and reads its next wake-up time from).
            models.Index(fields=["next_fire_at"], name="schedules_due",
                         condition=Q(enabled=True, next_fire_at__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(
                name="schedules_one_cadence",
                condition=(Q(cron__gt="", interval_seconds__isnull=True, run_at__isnull=True)
                           | Q(cron="", interval_seconds__isnull=False, run_at__isnull=True)
                           | Q(cron="", interval_seconds__isnull=True, run_at__isnull=False)),
            ),
            models.CheckConstraint(name="schedules_interval_positive",
                                   condition=Q(interval_seconds__isnull=True) | Q(interval_seconds__gte=1)),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def cadence(self) -> str:
        """A short human description of when it fires."""
        if self.cron:
            return f"cron {self.cron} ({self.timezone})"
        if self.interval_seconds:
            return f"every {self.interval_seconds}s"
        return f"once at {self.run_at:%Y-%m-%d %H:%M:%S}Z" if self.run_at else "never"


class ScheduleFire(models.Model):
    """One occurrence of a schedule and what became of it."""

    class Decision(models.TextChoices):
        FIRED = "fired"
        SHIFTED = "shifted"  # fired at the first instant after a DST gap that swallowed its local time
        SKIPPED = "skipped"  # the overlap policy skipped it
        MISSED = "missed"  # older than the catch-up window when the loop reached it
        MANUAL = "manual"  # run now: outside the cadence
        BACKFILL = "backfill"

    class State(models.TextChoices):
        BUFFERED = "buffered"  # waits for the running fire (buffer_one / buffer_all)
        ENQUEUED = "enqueued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        SKIPPED = "skipped"
        MISSED = "missed"

    ACTIVE_STATES = (State.ENQUEUED, State.RUNNING)

    id = models.BigAutoField(primary_key=True)
    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="fires")
    nominal_at = models.DateTimeField()
    decision = models.CharField(max_length=16, choices=Decision.choices)
    state = models.CharField(max_length=16, choices=State.choices)
    decided_at = models.DateTimeField(db_default=Now())
    fired_at = models.DateTimeField(null=True, blank=True, help_text="When its task row entered the outbox.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule", "nominal_at"], name="schedules_fire_once"),
        ]
        indexes = [
            models.Index(fields=["schedule", "-nominal_at"], name="schedules_fire_history"),
            # Overlap checks and buffered releases read the few unfinished fires of a schedule.
            models.Index(fields=["schedule", "state"], name="schedules_fire_open",
                         condition=Q(state__in=["buffered", "enqueued", "running"])),
            models.Index(fields=["decided_at"], name="schedules_fire_decided"),
        ]

    def __str__(self) -> str:
        return f"{self.schedule_id}@{self.nominal_at:%Y-%m-%dT%H:%M:%S}Z {self.decision}/{self.state}"

    @property
    def manual(self) -> bool:
        """Fired by an operator, outside the cadence."""
        return self.decision == self.Decision.MANUAL

    @property
    def lateness_seconds(self) -> float | None:
        """How long after its nominal time its task row entered the outbox."""
        return (self.fired_at - self.nominal_at).total_seconds() if self.fired_at else None
