"""Heartbeat service: periodic processes record that they are alive."""

from __future__ import annotations

from django.utils import timezone

from apps.core.models import Heartbeat


def heartbeat_record(*, name: str) -> Heartbeat:
    """Record that ``name`` was alive now (idempotent: the row is simply moved forward)."""
    heartbeat, _ = Heartbeat.objects.update_or_create(name=name, defaults={"beat_at": timezone.now()})
    return heartbeat
