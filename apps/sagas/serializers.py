"""API shapes of the saga control plane: the filters of the list, an instance, its timeline, the action bodies."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.pagination import PageQuerySerializer
from apps.core.serializers import StrictSerializer, required_text_field
from apps.sagas.models import SagaInstance, SagaStepAttempt
from apps.sagas.presentation import attempt_duration_seconds

MAX_REASON_LENGTH = 2000
# Some text besides white space, no NUL (PostgreSQL stores none): what a required note must be.
# PostgreSQL stores UTC offsets up to ±15:59; RFC 3339 (and so the generators of schema tests) allows ±23:59.
UTC_OFFSET_PATTERN = r"(?:[Zz]|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])$"


@extend_schema_field({"type": "string", "format": "date-time", "pattern": UTC_OFFSET_PATTERN})
class CreatedBoundField(serializers.DateTimeField):
    """An RFC 3339 date-time with an offset PostgreSQL takes; one beyond the calendar's ends is clamped to it."""

    def to_internal_value(self, value):
        if isinstance(value, str) and not re.search(UTC_OFFSET_PATTERN, value):
            raise serializers.ValidationError("Give an RFC 3339 date-time ending in Z or an offset "
                                              "from -15:59 to +15:59.", code="invalid")
        if isinstance(value, str) and value.endswith("z"):
            value = value[:-1] + "Z"  # RFC 3339 allows a lowercase z; Django's parser does not
        return super().to_internal_value(value)

    def enforce_timezone(self, value: datetime) -> datetime:
        # The pattern guarantees an offset. 0001-01-01T00:00+01:00 is before datetime.min in UTC and
        # 9999-12-31T23:59-01:00 after datetime.max: as bounds they mean "no bound", not a bad request.
        try:
            return value.astimezone(UTC)
        except OverflowError:
            return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


class SagaFilterSerializer(PageQuerySerializer):
    """The query of GET /api/sagas/: filters and pages; anything else is a 400."""

    # Blank values mean "no filter", as an HTML form or a templated URL sends them.
    name = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text="Saga name (exact).")
    state = serializers.ChoiceField(choices=SagaInstance.State.choices, required=False, allow_blank=True)
    key = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text="Business key (exact).")
    created_after = CreatedBoundField(required=False, help_text="Only instances created at or after this time.")
    created_before = CreatedBoundField(required=False, help_text="Only instances created before this time.")


class SagaAttemptSerializer(serializers.ModelSerializer):
    """One row of the timeline: an attempt of a step's action or compensation, or a signal wait."""

    duration_seconds = serializers.SerializerMethodField()
    result = serializers.JSONField(allow_null=True, read_only=True,
                                   help_text="What the action or compensation returned (merged into the context).")

    class Meta:
        model = SagaStepAttempt
        fields = [
            "id", "step", "step_index", "kind", "attempt", "budget_attempt", "state", "idempotency_key", "task_id",
            "scheduled_at", "started_at", "finished_at", "deadline_at", "duration_seconds", "result", "error",
            "signal_topic", "signal_key",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "number", "nullable": True,
                          "description": "finished_at − started_at, in seconds; null until it ran and finished."})
    def get_duration_seconds(self, attempt: SagaStepAttempt) -> float | None:
        return attempt_duration_seconds(attempt)


class SagaSerializer(serializers.ModelSerializer):
    """An instance as listed: what it is, where it is, why it compensates."""

    class Meta:
        model = SagaInstance
        fields = [
            "id", "name", "key", "state", "step_index", "pivot_passed", "failure", "cancel_requested",
            "resolution_note", "deadline_at", "created_at", "updated_at", "finished_at",
        ]
        read_only_fields = fields


class DefinitionStatusSerializer(serializers.Serializer):
    current = serializers.BooleanField(help_text="The code declares the same steps the instance started with.")
    declared = serializers.BooleanField(help_text="The code still declares a saga of this name.")
    missing_steps = serializers.ListField(child=serializers.CharField(),
                                          help_text="Steps the instance started with that the code no longer has.")


class SagaDetailSerializer(SagaSerializer):
    """An instance with its data, the definition it started with (and whether the code still has it), its timeline."""

    # The view passes the selectors' answers as context: "definition" (saga_definition_status) and
    # "timeline" (saga_timeline).

    input = serializers.DictField(read_only=True, help_text="What saga_start was given.")
    context = serializers.DictField(read_only=True, help_text="The input merged with every step's result.")
    definition_steps = serializers.ListField(child=serializers.CharField(), read_only=True,
                                             help_text="The step names, in order, when the instance started.")
    definition = serializers.SerializerMethodField(
        help_text="Whether the code still declares the steps the instance started with.")
    timeline = serializers.SerializerMethodField(
        help_text="Every attempt of every step and compensation, and every signal wait, in order.")

    class Meta(SagaSerializer.Meta):
        fields = [*SagaSerializer.Meta.fields, "input", "context", "definition_hash", "definition_steps",
                  "definition", "timeline"]
        read_only_fields = fields

    @extend_schema_field(DefinitionStatusSerializer)
    def get_definition(self, instance: SagaInstance) -> dict:
        return DefinitionStatusSerializer(self.context["definition"]).data

    @extend_schema_field(SagaAttemptSerializer(many=True))
    def get_timeline(self, instance: SagaInstance) -> list:
        """Every attempt of every step and compensation, in order."""
        return SagaAttemptSerializer(self.context["timeline"], many=True).data


class SagaReasonSerializer(StrictSerializer):
    """Optional body of cancel and retry: why, for the operator audit log."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=MAX_REASON_LENGTH,
                                   help_text="Why: recorded in the operator audit log.")


class SagaResolveSerializer(StrictSerializer):
    """Body of resolve: what the operator did by hand (required, not blank)."""

    note = required_text_field(max_length=MAX_REASON_LENGTH,
                               help_text="What was fixed by hand: kept on the instance and in the audit log.")
