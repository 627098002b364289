"""API shapes of the outbox control plane, and the one rule for who may read a payload."""

from __future__ import annotations

import json
import logging
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.crypto import EncryptionUnavailable, decrypt_text
from apps.core.pagination import PageQuerySerializer
from apps.core.serializers import StrictSerializer, required_text_field
from apps.outbox.models import OutboxMessage
from apps.outbox.registry import subscriber_names
from apps.outbox.selectors import RELAY_STATES, STATS_EXACT_LIMIT

logger = logging.getLogger(__name__)


def payload_text(message: OutboxMessage, *, reveal_encrypted: bool) -> str | None:
    """The payload's JSON text, or None if encrypted and not revealed (EncryptionUnavailable if no key opens it)."""
    if not message.encrypted:
        return message.payload
    if not reveal_encrypted:
        return None
    return decrypt_text(message.payload)


def parse_payload(text: str) -> Any:
    """Parse payload JSON; rows written outside publish()/enqueue() may hold other text, shown as is."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class OutboxMessageFilterSerializer(PageQuerySerializer):
    """The query of GET /api/outbox/messages/: filters and pages; anything else is a 400."""

    # Blank values mean "no filter", as an HTML form or a templated URL sends them.
    status = serializers.ChoiceField(choices=OutboxMessage.Status.choices, required=False, allow_blank=True)
    kind = serializers.ChoiceField(choices=OutboxMessage.Kind.choices, required=False, allow_blank=True)
    topic = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="Event topic or task name (exact)."
    )
    key = serializers.CharField(required=False, allow_blank=True, max_length=200, help_text="Ordering key (exact).")


class OutboxMessageSerializer(serializers.ModelSerializer):
    headers = serializers.DictField(read_only=True, help_text="Trace context, request id and caller headers.")
    payload = serializers.SerializerMethodField()

    class Meta:
        model = OutboxMessage
        fields = [
            "id", "message_id", "kind", "name", "key", "queue", "status", "attempts", "available_at",
            "last_error", "created_at", "published_at", "encrypted", "headers", "payload",
        ]
        read_only_fields = fields

    @extend_schema_field({
        "nullable": True,
        "description": "The JSON payload; null when it is encrypted and the caller is not a superuser.",
    })
    def get_payload(self, message: OutboxMessage) -> Any:
        try:
            text = payload_text(message, reveal_encrypted=self.context.get("reveal_encrypted", False))
        except EncryptionUnavailable:
            # One row whose key was removed must not make the whole page a 500.
            logger.warning("Outbox message %s: no configured key decrypts its payload", message.pk)
            return None
        return None if text is None else parse_payload(text)


class OutboxStatusCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    published = serializers.IntegerField()
    dead = serializers.IntegerField()
    discarded = serializers.IntegerField()


class RelayStatusSerializer(serializers.Serializer):
    slot = serializers.IntegerField()
    holder = serializers.CharField(help_text="Host and process serving the slot (empty before the first holder).")
    state = serializers.ChoiceField(
        choices=RELAY_STATES,
        help_text="failing: its last cycle failed; stopped: nobody has written this slot's status for "
                  "OUTBOX_RELAY_STALL_SECONDS.",
    )
    started_at = serializers.DateTimeField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True, help_text="End of the last successful cycle.")
    last_success_age_seconds = serializers.FloatField(allow_null=True)
    last_error = serializers.CharField(help_text="Exception type and message of the last failed cycle.")
    last_error_at = serializers.DateTimeField(allow_null=True)
    last_error_age_seconds = serializers.FloatField(allow_null=True)
    error_count = serializers.IntegerField(help_text="Failed cycles in the last run of failures.")
    unroutable_events = serializers.IntegerField(help_text="Events this slot published that reached no queue.")
    last_unroutable_topic = serializers.CharField()


class OutboxStatsSerializer(serializers.Serializer):
    counts = OutboxStatusCountsSerializer()
    counts_estimated = serializers.ListField(
        child=serializers.ChoiceField(choices=OutboxMessage.Status.choices),
        help_text=f"Statuses whose count is PostgreSQL's planner estimate (counts above {STATS_EXACT_LIMIT:,} rows).",
    )
    oldest_pending_age_seconds = serializers.FloatField()
    published_last_minute = serializers.IntegerField()
    unroutable_events = serializers.IntegerField(
        help_text="Events published while no queue was bound for them and no subscriber listened (all slots)."
    )
    relay_problem = serializers.CharField(
        allow_null=True,
        help_text="Why /health/ reports the relay failing (messages due and no successful cycle for "
                  "OUTBOX_RELAY_STALL_SECONDS), or null.",
    )
    relays = RelayStatusSerializer(many=True)


class OperatorReasonSerializer(StrictSerializer):
    """Optional body of retry and discard: why, for the operator audit log."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000,
                                   help_text="Why: recorded in the operator audit log.")


class RedriveRequestSerializer(StrictSerializer):
    """Body of a re-drive: which subscriber runs the event again, and why (required, not blank)."""

    subscriber = serializers.ChoiceField(choices=(), help_text="A subscriber of the event's topic.")
    reason = required_text_field(max_length=2000, help_text="Why: recorded in the operator audit log.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The subscribers registered in this process (the schema lists them), read when the body is parsed.
        self.fields["subscriber"].choices = subscriber_names()


class RedriveSerializer(serializers.Serializer):
    event = OutboxMessageSerializer(help_text="The re-driven event.")
    subscriber = serializers.CharField()
    delivery = OutboxMessageSerializer(help_text="The outbox.deliver_event task row queued for the subscriber.")
    inbox_entry_removed = serializers.BooleanField(
        help_text="Whether the subscriber's inbox entry for the event existed (and was removed)."
    )
