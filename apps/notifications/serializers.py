"""API shapes of webhooks: endpoint input and output, the delivery log, replay and recover bodies."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.pagination import PageQuerySerializer
from apps.core.serializers import REQUIRED_TEXT_PATTERN, StrictSerializer
from apps.notifications.models import Attempt, Delivery, Endpoint, Message
from apps.notifications.selectors import ATTEMPTS_SHOWN

EVENT_TYPES_HELP = "Exact event types (order.placed) or prefix patterns (order.*); empty or absent: every type."


class EndpointWriteSerializer(StrictSerializer):
    # Patterned, not only checked: the schema says a blank URL or event type is refused (schemathesis holds it).
    url = serializers.RegexField(REQUIRED_TEXT_PATTERN, max_length=2000,
                                 help_text="https:// URL receiving POSTs (http:// only if allowed).")
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    event_types = serializers.ListField(child=serializers.RegexField(REQUIRED_TEXT_PATTERN, max_length=200),
                                        required=False,
                                        max_length=50, help_text=EVENT_TYPES_HELP)
    headers = serializers.DictField(child=serializers.CharField(max_length=1000, allow_blank=True), required=False,
                                    help_text="Extra request headers sent with every attempt.")
    rate_limit_per_second = serializers.IntegerField(min_value=1, max_value=10_000, required=False, allow_null=True,
                                                     help_text="At most this many attempts per second; null: none.")


class EndpointPatchSerializer(EndpointWriteSerializer):
    url = serializers.RegexField(REQUIRED_TEXT_PATTERN, max_length=2000, required=False)
    enabled = serializers.BooleanField(required=False,
                                       help_text="true re-enables a disabled endpoint; false stops its deliveries.")


class EndpointSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    secret_rotated_until = serializers.DateTimeField(source="previous_secret_until", read_only=True, allow_null=True,
                                                     help_text="Until then the previous secret signs too.")

    class Meta:
        model = Endpoint
        fields = ["id", "owner", "url", "description", "event_types", "headers", "rate_limit_per_second", "enabled",
                  "disabled_reason", "disabled_at", "failing_since", "secret_rotated_until", "created_at",
                  "updated_at"]
        read_only_fields = fields


class EndpointCreatedSerializer(EndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="The signing secret (whsec_…); keep it safe.")

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class SecretSerializer(serializers.Serializer):
    secret = serializers.CharField(read_only=True, help_text="The current signing secret (whsec_…).")
    previous_secret_until = serializers.DateTimeField(read_only=True, allow_null=True,
                                                      help_text="The rotated-out secret signs too until then.")


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Attempt
        fields = ["attempted_at", "status_code", "latency_ms", "error", "response_body"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    attempt_log = serializers.SerializerMethodField(help_text=f"The latest {ATTEMPTS_SHOWN} attempts, newest first.")

    class Meta:
        model = Delivery
        fields = ["endpoint", "state", "attempts", "next_attempt_at", "last_status", "last_error", "attempt_log"]
        read_only_fields = fields

    @extend_schema_field(AttemptSerializer(many=True))
    def get_attempt_log(self, delivery: Delivery) -> list:
        return AttemptSerializer(list(delivery.attempt_log.all())[:ATTEMPTS_SHOWN], many=True).data


class MessageSerializer(serializers.ModelSerializer):
    deliveries = DeliverySerializer(many=True, read_only=True)

    class Meta:
        model = Message
        fields = ["id", "topic", "occurred_at", "created_at", "deliveries"]
        read_only_fields = fields


class MessageFilterSerializer(PageQuerySerializer):
    endpoint = serializers.UUIDField(required=False, help_text="Only deliveries to this endpoint.")
    status = serializers.ChoiceField(choices=Delivery.State.choices, required=False,
                                     help_text="Only deliveries in this state.")


class ReplaySerializer(StrictSerializer):
    endpoint = serializers.UUIDField(help_text="The endpoint to send the message to again.")


class RecoverSerializer(StrictSerializer):
    since = serializers.DateTimeField(help_text="Replay failed messages created at or after this time.")


class RecoveredSerializer(serializers.Serializer):
    recovered = serializers.IntegerField(read_only=True, help_text="How many failed deliveries were re-queued.")


class EventTypeSerializer(serializers.Serializer):
    name = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
