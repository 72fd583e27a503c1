"""The task types the tasks app itself ships: the retention purge operators run. Task types about
another app's data live in that app (notifications' exports and resends: apps/notifications/jobs).
Imported by `apps/tasks/tasks.py`, so the worker's autodiscovery and the registry both find them."""

from apps.tasks.builtin import retention  # noqa: F401  (registers it)
