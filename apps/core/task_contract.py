"""The contract between apps and workers: queue names and task names, listed once.

Apps refer to tasks by these strings (they never import ``workers``); workers register their
entry points under the same names.
"""

QUEUES = ("default", "events", "outbox", "notifications")

HEARTBEAT = "core.heartbeat"
OUTBOX_RELAY = "outbox.relay"
OUTBOX_DELIVER_EVENT = "outbox.deliver_event"
OUTBOX_PURGE = "outbox.purge"
INBOX_PURGE = "outbox.purge_inbox"
IDEMPOTENCY_PURGE = "idempotency.purge"
FLAGS_APPLY_SCHEDULED = "flags.apply_scheduled"
SCHEDULES_PURGE = "schedules.purge"

# Sagas (docs/sagas.md): one step attempt per message; the sweeper times out and re-dispatches.
SAGAS_RUN_STEP = "sagas.run_step"
SAGAS_SWEEP = "sagas.sweep"

# Emails (docs/emails.md): one send per email row, claimed, retried through the outbox.
EMAILS_SEND = "emails.send"
EMAILS_PURGE = "emails.purge"

# Webhooks (docs/notifications.md): one attempt of one delivery per message; retries are delayed outbox rows.
WEBHOOKS_DELIVER = "notifications.deliver"
WEBHOOKS_PURGE = "notifications.purge"

# Which queue each task runs on.
TASK_QUEUES = {
    HEARTBEAT: "default",
    OUTBOX_RELAY: "outbox",
    OUTBOX_DELIVER_EVENT: "events",
    OUTBOX_PURGE: "default",
    INBOX_PURGE: "default",
    IDEMPOTENCY_PURGE: "default",
    FLAGS_APPLY_SCHEDULED: "default",
    # Sagas
    SAGAS_RUN_STEP: "default",
    SAGAS_SWEEP: "default",
    SCHEDULES_PURGE: "default",
    # Emails
    EMAILS_SEND: "notifications",
    EMAILS_PURGE: "default",
    # Webhooks
    WEBHOOKS_DELIVER: "notifications",
    WEBHOOKS_PURGE: "default",
}
