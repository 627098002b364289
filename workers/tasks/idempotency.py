from apps.core.task_contract import IDEMPOTENCY_PURGE
from apps.idempotency.records import records_purge
from workers.task import taskplane_task


@taskplane_task(IDEMPOTENCY_PURGE, periodic=True)
def purge() -> int:
    """Delete idempotency records past their retention, in batches."""
    return records_purge()
