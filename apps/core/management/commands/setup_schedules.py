from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.core.periodic import setup_schedules


class Command(BaseCommand):
    help = (
        "Registers every periodic job in django-celery-beat (idempotent). Existing jobs keep the "
        "interval and enabled flag set in admin; --reset puts the code's intervals back."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="store_true", help="Restore each job's interval and enable it.")

    def handle(self, *args: Any, **options: Any) -> None:
        for line in setup_schedules(reset=options["reset"]):
            self.stdout.write(f"scheduled {line}")
