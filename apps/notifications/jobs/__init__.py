"""The tracked task types the notifications app ships (apps.tasks' registry): the deliveries CSV
export and the resend of failed deliveries, started by operators and tenants through /api/v1/tasks/.

They live beside the deliveries they read: the tasks engine knows no notification. Imported by
`apps/notifications/tasks.py`, so the worker's autodiscovery and the registry both find them.
"""

from apps.notifications.jobs import exports, resend  # noqa: F401  (registers them)
