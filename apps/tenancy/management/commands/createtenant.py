from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.tenancy.models import Tenant
from apps.tenancy.services import tenant_create


class Command(BaseCommand):
    help = "Creates a tenant (or, with --if-missing, leaves an existing one alone). Prints its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--if-missing", action="store_true")

    def handle(self, *args: Any, slug: str, name: str, if_missing: bool, **options: Any) -> None:
        existing = Tenant.objects.filter(slug=slug).first()
        tenant = existing if (existing and if_missing) else tenant_create(slug=slug, name=name)
        self.stdout.write(str(tenant.pk))
