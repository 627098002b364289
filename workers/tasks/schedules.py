from apps.core.task_contract import SCHEDULES_PURGE
from apps.schedules.services import schedule_fires_purge
from workers.task import taskplane_task


@taskplane_task(SCHEDULES_PURGE, periodic=True)
def purge() -> int:
    """Delete finished schedule fire rows past their retention, in batches."""
    return schedule_fires_purge()
