"""How the control plane shows a saga's timeline to people (admin page, `manage.py saga show`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from apps.core.admin_base import age_text
from apps.sagas.models import SagaStepAttempt


def attempt_duration_seconds(attempt: SagaStepAttempt) -> float | None:
    """How long an attempt ran (finished − started), or None while it has not both started and finished."""
    if attempt.started_at is None or attempt.finished_at is None:
        return None
    return (attempt.finished_at - attempt.started_at).total_seconds()


def duration_text(seconds: float | None) -> str:
    """A duration for people, down to milliseconds: "850 ms", "4.2 s", then as admin's ages ("3 min 5 s")."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return age_text(seconds)


@dataclass(frozen=True)
class TimelineRow:
    """One attempt as shown: every column of the timeline as text, plus whether it failed."""

    attempt: SagaStepAttempt
    started: str
    finished: str
    duration: str
    outcome: str  # the result as JSON, or the error
    failed: bool


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="milliseconds") if value else "—"


def _outcome(attempt: SagaStepAttempt) -> str:
    if attempt.error:
        return attempt.error
    if attempt.result is not None:
        return json.dumps(attempt.result, ensure_ascii=False, sort_keys=True)
    if attempt.kind == SagaStepAttempt.Kind.SIGNAL and attempt.signal_topic:
        return f"waits for {attempt.signal_topic} key {attempt.signal_key}"
    return ""


def timeline_rows(attempts: list[SagaStepAttempt]) -> list[TimelineRow]:
    """The timeline's attempts, in the order given, formatted for display."""
    failing = {SagaStepAttempt.State.FAILED, SagaStepAttempt.State.TIMED_OUT}
    return [
        TimelineRow(attempt=attempt, started=_time(attempt.started_at), finished=_time(attempt.finished_at),
                    duration=duration_text(attempt_duration_seconds(attempt)), outcome=_outcome(attempt),
                    failed=attempt.state in failing)
        for attempt in attempts
    ]
