"""Deleting old rows without long locks: the one batch-purge loop retention jobs share."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet


def delete_in_batches(queryset: QuerySet, *, batch_size: int = 5000, max_batches: int = 100) -> int:
    """Delete the rows of ``queryset`` a batch per transaction, oldest id first; returns how many.

    Short transactions keep the relay and writers from waiting on a purge; ``max_batches`` bounds
    one run, and the next scheduled run continues where this one stopped.
    """
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic():
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            # Filtered again: a row changed since the SELECT (taken over, re-queued) must survive.
            deleted += queryset.filter(pk__in=ids).delete()[0]
    return deleted
