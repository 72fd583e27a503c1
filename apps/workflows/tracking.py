"""Transition intents as TaskExecutions (apps.tasks, kind `intent`): what clients poll at /api/v1/tasks/<id>/.

The execution is created in the intent's transaction, moved to `running` when a worker starts
applying the intent, and ended `succeeded` (result: the log entry) or `failed` (the refusal's
code and message). A client that cancels the execution before it runs cancels the intent.
"""

from __future__ import annotations

from typing import Any

from apps.core.actors import Actor
from apps.tasks import services as task_services

EXECUTION_NAME = "signalbox.workflows.apply_transition"


def poll_url(execution_id: str) -> str:
    return f"/api/v1/tasks/{execution_id}/"


def execution_create(*, tenant: Any, actor: Actor, input: dict[str, Any]) -> str:
    execution = task_services.execution_create_for_intent(
        tenant=tenant,
        name=EXECUTION_NAME,
        input=input,
        actor=actor,
        queue="transitions",
    )
    return str(execution.pk)


def execution_start(execution_id: str) -> bool:
    """False when the client cancelled the execution: the intent must not be applied."""
    if not execution_id:
        return True
    return task_services.execution_mark_running(execution_id=execution_id)


def execution_succeed(execution_id: str, *, result: dict[str, Any]) -> None:
    if execution_id:
        task_services.execution_mark_succeeded(execution_id=execution_id, result=result)


def execution_fail(execution_id: str, *, code: str, message: str) -> None:
    if execution_id:
        task_services.execution_mark_failed(execution_id=execution_id, code=code, message=message)
