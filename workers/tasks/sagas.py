"""Saga tasks: run one step attempt, and the periodic sweeper."""

from apps.core.task_contract import SAGAS_RUN_STEP, SAGAS_SWEEP
from apps.sagas.engine import step_run
from apps.sagas.sweeper import saga_sweep
from workers.task import taskplane_task


@taskplane_task(SAGAS_RUN_STEP)
def run_step(attempt_id: int) -> str:
    """Run one saga step attempt (a redelivery finds it claimed or finished and does nothing)."""
    return step_run(attempt_id=int(attempt_id))


@taskplane_task(SAGAS_SWEEP, periodic=True)
def sweep() -> dict[str, int]:
    """Time out expired attempts, re-dispatch lost ones, stop sagas past their deadline."""
    return saga_sweep()
