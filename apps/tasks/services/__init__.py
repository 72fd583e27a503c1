"""The tasks app's writes. Other apps import from here:

- `task_start(*, tenant, name, input, actor=None, idempotency_key=None, scheduled_at=None)`
  starts a registered task type and returns its TaskExecution;
- `execution_create_for_intent(...)` and `execution_mark_running/progress/succeeded/failed/cancelled`
  let another app's intent (a transition, a bulk import) be polled at /api/v1/tasks/<id>/.
See docs/tasks.md, "For other apps".
"""

from apps.tasks.services.executions import (
    execution_cancel,
    execution_cancel_requested,
    execution_create_for_intent,
    execution_mark_cancelled,
    execution_mark_failed,
    execution_mark_running,
    execution_mark_succeeded,
    execution_progress,
    execution_retry,
    task_start,
)

__all__ = [
    "execution_cancel",
    "execution_cancel_requested",
    "execution_create_for_intent",
    "execution_mark_cancelled",
    "execution_mark_failed",
    "execution_mark_running",
    "execution_mark_succeeded",
    "execution_progress",
    "execution_retry",
    "task_start",
]
