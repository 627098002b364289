"""Whether an endpoint keeps working: a success resets its failure clock, long failure or 410 disables it.

The rule (docs/notifications.md): an endpoint whose attempts have all failed since its first failure
WEBHOOKS_DISABLE_AFTER_SECONDS ago (no success in between) is disabled and its owner emailed; a 410
Gone disables it at once. Both run in the transaction that records the attempt.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models.functions import Now

from apps.emails.services import notify_email
from apps.notifications.models import Endpoint

DISABLED_EMAIL = "webhook_endpoint_disabled"


def endpoint_success_note(*, endpoint_id: uuid.UUID) -> None:
    """A 2xx: the endpoint is healthy again (its failure clock stops)."""
    Endpoint.objects.filter(pk=endpoint_id, failing_since__isnull=False).update(failing_since=None)


def endpoint_failure_note(*, endpoint_id: uuid.UUID, gone: bool, token: uuid.UUID) -> None:
    """A failed attempt: start the failure clock, and disable the endpoint when 410 or failing for too long."""
    Endpoint.objects.filter(pk=endpoint_id, failing_since__isnull=True).update(failing_since=Now())
    enabled = Endpoint.objects.filter(pk=endpoint_id, enabled=True)
    if gone:
        reason = "The endpoint answered 410 Gone."
        disabled = enabled.update(enabled=False, disabled_reason=reason, disabled_at=Now())
    else:
        reason = (f"Every attempt failed for {settings.WEBHOOKS_DISABLE_AFTER_SECONDS} s "
                  "(WEBHOOKS_DISABLE_AFTER_SECONDS).")
        cutoff = Now() - timedelta(seconds=settings.WEBHOOKS_DISABLE_AFTER_SECONDS)
        disabled = enabled.filter(failing_since__lte=cutoff).update(enabled=False, disabled_reason=reason,
                                                                   disabled_at=Now())
    if disabled:
        _email_owner(endpoint_id=endpoint_id, reason=reason, token=token)


def _email_owner(*, endpoint_id: uuid.UUID, reason: str, token: uuid.UUID) -> None:
    endpoint = Endpoint.objects.select_related("owner").get(pk=endpoint_id)
    if not endpoint.owner.email:
        return
    context = {"url": endpoint.url, "endpoint_id": str(endpoint.pk), "reason": reason,
               "username": endpoint.owner.get_username()}
    # Keyed by the disabling attempt's claim: one email per disabling, however often the task runs.
    notify_email(endpoint.owner.email, DISABLED_EMAIL, context, key=f"webhooks.disabled:{endpoint.pk}:{token}")
