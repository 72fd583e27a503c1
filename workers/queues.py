"""Every queue Signalbox uses, what it is for, and which worker group consumes it.

Queues are split by what must not wait behind what: a million-recipient bulk send goes to
`notifications.bulk` and never delays a password reset on `notifications.high`. Separate queues
are not enough for that: a worker consuming both can have every process busy on bulk send batches
(each up to SEND_TIME_BUDGET_SECONDS), so `notifications.high` is the only queue of its group.
"""

from __future__ import annotations

from dataclasses import dataclass

from kombu import Exchange, Queue


@dataclass(frozen=True)
class QueueSpec:
    name: str
    purpose: str
    group: str


QUEUE_SPECS: tuple[QueueSpec, ...] = (
    QueueSpec(
        "notifications.high",
        "Urgent notifications (password resets, security alerts): fan-out and sends.",
        "urgent",
    ),
    QueueSpec("notifications.default", "Normal-priority notification fan-out and sends.", "notifications"),
    QueueSpec("notifications.bulk", "Large or marketing sends; may lag without hurting the others.", "notifications"),
    QueueSpec("digests", "Flushing due digest windows into one message per recipient and channel.", "notifications"),
    QueueSpec("tasks", "Tracked background jobs started through the API (exports, resends).", "background"),
    QueueSpec("transitions", "Applying workflow transition intents and their effects.", "background"),
    QueueSpec("events", "Matching domain events against rules and running their actions.", "background"),
    QueueSpec("webhooks", "Outbound webhook deliveries with the Standard Webhooks retry schedule.", "webhooks"),
    QueueSpec("maintenance", "Sweeper, dispatcher, retention purges, result expiry (beat-driven).", "maintenance"),
)

QUEUE_NAMES: tuple[str, ...] = tuple(q.name for q in QUEUE_SPECS)
DEFAULT_QUEUE = "notifications.default"

# Worker groups: one process kind each (docker-compose services, k8s Deployments, Procfile lines).
WORKER_GROUPS: dict[str, tuple[str, ...]] = {}
for _spec in QUEUE_SPECS:
    WORKER_GROUPS.setdefault(_spec.group, ())
    WORKER_GROUPS[_spec.group] += (_spec.name,)

PRIORITY_QUEUES = {"high": "notifications.high", "normal": "notifications.default", "bulk": "notifications.bulk"}


def task_queues() -> tuple[Queue, ...]:
    exchange = Exchange("signalbox", type="direct")
    return tuple(Queue(name, exchange, routing_key=name) for name in QUEUE_NAMES)
