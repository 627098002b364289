from apps.core.heartbeats import heartbeat_record
from apps.core.task_contract import HEARTBEAT
from workers.task import taskplane_task


@taskplane_task(HEARTBEAT, periodic=True)
def heartbeat(process: str = "beat") -> str:
    """Record that beat and a worker are alive (beat schedules it; any worker runs it)."""
    return heartbeat_record(name=process).beat_at.isoformat()
