"""The task types Signalbox ships, used by operators and tenants alike."""

from apps.tasks.builtin import exports, resend, retention  # noqa: F401  (registers them)
