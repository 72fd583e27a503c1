"""`manage.py migrate_and_schedule`: migrations, then the periodic jobs, one process at a time.

Every Kubernetes pod runs it as an init container (k8s/), so a new release's schema is in place before
any of its processes serves or consumes, on every `kubectl apply`. Many pods start at once during a
rollout, so on PostgreSQL the work is serialised under a session advisory lock: the first pod migrates,
the others wait, then find nothing to do. Migrations must stay backward compatible with the release still
running (docs/operations.md, "Upgrading").
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

# An arbitrary constant every Signalbox release shares: "the migration lock" (pg_advisory_lock(bigint)).
MIGRATION_LOCK_ID = 7_353_110_470_002


class Command(BaseCommand):
    help = "Applies migrations and registers the periodic jobs, serialised across pods by an advisory lock."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--lock-timeout",
            type=int,
            default=600,
            help="Seconds to wait for another pod's migration before failing (PostgreSQL only).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        if settings.DATABASE_POOLER:
            # A session lock through a transaction pooler is taken on one server connection and
            # released on another; DDL wants a direct connection anyway.
            raise CommandError(
                "Migrations need a direct PostgreSQL connection: run this with DATABASE_URL pointing at "
                'PostgreSQL itself and DATABASE_POOLER empty (docs/operations.md, "Connection budget").'
            )
        if connection.vendor != "postgresql":
            self._migrate(verbosity)
            return
        with connection.cursor() as cursor:
            # lock_timeout bounds the wait: a migration stuck elsewhere fails this pod loudly (and the
            # kubelet retries it) instead of hanging it forever.
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{options['lock_timeout']}s"])
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_ID])
            cursor.execute("SELECT set_config('lock_timeout', '0', false)")
        try:
            self._migrate(verbosity)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_ID])

    def _migrate(self, verbosity: int) -> None:
        call_command("migrate", interactive=False, verbosity=verbosity)
        call_command("setup_schedules", verbosity=verbosity, stdout=self.stdout)
