"""Email tasks: send one email row, and purge sent ones past their retention."""

from apps.core.task_contract import EMAILS_PURGE, EMAILS_SEND
from apps.emails.sending import email_send
from apps.emails.services import emails_purge
from workers.task import taskplane_task


@taskplane_task(EMAILS_SEND)
def send(email_id: int) -> str:
    """Send one email (a redelivery finds it claimed or sent and sends nothing)."""
    return email_send(email_id=int(email_id))


@taskplane_task(EMAILS_PURGE, periodic=True)
def purge() -> int:
    """Delete sent emails older than EMAILS_RETENTION_DAYS, in batches."""
    return emails_purge()
