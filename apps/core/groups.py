"""The two operator groups: ``viewers`` read every Taskplane model, ``operators`` also act on them.

The policy is applied by a data migration (core 0003) and again after every ``migrate`` (a
``post_migrate`` hook, connected in CoreConfig.ready), so a model added later (sagas, schedules…) joins
both groups at the migrate that creates it, with no migration of its own. The policy only adds: a
permission an administrator grants a group by hand stays; one of the policy's, removed by hand, is
granted again at the next migrate.

Every model of an app under ``apps.`` gets ``view`` (both groups) and ``change`` (operators): change is
what admin's operator actions require (outbox retry/discard/re-drive, API key revoke, scheduled flag
changes). The exceptions below are named by ``app_label.model_name`` strings (core imports no other app).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps as global_apps
from django.db import DEFAULT_DB_ALIAS
from django.db.models import Q

OPERATORS = "operators"
VIEWERS = "viewers"
VIEWER_ACTIONS = ("view",)
OPERATOR_ACTIONS = ("view", "change")

OPERATOR_OVERRIDES: dict[str, tuple[str, ...]] = {
    # Audit trails and bookkeeping rows are written by services only: operators read them like viewers.
    "core.operatoraction": VIEWER_ACTIONS,
    "core.heartbeat": VIEWER_ACTIONS,
    "flags.flagchange": VIEWER_ACTIONS,
    "flags.flagsversion": VIEWER_ACTIONS,
    "outbox.inboxentry": VIEWER_ACTIONS,
    "outbox.relaystatus": VIEWER_ACTIONS,
    # API keys: change covers renaming and the Revoke action. Never add: a key can be minted for any
    # user, superusers included, so "add" would let an operator act as anyone.
    "core.apikey": OPERATOR_ACTIONS,
    # Idempotency admin's Purge action deletes records (their keys become reusable at once).
    "idempotency.idempotencyrecord": (*OPERATOR_ACTIONS, "delete"),
    # Operators run the flags: create, change and delete them (each write audited in FlagChange), and
    # schedule or cancel changes.
    "flags.flag": (*OPERATOR_ACTIONS, "add", "delete"),
    "flags.scheduledflagchange": (*OPERATOR_ACTIONS, "add", "delete"),
    # Operators run the schedules (create, edit, pause, run now, backfill, delete; each audited); fire
    # rows are written by the firing loop and workers only.
    "schedules.schedule": (*OPERATOR_ACTIONS, "add", "delete"),
    "schedules.schedulefire": VIEWER_ACTIONS,
    # Sagas: change on an instance is admin's Cancel, Retry compensation and Mark resolved (each audited);
    # step attempts and received signals are the saga's history, written by the engine only.
    "sagas.sagainstance": OPERATOR_ACTIONS,
    "sagas.sagastepattempt": VIEWER_ACTIONS,
    "sagas.sagasignal": VIEWER_ACTIONS,
    # Orders: change on an order is also admin's Approve action (audited). Reservations and payments are
    # written by the checkout saga; the sandbox provider's tables by its views only.
    "orders.reservation": VIEWER_ACTIONS,
    "orders.payment": VIEWER_ACTIONS,
    "orders.sandboxcharge": VIEWER_ACTIONS,
    "orders.sandboxrefund": VIEWER_ACTIONS,
    # Emails: change is admin's "Retry failed" action (audited); rows are written by notify_email only.
    "emails.email": OPERATOR_ACTIONS,
    # Webhooks: change on an endpoint is enable/disable, test and recover (API and admin, audited); on a
    # delivery it is Replay. Owners create and delete their endpoints; operators never add or delete them.
    # Messages and attempts are the delivery log, written by the fan-out and the workers only.
    "notifications.endpoint": OPERATOR_ACTIONS,
    "notifications.delivery": OPERATOR_ACTIONS,
    "notifications.message": VIEWER_ACTIONS,
    "notifications.attempt": VIEWER_ACTIONS,
}


def group_policy_actions(*, group: str, model_label: str) -> tuple[str, ...]:
    """The permission actions (view, change…) the policy gives ``group`` on ``model_label``."""
    if group == VIEWERS:
        return VIEWER_ACTIONS
    return OPERATOR_OVERRIDES.get(model_label, OPERATOR_ACTIONS)


def taskplane_app_labels() -> list[str]:
    """Labels of the installed Taskplane apps (packages under ``apps.``), whose models the groups cover."""
    return sorted(config.label for config in global_apps.get_app_configs() if config.name.startswith("apps."))


def groups_apply_policy(*, apps: Any = global_apps, app_labels: list[str] | None = None,
                        using: str = DEFAULT_DB_ALIAS) -> None:
    """Create both groups if missing and grant them the policy's existing permissions on ``app_labels``' models.

    ``apps`` is the app registry or a migration's historical one. Permissions not created yet (a fresh
    database, during migrate) are granted by the post_migrate run that follows their creation.
    """
    try:
        group_model = apps.get_model("auth", "Group")
        permission_model = apps.get_model("auth", "Permission")
    except LookupError:  # auth is not installed (or not migrated yet in this historical state)
        return
    models = []
    for label in taskplane_app_labels() if app_labels is None else app_labels:
        try:
            models.extend(apps.get_app_config(label).get_models())
        except LookupError:  # the app has no migrated models in this historical state yet
            continue
    for name in (VIEWERS, OPERATORS):
        group, _ = group_model.objects.using(using).get_or_create(name=name)
        wanted = Q(pk__in=[])
        for model in models:
            opts = model._meta
            actions = group_policy_actions(group=name, model_label=f"{opts.app_label}.{opts.model_name}")
            wanted |= Q(content_type__app_label=opts.app_label, content_type__model=opts.model_name,
                        codename__in=[f"{action}_{opts.model_name}" for action in actions])
        group.permissions.add(*permission_model.objects.using(using).filter(wanted))


def groups_apply_after_migrate(sender: Any, *, apps: Any = global_apps, using: str = DEFAULT_DB_ALIAS,
                               **kwargs: Any) -> None:
    """post_migrate receiver: re-apply the policy to the migrated app's models (auth created their permissions)."""
    if sender.name.startswith("apps."):
        groups_apply_policy(apps=apps, app_labels=[sender.label], using=using)
