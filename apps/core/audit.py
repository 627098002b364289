"""The operator audit log: every operator action records who did what to which row, when and why."""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from apps.core.models import OperatorAction
from apps.core.request_context import get_request_id

Via = OperatorAction.Via


@dataclass(frozen=True)
class Actor:
    """Who acts and through which door (admin, API or command line)."""

    name: str
    via: str
    credential: str = ""  # the API key prefix, when the API was called with a key
    request_id: str = ""

    @classmethod
    def from_request(cls, request: Any, *, via: str) -> Actor:
        """The authenticated user of a Django or DRF request."""
        key = getattr(request, "auth", None)
        return cls(name=request.user.get_username(), via=via, credential=getattr(key, "prefix", "") or "",
                   request_id=get_request_id() or "")

    @classmethod
    def command_line(cls) -> Actor:
        """Whoever runs a management command: the operating-system account (commands have no login)."""
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry, as in some containers
            user = "unknown"
        return cls(name=f"cli:{user}"[:150], via=Via.CLI)


def operator_action_record(
    *, actor: Actor, action: str, target_type: str, target_ids: Iterable[Any], reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> int:
    """Record ``action`` on each target in the caller's transaction (one row per target); returns how many."""
    rows = [
        OperatorAction(actor=actor.name, via=actor.via, credential=actor.credential,
                       request_id=actor.request_id[:200], action=action, target_type=target_type,
                       target_id=str(target_id), reason=reason, details=dict(details or {}))
        for target_id in target_ids
    ]
    with transaction.atomic():  # a savepoint inside the action's transaction: both commit or neither
        OperatorAction.objects.bulk_create(rows, batch_size=1000)
    return len(rows)
