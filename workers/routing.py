"""Routes each task to its queue by its permanent dotted name.

A task may also declare `queue=` itself, and a caller may pass `queue=` to `apply_async`
(notifications do, by priority); this router covers everything else.
"""

from __future__ import annotations

from typing import Any

from workers.queues import DEFAULT_QUEUE, QUEUE_NAMES

# Longest matching prefix wins.
ROUTES: dict[str, str] = {
    "signalbox.notifications.": DEFAULT_QUEUE,
    "signalbox.digests.": "digests",
    "signalbox.flows.": DEFAULT_QUEUE,  # advance; its dispatcher and sweeper declare `maintenance`
    "signalbox.tasks.": "tasks",
    "signalbox.exports.": "tasks",
    "signalbox.workflows.": "transitions",
    "signalbox.events.": "events",
    "signalbox.webhooks.": "webhooks",
    "signalbox.maintenance.": "maintenance",
    "celery.": "maintenance",  # celery.backend_cleanup (result expiry), scheduled by beat
}


def route_task(
    name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **kw: Any
) -> dict[str, str]:
    if options.get("queue") in QUEUE_NAMES:
        return {"queue": options["queue"]}
    declared = getattr(task, "queue", None)
    if declared in QUEUE_NAMES:
        return {"queue": declared}
    matches = [prefix for prefix in ROUTES if name.startswith(prefix)]
    if matches:
        return {"queue": ROUTES[max(matches, key=len)]}
    return {"queue": DEFAULT_QUEUE}
