from apps.core.task_contract import FLAGS_APPLY_SCHEDULED
from apps.flags.declarations import SCHEDULED_CHANGES
from apps.flags.services import scheduled_changes_apply
from apps.flags.tasks_support import flag_gated
from workers.task import taskplane_task

# Operators freeze every scheduled flag change (during an incident, say) by switching this flag
# off. It is declared in apps/flags/declarations.py (on by default, created by migrate). Beat
# sends no request context, so keep it a plain on/off switch: a rule that needs a user never
# matches here.
SCHEDULED_CHANGES_SWITCH = SCHEDULED_CHANGES.key


@taskplane_task(FLAGS_APPLY_SCHEDULED, periodic=True)
@flag_gated(SCHEDULED_CHANGES_SWITCH, when_off="skip", default=True)
def apply_scheduled() -> int:
    """Apply the scheduled flag changes that are due (beat runs this); each is audited as "scheduler"."""
    return scheduled_changes_apply()
