"""API shapes of schedules: strict request bodies (types; meaning is checked by the service) and answers."""

from __future__ import annotations

from rest_framework import serializers

from apps.core.serializers import StrictQuerySerializer, StrictSerializer
from apps.schedules.models import NAME_PATTERN, Schedule, ScheduleFire

_MAX_SECONDS = 10 * 365 * 86400
_MAX_JSON_INT = 2**53  # the largest integer every JSON client reads exactly


def _json_value() -> serializers.JSONField:
    return serializers.JSONField(allow_null=True, help_text="Any JSON value.")


class ScheduleWriteSerializer(StrictSerializer):
    """POST /api/schedules/: a full definition. Give exactly one of cron, interval_seconds or run_at."""

    name = serializers.RegexField(NAME_PATTERN, max_length=200)
    task = serializers.CharField(max_length=200, help_text="A task name of apps/core/task_contract.py.")
    args = serializers.ListField(child=_json_value(), required=False)
    kwargs = serializers.DictField(child=_json_value(), required=False)
    cron = serializers.CharField(max_length=200, required=False, allow_blank=True,
                                 help_text="5 fields (minute hour day month weekday), or 6 with seconds first.")
    timezone = serializers.CharField(max_length=64, required=False, help_text="IANA zone of the cron (default UTC).")
    interval_seconds = serializers.IntegerField(min_value=1, max_value=_MAX_SECONDS, required=False, allow_null=True)
    run_at = serializers.DateTimeField(required=False, allow_null=True, help_text="A one-off fire at this instant.")
    start_at = serializers.DateTimeField(required=False, allow_null=True)
    end_at = serializers.DateTimeField(required=False, allow_null=True)
    overlap = serializers.ChoiceField(choices=Schedule.Overlap.choices, required=False)
    catchup_window_seconds = serializers.IntegerField(min_value=0, max_value=_MAX_SECONDS, required=False)
    jitter_seconds = serializers.IntegerField(min_value=0, max_value=_MAX_SECONDS, required=False)
    enabled = serializers.BooleanField(required=False)
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    pause_on_failure = serializers.BooleanField(required=False)
    ordering_key = serializers.CharField(max_length=200, required=False, allow_null=True)


class SchedulePatchSerializer(ScheduleWriteSerializer):
    """PATCH /api/schedules/{name}/: the fields to change (setting one cadence kind clears the others)."""

    name = serializers.RegexField(NAME_PATTERN, max_length=200, required=False)
    task = serializers.CharField(max_length=200, required=False)


class ScheduleSerializer(serializers.ModelSerializer):
    """A schedule as the API answers it."""

    class Meta:
        model = Schedule
        fields = ["name", "task", "args", "kwargs", "cron", "timezone", "interval_seconds", "run_at", "start_at",
                  "end_at", "overlap", "catchup_window_seconds", "jitter_seconds", "enabled", "note",
                  "pause_on_failure", "ordering_key", "next_fire_at", "version", "created_at", "updated_at"]
        read_only_fields = fields


class NoteSerializer(StrictSerializer):
    """Why: the note kept on the schedule and in the audit log (optional)."""

    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class BackfillSerializer(StrictSerializer):
    """A past range whose every nominal time fires once."""

    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    overlap = serializers.ChoiceField(choices=Schedule.Overlap.choices, required=False,
                                      help_text="Between the backfilled fires (default: the schedule's).")


class BackfillResultSerializer(serializers.Serializer):
    """How many occurrences of the range were enqueued, buffered, skipped, or had a row already."""

    enqueued = serializers.IntegerField()
    buffered = serializers.IntegerField()
    skipped = serializers.IntegerField()
    existing = serializers.IntegerField()


class FireSerializer(serializers.ModelSerializer):
    """One occurrence and what became of it."""

    manual = serializers.BooleanField(read_only=True)
    lateness_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = ScheduleFire
        fields = ["id", "nominal_at", "decision", "state", "decided_at", "fired_at", "started_at", "finished_at",
                  "task_id", "manual", "lateness_seconds", "error"]
        read_only_fields = fields


class PreviewQuerySerializer(StrictQuerySerializer):
    """GET /api/schedules/preview/: a cron expression, its zone, where to start and how many instants."""

    cron = serializers.CharField(max_length=200)
    timezone = serializers.CharField(max_length=64, required=False, default="UTC")
    start = serializers.DateTimeField(required=False, help_text="An ISO 8601 instant (default: now).")
    count = serializers.IntegerField(min_value=1, max_value=100, required=False, default=5)


class PreviewSerializer(serializers.Serializer):
    """The next fire instants, in UTC ISO 8601, computed by the firing loop's own code."""

    cron = serializers.CharField()
    timezone = serializers.CharField()
    fires = serializers.ListField(child=serializers.DateTimeField())
