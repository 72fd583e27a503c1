"""The task types Signalbox ships, used by operators and tenants alike."""

from apps.tasks.builtin import exports, resend  # noqa: F401  (registers them)
