"""Operator services over idempotency records (the expiry purge is records.records_purge)."""

from __future__ import annotations

from django.db import transaction

from apps.core.audit import Actor, operator_action_record
from apps.idempotency.models import IdempotencyRecord


def records_purge_selected(*, record_ids: list[int], actor: Actor, reason: str = "") -> int:
    """Delete the given records now (their keys can be reused at once), audited; returns how many."""
    with transaction.atomic():
        ids = list(IdempotencyRecord.objects.select_for_update().filter(pk__in=record_ids).order_by("pk")
                   .values_list("pk", flat=True))
        deleted, _ = IdempotencyRecord.objects.filter(pk__in=ids).delete()
        operator_action_record(actor=actor, action="idempotency.purge", target_type="idempotency.idempotencyrecord",
                               target_ids=ids, reason=reason)
        return deleted
