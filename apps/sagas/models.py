"""Saga instances and the attempts of their steps: the saga's history, kept in PostgreSQL.

Every attempt of a step's action, of its compensation, or a wait for a signal is one
``SagaStepAttempt`` row. Its unique (instance, step_index, kind, attempt) is the dedup row of the
design: a redelivered step task finds its attempt already claimed or finished and has no second effect.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class SagaInstance(models.Model):
    """One run of a declared saga for one business key."""

    class State(models.TextChoices):
        RUNNING = "running"
        COMPENSATING = "compensating"
        COMPLETED = "completed"
        COMPENSATED = "compensated"
        COMPENSATION_FAILED = "compensation_failed"  # waits for an operator: retry, or resolve with a note
        CANCELLED = "cancelled"  # compensated after an operator or API cancel

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, help_text="The declared saga's name.")
    key = models.CharField(max_length=200, help_text="Business key: one instance per (name, key).")
    state = models.CharField(max_length=24, choices=State.choices, default=State.RUNNING)
    input = models.JSONField(default=dict, blank=True, help_text="What saga_start was given.")
    context = models.JSONField(default=dict, blank=True, help_text="Input merged with every step's result.")
    # The definition this instance started with: its steps are what it runs, whatever the code says now.
    definition_hash = models.CharField(max_length=64)
    definition_steps = models.JSONField(default=list, help_text="Step names, in order, at start.")
    # Running: the step being run. Compensating: the step whose compensation is being run.
    step_index = models.PositiveIntegerField(default=0)
    pivot_passed = models.BooleanField(default=False, help_text="A pivot step succeeded: forward only.")
    failure = models.TextField(blank=True, help_text="Why it compensates: the step error, timeout or cancel.")
    cancel_requested = models.BooleanField(default=False)
    resolution_note = models.TextField(blank=True, help_text="An operator's note when marking it resolved.")
    # Bumped by every transition: a transition is an UPDATE … WHERE version = <the version read>.
    version = models.PositiveIntegerField(default=0)
    deadline_at = models.DateTimeField(null=True, blank=True, help_text="The saga's own deadline, if declared.")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["name", "key"], name="saga_one_per_name_key")]
        indexes = [
            models.Index(fields=["state", "-created_at"], name="saga_state_newest"),
            models.Index(fields=["name", "state"], name="saga_name_state"),
            # The sweeper's scan for running sagas past their own deadline (migration 0002).
            models.Index(fields=["deadline_at"], name="saga_running_deadline", condition=Q(state="running")),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.key} ({self.state})"


class SagaStepAttempt(models.Model):
    """One attempt of a step's action or compensation, or one wait for a step's signal."""

    class Kind(models.TextChoices):
        ACTION = "action"
        COMPENSATION = "compensation"
        SIGNAL = "signal"

    class State(models.TextChoices):
        SCHEDULED = "scheduled"  # dispatched through the outbox, due at scheduled_at
        RUNNING = "running"  # claimed by a worker (token), until succeeded/failed or its deadline
        WAITING = "waiting"  # a signal step waiting for its event, until deadline_at
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMED_OUT = "timed_out"
        CANCELLED = "cancelled"  # never ran: the saga was cancelled or moved on
        SKIPPED = "skipped"  # the step's condition was false

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(SagaInstance, on_delete=models.CASCADE, related_name="attempts")
    step = models.CharField(max_length=100)
    step_index = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    attempt = models.PositiveIntegerField(default=1)
    # Which try of the current budget this is: equal to ``attempt`` for actions; an operator's saga_retry
    # gives a failed compensation a fresh budget, starting again at 1 (migration 0002).
    budget_attempt = models.PositiveIntegerField(default=1)
    state = models.CharField(max_length=16, choices=State.choices, default=State.SCHEDULED)
    # The same on every attempt of this step's action (or compensation): pass it to external APIs.
    idempotency_key = models.CharField(max_length=200)
    token = models.UUIDField(null=True, blank=True, help_text="The claim of the worker running it.")
    task_id = models.CharField(max_length=64, blank=True, help_text="Outbox message id of its dispatch.")
    scheduled_at = models.DateTimeField(db_default=Now(), help_text="When it may start.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Scheduled: schedule-to-start; running: start-to-close; waiting: the signal's timeout. The sweeper
    # acts on attempts past it.
    deadline_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    # A signal wait: the event topic and key that complete it.
    signal_topic = models.CharField(max_length=200, blank=True)
    signal_key = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["instance", "id"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "step_index", "kind", "attempt"], name="saga_attempt_once"),
        ]
        indexes = [
            # The sweeper's scan: only open attempts, by deadline.
            models.Index(fields=["deadline_at"], name="saga_attempt_open_deadline",
                         condition=Q(state__in=["scheduled", "running", "waiting"])),
            models.Index(fields=["signal_topic", "signal_key"], name="saga_attempt_waiting_signal",
                         condition=Q(state="waiting")),
            # The sweeper's scan for lost dispatches: scheduled attempts by due time (migration 0002).
            models.Index(fields=["scheduled_at"], name="saga_attempt_scheduled_due",
                         condition=Q(state="scheduled")),
        ]

    def __str__(self) -> str:
        return f"{self.step} {self.kind} #{self.attempt} ({self.state})"


class SagaSignal(models.Model):
    """A signal event received for a key: consumed by the wait it completes, or kept for a wait not yet begun."""

    id = models.BigAutoField(primary_key=True)
    topic = models.CharField(max_length=200)
    key = models.CharField(max_length=200)
    event_id = models.UUIDField(unique=True, help_text="The outbox event it came from.")
    payload = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(db_default=Now())
    consumed_by = models.OneToOneField(SagaStepAttempt, null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="signal")

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["topic", "key"], name="saga_signal_unconsumed",
                                condition=Q(consumed_by__isnull=True))]

    def __str__(self) -> str:
        return f"{self.topic} {self.key}"
