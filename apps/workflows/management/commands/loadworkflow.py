"""`manage.py loadworkflow path.yaml --tenant acme`: store a workflow definition from a YAML or JSON file.

A changed document becomes the key's next version; an unchanged one is left alone, so the
command is safe to run on every deploy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.errors import ApplicationError
from apps.tenancy.models import Tenant
from apps.workflows.services.definitions import definition_load_file


class Command(BaseCommand):
    help = "Load a workflow definition (YAML or JSON) for a tenant; a change becomes a new version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, help="Definition files (.yaml, .yml or .json).")
        parser.add_argument("--tenant", required=True, help="The tenant's slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}.")
        for path in options["paths"]:
            if not path.is_file():
                raise CommandError(f"{path}: no such file.")
            try:
                definition, created = definition_load_file(tenant=tenant, path=path)
            except ApplicationError as exc:
                details = "\n".join(f"  {where or '-'}: {m}" for where, found in exc.fields.items() for m in found)
                raise CommandError(f"{path}: {exc.message}\n{details}".rstrip()) from exc
            verb = "loaded as" if created else "unchanged at"
            self.stdout.write(f"{path}: {definition.key} {verb} version {definition.version}")
